//! clipo: reinforcement learning from verifiable rewards with CLIPO's contrastive reward, as
//! four Unix-style stages that exchange Parquet files.
//!
//! - [`schema`]: the tables the stages exchange, declared once; [`table`]: reading them with
//!   schema checks, writing them atomically with provenance; [`prompts`], [`trajectories`].
//! - [`verify`]: the reference verifier (REFERENCE.md §5), verl's gsm8k scorer, users' scorer
//!   programs and the choice per data source.
//! - [`model`]: Llama/Qwen2/Qwen3/Mistral in candle, trainable, with sampling; GGUF import, tokenizers, chat
//!   templates, Hugging Face directories. [`policy`]: a model directory as the stages use it.
//! - [`rl`]: advantages, policy losses, KL (REFERENCE.md §6); [`optim`]: AdamW; [`schedule`]:
//!   the learning-rate schedule and the adaptive KL coefficient.
//! - [`task`]: the embedded arithmetic task; [`stepcheck`]: its step checker (process-correct,
//!   lucky or wrong); [`seed`]: every random draw's seed.
//! - [`args`], [`paths`]: numeric flags in range, outputs never aliasing inputs; [`interrupt`]:
//!   what a stage says when Ctrl-C stops it.
//! - [`stages`]: one module per binary: checked configs and a `run`; [`threads`]: where it runs.
//! - [`engine`]: sampling through inference servers (SGLang, vLLM, llama.cpp) for clipo-rollout.

pub mod args;
pub mod checkpoint;
pub mod contrastive;
pub mod engine;
pub mod error;
pub mod interrupt;
pub mod lock;
pub mod model;
pub mod optim;
pub mod paths;
pub mod policy;
pub mod progress;
pub mod prompts;
pub mod report;
pub mod rl;
pub mod runlog;
pub mod schedule;
pub mod schema;
pub mod seed;
pub mod stages;
pub mod stepcheck;
pub mod table;
pub mod task;
pub mod threads;
pub mod tiny;
pub mod trajectories;
pub mod verify;


pub use error::{Error, Result};
