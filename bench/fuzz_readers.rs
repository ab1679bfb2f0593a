//! Fuzzes the readers of users' files for a fixed time (default 60 s; FUZZ_SECONDS, FUZZ_SEED)
//! and prints the executions and every panic found (inputs kept under FUZZ_DIR, default a
//! temporary directory). See bench/fuzz/mod.rs.
//!
//!     FUZZ_SECONDS=300 cargo bench --bench fuzz_readers

#[path = "fuzz/mod.rs"]
mod fuzz;

fn main() {
    let secs: f64 = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("FUZZ_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::time::Instant::now();
    let r = fuzz::run(&dir, seed, |_| start.elapsed().as_secs_f64() < secs);
    let t = start.elapsed().as_secs_f64();
    println!(
        "fuzz_readers: {} executions in {t:.1} s ({:.0}/s), seed {seed}: {} read, {} named errors, {} panics",
        r.executions,
        r.executions as f64 / t,
        r.ok,
        r.errors,
        r.panics.len()
    );
    for (reader, path, msg) in &r.panics {
        println!("PANIC in {reader}: {} ({msg})", path.display());
    }
}
