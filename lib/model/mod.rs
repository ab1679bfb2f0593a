//! The policy model: Llama, Qwen2, Qwen3 and Mistral decoders in candle, exact against Hugging
//! Face transformers, trainable, with batched KV-cache sampling and teacher-forced scoring.
//!
//! - [`config`]: `Config` from a Hugging Face `config.json` (Llama with Llama 3.x rope scaling,
//!   Qwen2, Qwen3, Mistral), with the checks.
//! - [`transformer`]: loading a Hugging Face directory into trainable `Var`s, the decoder and
//!   its two forward paths (a differentiable one built only from ops that backpropagate, and a
//!   fused no-grad one for sampling and frozen scoring; they agree to ~3e-6 in f32).
//! - [`sample`]: batched sampling (left padding, per-row positions, per-sample RNG streams) that
//!   returns tokens, the sampler's log-probs, the finish reason and the pooled hidden state
//!   (REFERENCE.md §1-2).
//! - [`hf`], [`gguf`], [`tokenizer`], [`chat`]: model directories: loading and saving them the
//!   way transformers does, importing llama.cpp GGUF files, tokenizers and chat templates.
//! - [`train`]: the training pass with bounded memory: gradient checkpointing and chunked
//!   log-probs, by segments whose backwards chain through leaves.
//! - [`plan`]: the memory plan of a training step from `config.json` alone (`clipo-update --plan`).
//! - [`score`]: teacher-forced log-probs (and entropies) of response tokens, with and without a
//!   graph, and the `mean` pooled hidden state.
//! - `ops` (crate-private): fused CPU kernels for f32/f64 with hand-written backward passes
//!   (RMSNorm, rope, causal softmax attention, SiLU x up, target-token log-prob) and a
//!   weight-streaming matmul for decoding; both paths use them on the CPU in f32/f64, the
//!   composed candle ops remain for other devices and half precision.
//!
//! Why not candle-transformers: its llama drops gradients (fused rms-norm / rope / softmax have no
//! backward), keeps logits for the last position only, has no hidden states and no padding mask.

pub mod chat;
pub mod config;
pub(crate) mod device_pick;
pub(crate) mod exp;
pub mod gguf;
pub mod hf;
pub(crate) mod ops;
pub mod plan;
pub mod sample;
pub mod score;
pub mod tokenizer;
pub mod train;
pub mod transformer;

pub use config::{Config, Family};
pub use sample::{FinishReason, Sample, SampleParams, SampleRequest, StopCheck};
pub use score::{Scored, Sequence};
pub use train::{Memory, TrainPass};
pub use transformer::Model;
pub use ops::{composed, set_composed};

/// Errors of the model module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    /// (`err` is not a `source`: its text is in the message already, and `{:#}` would print it twice.)
    #[error("cannot read {path}: {err}")]
    Io {
        path: String,
        err: std::io::Error,
    },
    /// `config.json` is malformed or inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// The checkpoint uses an architecture or option this module does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The weights do not match the configuration (missing, unexpected or mis-shaped tensors).
    #[error("weights: {0}")]
    Weights(String),
    /// Bad arguments to a model call (empty prompt, inconsistent lengths, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// An error from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result with the model module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
