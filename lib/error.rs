//! The library's error type: every variant names the file, column or row it is about and, where
//! there is one, what to do. Binaries print it with `{:#}` and exit 2.

use std::path::PathBuf;

/// Everything that can go wrong in a clipo stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read, written or renamed.
    /// (`err` is not a `source`: its text is in the message already, and `{:#}` would print it twice.)
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    /// The disk filled while writing: nothing partial is kept.
    #[error("{path}: no space left on the device; nothing partial was kept: free some space and rerun (the run resumes where it stopped)")]
    DiskFull { path: PathBuf },

    /// A Parquet file is truncated, corrupt or not Parquet at all.
    #[error("{path}: not a readable parquet file ({detail}); was it written completely?")]
    Parquet { path: PathBuf, detail: String },

    /// A required column is absent.
    #[error("{path}: missing column `{column}` (expected {expected}); columns present: {found}")]
    MissingColumn { path: PathBuf, column: String, expected: String, found: String },

    /// A column exists with a type that cannot be read as the expected one.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType { path: PathBuf, column: String, expected: String, found: String },

    /// A value is null, NaN, out of range or otherwise unusable.
    #[error("{path}: row {row}, column `{column}`: {detail}")]
    BadValue { path: PathBuf, row: usize, column: String, detail: String },

    /// The rows of two inputs do not line up (missing, duplicated or extra keys).
    #[error("{detail}")]
    Join { detail: String },

    /// A command-line value or configuration is invalid.
    #[error("{0}")]
    Config(String),

    /// A file given as prompts is neither a verl parquet table nor JSON lines of prompts.
    #[error("{path}: {detail}; expected a prompts table: verl .parquet, or .jsonl with one JSON object a line holding `messages` (or `prompt`) and `ground_truth`")]
    NotPrompts { path: PathBuf, detail: String },

    /// The input is valid but empty or otherwise leaves nothing to do that makes sense.
    #[error("{path}: {detail}")]
    Empty { path: PathBuf, detail: String },

    /// A model directory is missing files, or its config, weights, tokenizer or chat template
    /// cannot be used.
    #[error("{}", named_once(dir, detail))]
    Model { dir: PathBuf, detail: String },

    /// An inference server failed a request: down after the retries, an HTTP error, or a body
    /// that is not what its API returns.
    #[error("engine {server}: {request}: {detail}")]
    Engine { server: String, request: String, detail: String },

    /// A scorer program (`clipo-verify --scorer`) failed on a response: it exited, answered
    /// something that is not a score, or answered out of order.
    #[error("scorer `{command}`: row {row} (prompt_id {prompt_id}, sample_idx {sample_idx}): {detail}")]
    Scorer { command: String, row: usize, prompt_id: String, sample_idx: u32, detail: String },

    /// An error from the tensor library.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// Anything else, with its own message.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `path: detail`, or `detail` alone when it names the path already (a model error that says
/// "runs/x has no tokenizer.json" is not prefixed with "runs/x: " again).
fn named_once(path: &std::path::Path, detail: &str) -> String {
    let shown = path.display().to_string();
    if detail.contains(&shown) {
        detail.to_string()
    } else {
        format!("{shown}: {detail}")
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return Error::DiskFull { path: path.into() };
        }
        Error::Io { path: path.into(), err: source }
    }
    pub fn parquet(path: impl Into<PathBuf>, detail: impl ToString) -> Self {
        let detail = detail.to_string();
        if detail.contains("No space left on device") {
            return Error::DiskFull { path: path.into() };
        }
        Error::Parquet { path: path.into(), detail }
    }
    pub fn bad_value(
        path: impl Into<PathBuf>,
        row: usize,
        column: &str,
        detail: impl ToString,
    ) -> Self {
        Error::BadValue { path: path.into(), row, column: column.to_string(), detail: detail.to_string() }
    }
}
