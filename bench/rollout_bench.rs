//! The rollout sampler on SmolLM2-135M-Instruct (f32, CPU), beside transformers' batched
//! `generate` (bench/rollout_torch.py, same prompt token ids): `bench/rollout_bench.sh` runs both.
//!
//! Phases (one timed run each; tokens/s = generated tokens, the stop token included / wall):
//! - `greedy_b1`: greedy, one prompt at a time (the sampler before prompts were decoded
//!   together: `--batch-size 1`), over the first `ROLLOUT_BENCH_B1_PROMPTS` (16) prompts;
//! - `greedy_b16`, `greedy_b64`: greedy, continuous batching 16 / 64 rows wide (`--batch-size
//!   16` / `64`) over the 64 prompts;
//! - `sampled_groups`: one prompt's G = 16 samples at a time (the sampler before this issue:
//!   each group until its longest row ends), over the first `ROLLOUT_BENCH_GROUP_PROMPTS` (4);
//! - `sampled_drain64`: 4 prompts x 16 decoded together, finished rows leave and nothing takes
//!   their place (prompts decoded together, no continuous batching), over the 16 prompts;
//! - `sampled_cont64`: continuous batching 64 rows wide (`--batch-size 4`, G = 16) over 16 x 16;
//! - `sampled_all`: all 256 rows in one batch.
//! Sampling: temperature 1, top-p 1, top-k off, 256 new tokens, stop at `<|im_end|>`; sample s of
//! prompt i has seed 100 i + s in every phase, so the phases make the same tokens.
//!
//! Environment: `ROLLOUT_BENCH_DIR` (models/smollm2-135m-instruct), `ROLLOUT_BENCH_INPUTS`
//! (bench/results/rollout_inputs.json, written by rollout_torch.py), `ROLLOUT_BENCH_PHASES`.
//! Output: one JSON line on stdout, progress on stderr.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use clipo::model::{Model, Sample, SampleParams, SampleRequest};
use serde_json::{json, Value};

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// Runs `go` once; returns its samples' token count and the wall seconds.
fn timed(name: &str, go: impl FnOnce() -> Vec<Sample>) -> Value {
    let t = Instant::now();
    let out = go();
    let wall = t.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(|s| s.tokens.len()).sum();
    eprintln!("[{name}] {wall:.1}s {tokens} tokens {:.1} tok/s ({} rows)", tokens as f64 / wall, out.len());
    json!({ "wall_s": wall, "tokens": tokens, "rows": out.len(), "tok_s": tokens as f64 / wall,
            "lens": out.iter().map(|s| s.tokens.len()).collect::<Vec<_>>() })
}

fn continuous(model: &Model, reqs: &[SampleRequest], params: &SampleParams, width: usize) -> Vec<Sample> {
    let mut out: Vec<Option<Sample>> = vec![None; reqs.len()];
    model
        .sample_continuous(reqs, params, width, |i, s| {
            out[i] = Some(s);
            Ok::<(), ()>(())
        })
        .expect("sample");
    out.into_iter().map(|s| s.expect("sampled")).collect()
}

fn main() {
    let dir = PathBuf::from(env("ROLLOUT_BENCH_DIR", "models/smollm2-135m-instruct"));
    let inputs = PathBuf::from(env("ROLLOUT_BENCH_INPUTS", "bench/results/rollout_inputs.json"));
    let phases = env("ROLLOUT_BENCH_PHASES", "greedy_b1,greedy_b16,greedy_b64,sampled_groups,sampled_drain64,sampled_cont64,sampled_all");
    let b1_prompts: usize = env("ROLLOUT_BENCH_B1_PROMPTS", "16").parse().expect("ROLLOUT_BENCH_B1_PROMPTS");
    let group_prompts: usize = env("ROLLOUT_BENCH_GROUP_PROMPTS", "4").parse().expect("ROLLOUT_BENCH_GROUP_PROMPTS");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&inputs).expect("run bench/rollout_torch.py first")).expect("inputs json");
    let prompts: Vec<Vec<u32>> = serde_json::from_value(v["prompts"].clone()).expect("prompts");
    let eos = v["eos"].as_u64().expect("eos") as u32;
    let max_new = v["max_new"].as_u64().expect("max_new") as usize;
    let (ng, ns, g) = (v["greedy_prompts"].as_u64().unwrap() as usize, v["sampled_prompts"].as_u64().unwrap() as usize, v["g"].as_u64().unwrap() as usize);
    let model = Model::load(&dir, &Device::Cpu, DType::F32).expect("model");
    let greedy = SampleParams::greedy(max_new, vec![eos]);
    let sampled = SampleParams::sampling(max_new, 1.0, vec![eos]);
    let greedy_reqs: Vec<SampleRequest> = prompts[..ng].iter().map(|p| SampleRequest { prompt: p, seed: 0 }).collect();
    let sampled_reqs: Vec<SampleRequest> =
        (0..ns).flat_map(|i| (0..g).map(move |s| (i, s))).map(|(i, s)| SampleRequest { prompt: &prompts[i], seed: (100 * i + s) as u64 }).collect();
    // Warm-up: two short prompts.
    model.sample(&greedy_reqs[..2], &SampleParams::greedy(8, vec![eos])).expect("warm-up");

    let mut res = serde_json::Map::new();
    res.insert("threads".into(), json!(rayon::current_num_threads()));
    for phase in phases.split(',') {
        let r = match phase {
            "greedy_b1" => timed(phase, || greedy_reqs[..b1_prompts.min(ng)].iter().flat_map(|r| model.sample(&[*r], &greedy).expect("sample")).collect()),
            "greedy_b16" => timed(phase, || continuous(&model, &greedy_reqs, &greedy, 16)),
            "greedy_b64" => timed(phase, || continuous(&model, &greedy_reqs, &greedy, 64)),
            "sampled_groups" => timed(phase, || sampled_reqs[..group_prompts.min(ns) * g].chunks(g).flat_map(|c| model.sample(c, &sampled).expect("sample")).collect()),
            "sampled_drain64" => timed(phase, || sampled_reqs.chunks(4 * g).flat_map(|c| model.sample(c, &sampled).expect("sample")).collect()),
            "sampled_cont64" => timed(phase, || continuous(&model, &sampled_reqs, &sampled, 4 * g)),
            "sampled_all" => timed(phase, || model.sample(&sampled_reqs, &sampled).expect("sample")),
            other => panic!("unknown phase {other}"),
        };
        res.insert(phase.into(), r);
    }
    println!("{}", Value::Object(res));
}
