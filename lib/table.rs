//! Reading and writing the Parquet tables with the I/O discipline every stage follows.
//!
//! Reading: [`read_table`] checks each required column (present, of an accepted type, no nulls
//! where none are allowed, finite floats) *before* a stage creates any output, casts it to the
//! canonical type, and fails with the file, column, row and both types.
//!
//! Writing: [`TableWriter`] writes `<out>.tmp`, closes it by hand (a dropped writer leaves a file
//! without a footer), reopens it to check the row count, then renames. A killed stage leaves no
//! file under the final name. Every file carries [`Provenance`] in its key-value metadata: the
//! schema version, table, stage, config and the SHA-256 of every input; [`up_to_date`] compares
//! a fingerprint of those with an existing output so that re-running an unchanged stage does
//! nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float32Type, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::schema::{meta, Column, Kind, SCHEMA_VERSION};

/// A table read into memory: the required columns (cast to their canonical types) and
/// any others that were asked for, plus the file's key-value metadata.
pub struct Table {
    pub path: PathBuf,
    pub batch: RecordBatch,
    pub metadata: HashMap<String, String>,
}

impl Table {
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// A column by name; it was checked when the table was read.
    pub fn column(&self, name: &str) -> &ArrayRef {
        self.batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("column {name} was not requested when reading {:?}", self.path))
    }

    pub fn utf8(&self, c: &Column) -> &arrow::array::StringArray {
        self.column(c.name).as_string::<i32>()
    }
    pub fn u32(&self, c: &Column) -> &arrow::array::UInt32Array {
        self.column(c.name).as_primitive::<arrow::datatypes::UInt32Type>()
    }
    pub fn u64(&self, c: &Column) -> &arrow::array::UInt64Array {
        self.column(c.name).as_primitive::<arrow::datatypes::UInt64Type>()
    }
    pub fn f32(&self, c: &Column) -> &arrow::array::Float32Array {
        self.column(c.name).as_primitive::<Float32Type>()
    }
    pub fn bool(&self, c: &Column) -> &arrow::array::BooleanArray {
        self.column(c.name).as_boolean()
    }
    pub fn list(&self, c: &Column) -> &arrow::array::ListArray {
        self.column(c.name).as_list::<i32>()
    }
    pub fn vectors(&self, c: &Column) -> &arrow::array::FixedSizeListArray {
        self.column(c.name).as_fixed_size_list()
    }

    /// The (prompt_id, sample_idx) key of every row, the key the stages join on.
    pub fn row_keys(&self, prompt_id: &Column, sample_idx: &Column) -> Vec<(String, u32)> {
        let (p, s) = (self.utf8(prompt_id), self.u32(sample_idx));
        (0..self.num_rows()).map(|i| (p.value(i).to_string(), s.value(i))).collect()
    }

    /// Row index by key, refusing a duplicate key with its row.
    pub fn index_keys(&self, keys: &[(String, u32)]) -> Result<HashMap<(String, u32), usize>> {
        let mut m = HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if m.insert(k.clone(), i).is_some() {
                return Err(Error::Join {
                    detail: format!("{}: row {i}: duplicate (prompt_id, sample_idx) = ({}, {})", self.path.display(), k.0, k.1),
                });
            }
        }
        Ok(m)
    }
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    // The parquet crate trusts the footer's column offsets and asserts on them (a panic): a
    // corrupt footer is refused here instead (found by bench/fuzz_readers.rs).
    for (g, rg) in builder.metadata().row_groups().iter().enumerate() {
        for c in rg.columns() {
            // As ColumnChunkMetaData::byte_range computes it.
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let size = c.compressed_size();
            if start < 0 || size < 0 || (start as u64).saturating_add(size as u64) > len {
                return Err(Error::parquet(path, format!("row group {g}, column `{}`: its pages lie outside the file", c.column_path())));
            }
        }
    }
    Ok(builder)
}

/// The key-value metadata of a Parquet file.
pub fn file_metadata(path: &Path) -> Result<HashMap<String, String>> {
    decoder_guard(path, || {
        let builder = open_builder(path)?;
        Ok(kv_map(builder.metadata().file_metadata().key_value_metadata()))
    })
}

fn kv_map(kv: Option<&Vec<KeyValue>>) -> HashMap<String, String> {
    kv.map(|kv| {
        kv.iter().filter_map(|k| k.value.clone().map(|v| (k.key.clone(), v))).collect()
    })
    .unwrap_or_default()
}

/// Checks that `table` was made from `parent` as it is now: one of the inputs stamped in its
/// provenance has the SHA-256 `parent_sha`. A table made from an older `parent` (the rollout
/// was rerun since) is stale: the error names both files and the command that remakes it.
pub fn check_lineage(table: &Path, metadata: &HashMap<String, String>, parent_flag: &str, parent: &Path, parent_sha: &str, remake: &str) -> Result<()> {
    let stamped: Vec<String> = metadata
        .get(meta::INPUTS)
        .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(s).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get("sha256").and_then(|s| s.as_str()).map(str::to_string))
        .collect();
    if stamped.is_empty() || stamped.iter().any(|s| s == parent_sha) {
        // A table without provenance (written by another tool) cannot be checked.
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} is stale: it was made from another {parent_flag} than {} (whose SHA-256 is {}, not one of the stamped {}); remake it with {remake}",
        table.display(),
        parent.display(),
        &parent_sha[..16.min(parent_sha.len())],
        stamped.iter().map(|s| &s[..16.min(s.len())]).collect::<Vec<_>>().join(", ")
    )))
}

/// Check that `schema` holds every required column with an accepted type.
pub fn check_columns(path: &Path, schema: &arrow::datatypes::Schema, required: &[Column]) -> Result<()> {
    for c in required {
        match schema.field_with_name(c.name) {
            Err(_) => {
                let found: Vec<String> =
                    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
                return Err(Error::MissingColumn {
                    path: path.into(),
                    column: c.name.into(),
                    expected: c.kind.describe().into(),
                    found: found.join(", "),
                });
            }
            Ok(f) if !c.kind.accepts(f.data_type()) => {
                return Err(Error::ColumnType {
                    path: path.into(),
                    column: c.name.into(),
                    expected: c.kind.describe().into(),
                    found: f.data_type().to_string(),
                })
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Read a Parquet table, checking and normalising the `required` columns. `extra` names other
/// columns to keep as they are (absent ones are skipped); everything else is not read.
pub fn read_table(path: &Path, required: &[Column], extra: &[&str]) -> Result<Table> {
    decoder_guard(path, || read_table_unguarded(path, required, extra))
}

/// Runs `f`, which decodes `path` with the parquet crate, turning a panic inside the decoder
/// into a named error. The crate asserts on some corrupt inputs instead of returning an error
/// (bench/fuzz_readers.rs found divisions by zero and out-of-bounds slices in its page
/// decoders); the panic message is kept out of the user's terminal while the decoder runs.
fn decoder_guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|p| {
        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
        Err(Error::parquet(path, format!("corrupt data: the decoder failed ({msg})")))
    })
}

fn read_table_unguarded(path: &Path, required: &[Column], extra: &[&str]) -> Result<Table> {
    let builder = open_builder(path)?;
    let metadata = kv_map(builder.metadata().file_metadata().key_value_metadata());
    let schema = builder.schema().clone();
    check_columns(path, &schema, required)?;

    // Read only the columns we need (by root index, in the file's order).
    let wanted: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| required.iter().any(|c| c.name == f.name()) || extra.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder.with_projection(mask).build().map_err(|e| Error::parquet(path, e))?;
    let read_schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| Error::parquet(path, e))?);
    }
    let batch = concat_batches(&read_schema, &batches).map_err(|e| Error::parquet(path, e))?;
    let batch = normalise(path, batch, required)?;
    Ok(Table { path: path.into(), batch, metadata })
}

/// Cast required columns to their canonical types and check nulls and finiteness.
fn normalise(path: &Path, batch: RecordBatch, required: &[Column]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let Some(c) = required.iter().find(|c| c.name == field.name()) else {
            fields.push(field.as_ref().clone());
            columns.push(array.clone());
            continue;
        };
        let target = c.kind.canonical(array.data_type());
        let out = if array.data_type() == &target {
            array.clone()
        } else {
            let out = cast(array, &target).map_err(|e| Error::ColumnType {
                path: path.into(),
                column: c.name.into(),
                expected: c.kind.describe().into(),
                found: format!("{} ({e})", array.data_type()),
            })?;
            // A lossy integer cast turns the value into a null: report the row.
            if out.null_count() != array.null_count() || nested_nulls(&out) != nested_nulls(array) {
                let row = (0..out.len()).find(|&i| out.is_null(i) && !array.is_null(i)).unwrap_or(0);
                return Err(Error::bad_value(
                    path,
                    row,
                    c.name,
                    format!("value does not fit {}", c.kind.describe()),
                ));
            }
            out
        };
        if !c.nullable && out.null_count() > 0 {
            let row = (0..out.len()).find(|&i| out.is_null(i)).unwrap_or(0);
            return Err(Error::bad_value(path, row, c.name, "null value in a column that must not be null"));
        }
        check_finite(path, c, &out)?;
        fields.push(arrow::datatypes::Field::new(c.name, target, c.nullable));
        columns.push(out);
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()));
    RecordBatch::try_new(schema, columns).map_err(|e| Error::parquet(path, e))
}

fn nested_nulls(array: &ArrayRef) -> usize {
    match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().values().null_count(),
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().values().null_count(),
        _ => 0,
    }
}

/// Fail on the first NaN or infinite value of a float column (plain, list or vector).
fn check_finite(path: &Path, c: &Column, array: &ArrayRef) -> Result<()> {
    let bad_row = match c.kind {
        Kind::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            (0..a.len()).find(|&i| a.is_valid(i) && !a.value(i).is_finite())
        }
        Kind::ListFloat32 => {
            let a = array.as_list::<i32>();
            let values = a.values().as_primitive::<Float32Type>();
            let offsets = a.value_offsets();
            (0..a.len()).find(|&i| {
                a.is_valid(i)
                    && values.values()[offsets[i] as usize..offsets[i + 1] as usize].iter().any(|v| !v.is_finite())
            })
        }
        Kind::VectorF32 => {
            let a = array.as_fixed_size_list();
            let values = a.values().as_primitive::<Float32Type>();
            let n = a.value_length() as usize;
            (0..a.len()).find(|&i| a.is_valid(i) && values.values()[i * n..(i + 1) * n].iter().any(|v| !v.is_finite()))
        }
        _ => None,
    };
    match bad_row {
        Some(row) => Err(Error::bad_value(path, row, c.name, "NaN or infinite value")),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Provenance and the Make-friendly no-op

/// What a stage stamps into its output: enough to say where every file came from, and to tell
/// whether re-running the stage would change anything.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub table: &'static str,
    pub stage: &'static str,
    /// The stage's checked configuration (paths excluded where they do not change the output).
    pub config: serde_json::Value,
    /// (path as given, SHA-256 of its bytes) for each input file.
    pub inputs: Vec<(String, String)>,
}

impl Provenance {
    pub fn new(table: &'static str, stage: &'static str, config: serde_json::Value, inputs: &[&Path]) -> Result<Self> {
        let inputs = inputs
            .iter()
            .map(|p| Ok((p.display().to_string(), file_sha256(p)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Provenance { table, stage, config, inputs })
    }

    /// SHA-256 over the stage, its config and its inputs' contents (not their paths).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.stage.as_bytes());
        h.update([0]);
        h.update(SCHEMA_VERSION.as_bytes());
        h.update([0]);
        h.update(self.config.to_string().as_bytes());
        for (_, sha) in &self.inputs {
            h.update([0]);
            h.update(sha.as_bytes());
        }
        hex(&h.finalize())
    }

    fn key_values(&self) -> Vec<KeyValue> {
        let inputs: Vec<serde_json::Value> = self
            .inputs
            .iter()
            .map(|(p, s)| serde_json::json!({ "path": p, "sha256": s }))
            .collect();
        vec![
            KeyValue::new(meta::SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string()),
            KeyValue::new(meta::TABLE.into(), self.table.to_string()),
            KeyValue::new(meta::STAGE.into(), self.stage.to_string()),
            KeyValue::new(meta::VERSION.into(), env!("CARGO_PKG_VERSION").to_string()),
            KeyValue::new(meta::CONFIG.into(), self.config.to_string()),
            KeyValue::new(meta::INPUTS.into(), serde_json::Value::Array(inputs).to_string()),
            KeyValue::new(meta::FINGERPRINT.into(), self.fingerprint()),
        ]
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's bytes, as hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// True when `out` exists, is a complete Parquet file, and was written with this fingerprint.
pub fn up_to_date(out: &Path, provenance: &Provenance) -> bool {
    out.exists()
        && file_metadata(out)
            .map(|m| m.get(meta::FINGERPRINT) == Some(&provenance.fingerprint()))
            .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Atomic writer

/// Writes `bytes` to `<out>.tmp`, flushes it and renames it to `out`; on any error the
/// temporary file is removed and `out` is left as it was.
pub fn write_file_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_path(out);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
}

/// `<out>.tmp`, next to `out` so the final rename stays on one file system.
pub fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    out.with_file_name(name)
}

/// Writes one table to `<out>.tmp` and renames it into place only when [`TableWriter::finish`]
/// has closed it and read back the expected row count. Dropped unfinished, it removes the
/// temporary file.
pub struct TableWriter {
    out: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: usize,
}

impl TableWriter {
    pub fn create(out: &Path, schema: SchemaRef, provenance: &Provenance) -> Result<Self> {
        Self::create_with(out, schema, provenance, &[])
    }

    /// [`create`](Self::create) with further key-value metadata beside the provenance.
    pub fn create_with(out: &Path, schema: SchemaRef, provenance: &Provenance, extra: &[(String, String)]) -> Result<Self> {
        let mut kv = provenance.key_values();
        kv.extend(extra.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = tmp_path(out);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
            .set_key_value_metadata(Some(kv))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::parquet(&tmp, e))?;
        Ok(TableWriter { out: out.into(), tmp, writer: Some(writer), rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self.writer.as_mut().expect("writer used after finish");
        w.write(batch).map_err(|e| Error::parquet(&self.tmp, e))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Flush the rows written so far into a row group of their own (a resumable checkpoint).
    pub fn flush(&mut self) -> Result<()> {
        let w = self.writer.as_mut().expect("writer used after finish");
        w.flush().map_err(|e| Error::parquet(&self.tmp, e))
    }

    /// Close, check, rename. Returns the number of rows written.
    pub fn finish(mut self) -> Result<usize> {
        let w = self.writer.take().expect("finish called twice");
        let result = self.close_and_rename(w);
        if result.is_err() {
            // The writer is gone, so Drop would not clean up: remove the partial file here.
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn close_and_rename(&self, w: ArrowWriter<File>) -> Result<usize> {
        w.close().map_err(|e| Error::parquet(&self.tmp, e))?;
        let file = File::open(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        let reader = SerializedFileReader::new(file).map_err(|e| Error::parquet(&self.tmp, e))?;
        let rows = reader.metadata().file_metadata().num_rows() as usize;
        if rows != self.rows {
            return Err(Error::Other(format!(
                "{}: wrote {} rows but the closed file holds {rows}; the output was not kept",
                self.tmp.display(),
                self.rows
            )));
        }
        std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::io(&self.out, e))?;
        Ok(rows)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
