//! Mixed precision (issue 16): a bf16 model trained at the paper's learning rate moves, because
//! the optimiser steps f32 master weights; the saved f32 masters continue a run exactly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use common::{ok, run, s};

/// The 2-D weights of a model directory, as f32.
fn matrices(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let m = clipo::model::Model::load(dir, &Device::Cpu, DType::F32).unwrap();
    m.vars()
        .into_iter()
        .filter(|(_, v)| v.as_tensor().rank() == 2)
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn a_bf16_step_at_lr_1e_6_moves_the_weights_as_the_f32_step_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (policy, train) = common::tiny_and_task(d, 64, 8);
    let sft = |out: &Path, extra: &[&str]| {
        let mut args = vec!["--objective", "sft", "--policy", s(&policy), "--prompts", s(&train), "--steps", "1", "--batch-size", "64"];
        args.extend_from_slice(&["--micro-batch", "64", "--lr", "1e-6", "--out", s(out)]);
        args.extend_from_slice(extra);
        ok(run("clipo-update", &args));
    };
    let (f32_out, bf16_out) = (d.join("f32"), d.join("bf16"));
    sft(&f32_out, &[]);
    sft(&bf16_out, &["--dtype", "bf16", "--save-dtype", "f32"]);
    let (w0, w32, w16) = (matrices(&policy), matrices(&f32_out), matrices(&bf16_out));
    let (mut n, mut moved16, mut moved32, mut same_dir) = (0usize, 0usize, 0usize, 0usize);
    for (name, w) in &w0 {
        for i in 0..w.len() {
            let (d32, d16) = (w32[name][i] - w[i], w16[name][i] - w[i]);
            n += 1;
            moved32 += usize::from(d32 != 0.0);
            moved16 += usize::from(d16 != 0.0);
            same_dir += usize::from(d16 != 0.0 && d16.signum() == d32.signum());
        }
    }
    let frac = |k: usize| k as f64 / n as f64;
    eprintln!("{n} matrix weights: f32 step moved {:.3}, bf16 step moved {:.3}, same direction {:.3}", frac(moved32), frac(moved16), frac(same_dir));
    // Without f32 masters the bf16 weight is the rounded start (a 1e-6 step rounds away): its
    // difference from the f32 start is the rounding error, in either direction at random.
    assert!(frac(moved16) >= 0.9, "bf16 moved {:.3} of the weights", frac(moved16));
    assert!(frac(same_dir) >= 0.8, "bf16 agreed in direction on {:.3}", frac(same_dir));
    // The step is the size of the learning rate (AdamW's first step is lr x sign(g)), not of a
    // bf16 rounding (~4e-3 relative).
    let w16 = &w16;
    let worst = w0.iter().flat_map(|(name, w)| w.iter().enumerate().map(move |(i, x)| (w16[name][i] - x).abs())).fold(0f32, f32::max);
    assert!(worst < 1.5e-6, "largest bf16 move {worst}");
}

/// In bf16 the no-grad kernels and the training pass round differently (up to 0.16 nats on the
/// parity fixtures); the update takes its old log-probs from the training pass on the training
/// micro-batches, so every response's first PPO ratio is exactly 1, as in verl.
#[test]
fn a_bf16_update_starts_from_a_ratio_of_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (policy, train) = common::tiny_and_task(d, 16, 4);
    let (t, r, out) = (d.join("t.parquet"), d.join("r.parquet"), d.join("p"));
    ok(run("clipo-rollout", &["--policy", s(&policy), "--prompts", s(&train), "--per-step", "8", "--step", "1", "--n", "4", "--max-new-tokens", "12", "--out", s(&t)]));
    ok(run("clipo-verify", &["--input", s(&t), "--output", s(&r)]));
    // The plain pass, and the segmented one (checkpointed, log-probs 3 tokens at a time): each
    // takes its old log-probs from its own training pass.
    for (k, memory) in [&[][..], &["--grad-checkpoint", "--logit-chunk", "3"][..]].into_iter().enumerate() {
    let out = out.with_extension(k.to_string());
    // Every reward of the untrained policy is 0: the entropy bonus gives the loss a gradient, so
    // that the training pass runs (a loss without one is a no-op, with every ratio 1 by default).
    let mut args = vec!["--policy", s(&policy), "--trajectories", s(&t), "--rewards", s(&r), "--kl", "off", "--step", "1", "--dtype", "bf16", "--micro-batch", "5", "--entropy-coef", "0.01", "--out", s(&out)];
    args.extend_from_slice(memory);
    ok(run("clipo-update", &args));
    let a = clipo::table::read_table(&out.join("advantages.parquet"), &[], &["mean_ratio", "response_tokens"]).unwrap();
    let col = |n: &str| a.batch.column_by_name(n).unwrap().clone();
    let ratio = col("mean_ratio");
    let ratio = ratio.as_any().downcast_ref::<arrow::array::Float32Array>().unwrap();
    let lens = col("response_tokens");
    let lens = lens.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap();
    let mut checked = 0;
    for i in 0..a.num_rows() {
        if lens.value(i) > 0 {
            assert_eq!(ratio.value(i), 1.0, "row {i}: first-pass mean ratio");
            checked += 1;
        }
    }
    assert!(checked >= 16, "{checked}");
    }
}

/// Gradient checkpointing recomputes each layer in the backward and chunked log-probs split the
/// head: the trained weights are the plain pass's up to the order of gradient sums (a tied
/// embedding's two gradients meet in another order).
#[test]
fn checkpointed_and_chunked_training_gives_the_plain_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (policy, train) = common::tiny_and_task(d, 32, 4);
    let sft = |out: &Path, extra: &[&str]| {
        let mut args = vec!["--objective", "sft", "--policy", s(&policy), "--prompts", s(&train), "--steps", "2", "--batch-size", "16"];
        args.extend_from_slice(&["--micro-batch", "8", "--lr", "1e-3", "--out", s(out)]);
        args.extend_from_slice(extra);
        ok(run("clipo-update", &args));
    };
    let (plain, ckpt, chunked) = (d.join("plain"), d.join("ckpt"), d.join("chunked"));
    sft(&plain, &[]);
    sft(&ckpt, &["--grad-checkpoint"]);
    sft(&chunked, &["--grad-checkpoint", "--logit-chunk", "7"]);
    for other in [&ckpt, &chunked] {
        let o = ok(run("clipo-model", &["compare", s(&policy), s(&plain), s(other)]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        println!("plain vs {}: {v}", other.display());
        assert_eq!(v["moved_a"], 1.0, "{v}");
        assert!(v["max_abs_diff"].as_f64().unwrap() < 1e-5, "{v}");
        assert!(v["same_direction"].as_f64().unwrap() > 0.999, "{v}");
    }
}

/// `clipo-update --plan` for Qwen2.5-3B-Instruct's config.json (nothing else in the directory):
/// bf16 with checkpointing at 2048 tokens fits an 80 GB card and still counts the f32 masters
/// and both moments; the plain pass does not fit; offload moves 16 bytes a parameter to the host.
#[test]
fn the_plan_of_qwen25_3b_fits_an_80gb_card_with_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("Qwen2.5-3B-Instruct");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("config.json"),
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":2048,"intermediate_size":11008,"num_attention_heads":16,
            "num_hidden_layers":36,"num_key_value_heads":2,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
            "tie_word_embeddings":true,"vocab_size":151936,"max_position_embeddings":32768,"torch_dtype":"bfloat16"}"#,
    )
    .unwrap();
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--plan", "--policy", s(&policy), "--dtype", "bf16", "--plan-device", "cuda", "--plan-seq-len", "2048", "--max-tokens-per-micro-batch", "2048"];
        args.extend_from_slice(extra);
        serde_json::from_slice(&ok(run("clipo-update", &args)).stdout).unwrap()
    };
    let ckpt = plan(&["--grad-checkpoint"]);
    let n = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert_eq!(n(&ckpt, "parameters"), 3_085_938_688.0);
    assert!(n(&ckpt, "peak_bytes") < 80e9, "{ckpt}");
    assert!(n(&ckpt, "master") + n(&ckpt, "moments") >= 37e9, "{ckpt}");
    let plain = plan(&[]);
    assert!(n(&plain, "peak_bytes") > 80e9, "{plain}");
    let off = plan(&["--grad-checkpoint", "--offload-optimizer"]);
    assert_eq!(n(&off, "host_bytes"), 16.0 * 3_085_938_688.0);
    assert_eq!(n(&off, "device_bytes") + n(&off, "host_bytes"), n(&ckpt, "peak_bytes"));
    // Nothing was written beside the config.
    assert_eq!(std::fs::read_dir(&policy).unwrap().count(), 1);
}

/// The CPU twin of scripts/gpu_check.sh's first check: three SFT steps on the composed candle ops
/// (what CUDA runs; CLIPO_COMPOSED=1) against the fused CPU kernels, compared by
/// `clipo-model compare`: the same training to float noise.
#[test]
fn composed_ops_train_as_the_fused_kernels_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (policy, train) = common::tiny_and_task(d, 64, 4);
    let sft = |out: &Path, composed: bool| {
        let o = std::process::Command::new(common::bin("clipo-update"))
            .args(["--objective", "sft", "--policy", s(&policy), "--prompts", s(&train), "--steps", "3", "--batch-size", "32"])
            .args(["--micro-batch", "32", "--lr", "1e-3", "--out", s(out)])
            .env("CLIPO_COMPOSED", if composed { "1" } else { "0" })
            .output()
            .unwrap();
        ok(o);
    };
    let (fused, composed) = (d.join("fused"), d.join("composed"));
    sft(&fused, false);
    sft(&composed, true);
    let o = ok(run("clipo-model", &["compare", s(&policy), s(&fused), s(&composed)]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("fused vs composed after 3 steps: {v}");
    assert_eq!(v["moved_a"], 1.0, "{v}");
    assert!(v["max_abs_diff"].as_f64().unwrap() < 1e-4, "{v}");
    assert!(v["same_direction"].as_f64().unwrap() > 0.999, "{v}");
}
