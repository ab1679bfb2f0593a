//! The prompts table: verl's schema read as the shared data sets have it, and JSONL.
//!
//! verl parquet: `data_source`, `prompt` = list of {content, role}, `ability`,
//! `reward_model` = {ground_truth, style}, `extra_info` = {index, split, ...}. Struct fields are
//! read by name, never by position (writers order them differently). JSONL: one object a line
//! with `messages` (or `prompt`: a list of {role, content}, or a plain string for one user turn)
//! and `ground_truth` (or `reward_model.ground_truth`); `data_source`, `extra_info`, `index`,
//! `split` and `prompt_id` are optional.
//!
//! `prompt_id` is stable: `{data_source}/{split}/{index}` when those are known (for example
//! `conrl/gsm8k/test/17`), else `sha256:` and the first 16 hex digits of the hash of the
//! data source and the messages. A `prompt_id` column, when the file has one, wins.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::schema;
use crate::table::{hex, read_table, Provenance, TableWriter};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One prompt with what the verifier needs to score its responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub prompt_id: String,
    pub data_source: String,
    pub messages: Vec<Message>,
    pub ability: Option<String>,
    pub ground_truth: String,
    pub style: Option<String>,
    pub index: Option<i64>,
    pub split: Option<String>,
    /// A reference step-by-step solution (verl's `extra_info.answer`), used for supervised
    /// warm starts.
    pub solution: Option<String>,
}

/// `{data_source}/{split}/{index}`, or a hash of the data source and messages.
pub fn derive_prompt_id(data_source: &str, split: Option<&str>, index: Option<i64>, messages: &[Message]) -> String {
    match (split, index) {
        (Some(split), Some(index)) => format!("{data_source}/{split}/{index}"),
        (None, Some(index)) => format!("{data_source}/{index}"),
        _ => {
            let mut h = Sha256::new();
            h.update(data_source.as_bytes());
            for m in messages {
                h.update([0]);
                h.update(m.role.as_bytes());
                h.update([1]);
                h.update(m.content.as_bytes());
            }
            format!("sha256:{}", &hex(&h.finalize())[..16])
        }
    }
}

/// Read prompts from a verl parquet file or a JSONL file (by extension: `.jsonl`/`.json`; a
/// file with another extension is read as Parquet when it starts with Parquet's magic bytes).
pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let prompts = match ext {
        "jsonl" | "json" => read_jsonl(path)?,
        "parquet" => read_verl(path)?,
        _ if starts_with_parquet_magic(path)? => read_verl(path)?,
        _ => return Err(Error::NotPrompts { path: path.into(), detail: "neither Parquet (no PAR1 magic) nor .json/.jsonl".into() }),
    };
    if prompts.is_empty() {
        return Err(Error::Empty { path: path.into(), detail: "no prompts in the file".into() });
    }
    let mut seen = std::collections::HashSet::new();
    for (row, p) in prompts.iter().enumerate() {
        if !seen.insert(p.prompt_id.as_str()) {
            return Err(Error::bad_value(path, row, "prompt_id", format!("duplicate prompt_id `{}`", p.prompt_id)));
        }
        if p.messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(Error::bad_value(path, row, "prompt", "empty prompt (no message has any content)"));
        }
    }
    Ok(prompts)
}

fn struct_field<'a>(path: &Path, s: &'a StructArray, parent: &str, name: &str) -> Result<&'a ArrayRef> {
    s.column_by_name(name).ok_or_else(|| Error::MissingColumn {
        path: path.into(),
        column: format!("{parent}.{name}"),
        expected: "a struct field".into(),
        found: s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", "),
    })
}

/// Cast any primitive or string column to utf8 (ground truths are sometimes stored as numbers).
fn as_utf8(path: &Path, column: &str, a: &ArrayRef) -> Result<StringArray> {
    let out = cast(a, &DataType::Utf8).map_err(|e| Error::ColumnType {
        path: path.into(),
        column: column.into(),
        expected: "utf8".into(),
        found: format!("{} ({e})", a.data_type()),
    })?;
    Ok(out.as_string::<i32>().clone())
}

fn read_verl(path: &Path) -> Result<Vec<Prompt>> {
    use schema::{Column, Kind};
    const DATA_SOURCE: Column = Column { name: "data_source", kind: Kind::Utf8, nullable: false };
    let table = read_table(path, &[DATA_SOURCE], &["prompt", "reward_model", "extra_info", "ability", "prompt_id"])?;
    let b = &table.batch;
    for (name, expected) in [("prompt", "list<struct<content: utf8, role: utf8>>"), ("reward_model", "struct<ground_truth: utf8, ...>")] {
        if b.column_by_name(name).is_none() {
            return Err(Error::MissingColumn {
                path: path.into(),
                column: name.into(),
                expected: expected.into(),
                found: b.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    let n = b.num_rows();
    let data_source = table.utf8(&DATA_SOURCE);

    let prompt_col = b.column_by_name("prompt").expect("checked");
    let prompt_list = match prompt_col.data_type() {
        DataType::List(f) if matches!(f.data_type(), DataType::Struct(_)) => prompt_col.as_list::<i32>(),
        other => {
            return Err(Error::ColumnType {
                path: path.into(),
                column: "prompt".into(),
                expected: "list<struct<content: utf8, role: utf8>>".into(),
                found: other.to_string(),
            })
        }
    };
    let msgs = prompt_list.values().as_struct();
    let content = as_utf8(path, "prompt.content", struct_field(path, msgs, "prompt", "content")?)?;
    let role = as_utf8(path, "prompt.role", struct_field(path, msgs, "prompt", "role")?)?;

    let rm_col = b.column_by_name("reward_model").expect("checked");
    let DataType::Struct(_) = rm_col.data_type() else {
        return Err(Error::ColumnType {
            path: path.into(),
            column: "reward_model".into(),
            expected: "struct<ground_truth: utf8, style: utf8>".into(),
            found: rm_col.data_type().to_string(),
        });
    };
    let rm = rm_col.as_struct();
    let gt = as_utf8(path, "reward_model.ground_truth", struct_field(path, rm, "reward_model", "ground_truth")?)?;
    let style = rm.column_by_name("style").map(|a| as_utf8(path, "reward_model.style", a)).transpose()?;

    let (index, split, solution) = match b.column_by_name("extra_info") {
        Some(a) if matches!(a.data_type(), DataType::Struct(_)) => {
            let s = a.as_struct();
            let index = match s.column_by_name("index") {
                Some(i) => Some(
                    cast(i, &DataType::Int64)
                        .map_err(|e| Error::ColumnType {
                            path: path.into(),
                            column: "extra_info.index".into(),
                            expected: "integer".into(),
                            found: format!("{} ({e})", i.data_type()),
                        })?
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .clone(),
                ),
                None => None,
            };
            let split = s.column_by_name("split").map(|a| as_utf8(path, "extra_info.split", a)).transpose()?;
            let solution = s.column_by_name("answer").map(|a| as_utf8(path, "extra_info.answer", a)).transpose()?;
            (index, split, solution)
        }
        _ => (None, None, None),
    };
    let ability = b.column_by_name("ability").map(|a| as_utf8(path, "ability", a)).transpose()?;
    let ids = b.column_by_name("prompt_id").map(|a| as_utf8(path, "prompt_id", a)).transpose()?;

    let offsets = prompt_list.value_offsets();
    let mut out = Vec::with_capacity(n);
    for row in 0..n {
        if prompt_list.is_null(row) {
            return Err(Error::bad_value(path, row, "prompt", "null prompt"));
        }
        if gt.is_null(row) {
            return Err(Error::bad_value(path, row, "reward_model.ground_truth", "null ground truth"));
        }
        let mut messages = Vec::new();
        for m in offsets[row] as usize..offsets[row + 1] as usize {
            if role.is_null(m) || content.is_null(m) {
                return Err(Error::bad_value(path, row, "prompt", "a message without role or content"));
            }
            messages.push(Message { role: role.value(m).to_string(), content: content.value(m).to_string() });
        }
        let idx = index.as_ref().and_then(|a| a.is_valid(row).then(|| a.value(row)));
        let spl = split.as_ref().and_then(|a| a.is_valid(row).then(|| a.value(row).to_string()));
        let ds = data_source.value(row).to_string();
        let prompt_id = match ids.as_ref().filter(|a| a.is_valid(row)) {
            Some(a) => a.value(row).to_string(),
            None => derive_prompt_id(&ds, spl.as_deref(), idx, &messages),
        };
        out.push(Prompt {
            prompt_id,
            data_source: ds,
            messages,
            ability: ability.as_ref().and_then(|a| a.is_valid(row).then(|| a.value(row).to_string())),
            ground_truth: gt.value(row).to_string(),
            style: style.as_ref().and_then(|a| a.is_valid(row).then(|| a.value(row).to_string())),
            index: idx,
            split: spl,
            solution: solution.as_ref().and_then(|a| a.is_valid(row).then(|| a.value(row).to_string())),
        });
    }
    Ok(out)
}

/// Whether `path` begins with `PAR1`, the magic bytes of every Parquet file.
fn starts_with_parquet_magic(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    Ok(n == 4 && &head == b"PAR1")
}

fn read_jsonl(path: &Path) -> Result<Vec<Prompt>> {
    use serde_json::Value;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // One JSON document spread over lines (a config.json, a pretty-printed list) is not JSON
    // lines: say so rather than "line 1 is not JSON".
    if text.lines().filter(|l| !l.trim().is_empty()).nth(1).is_some() && serde_json::from_str::<Value>(&text).is_ok() {
        return Err(Error::NotPrompts { path: path.into(), detail: "one JSON document over several lines, not JSON lines".into() });
    }
    let default_source = path.file_stem().and_then(|s| s.to_str()).unwrap_or("jsonl").to_string();
    let mut out = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = out.len();
        let bad = |col: &str, detail: String| Error::bad_value(path, row, col, format!("line {}: {detail}", line_no + 1));
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::NotPrompts { path: path.into(), detail: format!("line {} is not JSON ({e})", line_no + 1) })?;
        if !v.is_object() {
            return Err(Error::NotPrompts { path: path.into(), detail: format!("line {} is not a JSON object", line_no + 1) });
        }
        let msgs = v.get("messages").or_else(|| v.get("prompt")).ok_or_else(|| Error::NotPrompts { path: path.into(), detail: format!("line {} has no `messages` (or `prompt`)", line_no + 1) })?;
        let messages = match msgs {
            Value::String(s) => vec![Message { role: "user".into(), content: s.clone() }],
            Value::Array(items) => items
                .iter()
                .map(|m| {
                    let role = m.get("role").and_then(Value::as_str);
                    let content = m.get("content").and_then(Value::as_str);
                    match (role, content) {
                        (Some(r), Some(c)) => Ok(Message { role: r.into(), content: c.into() }),
                        _ => Err(bad("messages", "each message needs string `role` and `content`".into())),
                    }
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(bad("messages", "expected a list of {role, content} or a string".into())),
        };
        let gt = v
            .get("ground_truth")
            .or_else(|| v.get("reward_model").and_then(|r| r.get("ground_truth")))
            .ok_or_else(|| Error::NotPrompts { path: path.into(), detail: format!("line {} has no `ground_truth`", line_no + 1) })?;
        let ground_truth = match gt {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(bad("ground_truth", "expected a string or a number".into())),
        };
        let str_at = |keys: &[&str]| -> Option<String> {
            keys.iter().find_map(|k| {
                let mut cur = &v;
                for part in k.split('.') {
                    cur = cur.get(part)?;
                }
                cur.as_str().map(str::to_string)
            })
        };
        let data_source = str_at(&["data_source"]).unwrap_or_else(|| default_source.clone());
        let split = str_at(&["extra_info.split", "split"]);
        let index = v.get("extra_info").and_then(|e| e.get("index")).or_else(|| v.get("index")).and_then(Value::as_i64);
        let prompt_id = str_at(&["prompt_id", "id"])
            .unwrap_or_else(|| derive_prompt_id(&data_source, split.as_deref(), index, &messages));
        out.push(Prompt {
            prompt_id,
            data_source,
            messages,
            ability: str_at(&["ability"]),
            ground_truth,
            style: str_at(&["reward_model.style"]),
            index,
            split,
            solution: str_at(&["extra_info.answer", "solution"]),
        });
    }
    Ok(out)
}

/// The prompts as a record batch in verl's schema plus `prompt_id` ([`schema::prompts::schema`]).
pub fn prompts_batch(prompts: &[Prompt]) -> Result<RecordBatch> {
    let schema = schema::prompts::schema();
    let msg_fields: Fields = match schema.field_with_name("prompt").map(|f| f.data_type().clone()) {
        Ok(DataType::List(f)) => match f.data_type() {
            DataType::Struct(fields) => fields.clone(),
            _ => unreachable!("prompt is a list of structs"),
        },
        _ => unreachable!("prompt is a list"),
    };
    let mut offsets = vec![0i32];
    let (mut contents, mut roles) = (Vec::new(), Vec::new());
    for p in prompts {
        for m in &p.messages {
            contents.push(m.content.as_str());
            roles.push(m.role.as_str());
        }
        offsets.push(contents.len() as i32);
    }
    let messages = StructArray::new(
        msg_fields.clone(),
        vec![Arc::new(StringArray::from(contents)) as ArrayRef, Arc::new(StringArray::from(roles))],
        None,
    );
    let prompt = ListArray::new(
        Arc::new(Field::new("element", DataType::Struct(msg_fields), true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(messages),
        None,
    );
    let strings = |f: &dyn Fn(&Prompt) -> Option<&str>| -> ArrayRef {
        Arc::new(prompts.iter().map(f).collect::<StringArray>())
    };
    let reward_model = StructArray::new(
        vec![Field::new("ground_truth", DataType::Utf8, true), Field::new("style", DataType::Utf8, true)].into(),
        vec![strings(&|p| Some(p.ground_truth.as_str())), strings(&|p| p.style.as_deref())],
        None,
    );
    let extra_info = StructArray::new(
        vec![
            Field::new("index", DataType::Int64, true),
            Field::new("split", DataType::Utf8, true),
            Field::new("answer", DataType::Utf8, true),
        ]
        .into(),
        vec![
            Arc::new(prompts.iter().map(|p| p.index).collect::<Int64Array>()) as ArrayRef,
            strings(&|p| p.split.as_deref()),
            strings(&|p| p.solution.as_deref()),
        ],
        None,
    );
    RecordBatch::try_new(
        schema,
        vec![
            strings(&|p| Some(p.data_source.as_str())),
            Arc::new(prompt),
            strings(&|p| p.ability.as_deref()),
            Arc::new(reward_model),
            Arc::new(extra_info),
            strings(&|p| Some(p.prompt_id.as_str())),
        ],
    )
    .map_err(|e| Error::Other(format!("building the prompts table: {e}")))
}

/// Write prompts as a verl-schema parquet file (atomically).
pub fn write_prompts(out: &Path, prompts: &[Prompt], provenance: &Provenance) -> Result<usize> {
    let batch = prompts_batch(prompts)?;
    let mut w = TableWriter::create(out, batch.schema(), provenance)?;
    w.write(&batch)?;
    w.finish()
}
