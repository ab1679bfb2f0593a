//! Tests of the head: init, forward, the f64 finite-difference gradient check, AdamW against
//! hand-computed torch.optim.AdamW values, the checkpoint, and `embed_step` end to end.

use super::*;
use crate::contrastive::config::{Level, LossKind, MaskedLabel, Similarity};
use crate::contrastive::{embed_step, Hidden};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

fn random_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
}

#[test]
fn init_is_uniform_in_one_over_sqrt_fan_in_and_seeded() {
    // d = 256: bound = 1 / sqrt(256) = 0.0625; uniform variance = bound^2 / 3 = 0.0013021.
    let a = ContrastiveHead::init(HeadKind::Linear, 256, 64, 1).unwrap();
    let b = ContrastiveHead::init(HeadKind::Linear, 256, 64, 1).unwrap();
    let c = ContrastiveHead::init(HeadKind::Linear, 256, 64, 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.weights()[0].2, c.weights()[0].2);
    let w = a.weights()[0].2;
    assert_eq!(w.len(), 64 * 256);
    assert!(w.iter().all(|x| x.abs() <= 0.0625));
    let mean = w.iter().map(|&x| f64::from(x)).sum::<f64>() / w.len() as f64;
    let var = w
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / w.len() as f64;
    assert!(mean.abs() < 1e-3, "{mean}");
    assert!((var - 0.0625f64.powi(2) / 3.0).abs() < 1e-4, "{var}");
    let mlp = ContrastiveHead::init(HeadKind::Mlp, 16, 4, 1).unwrap();
    let names: Vec<_> = mlp.weights().iter().map(|(n, s, _)| (*n, *s)).collect();
    assert_eq!(
        names,
        vec![("proj.0.weight", (16, 16)), ("proj.2.weight", (4, 16))]
    );
    assert_eq!(mlp.step(), 0);
}

#[test]
fn forward_matches_a_hand_computation() {
    // linear: W = [[1, 0, 2], [0, 3, 0]] (D = 2, d = 3); h = (1, 1, 1) -> y = (3, 3) -> z = (1, 1) / sqrt 2.
    let head = ContrastiveHead::from_weights(
        HeadKind::Linear,
        3,
        2,
        vec![vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0]],
    )
    .unwrap();
    let h = [1.0f32, 1.0, 1.0, 0.0, 0.0, 0.0];
    let z = head.embed(Hidden::new(&h, 2, 3).unwrap()).unwrap();
    let r = std::f32::consts::FRAC_1_SQRT_2;
    // Row 2 is zero: F.normalize gives 0 / max(0, 1e-12) = 0.
    assert_eq!(z, vec![r, r, 0.0, 0.0]);
    // mlp: W0 = diag(1, -1, 1), W2 = [[1, 1, 0], [0, 1, 1]]; h = (2, 5, -1):
    // a = (2, -5, -1), relu -> (2, 0, 0), y = (2, 0), z = (1, 0).
    let w0 = vec![1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0];
    let w2 = vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
    let head = ContrastiveHead::from_weights(HeadKind::Mlp, 3, 2, vec![w0, w2]).unwrap();
    let z = head
        .embed(Hidden::new(&[2.0, 5.0, -1.0], 1, 3).unwrap())
        .unwrap();
    assert_eq!(z, vec![1.0, 0.0]);
}

/// d(head loss)/dW by central differences in f64 against the hand-written backward.
fn gradient_check(kind: HeadKind, cfg: &ContrastiveConfig, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (rows, d, big_d) = (12, 5, 3);
    let h = random_vec(&mut rng, rows * d);
    // 3 groups of 4, each with 2 correct and 2 incorrect, so every level has anchors.
    let correct = [
        true, false, true, false, false, true, true, false, true, true, false, false,
    ];
    let group = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
    let ids = ["a", "a", "a", "a", "b", "b", "b", "b", "c", "c", "c", "c"];
    let idx = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3];
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let shapes: Vec<(usize, usize)> = match kind {
        HeadKind::Linear => vec![(big_d, d)],
        HeadKind::Mlp => vec![(d, d), (big_d, d)],
    };
    let mut ws: Vec<Vec<f64>> = shapes
        .iter()
        .map(|&(r, c)| random_vec(&mut rng, r * c))
        .collect();
    let ht = Tensor::from_slice(&h, (rows, d), &Device::Cpu).unwrap();
    let tensors = |ws: &[Vec<f64>]| -> Vec<Tensor> {
        ws.iter()
            .zip(&shapes)
            .map(|(w, &s)| Tensor::from_slice(w, s, &Device::Cpu).unwrap())
            .collect()
    };
    let (out, _, grads) = head_pass(kind, &tensors(&ws), &ht, &batch, cfg, 9, true).unwrap();
    assert!(out.num_anchors > 0);
    let grads: Vec<Vec<f64>> = grads
        .unwrap()
        .iter()
        .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
        .collect();
    let scale = grads.iter().flatten().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 1e-6, "{kind} {cfg:?}: gradient is zero");
    let eps = 1e-6;
    for p in 0..ws.len() {
        for k in 0..ws[p].len() {
            let w0 = ws[p][k];
            ws[p][k] = w0 + eps;
            let plus = head_pass(kind, &tensors(&ws), &ht, &batch, cfg, 9, false)
                .unwrap()
                .0
                .head_loss;
            ws[p][k] = w0 - eps;
            let minus = head_pass(kind, &tensors(&ws), &ht, &batch, cfg, 9, false)
                .unwrap()
                .0
                .head_loss;
            ws[p][k] = w0;
            let fd = (plus - minus) / (2.0 * eps);
            assert!(
                (fd - grads[p][k]).abs() <= 1e-6 * scale.max(1.0),
                "{kind} {} {} {}: weight {p}[{k}]: backward {} vs finite difference {fd}",
                cfg.loss,
                cfg.level,
                cfg.similarity,
                grads[p][k]
            );
        }
    }
}

#[test]
fn head_gradient_matches_finite_differences_for_every_option() {
    let mut seed = 0;
    for kind in HeadKind::ALL {
        for loss in LossKind::ALL {
            for level in Level::ALL {
                for sim in Similarity::ALL {
                    // tau 0.5 keeps every S_A far above 1e-8, where the detached row max is
                    // invisible to finite differences.
                    let cfg = ContrastiveConfig {
                        loss: *loss,
                        level: *level,
                        similarity: *sim,
                        masked_label: MaskedLabel::Nothing,
                        tau: 0.5,
                        ..Default::default()
                    };
                    seed += 1;
                    gradient_check(*kind, &cfg, seed);
                }
            }
        }
        // The reference configuration itself (tau 0.05, correct anchors only).
        gradient_check(*kind, &ContrastiveConfig::default(), 100);
    }
}

#[test]
fn adamw_matches_torch_by_hand() {
    // testdata/adamw_expected.py. Step 1 by hand for p = 0.5, g = 0.1:
    // m = 0.1 * 0.1 = 0.01, v = 0.001 * 0.01 = 1e-5; m_hat = 0.01 / 0.1 = 0.1, sqrt(v_hat) = 0.1;
    // p = 0.5 * (1 - 1e-3 * 0.01) - 1e-3 * 0.1 / (0.1 + 1e-8) = 0.499995 - 0.000999999900 = 0.4989950001.
    let mut head =
        ContrastiveHead::from_weights(HeadKind::Linear, 2, 2, vec![vec![0.5, -1.0, 2.0, 0.0]])
            .unwrap();
    let opt = AdamW::from_config(&ContrastiveConfig::default());
    head.adamw_step(&[vec![0.1, -0.2, 0.0, 1e-3]], &opt);
    let want1 = [0.4989950001, -0.99899000005, 1.99998, -0.0009999900001];
    let close = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .all(|(&g, &w)| (f64::from(g) - w).abs() <= 1e-7 * w.abs().max(1e-3))
    };
    assert!(
        close(head.weights()[0].2, &want1),
        "{:?}",
        head.weights()[0].2
    );
    let (m, v) = head.moments("proj.weight").unwrap();
    assert!(
        close(m, &[0.01, -0.02, 0.0, 0.0001]) && close(v, &[1e-5, 4e-5, 0.0, 1e-9]),
        "{m:?} {v:?}"
    );
    head.adamw_step(&[vec![-0.3, 0.05, 0.4, 0.0]], &opt);
    let want2 = [
        0.499484199961,
        -0.998510542011,
        1.9992158634,
        -0.00167002877604,
    ];
    assert!(
        close(head.weights()[0].2, &want2),
        "{:?}",
        head.weights()[0].2
    );
    assert_eq!(head.step(), 2);
}

#[test]
fn save_load_step_equals_two_uninterrupted_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.safetensors");
    let opt = AdamW::from_config(&ContrastiveConfig::default());
    for kind in HeadKind::ALL {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut a = ContrastiveHead::init(*kind, 6, 3, 5).unwrap();
        let grads = |rng: &mut ChaCha8Rng, head: &ContrastiveHead| -> Vec<Vec<f32>> {
            head.weights()
                .iter()
                .map(|(_, _, w)| (0..w.len()).map(|_| rng.random::<f32>() - 0.5).collect())
                .collect()
        };
        let (g1, g2) = (grads(&mut rng, &a), grads(&mut rng, &a));
        a.adamw_step(&g1, &opt);
        a.save(&path).unwrap();
        let mut b = ContrastiveHead::load(&path).unwrap();
        assert_eq!(a, b, "load gives back what was saved");
        a.adamw_step(&g2, &opt);
        b.adamw_step(&g2, &opt);
        assert_eq!(a, b, "bit-identical after the next step");
        assert_eq!(b.step(), 2);
    }
    assert!(!dir.path().join("head.safetensors.tmp").exists());
}

#[test]
fn bare_weights_file_loads_with_zero_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.safetensors");
    let w: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 3], &bytes).unwrap();
    safetensors::tensor::serialize_to_file([("proj.weight", view)], None, &path).unwrap();
    let head = ContrastiveHead::load(&path).unwrap();
    assert_eq!(
        (head.kind(), head.in_dim(), head.out_dim(), head.step()),
        (HeadKind::Linear, 3, 2, 0)
    );
    assert_eq!(head.weights()[0].2, &w[..]);
    let (m, v) = head.moments("proj.weight").unwrap();
    assert!(m.iter().chain(v).all(|&x| x == 0.0));
    // A file without any head weight is refused with its tensor names.
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 3], &bytes).unwrap();
    safetensors::tensor::serialize_to_file([("lm_head.weight", view)], None, &path).unwrap();
    let err = ContrastiveHead::load(&path).unwrap_err().to_string();
    assert!(err.contains("lm_head.weight"), "{err}");
}

/// Hidden states (B, d), correct, group, prompt_id, sample_idx.
type Rows = (Vec<f32>, Vec<bool>, Vec<u32>, Vec<&'static str>, Vec<u32>);

/// 4 groups of 4 random hidden states (d = 8), half correct.
fn small_batch() -> Rows {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let h = (0..16 * 8).map(|_| rng.random::<f32>() - 0.5).collect();
    let correct = (0..16).map(|i| i % 4 < 2 || i % 8 == 2).collect();
    let group = (0..16).map(|i| i / 4).collect();
    let ids = (0..16).map(|i| ["g0", "g1", "g2", "g3"][i / 4]).collect();
    let idx = (0..16).map(|i| i % 4).collect();
    (h, correct, group, ids, idx)
}

#[test]
fn embed_step_reports_the_losses_before_the_step_and_steps_once() {
    let (h, correct, group, ids, idx) = small_batch();
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let cfg = ContrastiveConfig {
        proj_dim: 4,
        seed: 3,
        ..Default::default()
    };
    let mut head = ContrastiveHead::init(cfg.head, 8, 4, cfg.seed).unwrap();
    let before = head.clone();
    let hidden = Hidden::new(&h, 16, 8).unwrap();
    let z = head.embed(hidden).unwrap();
    let expected = crate::contrastive::contrastive_loss(&z, 4, &batch, &cfg, 1).unwrap();
    let out = embed_step(&mut head, &cfg, hidden, &batch, 1).unwrap();
    assert!(out.stepped && out.num_anchors > 0);
    assert_eq!(head.step(), 1);
    assert_ne!(head.weights()[0].2, before.weights()[0].2);
    assert_eq!(out.positive, expected.positive);
    for (i, &c) in correct.iter().enumerate() {
        assert!(
            (out.loss[i] - expected.loss[i]).abs() < 1e-4 * (1.0 + expected.loss[i].abs()),
            "row {i}"
        );
        let want = (-0.2 * out.loss[i] * if c { 1.0 } else { 0.0 }).max(-0.5);
        assert_eq!(out.reward[i], want);
    }
    let m = serde_json::to_value(&out.metrics).unwrap();
    assert_eq!(m["con_lm_head/head_stepped"], 1.0);
    assert_eq!(m["con_lm_head/num_anchors"], out.num_anchors as f64);
    // fixed_head: same losses, no step.
    let mut fixed = before.clone();
    let out2 = embed_step(
        &mut fixed,
        &ContrastiveConfig {
            fixed_head: true,
            ..cfg.clone()
        },
        hidden,
        &batch,
        1,
    )
    .unwrap();
    assert!(!out2.stepped);
    assert_eq!(fixed, before);
    assert_eq!(out2.loss, out.loss);
}

#[test]
fn embed_step_without_anchor_leaves_the_head_alone() {
    let (h, _, group, ids, idx) = small_batch();
    let correct = vec![false; 16];
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let cfg = ContrastiveConfig {
        proj_dim: 4,
        ..Default::default()
    };
    let mut head = ContrastiveHead::init(cfg.head, 8, 4, 0).unwrap();
    let before = head.clone();
    let out = embed_step(&mut head, &cfg, Hidden::new(&h, 16, 8).unwrap(), &batch, 0).unwrap();
    assert!(!out.stepped);
    assert_eq!((out.num_anchors, out.head_loss), (0, 0.0));
    assert!(out.reward.iter().all(|&r| r == 0.0));
    assert_eq!(
        head, before,
        "no AdamW step, not even weight decay or the step counter"
    );
    assert_eq!(
        serde_json::to_value(&out.metrics).unwrap()["con_lm_head/head_stepped"],
        0.0
    );
}

#[test]
fn embed_step_checks_its_inputs() {
    let (mut h, correct, group, ids, idx) = small_batch();
    let batch = Batch {
        correct: &correct,
        group: &group,
        prompt_id: &ids,
        sample_idx: &idx,
    };
    let cfg = ContrastiveConfig {
        proj_dim: 4,
        ..Default::default()
    };
    let mut head = ContrastiveHead::init(cfg.head, 8, 4, 0).unwrap();
    let wrong_d = ContrastiveConfig {
        proj_dim: 5,
        ..cfg.clone()
    };
    assert!(embed_step(
        &mut head,
        &wrong_d,
        Hidden::new(&h, 16, 8).unwrap(),
        &batch,
        0
    )
    .is_err());
    let short = Batch {
        correct: &correct[..15],
        ..batch
    };
    assert!(embed_step(&mut head, &cfg, Hidden::new(&h, 16, 8).unwrap(), &short, 0).is_err());
    h[8 * 5 + 3] = f32::NAN;
    let err = embed_step(&mut head, &cfg, Hidden::new(&h, 16, 8).unwrap(), &batch, 0).unwrap_err();
    assert!(err.to_string().contains("row 5"), "{err}");
    assert_eq!(head.step(), 0);
}

#[test]
fn embed_step_on_an_empty_batch_does_nothing() {
    for level in Level::ALL {
        let cfg = ContrastiveConfig {
            proj_dim: 4,
            level: *level,
            ..Default::default()
        };
        let mut head = ContrastiveHead::init(cfg.head, 8, 4, 0).unwrap();
        let batch = Batch {
            correct: &[],
            group: &[],
            prompt_id: &[],
            sample_idx: &[],
        };
        let out = embed_step(&mut head, &cfg, Hidden::new(&[], 0, 8).unwrap(), &batch, 0).unwrap();
        assert!(out.loss.is_empty() && !out.stepped && out.head_loss == 0.0);
        assert_eq!(head.step(), 0);
    }
}
