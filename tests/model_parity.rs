//! Parity with Hugging Face transformers on tiny random checkpoints
//! (fixtures written by scripts/make_parity_fixtures.py): logits and final-norm hidden states,
//! unbatched and batched with left padding, through both forward paths; greedy generations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use clipo::model::{Model, Sequence};

const FIXTURES: [&str; 7] = [
    "tiny-llama",
    "tiny-llama-bias",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-qwen3-tied",
    "tiny-llama3-rope",
    "tiny-mistral",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(file!())
        .parent()
        .unwrap()
        .join("fixtures")
        .join(name)
}

fn load(name: &str) -> (Model, HashMap<String, Tensor>) {
    let dir = fixture(name);
    let model = Model::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let exp =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    (model, exp)
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

/// max |a - b| over the entries where `mask` (broadcastable) is 1.
fn max_diff(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> f32 {
    let d = (a - b).unwrap().abs().unwrap();
    let d = match mask {
        Some(m) => d.broadcast_mul(m).unwrap(),
        None => d,
    };
    d.flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn unbatched_logits_and_hidden_match_transformers() {
    for name in FIXTURES {
        let (m, exp) = load(name);
        let (mut worst_h, mut worst_l) = (0f32, 0f32);
        for i in 0..4 {
            let p = &exp[&format!("prompt_{i}")];
            let x = p.to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap();
            let want_h = exp[&format!("hidden_{i}")].unsqueeze(0).unwrap();
            let want_l = exp[&format!("logits_{i}")].unsqueeze(0).unwrap();
            for h in [
                m.forward_hidden(&x, &[0]).unwrap(),
                m.forward_hidden_nograd(&x, &[0]).unwrap(),
            ] {
                worst_h = worst_h.max(max_diff(&h, &want_h, None));
                worst_l = worst_l.max(max_diff(&m.lm_head(&h).unwrap(), &want_l, None));
            }
        }
        println!("{name}: unbatched max |diff| hidden {worst_h:.2e}, logits {worst_l:.2e}");
        assert!(
            worst_h < 1e-4 && worst_l < 1e-4,
            "{name}: hidden {worst_h}, logits {worst_l}"
        );
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    for name in FIXTURES {
        let (m, exp) = load(name);
        let x = exp["batch_ids"].to_dtype(DType::U32).unwrap();
        let mask = exp["batch_mask"].to_dtype(DType::F32).unwrap();
        let pads: Vec<usize> = mask
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|r| r.iter().take_while(|&&v| v == 0.0).count())
            .collect();
        let mask3 = mask.unsqueeze(D::Minus1).unwrap();
        let (mut worst_h, mut worst_l) = (0f32, 0f32);
        for h in [
            m.forward_hidden(&x, &pads).unwrap(),
            m.forward_hidden_nograd(&x, &pads).unwrap(),
        ] {
            assert!(h
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite()));
            worst_h = worst_h.max(max_diff(&h, &exp["batch_hidden"], Some(&mask3)));
            worst_l = worst_l.max(max_diff(
                &m.lm_head(&h).unwrap(),
                &exp["batch_logits"],
                Some(&mask3),
            ));
        }
        println!("{name}: batched max |diff| hidden {worst_h:.2e}, logits {worst_l:.2e}");
        assert!(
            worst_h < 1e-4 && worst_l < 1e-4,
            "{name}: hidden {worst_h}, logits {worst_l}"
        );
    }
}

#[test]
fn graph_and_fused_paths_agree() {
    for name in FIXTURES {
        let (m, exp) = load(name);
        let x = exp["batch_ids"].to_dtype(DType::U32).unwrap();
        let pads = [4, 0, 11, 3]; // prompt lengths 5, 12, 1, 9 padded to 12
        let a = m.forward_hidden(&x, &pads).unwrap();
        let b = m.forward_hidden_nograd(&x, &pads).unwrap();
        let d = max_diff(&a, &b, None);
        println!("{name}: graph vs fused max |diff| {d:.2e}");
        assert!(d < 1e-5, "{name}: {d}");
    }
}

/// Asserts that packed hidden states (N, d) hold, bit for bit, the rows of the left-padded batch
/// `want` (B, T, d) at each sequence's last `lens[b]` columns.
fn assert_packed_rows(want: &Tensor, got: &Tensor, lens: &[usize], what: &str) {
    let (want, got) = (want.to_dtype(DType::F32).unwrap(), got.to_dtype(DType::F32).unwrap());
    let t = want.dim(1).unwrap();
    let mut off = 0;
    for (b, &l) in lens.iter().enumerate() {
        let w: Vec<Vec<f32>> = want.get(b).unwrap().narrow(0, t - l, l).unwrap().to_vec2().unwrap();
        let g: Vec<Vec<f32>> = got.narrow(0, off, l).unwrap().to_vec2().unwrap();
        assert_eq!(g, w, "{what}: row {b}");
        off += l;
    }
}

#[test]
fn packed_sequences_equal_the_padded_batch() {
    // The scoring path packs sequences without padding; each token's hidden state must be the one
    // the left-padded batch gives at its column, bit for bit, with and without a graph.
    for name in FIXTURES {
        let (m, exp) = load(name);
        let x = exp["batch_ids"].to_dtype(DType::U32).unwrap();
        let pads = [4, 0, 11, 3]; // prompt lengths 5, 12, 1, 9 padded to 12
        let t = x.dim(1).unwrap();
        let rows: Vec<Vec<u32>> = x.to_vec2().unwrap();
        let packed: Vec<u32> = rows.iter().zip(pads).flat_map(|(r, p)| r[p..].to_vec()).collect();
        let lens: Vec<usize> = pads.iter().map(|p| t - p).collect();
        let packed = Tensor::new(packed.as_slice(), &Device::Cpu).unwrap();
        let padded = [m.forward_hidden(&x, &pads).unwrap(), m.forward_hidden_nograd(&x, &pads).unwrap()];
        let got = [
            m.forward_hidden_packed(&packed, &lens).unwrap(),
            m.forward_hidden_packed_nograd(&packed, &lens).unwrap(),
        ];
        for (want, got) in padded.iter().zip(&got) {
            assert_packed_rows(want, got, &lens, name);
        }
        // lengths that do not cover the tokens are an input error, not a panic
        assert!(m.forward_hidden_packed(&packed, &[5, 12]).is_err());
        assert!(m.forward_hidden_packed_nograd(&packed, &[5, 12, 0, 1, 9]).is_err());
        // bf16 has no fused kernels: the packed call pads internally and gathers the rows back
        let m16 = Model::load(&fixture(name), &Device::Cpu, DType::BF16).unwrap();
        let want = m16.forward_hidden(&x, &pads).unwrap();
        let got = m16.forward_hidden_packed(&packed, &lens).unwrap();
        assert_packed_rows(&want, &got, &lens, &format!("{name} bf16"));
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in FIXTURES {
        let (m, exp) = load(name);
        let prompts: Vec<Vec<u32>> = (0..4).map(|i| ids(&exp[&format!("prompt_{i}")])).collect();
        let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        // One at a time and all four in one left-padded batch.
        let mut runs = vec![m.greedy(&refs, 20, &[]).unwrap()];
        runs.push(
            refs.iter()
                .map(|p| m.greedy(&[p], 20, &[]).unwrap().remove(0))
                .collect(),
        );
        let mut worst = 0f32;
        for run in &runs {
            for (i, s) in run.iter().enumerate() {
                assert_eq!(
                    s.tokens,
                    ids(&exp[&format!("greedy_{i}")]),
                    "{name} prompt {i}"
                );
                let want: Vec<f32> = exp[&format!("greedy_logprobs_{i}")].to_vec1().unwrap();
                for (a, b) in s.logprobs.iter().zip(&want) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        println!("{name}: greedy tokens equal; max |diff| of their log-probs {worst:.2e}");
        assert!(worst < 1e-4, "{name}: {worst}");
    }
}

#[test]
fn scoring_matches_transformers_logprobs() {
    // Teacher-forced log-probs of the greedy continuations, with and without a graph, against
    // log_softmax of transformers' scores.
    for name in FIXTURES {
        let (m, exp) = load(name);
        let prompts: Vec<Vec<u32>> = (0..4).map(|i| ids(&exp[&format!("prompt_{i}")])).collect();
        let resps: Vec<Vec<u32>> = (0..4)
            .map(|i| ids(&exp[&format!("greedy_{i}")])[..(5 + 4 * i)].to_vec())
            .collect();
        let seqs: Vec<Sequence> = prompts
            .iter()
            .zip(&resps)
            .map(|(p, r)| Sequence {
                prompt: p,
                response: r,
            })
            .collect();
        let mut worst = 0f32;
        for scored in [
            m.response_logprobs(&seqs, 1.0).unwrap(),
            m.response_logprobs_nograd(&seqs, 1.0, 3).unwrap(),
        ] {
            for (i, r) in resps.iter().enumerate() {
                let got = scored.logprobs_row(i).unwrap();
                let want: Vec<f32> = exp[&format!("greedy_logprobs_{i}")].to_vec1().unwrap();
                assert_eq!(got.len(), r.len());
                for (a, b) in got.iter().zip(&want) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        println!("{name}: scoring max |diff| {worst:.2e}");
        assert!(worst < 1e-4, "{name}: {worst}");
    }
}

#[test]
fn loading_checks_the_weights() {
    let dir = fixture("tiny-llama");
    let cfg = clipo::model::Config::from_file(&dir.join("config.json")).unwrap();
    let mut tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let m = Model::from_tensors(cfg.clone(), tensors.clone(), &Device::Cpu, DType::F32).unwrap();
    let n: usize = m.vars().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(n, cfg.num_parameters());
    assert!(
        !m.vars().iter().any(|(k, _)| k == "lm_head.weight"),
        "tied lm_head is not a separate var"
    );

    tensors.remove("model.layers.1.mlp.up_proj.weight");
    let e = Model::from_tensors(cfg.clone(), tensors.clone(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    tensors.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((128, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "model.layers.1.self_attn.q_proj.bias".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = Model::from_tensors(cfg.clone(), tensors.clone(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unexpected") && e.contains("q_proj.bias"), "{e}");
    tensors.remove("model.layers.1.self_attn.q_proj.bias");
    tensors.insert(
        "model.norm.weight".into(),
        Tensor::zeros(65, DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(Model::from_tensors(cfg, tensors, &Device::Cpu, DType::F32).is_err());
}

/// bf16, the dtype CUDA computes in, runs the composed candle ops (the fused kernels are f32/f64
/// only): logits, hidden states and log-probs against transformers' f32 within bf16's precision
/// (8 significant bits: a relative error of 2^-8 = 0.4% per rounding, a few roundings deep); the
/// old log-probs an update computes on this path equal the training log-probs exactly (the first
/// PPO ratio is 1), while the no-grad kernels' would differ.
#[test]
fn bf16_matches_transformers_within_its_precision_and_old_equals_training_logprobs() {
    for name in FIXTURES {
        let dir = fixture(name);
        let m = Model::load(&dir, &Device::Cpu, DType::BF16).unwrap();
        let exp = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
        let (mut worst_h, mut worst_l) = (0f32, 0f32);
        for i in 0..4 {
            let x = exp[&format!("prompt_{i}")].to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap();
            let want_h = exp[&format!("hidden_{i}")].unsqueeze(0).unwrap();
            let want_l = exp[&format!("logits_{i}")].unsqueeze(0).unwrap();
            for h in [m.forward_hidden(&x, &[0]).unwrap(), m.forward_hidden_nograd(&x, &[0]).unwrap()] {
                let h32 = h.to_dtype(DType::F32).unwrap();
                worst_h = worst_h.max(max_diff(&h32, &want_h, None));
                worst_l = worst_l.max(max_diff(&m.lm_head(&h).unwrap().to_dtype(DType::F32).unwrap(), &want_l, None));
            }
        }
        let prompts: Vec<Vec<u32>> = (0..4).map(|i| ids(&exp[&format!("prompt_{i}")])).collect();
        let resps: Vec<Vec<u32>> = (0..4).map(|i| ids(&exp[&format!("greedy_{i}")])[..(5 + 4 * i)].to_vec()).collect();
        let seqs: Vec<Sequence> = prompts.iter().zip(&resps).map(|(p, r)| Sequence { prompt: p, response: r }).collect();
        let train = m.response_logprobs(&seqs, 1.0).unwrap();
        let old = m.response_logprobs_nograd(&seqs, 1.0, 3).unwrap();
        // The update's old log-probs on this path come from the training pass itself.
        assert!(!m.nograd_matches_training());
        let as_trained = m.logprobs_as_trained(&seqs, 1.0, clipo::model::Memory::default()).unwrap();
        for i in 0..4 {
            assert_eq!(as_trained[i], train.logprobs_row(i).unwrap(), "{name} row {i}: old and training log-probs differ");
        }
        let largest = |key: &str| (0..4).map(|i| exp[&format!("{key}_{i}")].abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()).fold(0f32, f32::max);
        let (scale, scale_h) = (largest("logits"), largest("hidden"));
        let (mut worst_lp, mut worst_ratio) = (0f32, 0f32);
        for i in 0..4 {
            let want: Vec<f32> = exp[&format!("greedy_logprobs_{i}")].to_vec1().unwrap();
            let (t, o) = (train.logprobs_row(i).unwrap(), old.logprobs_row(i).unwrap());
            for k in 0..want.len().min(t.len()) {
                worst_lp = worst_lp.max((t[k] - want[k]).abs()).max((o[k] - want[k]).abs());
                worst_ratio = worst_ratio.max((t[k] - o[k]).abs());
            }
        }
        println!(
            "{name} bf16: max |diff| hidden {worst_h:.2e}, logits {worst_l:.2e} (largest logit {scale:.1}), log-probs {worst_lp:.2e}, no-grad - training {worst_ratio:.2e}"
        );
        // bf16 keeps 8 significant bits (the weights are rounded too): hidden states and logits
        // within 5% of their largest magnitude, log-probs within 0.5 nats (measured: at most
        // 3.1% and 0.39).
        println!("{name} bf16: relative hidden {:.3}, logits {:.3}", worst_h / scale_h, worst_l / scale);
        assert!(
            worst_h < 0.05 * scale_h && worst_l < 0.05 * scale && worst_lp < 0.5,
            "{name}: hidden {worst_h} of {scale_h}, logits {worst_l} of {scale}, log-probs {worst_lp}"
        );
        // The no-grad kernels round differently: why the old log-probs come from the training pass.
        assert!(worst_ratio < 0.25, "{name}: |no-grad - training log-prob| {worst_ratio}");
    }
}

/// The rope frequencies of Llama 3.1 and 3.2 (llama3 scaling), linear and dynamic scaling, bit for
/// bit transformers' (tests/fixtures/rope_inv_freq.json, from scripts/make_parity_fixtures.py).
#[test]
fn rope_frequencies_equal_transformers() {
    let text = std::fs::read_to_string(fixture("rope_inv_freq.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (name, case) in cases {
        let cfg = clipo::model::Config::from_json(&case["config"].to_string()).unwrap();
        let got = clipo::model::transformer::rope_inv_freq(&cfg).unwrap();
        let want: Vec<f32> = case["inv_freq"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(got, want, "{name}");
        println!("{name}: {} frequencies equal transformers' bit for bit", got.len());
    }
}

/// Dynamic (NTK) scaling is the default rope below max_position_embeddings and refused past it
/// (transformers then rescales with state kept across calls), naming what is unsupported.
#[test]
fn dynamic_rope_is_refused_past_max_position_embeddings() {
    let dir = fixture("tiny-llama");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["rope_parameters"] = serde_json::json!({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0});
    cfg["max_position_embeddings"] = serde_json::json!(16);
    let cfg = clipo::model::Config::from_json(&cfg.to_string()).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let m = Model::from_tensors(cfg, tensors, &Device::Cpu, DType::F32).unwrap();
    let (plain, exp) = load("tiny-llama");
    let x = exp["prompt_1"].to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap(); // 12 tokens
    let d = max_diff(&m.forward_hidden(&x, &[0]).unwrap(), &plain.forward_hidden(&x, &[0]).unwrap(), None);
    assert_eq!(d, 0.0);
    let long = Tensor::cat(&[&x, &x], 1).unwrap(); // 24 tokens: positions past 16
    let e = m.forward_hidden(&long, &[0]).err().unwrap().to_string();
    assert!(e.contains("dynamic rope scaling") && e.contains("max_position_embeddings = 16"), "{e}");
}
