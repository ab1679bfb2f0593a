//! Gradients: every weight receives one (an op that silently drops gradients fails this), and
//! the analytic gradients of the scoring loss match central finite differences in f64.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use clipo::model::{Model, Sequence};

fn fixture(name: &str) -> PathBuf {
    Path::new(file!())
        .parent()
        .unwrap()
        .join("fixtures")
        .join(name)
}

/// Every parity fixture (tests/model_parity.rs): Llama, Qwen2, Qwen3 (untied and tied), Llama with
/// llama3 rope scaling, Mistral (its window of 8 is shorter than the 14-token rows below).
const FIXTURES: [&str; 7] = [
    "tiny-llama",
    "tiny-llama-bias",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-qwen3-tied",
    "tiny-llama3-rope",
    "tiny-mistral",
];

/// Three left-padded rows with right-padded responses of different lengths.
fn batch() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let prompts = vec![
        vec![5, 17, 99, 3, 200],
        vec![42],
        vec![7, 8, 9, 10, 11, 12, 13, 14],
    ];
    let responses = vec![
        vec![33, 34, 35, 36],
        vec![250, 1, 2],
        vec![60, 61, 62, 63, 64, 65],
    ];
    (prompts, responses)
}

/// A loss that touches every response position with a different weight.
fn loss(m: &Model) -> Tensor {
    let (prompts, responses) = batch();
    let seqs: Vec<Sequence> = prompts
        .iter()
        .zip(&responses)
        .map(|(p, r)| Sequence {
            prompt: p,
            response: r,
        })
        .collect();
    let s = m.response_logprobs(&seqs, 0.7).unwrap();
    let (b, r) = s.logprobs.dims2().unwrap();
    let coef: Vec<f64> = (0..b * r)
        .map(|i| 1.0 + 0.37 * ((i * 7919) % 13) as f64 / 13.0)
        .collect();
    let coef = Tensor::from_vec(coef, (b, r), m.device())
        .unwrap()
        .to_dtype(s.logprobs.dtype())
        .unwrap();
    (s.logprobs * coef).unwrap().sum_all().unwrap()
}

#[test]
fn every_weight_receives_a_gradient() {
    for name in FIXTURES {
        let m = Model::load(&fixture(name), &Device::Cpu, DType::F32).unwrap();
        let grads = loss(&m).backward().unwrap();
        let vars = m.vars();
        assert!(vars.len() > 10);
        for (k, v) in &vars {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
            let mx = g
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                mx > 0.0 && mx.is_finite(),
                "{name}: gradient of {k} is {mx}"
            );
        }
        println!(
            "{name}: all {} weights have a non-zero gradient",
            vars.len()
        );
    }
}

fn perturbed(var: &Var, idx: usize, delta: f64) -> Tensor {
    let t = var.as_tensor();
    let mut v: Vec<f64> = t.flatten_all().unwrap().to_vec1().unwrap();
    v[idx] += delta;
    Tensor::from_vec(v, t.shape(), t.device()).unwrap()
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "tiny-llama",
            &[
                "model.embed_tokens.weight", // tied: also the lm_head
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight",
                "model.layers.1.self_attn.v_proj.weight",
                "model.layers.1.self_attn.o_proj.weight",
                "model.layers.0.mlp.gate_proj.weight",
                "model.layers.1.mlp.down_proj.weight",
                "model.layers.0.input_layernorm.weight",
                "model.norm.weight",
            ],
        ),
        (
            "tiny-qwen2",
            &[
                "lm_head.weight",
                "model.layers.0.self_attn.q_proj.bias",
                "model.layers.1.self_attn.k_proj.bias",
                "model.layers.0.self_attn.v_proj.bias",
                "model.layers.1.post_attention_layernorm.weight",
                "model.layers.1.mlp.up_proj.weight",
            ],
        ),
        (
            // the q/k norms: an RMSNorm over each head's head_dim entries (explicit head_dim 32)
            "tiny-qwen3",
            &[
                "model.layers.0.self_attn.q_norm.weight",
                "model.layers.1.self_attn.k_norm.weight",
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.1.self_attn.k_proj.weight",
                "lm_head.weight",
            ],
        ),
        (
            "tiny-qwen3-tied",
            &[
                "model.embed_tokens.weight",
                "model.layers.1.self_attn.q_norm.weight",
                "model.layers.0.self_attn.k_norm.weight",
                "model.layers.0.self_attn.k_proj.bias",
                "model.layers.1.self_attn.o_proj.bias",
            ],
        ),
        ("tiny-llama3-rope", &["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"]),
        // the sliding window (8 keys) in the attention's backward
        ("tiny-mistral", &["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight", "model.layers.0.self_attn.q_proj.weight"]),
    ];
    let eps = 1e-5;
    for (name, weights) in cases {
        let m = Model::load(&fixture(name), &Device::Cpu, DType::F64).unwrap();
        let grads = loss(&m).backward().unwrap();
        let vars: std::collections::HashMap<String, Var> = m.vars().into_iter().collect();
        for w in weights {
            let var = &vars[*w];
            let g: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let orig = var.as_tensor().copy().unwrap();
            // Three entries: the largest gradient and two fixed ones.
            let argmax = (0..g.len())
                .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
                .unwrap();
            for idx in [argmax, g.len() / 3, g.len() - 1] {
                var.set(&perturbed(var, idx, eps)).unwrap();
                let up = loss(&m).to_scalar::<f64>().unwrap();
                var.set(&orig).unwrap();
                var.set(&perturbed(var, idx, -eps)).unwrap();
                let down = loss(&m).to_scalar::<f64>().unwrap();
                var.set(&orig).unwrap();
                let fd = (up - down) / (2.0 * eps);
                // Rounding in the two losses (|loss| ~ 1e2, eps 1e-5) allows ~1e-9 absolute.
                let tol = 1e-7 + 1e-6 * fd.abs().max(g[idx].abs());
                assert!(
                    (fd - g[idx]).abs() < tol,
                    "{name} {w}[{idx}]: analytic {} vs finite difference {fd}",
                    g[idx]
                );
            }
            println!("{name} {w}: analytic gradient = finite difference (3 entries)");
        }
    }
}

/// The segmented training pass (gradient checkpointing, chunked log-probs) gives the plain
/// backward's gradients: the chain rule carried across its cuts loses nothing. Runs the fused
/// kernels in f32, the composed ops in bf16, and (under CLIPO_COMPOSED=1) the composed ops in f32.
#[test]
fn checkpointed_and_chunked_passes_give_the_plain_gradients() {
    use clipo::model::Memory;
    use clipo::optim::Grads;
    let (prompts, responses) = batch();
    let seqs: Vec<Sequence> = prompts.iter().zip(&responses).map(|(p, r)| Sequence { prompt: p, response: r }).collect();
    // f32: the same sums in another order; bf16: every segment rounds its output gradient to
    // bf16 as the plain backward does, in another order.
    for (dtype, tol) in [(DType::F32, 2e-6), (DType::BF16, 1e-2)] {
        for name in FIXTURES {
            let m = Model::load(&fixture(name), &Device::Cpu, dtype).unwrap();
            let run = |memory: Memory| -> (Grads, Vec<Vec<f32>>) {
                let pass = m.train_pass(&seqs, 0.7, memory).unwrap();
                let (b, r) = pass.scored.logprobs.dims2().unwrap();
                let coef: Vec<f32> = (0..b * r).map(|i| 1.0 + 0.37 * ((i * 7919) % 13) as f32 / 13.0).collect();
                let coef = Tensor::from_vec(coef, (b, r), m.device()).unwrap();
                let lp = pass.scored.logprobs.to_dtype(DType::F32).unwrap();
                // log-probs and (with the graph) entropies, as the policy loss and the entropy bonus
                let loss = ((lp * &coef).unwrap().sum_all().unwrap() - (pass.scored.entropy.clone() * 0.3).unwrap().sum_all().unwrap()).unwrap();
                let rows = pass.logprobs_rows().unwrap();
                let mut grads = Grads::new();
                pass.backward(&loss, &mut grads).unwrap();
                (grads, rows)
            };
            let (plain, plain_lp) = run(Memory::default());
            assert_eq!(plain.len(), m.vars().len(), "{name}: every weight has a gradient");
            for memory in [
                Memory { grad_checkpoint: true, ..Memory::default() },
                Memory { logit_chunk: Some(2), ..Memory::default() },
                Memory { grad_checkpoint: true, logit_chunk: Some(5), ..Memory::default() },
            ] {
                let (grads, lp) = run(memory);
                if memory.logit_chunk.is_none() {
                    assert_eq!(lp, plain_lp, "{name} {dtype:?} {memory:?}: the log-probs bit for bit");
                }
                assert_eq!(grads.keys().collect::<Vec<_>>(), plain.keys().collect::<Vec<_>>());
                let mut worst = 0f32;
                for (k, g) in &plain {
                    let scale = g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-12);
                    let diff = (g - &grads[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    worst = worst.max(diff / scale);
                    assert!(diff <= tol as f32 * scale, "{name} {dtype:?} {memory:?} {k}: |diff| {diff:e} vs max |g| {scale:e}");
                }
                println!("{name} {dtype:?} {memory:?}: worst relative difference {worst:e}");
            }
        }
    }
}

/// One AdamW step on the negative log-likelihood of the responses lowers it, on every family:
/// the training pass, the gradient accumulator and the optimizer cover each one's weights (the
/// fused kernels in f32; the composed ops under CLIPO_COMPOSED=1).
#[test]
fn one_training_step_lowers_the_loss_on_every_family() {
    use clipo::model::Memory;
    use clipo::optim::{AdamWConfig, Grads, Optimizer};
    let (prompts, responses) = batch();
    let seqs: Vec<Sequence> = prompts.iter().zip(&responses).map(|(p, r)| Sequence { prompt: p, response: r }).collect();
    for name in FIXTURES {
        let m = Model::load(&fixture(name), &Device::Cpu, DType::F32).unwrap();
        let nll = |m: &Model| -> f32 {
            let s = m.response_logprobs_nograd(&seqs, 1.0, 3).unwrap();
            -(0..seqs.len()).map(|i| s.logprobs_row(i).unwrap().iter().sum::<f32>()).sum::<f32>()
        };
        let before = nll(&m);
        let pass = m.train_pass(&seqs, 1.0, Memory::default()).unwrap();
        let loss = pass.scored.logprobs.sum_all().unwrap().neg().unwrap();
        let mut grads = Grads::new();
        pass.backward(&loss, &mut grads).unwrap();
        assert_eq!(grads.len(), m.vars().len(), "{name}: every weight has a gradient");
        let mut opt = Optimizer::default();
        opt.step(&m.vars(), &grads, Some(1.0), &AdamWConfig::new(1e-3, 0.0)).unwrap();
        let after = nll(&m);
        println!("{name}: one AdamW step (lr 1e-3): response NLL {before:.4} -> {after:.4}");
        assert!(after < before - 0.1, "{name}: {before} -> {after}");
    }
}
