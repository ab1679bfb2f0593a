//! Memory and time of a SmolLM2-135M-Instruct training step (f32, the CPU's fused kernels), plain
//! and with `--grad-checkpoint` (which chunks the log-probs), side by side in one run, against
//! the memory plan `clipo-update --plan` prints for the same settings (issue 16 §4).
//!
//! Each configuration runs in a fresh child process (VmHWM only grows): load the model, two
//! steps on B random sequences of T tokens (a 64-token prompt, T - 64 response tokens; PPO-clip
//! token-mean loss with advantages +-1, AdamW lr 1e-6), the second timed, so the AdamW moments
//! exist during its backward as in a real run. Measured = VmHWM minus the RSS before the model
//! was loaded (the binary and its libraries); plan = `plan::plan`'s peak_bytes.
//!
//! A configuration whose plan exceeds 85% of MemTotal is not run (it would swap or be killed);
//! the table says so and gives the plan.
//!
//! `cargo bench --bench memory_bench` (env: `MEMORY_BENCH_DIR`, default
//! models/smollm2-135m-instruct; `MEMORY_BENCH_GRID`, default
//! "8:512:plain 8:512:ckpt 8:1024:plain 8:1024:ckpt 8:2048:plain 8:2048:ckpt"). Output: a
//! markdown table on stdout, one JSON line per configuration on stderr.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clipo::model::plan::{plan, Plan, PlanRequest};
use clipo::model::{Config, Memory, Model, Sequence};
use clipo::optim::{AdamWConfig, Grads, Optimizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const PROMPT: usize = 64;

#[path = "proc_status.rs"]
mod proc_status;
use proc_status::status_kib;

fn mem_total_bytes() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |k| k * 1024.0)
}

fn model_dir() -> PathBuf {
    std::env::var("MEMORY_BENCH_DIR").map_or_else(|_| PathBuf::from("models/smollm2-135m-instruct"), PathBuf::from)
}

fn memory_of(mode: &str) -> Memory {
    Memory { grad_checkpoint: mode == "ckpt", ..Memory::default() }
}

fn plan_of(cfg: &Config, b: usize, t: usize, mode: &str) -> Plan {
    plan(cfg, &PlanRequest { dtype: DType::F32, fused: true, memory: memory_of(mode), seq_len: t, response_len: t - PROMPT, seqs: b, offload: false })
}

/// One configuration, in this (child) process.
fn child(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let (b, t, mode): (usize, usize, &str) = (parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts[2]);
    let base = status_kib("VmRSS:") * 1024.0;
    let dir = model_dir();
    let model = Model::load(&dir, &Device::Cpu, DType::F32).expect("load");
    let v = model.config().vocab_size as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..b)
        .map(|_| ((0..PROMPT).map(|_| rng.random_range(0..v)).collect(), (0..t - PROMPT).map(|_| rng.random_range(0..v)).collect()))
        .collect();
    let seqs: Vec<Sequence> = rows.iter().map(|(p, r)| Sequence { prompt: p, response: r }).collect();
    let adv: Vec<f32> = (0..b).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let adv = Tensor::from_vec(adv, (b, 1), &Device::Cpu).unwrap();
    let memory = memory_of(mode);
    let vars = model.vars();
    let mut opt = Optimizer::default();
    let hp = AdamWConfig::new(1e-6, 0.01);
    let mut old: Option<Tensor> = None;
    let mut secs = vec![];
    for _ in 0..2 {
        let t0 = Instant::now();
        let pass = model.train_pass(&seqs, 1.0, memory).expect("train_pass");
        let lp = pass.scored.logprobs.clone();
        let o = old.get_or_insert_with(|| lp.detach()).clone();
        let ratio = (&lp - &o).unwrap().exp().unwrap();
        let neg_a = adv.neg().unwrap();
        let pg1 = ratio.broadcast_mul(&neg_a).unwrap();
        let pg2 = ratio.clamp(0.8f32, 1.2f32).unwrap().broadcast_mul(&neg_a).unwrap();
        let loss = (pg1.maximum(&pg2).unwrap() * &pass.scored.mask).unwrap().sum_all().unwrap();
        let loss = (loss / ((t - PROMPT) * b) as f64).unwrap();
        let mut grads = Grads::new();
        pass.backward(&loss, &mut grads).expect("backward");
        opt.step(&vars, &grads, Some(1.0), &hp).expect("adamw");
        secs.push(t0.elapsed().as_secs_f64());
    }
    let peak = status_kib("VmHWM:") * 1024.0;
    let p = plan_of(model.config(), b, t, mode);
    println!(
        "{}",
        json!({ "batch": b, "seq": t, "mode": mode, "measured_bytes": peak - base, "process_base_bytes": base,
                "plan_bytes": p.peak_bytes, "step_s": secs[1], "first_step_s": secs[0], "plan": p })
    );
}

fn main() {
    if let Ok(spec) = std::env::var("MEMORY_BENCH_CHILD") {
        return child(&spec);
    }
    let dir = model_dir();
    let cfg = Config::from_file(&dir.join("config.json")).unwrap_or_else(|e| {
        eprintln!("memory_bench: {e} (run scripts/fetch_smollm2.sh, or set MEMORY_BENCH_DIR)");
        std::process::exit(2)
    });
    let grid = std::env::var("MEMORY_BENCH_GRID").unwrap_or_else(|_| "8:512:plain 8:512:ckpt 8:1024:plain 8:1024:ckpt 8:2048:plain 8:2048:ckpt".into());
    let exe = std::env::current_exe().expect("current_exe");
    let ram = mem_total_bytes();
    let gib = |x: f64| x / (1u64 << 30) as f64;
    println!("| batch x seq | mode | plan (GiB) | measured peak (GiB) | measured / plan | step (s) |");
    println!("|---|---|---|---|---|---|");
    for spec in grid.split_whitespace() {
        let parts: Vec<&str> = spec.split(':').collect();
        let (b, t, mode): (usize, usize, &str) = (parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts[2]);
        let p = plan_of(&cfg, b, t, mode);
        if p.peak_bytes as f64 > 0.85 * ram {
            println!("| {b} x {t} | {mode} | {:.2} | not run: the plan exceeds 85% of this machine's {:.1} GiB | | |", gib(p.peak_bytes as f64), gib(ram));
            continue;
        }
        let out = Command::new(&exe).env("MEMORY_BENCH_CHILD", spec).output().expect("child");
        let line = String::from_utf8_lossy(&out.stdout);
        let Ok(r) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            println!("| {b} x {t} | {mode} | {:.2} | failed: {} | | |", gib(p.peak_bytes as f64), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
            continue;
        };
        eprintln!("{}", line.trim());
        let (m, pl) = (r["measured_bytes"].as_f64().unwrap(), r["plan_bytes"].as_f64().unwrap());
        println!("| {b} x {t} | {mode} | {:.2} | {:.2} | {:.2} | {:.1} |", gib(pl), gib(m), m / pl, r["step_s"].as_f64().unwrap());
    }
}
