//! SmolLM2-135M-Instruct (f32) on the CPU: the same work as `../shared/bench/torch/torch_baseline.py`
//! with its exact inputs (`torch_baseline_inputs.json`), so the two can be put side by side
//! (`bench/run_side_by_side.sh` runs both and writes `bench/README.md`'s table).
//!
//! Phases (median of `MODEL_BENCH_RUNS` timed runs after `MODEL_BENCH_WARMUP` untimed ones):
//! - `gen_b8`, `gen_b1`: sampling of the 8 chat-formatted GSM8K prompts (and the first alone),
//!   KV cache, temperature 1, top-p 1, top-k off, 128 new tokens, stop at `<|im_end|>`;
//!   `*_fixed`: no stop token, every row makes 128 tokens.
//! - `logprob`: the no-grad log-prob pass over the 8 x 256 training batch (response = the last
//!   98 columns).
//! - `train`: `response_logprobs` with a graph, PPO-clip token-mean loss (clip 0.2, the JSON's
//!   advantages, old log-probs = reference + 0.05 N(0,1)), backward, AdamW (lr 1e-6, wd 0.01),
//!   split into forward (+ loss), backward (+ gradient collection) and optimizer.
//! - `floor`: the `gemm` matmul rate here (candle's matmul on a (2048, 576) x (576, 1536) product,
//!   the MLP's shape) and the read bandwidth (a 512 MiB sum), for the floors in the README.
//! - `scale` (off by default): the train step and the no-grad pass over batch 1/2/4/8 at
//!   sequence 256 and sequence 512/1024 at batch 8, in torch_baseline.py's layout at those
//!   sizes (one run each, after `MODEL_BENCH_WARMUP` warm-ups).
//!
//! Peak RSS is VmHWM after each phase. Output: one JSON line on stdout (progress on stderr).
//! Environment: `MODEL_BENCH_DIR` (default models/smollm2-135m-instruct), `MODEL_BENCH_INPUTS`
//! (default ../shared/bench/torch/torch_baseline_inputs.json), `MODEL_BENCH_PHASES`
//! (default gen,logprob,train,floor), `MODEL_BENCH_RUNS` (3), `MODEL_BENCH_WARMUP` (1),
//! `MODEL_BENCH_SCALE_GRID` (the scaling sizes as `B:T` pairs; run_side_by_side.sh passes the
//! grid it runs torch_baseline.py over).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clipo::model::{Model, SampleParams, SampleRequest, Sequence};
use clipo::optim::{collect_grads, AdamWConfig, Grads, Optimizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde_json::{json, Value};

fn log(msg: &str) {
    eprintln!("{msg}");
}

fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

#[path = "proc_status.rs"]
mod proc_status;
use proc_status::status_kib;

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) / 100.0
}

/// Busy jiffies of the whole machine and of this process, for the share of CPU other
/// processes took during a run (as the torch script's CpuMeter).
fn snap() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0, 0.0);
    }
    let total: f64 = v[..8].iter().sum();
    let idle = v[3] + v[4];
    (total, total - idle, cpu_seconds() * 100.0)
}

struct Run<T> {
    out: T,
    wall: f64,
    cpu: f64,
    foreign: f64,
}

fn timed<T>(f: impl FnOnce() -> T) -> Run<T> {
    let a = snap();
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let out = f();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - c0;
    let b = snap();
    let dt = b.0 - a.0;
    let foreign = if dt > 0.0 { ((b.1 - a.1) - (b.2 - a.2)).max(0.0) / dt } else { 0.0 };
    Run { out, wall, cpu, foreign }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

struct Inputs {
    prompts: Vec<Vec<u32>>,
    train_prompts: Vec<Vec<u32>>,
    train_responses: Vec<Vec<u32>>,
    advantages: Vec<f32>,
    eos: u32,
}

fn read_inputs(path: &PathBuf) -> Inputs {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("inputs json");
    let rows = |k: &str| -> Vec<Vec<u64>> { serde_json::from_value(v[k].clone()).expect(k) };
    let strip = |ids: &[Vec<u64>], mask: &[Vec<u64>], upto: usize| -> Vec<Vec<u32>> {
        ids.iter()
            .zip(mask)
            .map(|(r, m)| r[..upto.min(r.len())].iter().zip(m).filter(|(_, &m)| m == 1).map(|(&x, _)| x as u32).collect())
            .collect()
    };
    let pids = rows("prompt_input_ids_left_padded");
    let pmask = rows("prompt_attention_mask");
    let tids = rows("train_input_ids");
    let tmask = rows("train_attention_mask");
    let start = v["response_start"].as_u64().expect("response_start") as usize;
    let prompts = strip(&pids, &pmask, usize::MAX);
    let train_prompts = strip(&tids, &tmask, start);
    let train_responses = tids.iter().map(|r| r[start..].iter().map(|&x| x as u32).collect()).collect();
    let advantages: Vec<f32> = serde_json::from_value(v["advantages"].clone()).expect("advantages");
    Inputs { prompts, train_prompts, train_responses, advantages, eos: v["eos_token_id"].as_u64().unwrap_or(2) as u32 }
}

/// Sampling phase: 8 (or 1) prompts x 128 new tokens, with or without the stop token.
fn bench_gen(model: &Model, prompts: &[Vec<u32>], eos: u32, fixed: bool, runs: usize, warmup: usize, name: &str) -> Value {
    let params = SampleParams::sampling(128, 1.0, if fixed { vec![] } else { vec![eos] });
    let go = |seed: u64| {
        let reqs: Vec<SampleRequest> =
            prompts.iter().enumerate().map(|(i, p)| SampleRequest { prompt: p, seed: seed * 1000 + i as u64 }).collect();
        let out = model.sample(&reqs, &params).expect("sample");
        out.iter().map(|s| s.tokens.len()).collect::<Vec<_>>()
    };
    for w in 0..warmup {
        go(1000 + w as u64);
    }
    let (mut walls, mut cpus, mut tps, mut toks, mut foreign, mut lens) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in 0..runs {
        let run = timed(|| go(r as u64));
        let n: usize = run.out.iter().sum();
        log(&format!(
            "[{name}] run {r}: {:.3}s (cpu {:.2}s), {n} tokens, {:.1} tok/s, foreign cpu {:.1}%",
            run.wall,
            run.cpu,
            n as f64 / run.wall,
            run.foreign * 100.0
        ));
        walls.push(run.wall);
        cpus.push(run.cpu);
        tps.push(n as f64 / run.wall);
        toks.push(n);
        foreign.push(r4(run.foreign));
        lens.push(run.out);
    }
    json!({
        "wall_s_median": r4(median(&walls)), "wall_s_runs": walls.iter().map(|x| r4(*x)).collect::<Vec<_>>(),
        "cpu_s_median": r4(median(&cpus)), "real_tokens_runs": toks,
        "tokens_per_s_median": r4(median(&tps)), "tokens_per_s_runs": tps.iter().map(|x| r4(*x)).collect::<Vec<_>>(),
        "row_lens_runs": lens, "foreign_cpu_runs": foreign,
    })
}

fn seqs_of<'a>(prompts: &'a [Vec<u32>], responses: &'a [Vec<u32>]) -> Vec<Sequence<'a>> {
    prompts.iter().zip(responses).map(|(p, r)| Sequence { prompt: p, response: r }).collect()
}

fn bench_logprob(model: &Model, seqs: &[Sequence], runs: usize, warmup: usize) -> (Value, Tensor) {
    let go = || model.response_logprobs_nograd(seqs, 1.0, seqs.len()).expect("logprobs");
    for _ in 0..warmup {
        go();
    }
    let (mut ts, mut cpus, mut foreign) = (vec![], vec![], vec![]);
    let mut last = None;
    for r in 0..runs {
        let run = timed(go);
        log(&format!("[logprob] run {r}: {:.3}s (cpu {:.2}s), foreign cpu {:.1}%", run.wall, run.cpu, run.foreign * 100.0));
        ts.push(run.wall);
        cpus.push(run.cpu);
        foreign.push(r4(run.foreign));
        last = Some(run.out);
    }
    let s = last.expect("runs > 0");
    let tokens: usize = seqs.iter().map(|s| s.prompt.len().max(1) + s.response.len()).sum::<usize>();
    let n = s.mask.sum_all().unwrap().to_scalar::<f32>().unwrap();
    let mean = s.logprobs.sum_all().unwrap().to_scalar::<f32>().unwrap() / n;
    let v = json!({
        "s_median": r4(median(&ts)), "s_runs": ts.iter().map(|x| r4(*x)).collect::<Vec<_>>(),
        "cpu_s_median": r4(median(&cpus)),
        "tokens_per_s_median": r4(tokens as f64 / median(&ts)), "mean_logp": r4(mean as f64),
        "foreign_cpu_runs": foreign,
    });
    (v, s.logprobs)
}

/// One PPO-clip step; returns (fwd, bwd, opt) seconds (wall and cpu) and the loss.
struct StepTimes {
    fwd: f64,
    bwd: f64,
    opt: f64,
    cpu: f64,
    foreign: f64,
    loss: f32,
}

fn train_step(model: &Model, seqs: &[Sequence], old: &Tensor, adv: &Tensor, opt: &mut Optimizer, hp: &AdamWConfig) -> StepTimes {
    let vars = model.vars();
    let (a0, c0) = (snap(), cpu_seconds());
    let t0 = Instant::now();
    let s = model.response_logprobs(seqs, 1.0).expect("response_logprobs");
    let ratio = (&s.logprobs - old).unwrap().exp().unwrap();
    let neg_a = adv.neg().unwrap();
    let pg1 = ratio.broadcast_mul(&neg_a).unwrap();
    let pg2 = ratio.clamp(0.8f32, 1.2f32).unwrap().broadcast_mul(&neg_a).unwrap();
    let loss = pg1.maximum(&pg2).unwrap().mean_all().unwrap();
    let loss_v = loss.to_scalar::<f32>().unwrap();
    let t1 = Instant::now();
    let store = loss.backward().expect("backward");
    let mut grads = Grads::new();
    collect_grads(&vars, &store, &mut grads).expect("grads");
    drop(store);
    drop(s);
    let t2 = Instant::now();
    opt.step(&vars, &grads, None, hp).expect("adamw");
    let t3 = Instant::now();
    let b = snap();
    let dt = b.0 - a0.0;
    StepTimes {
        fwd: (t1 - t0).as_secs_f64(),
        bwd: (t2 - t1).as_secs_f64(),
        opt: (t3 - t2).as_secs_f64(),
        cpu: cpu_seconds() - c0,
        foreign: if dt > 0.0 { ((b.1 - a0.1) - (b.2 - a0.2)).max(0.0) / dt } else { 0.0 },
        loss: loss_v,
    }
}

fn bench_train(model: &Model, seqs: &[Sequence], logp_ref: &Tensor, advantages: &[f32], runs: usize, warmup: usize) -> Value {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (b, r) = logp_ref.dims2().unwrap();
    let noise: Vec<f32> = (0..b * r).map(|_| { let x: f32 = StandardNormal.sample(&mut rng); 0.05 * x }).collect();
    let old = (logp_ref + Tensor::from_vec(noise, (b, r), &Device::Cpu).unwrap()).unwrap();
    let adv = Tensor::from_vec(advantages.to_vec(), (b, 1), &Device::Cpu).unwrap();
    let hp = AdamWConfig::new(1e-6, 0.01);
    let mut opt = Optimizer::default();
    for _ in 0..warmup {
        train_step(model, seqs, &old, &adv, &mut opt, &hp);
    }
    let mut all = vec![];
    for i in 0..runs {
        let st = train_step(model, seqs, &old, &adv, &mut opt, &hp);
        log(&format!(
            "[train] run {i}: {:.3}s (fwd+loss {:.3}, bwd {:.3}, adamw {:.3}; cpu {:.2}s) loss {:.5}, foreign cpu {:.1}%",
            st.fwd + st.bwd + st.opt,
            st.fwd,
            st.bwd,
            st.opt,
            st.cpu,
            st.loss,
            st.foreign * 100.0
        ));
        all.push(st);
    }
    let col = |f: &dyn Fn(&StepTimes) -> f64| r4(median(&all.iter().map(f).collect::<Vec<_>>()));
    json!({
        "s_per_step_median": col(&|s| s.fwd + s.bwd + s.opt),
        "s_runs": all.iter().map(|s| r4(s.fwd + s.bwd + s.opt)).collect::<Vec<_>>(),
        "fwd_loss_s_median": col(&|s| s.fwd), "bwd_s_median": col(&|s| s.bwd), "adamw_s_median": col(&|s| s.opt),
        "cpu_s_median": col(&|s| s.cpu),
        "loss_runs": all.iter().map(|s| s.loss).collect::<Vec<_>>(),
        "foreign_cpu_runs": all.iter().map(|s| r4(s.foreign)).collect::<Vec<_>>(),
        "optimizer": "clipo::optim AdamW (lr 1e-6, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01), in place, f64 per element",
    })
}

/// The gemm matmul rate (GFLOP/s) through candle on the MLP's shape, best of 5, and the
/// single-thread rate; and the read bandwidth (GB/s) of a 512 MiB sum over all threads.
fn bench_floor() -> Value {
    let dev = Device::Cpu;
    let (m, k, n) = (2048usize, 576usize, 1536usize);
    let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
    let flops = 2.0 * (m * k * n) as f64;
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let y = a.matmul(&w.t().unwrap()).unwrap();
        let dt = t.elapsed().as_secs_f64();
        drop(y);
        best = best.max(flops / dt / 1e9);
    }
    // Same through gemm directly, one thread.
    let av: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let mut dst = vec![0f32; m * n];
    let mut best1 = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        unsafe {
            gemm::gemm(
                m, n, k, dst.as_mut_ptr(), 1, n as isize, false, av.as_ptr(), 1, k as isize, wv.as_ptr(), k as isize, 1,
                0.0, 1.0, false, false, false, gemm::Parallelism::None,
            );
        }
        best1 = best1.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    let big: Vec<f32> = (0..(128usize << 20)).map(|i| (i % 7) as f32).collect();
    let mut bw = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: f32 = big
            .par_chunks(1 << 16)
            .map(|c| {
                // 16 independent sums so the loop vectorises (a plain f32 sum is one long chain)
                let mut acc = [0f32; 16];
                for ch in c.chunks_exact(16) {
                    for l in 0..16 {
                        acc[l] += ch[l];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        bw = bw.max((big.len() * 4) as f64 / dt / 1e9);
    }
    json!({"gemm_gflops": r4(best), "gemm_gflops_1thread": r4(best1), "gemm_shape": [m, k, n], "read_bw_gbs": r4(bw)})
}

/// FLOPs of the model's work, for the floors: per token of the linear layers (without the
/// embedding), the attention products, and lm_head per scored token.
fn flop_counts(model: &Model) -> Value {
    let c = model.config();
    let (d, i, l, h, kv, hd, v) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_hidden_layers as f64,
        c.num_attention_heads as f64,
        c.num_key_value_heads() as f64,
        c.head_dim() as f64,
        c.vocab_size as f64,
    );
    let linear_params = l * (d * h * hd + 2.0 * d * kv * hd + h * hd * d + 3.0 * d * i);
    let weight_bytes: f64 = model.vars().iter().map(|(_, v)| v.as_tensor().elem_count() as f64 * 4.0).sum();
    json!({"linear_params": linear_params, "lm_head_params": v * d, "layers": l, "heads": h, "head_dim": hd,
           "weight_bytes": weight_bytes})
}

/// The default batch / sequence-length grid of the scaling table (`MODEL_BENCH_SCALE_GRID`).
/// Sequence 128 is absent: the GSM8K chat prompts pad to 158 tokens.
const SCALE_GRID: &str = "1:256 2:256 4:256 8:256 8:512 8:1024";

/// `B:T` pairs separated by spaces.
fn scale_grid() -> Vec<(usize, usize)> {
    let grid = std::env::var("MODEL_BENCH_SCALE_GRID").unwrap_or_else(|_| SCALE_GRID.into());
    grid.split_whitespace()
        .map(|bt| {
            let (b, t) = bt.split_once(':').unwrap_or_else(|| panic!("MODEL_BENCH_SCALE_GRID: {bt:?} is not B:T"));
            let n = |x: &str| x.parse::<usize>().unwrap_or_else(|_| panic!("MODEL_BENCH_SCALE_GRID: {bt:?} is not B:T"));
            (n(b), n(t))
        })
        .collect()
}

/// torch_baseline.py's layout at `--batch b --seq-len t`: the first b GSM8K prompts, left-padded
/// to the longest (P tokens), each followed by t - P random response tokens, so every row is
/// exactly t tokens and the two implementations do the same work.
fn scale_table(model: &Model, prompts: &[Vec<u32>], vocab: u32, warmup: usize) -> Value {
    let mut rows = vec![];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (b, t) in scale_grid() {
        let prompts = &prompts[..b];
        let p = prompts.iter().map(|x| x.len()).max().unwrap_or(0);
        let resps: Vec<Vec<u32>> = (0..b).map(|_| (0..t - p).map(|_| rng.random_range(3..vocab)).collect()).collect();
        let seqs = seqs_of(prompts, &resps);
        let adv = Tensor::from_vec((0..b).map(|i| if i % 2 == 0 { 1f32 } else { -1.0 }).collect::<Vec<_>>(), (b, 1), &Device::Cpu).unwrap();
        // The last of warmup + 1 runs is the one reported (torch_baseline.py's --warmup, --runs 1);
        // one optimizer throughout, so the timed AdamW step has its moments already, as torch's.
        let mut opt = Optimizer::default();
        let mut measure = || {
            let lp = timed(|| model.response_logprobs_nograd(&seqs, 1.0, b).unwrap());
            let st = train_step(model, &seqs, &lp.out.logprobs, &adv, &mut opt, &AdamWConfig::new(0.0, 0.0));
            (lp, st)
        };
        let mut last = measure();
        for _ in 0..warmup {
            last = measure();
        }
        let (lp, st) = last;
        log(&format!(
            "[scale] batch {b} seq {t}: logprob {:.3}s, train {:.3}s (fwd {:.3}, bwd {:.3}, adamw {:.3}), peak rss {:.0} MiB",
            lp.wall,
            st.fwd + st.bwd + st.opt,
            st.fwd,
            st.bwd,
            st.opt,
            peak_rss_mib()
        ));
        rows.push(json!({"batch": b, "seq_len": t, "logprob_s": r4(lp.wall), "train_s": r4(st.fwd + st.bwd + st.opt),
                         "fwd_s": r4(st.fwd), "bwd_s": r4(st.bwd), "adamw_s": r4(st.opt), "foreign_cpu": r4(st.foreign)}));
    }
    json!(rows)
}

/// The benchmark runs on a rayon worker, as the stages do (clipo::threads).
fn main() {
    clipo::threads::on_pool(bench);
}

fn bench() {
    let dir = PathBuf::from(std::env::var("MODEL_BENCH_DIR").unwrap_or_else(|_| "models/smollm2-135m-instruct".into()));
    let inputs_path = PathBuf::from(
        std::env::var("MODEL_BENCH_INPUTS").unwrap_or_else(|_| "../shared/bench/torch/torch_baseline_inputs.json".into()),
    );
    if !dir.join("config.json").exists() {
        log(&format!("model_bench: {} is missing (scripts/fetch_smollm2.sh makes it); skipping", dir.display()));
        return;
    }
    let phases = std::env::var("MODEL_BENCH_PHASES").unwrap_or_else(|_| "gen,logprob,train,floor".into());
    let has = |p: &str| phases.split(',').any(|x| x.trim() == p);
    let runs = env_usize("MODEL_BENCH_RUNS", 3).max(1);
    let warmup = env_usize("MODEL_BENCH_WARMUP", 1);
    let inputs = read_inputs(&inputs_path);

    let t0 = Instant::now();
    let model = Model::load(&dir, &Device::Cpu, DType::F32).expect("load");
    let mut res = json!({
        "impl": "clipo (candle 0.11.1 + fused ops)",
        "threads": candle_core::utils::get_num_threads(),
        "runs": runs, "warmup": warmup,
        "load_s": r4(t0.elapsed().as_secs_f64()),
        "rss_after_load_mib": r4(rss_mib()),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>(),
        "prompt_tokens": inputs.prompts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        "counts": flop_counts(&model),
    });
    if has("gen") {
        log("generation ...");
        let one = &inputs.prompts[..1];
        res["gen_b8"] = bench_gen(&model, &inputs.prompts, inputs.eos, false, runs, warmup, "gen_b8");
        res["gen_b1"] = bench_gen(&model, one, inputs.eos, false, runs, warmup, "gen_b1");
        res["gen_b8_fixed"] = bench_gen(&model, &inputs.prompts, inputs.eos, true, runs, warmup, "gen_b8_fixed");
        res["gen_b1_fixed"] = bench_gen(&model, one, inputs.eos, true, runs, warmup, "gen_b1_fixed");
        res["rss_peak_after_gen_mib"] = json!(r4(peak_rss_mib()));
    }
    let seqs = seqs_of(&inputs.train_prompts, &inputs.train_responses);
    let mut logp_ref = None;
    if has("logprob") || has("train") {
        log("logprob pass ...");
        let (v, lp) = bench_logprob(&model, &seqs, if has("logprob") { runs } else { 1 }, warmup.min(1));
        if has("logprob") {
            res["logprob"] = v;
            res["rss_peak_after_logprob_mib"] = json!(r4(peak_rss_mib()));
        }
        logp_ref = Some(lp);
    }
    if has("train") {
        log("train step ...");
        res["train"] = bench_train(&model, &seqs, logp_ref.as_ref().unwrap(), &inputs.advantages, runs, warmup);
        res["rss_peak_after_train_mib"] = json!(r4(peak_rss_mib()));
    }
    if has("scale") {
        log("scaling ...");
        res["scale"] = scale_table(&model, &inputs.prompts, model.config().vocab_size as u32, warmup);
    }
    if has("floor") {
        log("floor ...");
        res["floor"] = bench_floor();
    }
    res["rss_peak_mib"] = json!(r4(peak_rss_mib()));
    println!("{res}");
}
