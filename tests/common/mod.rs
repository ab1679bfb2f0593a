//! Shared helpers for the integration tests: run the real binaries in a fresh directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary `name` (cargo sets CARGO_BIN_EXE_<name> for integration tests).
pub fn bin(name: &str) -> PathBuf {
    let var = format!("CARGO_BIN_EXE_{name}");
    std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| panic!("{var} not set: run through cargo test"))
}

pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name)).args(args).output().expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shared data directory (`../shared/data/clipo` next to the repo), if this machine has it.
/// Tests that need it print why they skip when it is absent (a user's clone has no ../shared;
/// CI has it).
pub fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/clipo");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: {} is absent (tests that read the shared data sets run only where it exists)", dir.display());
        None
    }
}
