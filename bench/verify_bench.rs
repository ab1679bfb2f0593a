//! Throughput of `clipo::verify::compute_score` (REFERENCE.md §5): 100,000
//! responses, the fixture's realistic cases repeated, verified on one thread.
//! The Python reference does about 1,000 responses/s.
//!
//!     cargo bench --bench verify_bench

use std::hint::black_box;
use std::time::Instant;

use clipo::verify::compute_score;

/// Responses verified in the timed run.
const RESPONSES: usize = 100_000;

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/verify_cases.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let cases: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let f = |k: &str| v[k].as_str().map(str::to_string);
            Some((f("data_source")?, f("response")?, f("ground_truth")?))
        })
        .collect();
    assert!(!cases.is_empty(), "{path}: no cases");
    // warm-up: compiles the lazily built regexes
    for (ds, r, gt) in cases.iter().take(1000) {
        black_box(compute_score(ds, r, gt));
    }
    let start = Instant::now();
    let mut correct = 0usize;
    for (ds, r, gt) in cases.iter().cycle().take(RESPONSES) {
        correct += black_box(compute_score(ds, r, gt)).correct as usize;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "verify_bench: {RESPONSES} responses ({} distinct, {correct} correct) in {secs:.3} s = {:.0} responses/s",
        cases.len(),
        RESPONSES as f64 / secs
    );
}
