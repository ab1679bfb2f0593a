//! clipo: reinforcement learning from verifiable rewards with CLIPO's contrastive reward, as
//! four Unix-style stages that exchange Parquet files.
//!
//! - [`schema`]: the tables the stages exchange, declared once.
//! - [`table`]: reading them with schema checks, writing them atomically with provenance.
//! - [`prompts`]: the verl prompts schema and JSONL.
//! - [`stages`]: one module per binary: parse-free, checked configs and a `run`.

pub mod error;
pub mod stages;
pub mod trajectories;
pub mod verify;
pub mod optim;
pub mod prompts;
pub mod rl;
pub mod schema;
pub mod table;
pub mod task;

pub use error::{Error, Result};
