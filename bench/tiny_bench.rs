//! The tiny policy (d 128, 4 layers, 4 heads, ~0.86M parameters): one SFT-like training step
//! (64 sequences of ~60 prompt + ~40 response tokens: `response_logprobs`, token-mean NLL,
//! backward, gradient collection, in-place AdamW) and one sampling call (16 prompts x 8 samples x
//! 40 new tokens, no stop tokens so the work is fixed).
//!
//! Prints wall and CPU seconds (this process, user + system) per phase, median of the runs.
//! `cargo bench --bench tiny_bench` (`TINY_BENCH_RUNS=5` to change the number of timed runs).

use std::time::Instant;

use candle_core::{DType, Device};
use clipo::model::{Model, SampleParams, SampleRequest, Sequence};
use clipo::optim::{collect_grads, AdamWConfig, Grads, Optimizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) / 100.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let out = f();
    (out, t0.elapsed().as_secs_f64(), cpu_seconds() - c0)
}

/// The benchmark runs on a rayon worker, as the stages do (clipo::threads).
fn main() {
    clipo::threads::on_pool(bench);
}

fn bench() {
    let runs: usize = std::env::var("TINY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("clipo-tiny-bench-{}", std::process::id()));
    clipo::tiny::init_tiny(&dir, &clipo::tiny::TinyPreset::tiny(), 0).expect("init tiny");
    let model = Model::load(&dir, &Device::Cpu, DType::F32).expect("load tiny");
    let _ = std::fs::remove_dir_all(&dir);
    let vocab = model.config().vocab_size as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(7);

    // Training batch: 64 sequences, prompts 50..70 tokens, responses 30..50 tokens.
    let prompts: Vec<Vec<u32>> =
        (0..64).map(|_| (0..rng.random_range(50..70)).map(|_| rng.random_range(3..vocab)).collect()).collect();
    let responses: Vec<Vec<u32>> =
        (0..64).map(|_| (0..rng.random_range(30..50)).map(|_| rng.random_range(3..vocab)).collect()).collect();
    let seqs: Vec<Sequence> =
        prompts.iter().zip(&responses).map(|(p, r)| Sequence { prompt: p, response: r }).collect();
    let vars = model.vars();
    let mut opt = Optimizer::default();
    let hp = AdamWConfig::new(1e-4, 0.0);

    let mut step = || {
        let (scored, f_w, f_c) = timed(|| {
            let s = model.response_logprobs(&seqs, 1.0).unwrap();
            let n = s.mask.sum_all().unwrap();
            let loss = (s.logprobs.sum_all().unwrap().neg().unwrap() / n.to_scalar::<f32>().unwrap() as f64).unwrap();
            (s, loss)
        });
        let (grads, b_w, b_c) = timed(|| {
            let store = scored.1.backward().unwrap();
            let mut g = Grads::new();
            collect_grads(&vars, &store, &mut g).unwrap();
            g
        });
        let (_, o_w, o_c) = timed(|| opt.step(&vars, &grads, Some(1.0), &hp).unwrap());
        let loss = scored.1.to_scalar::<f32>().unwrap();
        [f_w, f_c, b_w, b_c, o_w, o_c, loss as f64]
    };
    step(); // warm-up
    let res: Vec<[f64; 7]> = (0..runs).map(|_| step()).collect();
    let col = |k: usize| median(res.iter().map(|r| r[k]).collect());
    let tot_w: Vec<f64> = res.iter().map(|r| r[0] + r[2] + r[4]).collect();
    let tot_c: Vec<f64> = res.iter().map(|r| r[1] + r[3] + r[5]).collect();
    println!(
        "train step (64 x ~100 tokens): wall {:.3} s, cpu {:.3} s  [fwd {:.3}/{:.3}, bwd {:.3}/{:.3}, adamw {:.3}/{:.3} wall/cpu]  loss {:.4}",
        median(tot_w), median(tot_c), col(0), col(1), col(2), col(3), col(4), col(5), res.last().unwrap()[6]
    );

    // Sampling: 16 prompts x 8 samples x 40 new tokens (no stop tokens).
    let sp: Vec<Vec<u32>> =
        (0..16).map(|_| (0..rng.random_range(20..40)).map(|_| rng.random_range(3..vocab)).collect()).collect();
    let reqs: Vec<SampleRequest> = sp
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..8).map(move |s| SampleRequest { prompt: p, seed: (i * 8 + s) as u64 }))
        .collect();
    let params = SampleParams::sampling(40, 1.0, vec![]);
    let sample = || {
        let (out, w, c) = timed(|| model.sample(&reqs, &params).unwrap());
        let n: usize = out.iter().map(|s| s.tokens.len()).sum();
        (w, c, n)
    };
    sample();
    let res: Vec<(f64, f64, usize)> = (0..runs).map(|_| sample()).collect();
    let w = median(res.iter().map(|r| r.0).collect());
    let c = median(res.iter().map(|r| r.1).collect());
    println!(
        "sampling (16 prompts x 8 x 40 tokens = {} tokens): wall {:.3} s, cpu {:.3} s, {:.0} tok/s wall",
        res[0].2, w, c, res[0].2 as f64 / w
    );
    let mean_hidden = {
        let (_, w, c) = timed(|| model.response_logprobs_nograd(&seqs, 1.0, 64).unwrap());
        (w, c)
    };
    println!("no-grad log-probs (64 x ~100): wall {:.3} s, cpu {:.3} s", mean_hidden.0, mean_hidden.1);
}
