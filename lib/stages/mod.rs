//! One module per binary. Each holds the stage's checked config (built once from the binary's
//! raw clap arguments) and a `run` that reads, checks, computes and writes atomically.

pub mod data;
pub mod embed;
pub mod filter;
pub mod rollout;
pub mod update;
pub mod verify;

/// Print one line of stage progress or summary to stderr.
pub fn note(stage: &str, msg: impl std::fmt::Display) {
    eprintln!("{stage}: {msg}");
}
