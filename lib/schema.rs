//! The Parquet tables that the stages exchange, declared once.
//!
//! Every table's Arrow schema is spelled out here, field by field (name, type, nullability);
//! `schemas/<table>.md` says the same in words with an example row. The [`Kind`] of each column
//! is what a reader accepts: a stage checks its inputs against these before it creates any
//! output (see [`crate::table`]).
//!
//! Tables and the stage that writes each:
//! - `prompts` (the verl schema, read as it is; `clipo-data` writes it from JSONL)
//! - `trajectories` (clipo-rollout): one row per sampled response
//! - `rewards` (clipo-verify): one row per trajectory row
//! - `embeddings` (clipo-embed): one row per trajectory row
//! - `advantages` (clipo-update): the audit table, one row per trajectory row

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Bumped when a column is added, removed or changes meaning. Stored in every file we write.
pub const SCHEMA_VERSION: &str = "1";

/// The Parquet key-value metadata keys clipo stamps into every file it writes.
pub mod meta {
    pub const SCHEMA_VERSION: &str = "clipo.schema_version";
    pub const TABLE: &str = "clipo.table";
    pub const STAGE: &str = "clipo.stage";
    pub const VERSION: &str = "clipo.version";
    pub const CONFIG: &str = "clipo.config";
    pub const INPUTS: &str = "clipo.inputs";
    pub const FINGERPRINT: &str = "clipo.fingerprint";
}

/// What a reader accepts for a column, and the canonical Arrow type it is read as.
///
/// Readers are lenient where writers differ (pandas writes int64 where we write u32, Polars
/// writes large_string): any integer width for an integer column, f32 or f64 for a float
/// column, utf8/large_utf8/utf8_view for text, list or large_list for lists. Values are cast
/// to the canonical type, and a cast that loses a value (a negative id, an overflow) is an
/// error naming the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Utf8,
    UInt32,
    UInt64,
    Float32,
    Bool,
    /// list<u32>
    ListUInt32,
    /// list<f32>
    ListFloat32,
    /// fixed_size_list<f32, n> for any n (the width is checked by the stage that knows it).
    VectorF32,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Utf8 => "utf8",
            Kind::UInt32 => "uint32 (any integer type accepted)",
            Kind::UInt64 => "uint64 (any integer type accepted)",
            Kind::Float32 => "float (f32 or f64)",
            Kind::Bool => "bool",
            Kind::ListUInt32 => "list<uint32>",
            Kind::ListFloat32 => "list<float>",
            Kind::VectorF32 => "fixed_size_list<float, d>",
        }
    }

    /// Whether a column of type `found` can be read as this kind.
    pub fn accepts(self, found: &DataType) -> bool {
        use DataType as D;
        let list_inner = |dt: &DataType| match dt {
            D::List(f) | D::LargeList(f) => Some(f.data_type().clone()),
            _ => None,
        };
        match self {
            Kind::Utf8 => matches!(found, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            Kind::UInt32 | Kind::UInt64 => found.is_integer(),
            Kind::Float32 => found.is_floating(),
            Kind::Bool => matches!(found, D::Boolean),
            Kind::ListUInt32 => list_inner(found).is_some_and(|t| t.is_integer()),
            Kind::ListFloat32 => list_inner(found).is_some_and(|t| t.is_floating()),
            Kind::VectorF32 => match found {
                D::FixedSizeList(f, _) => f.data_type().is_floating(),
                _ => false,
            },
        }
    }

    /// The canonical type a column of type `found` is cast to.
    pub fn canonical(self, found: &DataType) -> DataType {
        match self {
            Kind::Utf8 => DataType::Utf8,
            Kind::UInt32 => DataType::UInt32,
            Kind::UInt64 => DataType::UInt64,
            Kind::Float32 => DataType::Float32,
            Kind::Bool => DataType::Boolean,
            Kind::ListUInt32 => list_of(DataType::UInt32),
            Kind::ListFloat32 => list_of(DataType::Float32),
            Kind::VectorF32 => match found {
                DataType::FixedSizeList(_, n) => vector_of(*n as usize),
                _ => vector_of(0),
            },
        }
    }
}

/// A column a stage needs: name, kind, and whether nulls are allowed.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind, nullable: bool) -> Column {
    Column { name, kind, nullable }
}

/// list<item: T not null>
pub fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, false)))
}

/// fixed_size_list<item: f32 not null, n>
pub fn vector_of(n: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, false)), n as i32)
}

fn schema_of(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

// ---------------------------------------------------------------------------------------------
// trajectories: one row per sampled response (clipo-rollout)

pub mod trajectories {
    use super::*;

    pub const TABLE: &str = "trajectories";
    pub const PROMPT_ID: Column = col("prompt_id", Kind::Utf8, false);
    pub const SAMPLE_IDX: Column = col("sample_idx", Kind::UInt32, false);
    pub const DATA_SOURCE: Column = col("data_source", Kind::Utf8, false);
    pub const GROUND_TRUTH: Column = col("ground_truth", Kind::Utf8, false);
    pub const PROMPT_TEXT: Column = col("prompt_text", Kind::Utf8, false);
    pub const RESPONSE_TEXT: Column = col("response_text", Kind::Utf8, false);
    pub const PROMPT_TOKEN_IDS: Column = col("prompt_token_ids", Kind::ListUInt32, false);
    pub const RESPONSE_TOKEN_IDS: Column = col("response_token_ids", Kind::ListUInt32, false);
    pub const RESPONSE_LOGPROBS: Column = col("response_logprobs", Kind::ListFloat32, false);
    pub const BEHAVIOR_LOGPROBS: Column = col("behavior_logprobs", Kind::ListFloat32, false);
    pub const FINISH_REASON: Column = col("finish_reason", Kind::Utf8, false);
    pub const SEED: Column = col("seed", Kind::UInt64, false);
    pub const POLICY: Column = col("policy", Kind::Utf8, false);
    pub const HIDDEN: Column = col("hidden", Kind::VectorF32, true);

    /// Every column, in the schema's order.
    pub const COLUMNS: [Column; 14] = [
        PROMPT_ID, SAMPLE_IDX, DATA_SOURCE, GROUND_TRUTH, PROMPT_TEXT, RESPONSE_TEXT, PROMPT_TOKEN_IDS, RESPONSE_TOKEN_IDS,
        RESPONSE_LOGPROBS, BEHAVIOR_LOGPROBS, FINISH_REASON, SEED, POLICY, HIDDEN,
    ];

    /// The trajectories schema with hidden states of width `hidden_dim` (0 when not captured:
    /// the column is then all null).
    pub fn schema(hidden_dim: usize) -> SchemaRef {
        schema_of(vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("sample_idx", DataType::UInt32, false),
            Field::new("data_source", DataType::Utf8, false),
            Field::new("ground_truth", DataType::Utf8, false),
            Field::new("prompt_text", DataType::Utf8, false),
            Field::new("response_text", DataType::Utf8, false),
            Field::new("prompt_token_ids", list_of(DataType::UInt32), false),
            Field::new("response_token_ids", list_of(DataType::UInt32), false),
            Field::new("response_logprobs", list_of(DataType::Float32), false),
            Field::new("behavior_logprobs", list_of(DataType::Float32), false),
            Field::new("finish_reason", DataType::Utf8, false),
            Field::new("seed", DataType::UInt64, false),
            Field::new("policy", DataType::Utf8, false),
            Field::new("hidden", vector_of(hidden_dim), true),
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// rewards: one row per trajectory row (clipo-verify)

pub mod rewards {
    use super::*;

    pub const TABLE: &str = "rewards";
    pub const PROMPT_ID: Column = col("prompt_id", Kind::Utf8, false);
    pub const SAMPLE_IDX: Column = col("sample_idx", Kind::UInt32, false);
    pub const DATA_SOURCE: Column = col("data_source", Kind::Utf8, false);
    pub const EXTRACTED: Column = col("extracted", Kind::Utf8, true);
    pub const CORRECT: Column = col("correct", Kind::Bool, false);
    pub const SCORE: Column = col("score", Kind::Float32, false);
    pub const REASON: Column = col("reason", Kind::Utf8, false);
    /// Further keys a scorer program answered, as one JSON object (null for the built-ins).
    /// Optional on read: tables written before scorer programs have no such column.
    pub const EXTRA: Column = col("extra", Kind::Utf8, true);
    /// The step checker's verdict (`process_correct`, `lucky`, `wrong`) on responses to the
    /// embedded task's prompts ([`crate::stepcheck`]); null for other data sources. Optional on
    /// read: older tables have no such column.
    pub const PROCESS: Column = col("process", Kind::Utf8, true);
    /// What the step checker found wrong with the steps (`wrong step 7 + 2 = 8; ...`); null
    /// where `process` is.
    pub const PROCESS_DETAIL: Column = col("process_detail", Kind::Utf8, true);

    pub fn schema() -> SchemaRef {
        schema_of(vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("sample_idx", DataType::UInt32, false),
            Field::new("data_source", DataType::Utf8, false),
            Field::new("extracted", DataType::Utf8, true),
            Field::new("correct", DataType::Boolean, false),
            Field::new("score", DataType::Float32, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("extra", DataType::Utf8, true),
            Field::new("process", DataType::Utf8, true),
            Field::new("process_detail", DataType::Utf8, true),
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// embeddings: one row per trajectory row (clipo-embed)

pub mod embeddings {
    use super::*;

    pub const TABLE: &str = "embeddings";
    pub const PROMPT_ID: Column = col("prompt_id", Kind::Utf8, false);
    pub const SAMPLE_IDX: Column = col("sample_idx", Kind::UInt32, false);
    pub const EMBEDDING: Column = col("embedding", Kind::VectorF32, false);
    pub const CONTRASTIVE_LOSS: Column = col("contrastive_loss", Kind::Float32, false);
    pub const CONTRASTIVE_REWARD: Column = col("contrastive_reward", Kind::Float32, false);
    pub const IS_ANCHOR: Column = col("is_anchor", Kind::Bool, false);
    pub const POSITIVE_SAMPLE_IDX: Column = col("positive_sample_idx", Kind::UInt32, true);

    pub fn schema(dim: usize) -> SchemaRef {
        schema_of(vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("sample_idx", DataType::UInt32, false),
            Field::new("embedding", vector_of(dim), false),
            Field::new("contrastive_loss", DataType::Float32, false),
            Field::new("contrastive_reward", DataType::Float32, false),
            Field::new("is_anchor", DataType::Boolean, false),
            Field::new("positive_sample_idx", DataType::UInt32, true),
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// advantages: the audit table of one update (clipo-update)

pub mod advantages {
    use super::*;

    pub const TABLE: &str = "advantages";

    pub fn schema() -> SchemaRef {
        schema_of(vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("sample_idx", DataType::UInt32, false),
            Field::new("score", DataType::Float32, false),
            Field::new("contrastive_reward", DataType::Float32, false),
            Field::new("reward", DataType::Float32, false),
            Field::new("advantage", DataType::Float32, false),
            Field::new("response_tokens", DataType::UInt32, false),
            Field::new("mean_ratio", DataType::Float32, false),
            Field::new("clipped_fraction", DataType::Float32, false),
            Field::new("kl", DataType::Float32, false),
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// prompts: the verl schema (read by name; writers order struct fields differently)

pub mod prompts {
    use super::*;

    pub const TABLE: &str = "prompts";

    fn message() -> DataType {
        DataType::Struct(
            vec![
                Field::new("content", DataType::Utf8, true),
                Field::new("role", DataType::Utf8, true),
            ]
            .into(),
        )
    }

    /// The verl prompts schema as clipo writes it (the shared data sets have exactly these
    /// columns), plus `prompt_id` at the end.
    pub fn schema() -> SchemaRef {
        schema_of(vec![
            Field::new("data_source", DataType::Utf8, true),
            Field::new(
                "prompt",
                DataType::List(Arc::new(Field::new("element", message(), true))),
                true,
            ),
            Field::new("ability", DataType::Utf8, true),
            Field::new(
                "reward_model",
                DataType::Struct(
                    vec![
                        Field::new("ground_truth", DataType::Utf8, true),
                        Field::new("style", DataType::Utf8, true),
                    ]
                    .into(),
                ),
                true,
            ),
            Field::new(
                "extra_info",
                DataType::Struct(
                    vec![
                        Field::new("index", DataType::Int64, true),
                        Field::new("split", DataType::Utf8, true),
                        Field::new("answer", DataType::Utf8, true),
                    ]
                    .into(),
                ),
                true,
            ),
            Field::new("prompt_id", DataType::Utf8, false),
        ])
    }
}
