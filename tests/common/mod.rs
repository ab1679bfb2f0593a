//! Shared helpers for the integration tests: run the real binaries in a fresh directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary `name` (cargo sets CARGO_BIN_EXE_<name> for integration tests).
pub fn bin(name: &str) -> PathBuf {
    let var = format!("CARGO_BIN_EXE_{name}");
    std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| panic!("{var} not set: run through cargo test"))
}

/// Records that a test skips part of its work and why: printed now (the harness hides it for a
/// passing test) and appended to target/skipped.txt, which `make test` prints at its end, so a
/// skip never reads as a pass.
pub fn skip(reason: &str) {
    eprintln!("SKIP: {reason}");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/skipped.txt");
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(file) {
        use std::io::Write;
        let _ = writeln!(f, "{test}: {reason}");
    }
}

pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name)).args(args).output().expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `o`, after asserting that its binary exited 0 (its stderr is the message otherwise).
pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// A path as the &str argument of a binary (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The shared data directory (`../shared/data/clipo` next to the repo), if this machine has it.
/// Tests that need it print why they skip when it is absent (a user's clone has no ../shared;
/// CI has it).
pub fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/clipo");
    if dir.is_dir() {
        Some(dir)
    } else {
        skip(&format!("{} is absent (tests that read the shared data sets run only where it exists)", dir.display()));
        None
    }
}

/// The SmolLM2-135M-Instruct GGUF (scripts/fetch_smollm2.sh puts it in models/; or
/// $CLIPO_SMOLLM2_GGUF). Tests of the real model print why they skip when it is absent.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = std::env::var_os("CLIPO_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!("no SmolLM2 GGUF at {} (run scripts/fetch_smollm2.sh or set CLIPO_SMOLLM2_GGUF)", path.display()));
        None
    }
}

/// SmolLM2 imported (f32) once per test binary into target/tmp/`name`.
pub fn smollm2_dir(name: &str) -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let dir = DIR
        .get_or_init(|| {
            let gguf = smollm2_gguf()?;
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
            let s = clipo::model::gguf::import_gguf(&gguf, &out, clipo::model::hf::SaveDtype::F32).unwrap();
            eprintln!("imported SmolLM2 in {:.2} s", s.read_s + s.write_s);
            Some(out)
        })
        .as_deref();
    if dir.is_none() {
        // Each test that goes without it says so (the import is tried once a process).
        skip("no SmolLM2 model (run scripts/fetch_smollm2.sh)");
    }
    dir
}

/// The tiny policy (seed 0) and the arithmetic task (default settings) made in `dir`:
/// (policy directory, train.parquet).
pub fn tiny_and_task(dir: &Path, n_train: usize, n_test: usize) -> (PathBuf, PathBuf) {
    let policy = dir.join("tiny");
    clipo::tiny::init_tiny(&policy, &clipo::tiny::TinyPreset::tiny(), 0).unwrap();
    let job = clipo::stages::data::ArithJob { out_dir: dir.join("data"), n_train, n_test, task: Default::default() };
    clipo::stages::data::run_arith(&job).unwrap();
    (policy, dir.join("data/train.parquet"))
}

/// A one-token trajectory row with the given keys, data source, ground truth and response text
/// (for tables the verifier and scorers read).
pub fn traj(pid: &str, idx: u32, ds: &str, gt: &str, response: &str) -> clipo::trajectories::Trajectory {
    clipo::trajectories::Trajectory {
        prompt_id: pid.into(),
        sample_idx: idx,
        data_source: ds.into(),
        ground_truth: gt.into(),
        prompt_text: "q".into(),
        response_text: response.into(),
        prompt_token_ids: vec![1, 2],
        response_token_ids: vec![3],
        response_logprobs: vec![-0.5],
        behavior_logprobs: vec![-0.5],
        finish_reason: clipo::trajectories::FinishReason::Eos,
        seed: 7,
        policy: "test".into(),
        hidden: None,
    }
}
