//! One embed step (forward, losses, rewards, metrics, backward, AdamW) at the paper's sizes, on
//! random hidden states with about half the responses correct.
//!
//! Sizes: GSM8K track B = 512 prompts x 16 = 8192 rows, d = 2048 (Qwen2.5-3B), D = 512;
//! MATH-track head size d = 3584 (Qwen2.5-7B), D = 2048, at the same B.
//! Forward projection 8192 x 2048 x 512 x 2 = 17.2 GFLOP, backward dW the same again.
//!
//! Prints seconds and the process's peak RSS (VmHWM) after each size. Run:
//! `cargo bench --bench embed_bench` (set `EMBED_BENCH_LEVELS=group,cross` to add levels).

use std::time::Instant;

use clipo::contrastive::{embed_step, Batch, ContrastiveConfig, ContrastiveHead, Hidden, Level};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The process's peak resident set size in MiB (VmHWM of /proc/self/status).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// User + system CPU seconds of this process so far (utime + stime of /proc/self/stat, in
/// clock ticks of 1/100 s): on a shared machine wall time alone says little.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |k: usize| {
        f.get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

fn run(prompts: usize, group: usize, d: usize, big_d: usize, level: Level) {
    let rows = prompts * group;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // (B, d) hidden states, uniform in [-1, 1); about half correct.
    let h: Vec<f32> = (0..rows * d)
        .map(|_| 2.0 * rng.random::<f32>() - 1.0)
        .collect();
    let correct: Vec<bool> = (0..rows).map(|_| rng.random::<bool>()).collect();
    let group_id: Vec<u32> = (0..rows as u32).map(|i| i / group as u32).collect();
    let names: Vec<String> = (0..prompts).map(|p| format!("prompt-{p}")).collect();
    let ids: Vec<&str> = (0..rows).map(|i| names[i / group].as_str()).collect();
    let idx: Vec<u32> = (0..rows as u32).map(|i| i % group as u32).collect();
    let batch = Batch {
        correct: &correct,
        group: &group_id,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let cfg = ContrastiveConfig {
        proj_dim: big_d,
        level,
        ..ContrastiveConfig::default()
    };
    let mut head = ContrastiveHead::init(cfg.head, d, big_d, cfg.seed).expect("init");
    let hidden = Hidden::new(&h, rows, d).expect("hidden");
    let rss_inputs = peak_rss_mib();
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    let out = embed_step(&mut head, &cfg, hidden, &batch, 1).expect("embed step");
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    println!(
        "B = {rows} ({prompts} x {group}), d = {d}, D = {big_d}, level {level}: {secs:.2} s wall ({cpu:.2} s CPU), peak RSS {:.0} MiB \
         (peak before the step {rss_inputs:.0} MiB); anchors {}, head loss {:.4}, stepped {}",
        peak_rss_mib(),
        out.num_anchors,
        out.head_loss,
        out.stepped
    );
}

fn main() {
    let levels: Vec<Level> = std::env::var("EMBED_BENCH_LEVELS")
        .unwrap_or_else(|_| "group".into())
        .split(',')
        .map(|s| s.trim().parse().expect("level"))
        .collect();
    for &level in &levels {
        run(512, 16, 2048, 512, level);
    }
    for &level in &levels {
        run(512, 16, 3584, 2048, level);
    }
}
