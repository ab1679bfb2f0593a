//! Rows of the trajectories table (one per sampled response) and their Arrow form.
//! The columns are fixed in [`crate::schema::trajectories`]; `schemas/trajectories.md` documents them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, ListArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Float32Type, UInt32Type};

use crate::error::{Error, Result};
use crate::schema::trajectories::schema;

/// Why a response ended, as the `finish_reason` column stores it: `eos` (a stop token, kept as
/// the last token), `length` (`--max-new-tokens`), `stop:TEXT` (the stop string TEXT of
/// `--stop`, completed by the last token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    Length,
    Stop(String),
}

impl FinishReason {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            FinishReason::Eos => "eos".into(),
            FinishReason::Length => "length".into(),
            FinishReason::Stop(text) => format!("stop:{text}").into(),
        }
    }
}

/// One sampled response and what produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub prompt_id: String,
    pub sample_idx: u32,
    pub data_source: String,
    pub ground_truth: String,
    pub prompt_text: String,
    pub response_text: String,
    pub prompt_token_ids: Vec<u32>,
    pub response_token_ids: Vec<u32>,
    /// log-prob of each response token under the sampling distribution (see the model docs).
    pub response_logprobs: Vec<f32>,
    /// log-prob of each response token under the distribution it was drawn from (after
    /// temperature, top-k, top-p; 0 for greedy): the behaviour policy.
    pub behavior_logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    pub seed: u64,
    pub policy: String,
    /// Pooled final hidden state (REFERENCE.md §2), when captured.
    pub hidden: Option<Vec<f32>>,
}

/// A list<T> column from rows of values.
fn list_of<T: arrow::datatypes::ArrowPrimitiveType>(rows: impl Iterator<Item = Vec<T::Native>>) -> ListArray {
    let mut offsets = vec![0i32];
    let mut values = Vec::new();
    for r in rows {
        values.extend(r);
        offsets.push(values.len() as i32);
    }
    ListArray::new(
        Arc::new(Field::new_list_field(T::DATA_TYPE, false)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(arrow::array::PrimitiveArray::<T>::from_iter_values(values)),
        None,
    )
}

/// Rows of `width`-long f32 vectors, null where absent.
pub fn vectors(rows: &[Option<&[f32]>], width: usize) -> Result<FixedSizeListArray> {
    let mut values = Vec::with_capacity(rows.len() * width);
    for (i, r) in rows.iter().enumerate() {
        match r {
            Some(v) if v.len() == width => values.extend_from_slice(v),
            Some(v) => return Err(Error::Other(format!("row {i}: vector of width {} where {width} was expected", v.len()))),
            None => values.extend(std::iter::repeat_n(0.0, width)),
        }
    }
    let nulls = rows.iter().any(Option::is_none).then(|| NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>()));
    FixedSizeListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        width as i32,
        Arc::new(Float32Array::from(values)),
        nulls,
    )
    .map_err(|e| Error::Other(format!("building vectors: {e}")))
}

/// The rows as one record batch; `hidden_dim` is the width of the `hidden` column (0 when no
/// row carries a hidden state).
pub fn trajectories_batch(rows: &[Trajectory], hidden_dim: usize) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Trajectory) -> &str| -> ArrayRef { Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>()) };
    let finish: Vec<std::borrow::Cow<'_, str>> = rows.iter().map(|r| r.finish_reason.as_str()).collect();
    let hidden: Vec<Option<&[f32]>> = rows.iter().map(|r| r.hidden.as_deref()).collect();
    let columns: Vec<ArrayRef> = vec![
        s(&|r| &r.prompt_id),
        Arc::new(rows.iter().map(|r| r.sample_idx).collect::<UInt32Array>()),
        s(&|r| &r.data_source),
        s(&|r| &r.ground_truth),
        s(&|r| &r.prompt_text),
        s(&|r| &r.response_text),
        Arc::new(list_of::<UInt32Type>(rows.iter().map(|r| r.prompt_token_ids.clone()))),
        Arc::new(list_of::<UInt32Type>(rows.iter().map(|r| r.response_token_ids.clone()))),
        Arc::new(list_of::<Float32Type>(rows.iter().map(|r| r.response_logprobs.clone()))),
        Arc::new(list_of::<Float32Type>(rows.iter().map(|r| r.behavior_logprobs.clone()))),
        Arc::new(finish.iter().map(|f| Some(f.as_ref())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| r.seed).collect::<UInt64Array>()),
        s(&|r| &r.policy),
        Arc::new(vectors(&hidden, hidden_dim)?),
    ];
    RecordBatch::try_new(schema(hidden_dim), columns).map_err(|e| Error::Other(format!("building trajectories: {e}")))
}
