//! Throughput of clipo-verify's scorer paths (issue 22), the whole stage as the binary runs it
//! (read, score, write): the built-in verifiers on threads against scorer programs (a trivial
//! Python scorer, and a verl reward file through scripts/verl_scorer.py) with 1 and 2 workers.
//! ROWS responses of GSM8K-like text ("... #### 72"), every run `--force`.
//!
//!     cargo bench --bench scorer_bench            (ROWS=5000 by default)

use std::path::Path;
use std::time::{Duration, Instant};

use clipo::schema::trajectories as tr;
use clipo::stages::verify::{run, VerifyConfig};
use clipo::table::{Provenance, TableWriter};
use clipo::trajectories::{trajectories_batch, FinishReason, Trajectory};
use clipo::verify::dispatch::{Dispatch, Scorer};

/// The trivial scorer: parse the request, answer a constant.
const TRIVIAL: &str = "import json, sys\nfor line in sys.stdin:\n    json.loads(line)\n    print('{\"score\": 1.0}')\n";

/// A verl reward file: verl's own gsm8k scorer, as a user would copy it.
const VERL_FILE: &str = r#"
import re

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    solution_str = solution_str[-300:]
    found = re.findall('#### (\\-?[0-9\\.\\,]+)', solution_str)
    answer = found[-1].replace(',', '').replace('$', '') if found else None
    return 1.0 if answer == ground_truth else 0.0
"#;

fn main() {
    let rows: usize = std::env::var("ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("t.parquet");
    write_input(&input, rows);
    std::fs::write(dir.path().join("trivial.py"), TRIVIAL).unwrap();
    std::fs::write(dir.path().join("my_reward.py"), VERL_FILE).unwrap();
    let verl_scorer = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verl_scorer.py");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let program = |cmd: String| Scorer::Program(cmd);
    let trivial = format!("python3 {}", dir.path().join("trivial.py").display());
    let verl = format!("python3 {} {}", verl_scorer.display(), dir.path().join("my_reward.py").display());
    let cases: Vec<(String, Scorer, usize, usize)> = vec![
        ("built-in conrl, 1 thread".into(), Scorer::Conrl, 1, 1),
        (format!("built-in conrl, {cpus} threads"), Scorer::Conrl, cpus, 1),
        ("built-in gsm8k, 1 thread".into(), Scorer::parse("gsm8k").unwrap(), 1, 1),
        ("trivial Python scorer, 1 worker".into(), program(trivial.clone()), 1, 1),
        ("trivial Python scorer, 2 workers".into(), program(trivial), 1, 2),
        ("verl reward file via verl_scorer.py, 1 worker".into(), program(verl.clone()), 1, 1),
        ("verl reward file via verl_scorer.py, 2 workers".into(), program(verl), 1, 2),
    ];
    println!("scorer_bench: {rows} responses, the whole stage (read, score, write), best of 3");
    for (name, scorer, threads, workers) in cases {
        let cfg = VerifyConfig {
            input: input.clone(),
            output: dir.path().join("r.parquet"),
            threads,
            dispatch: Dispatch { rules: vec![], default: scorer },
            scorer_workers: workers,
            scorer_timeout: Duration::from_secs(60),
            force: true,
        };
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                let out = run(&cfg).expect("the stage runs");
                assert_eq!(out.rows, rows);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("  {name:<48} {best:>7.3} s  {:>9.0} responses/s", rows as f64 / best);
    }
}

/// `rows` GSM8K-like responses of about 300 characters, half of them right.
fn write_input(path: &Path, rows: usize) {
    let body = "Natalia sold 48 clips in April and half as many in May, so 48 / 2 = 24 in May. ".repeat(4);
    let t: Vec<Trajectory> = (0..rows)
        .map(|i| Trajectory {
            prompt_id: format!("p{}", i / 8),
            sample_idx: (i % 8) as u32,
            data_source: "openai/gsm8k".into(),
            ground_truth: "72".into(),
            prompt_text: "q".into(),
            response_text: format!("{body}Altogether \\boxed{{{0}}}\n#### {0}", if i % 2 == 0 { 72 } else { 71 }),
            prompt_token_ids: vec![1],
            response_token_ids: vec![2],
            response_logprobs: vec![-0.5],
            behavior_logprobs: vec![-0.5],
            finish_reason: FinishReason::Eos,
            seed: 0,
            policy: "bench".into(),
            hidden: None,
        })
        .collect();
    let batch = trajectories_batch(&t, 0).unwrap();
    let prov = Provenance { table: tr::TABLE, stage: "bench", config: serde_json::json!({}), inputs: vec![] };
    let mut w = TableWriter::create(path, batch.schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}
