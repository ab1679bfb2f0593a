//! Batched sampling: batch independence, determinism, stop tokens, the sampler's log-probs
//! against teacher-forced scoring, and the pooled hidden states of REFERENCE.md §2.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use clipo::model::{FinishReason, Model, Sample, SampleParams, SampleRequest, Sequence};
use rand::{Rng, SeedableRng};

fn fixture(name: &str) -> PathBuf {
    Path::new(file!())
        .parent()
        .unwrap()
        .join("fixtures")
        .join(name)
}

fn load(name: &str) -> Model {
    Model::load(&fixture(name), &Device::Cpu, DType::F32).unwrap()
}

/// Eight prompts of lengths 1..=29, seeded.
fn prompts() -> Vec<Vec<u32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    [3usize, 17, 1, 9, 29, 5, 12, 22]
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(3..256u32)).collect())
        .collect()
}

/// |a - b| relative to max(1, |b|): log-probs of these random models reach -40, where f32
/// rounding of the batched matmuls alone is ~1e-5 absolute.
fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(1.0)
}

/// Same tokens and finish reasons; log-probs and pooled hidden states within 1e-5 (relative).
fn assert_same(a: &[Sample], b: &[Sample], what: &str) -> f32 {
    assert_close(a, b, what, 1e-5)
}

/// Same tokens and finish reasons; log-probs and pooled hidden states within `tol` (relative).
fn assert_close(a: &[Sample], b: &[Sample], what: &str, tol: f32) -> f32 {
    let mut worst = 0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.tokens, y.tokens, "{what}: sample {i}");
        assert_eq!(x.finish, y.finish, "{what}: sample {i}");
        for (p, q) in x
            .logprobs
            .iter()
            .zip(&y.logprobs)
            .chain(x.hidden_official.iter().zip(&y.hidden_official))
        {
            worst = worst.max(rel(*p, *q));
        }
    }
    assert!(worst < tol, "{what}: {worst}");
    worst
}

/// One fixture of each family (tests/model_parity.rs): Llama, Qwen2, Qwen3, Llama with llama3
/// rope scaling, Mistral (a window of 8, shorter than the prompts plus their samples).
const FAMILIES: [&str; 5] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-llama3-rope", "tiny-mistral"];

#[test]
fn batch8_greedy_equals_batch1_greedy() {
    for name in FAMILIES {
        let m = load(name);
        let ps = prompts();
        let refs: Vec<&[u32]> = ps.iter().map(|p| p.as_slice()).collect();
        let batched = m.greedy(&refs, 24, &[]).unwrap();
        let single: Vec<Sample> = refs
            .iter()
            .map(|p| m.greedy(&[p], 24, &[]).unwrap().remove(0))
            .collect();
        let w = assert_same(&batched, &single, name);
        assert!(batched
            .iter()
            .all(|s| s.tokens.len() == 24 && s.finish == FinishReason::Length));
        println!("{name}: batch-8 greedy == batch-1 greedy (max |diff| log-probs/hidden {w:.1e})");
    }
}

#[test]
fn sampling_is_deterministic_and_batch_independent() {
    let m = load("tiny-qwen2");
    let ps = prompts();
    for params in [
        SampleParams::sampling(20, 1.0, vec![]),
        SampleParams {
            top_p: 0.9,
            top_k: 40,
            ..SampleParams::sampling(20, 0.8, vec![])
        },
    ] {
        let reqs: Vec<SampleRequest> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| SampleRequest {
                prompt: p,
                seed: 1000 + i as u64,
            })
            .collect();
        let a = m.sample(&reqs, &params).unwrap();
        let b = m.sample(&reqs, &params).unwrap();
        assert_same(&a, &b, "same call twice");
        let alone: Vec<Sample> = reqs
            .iter()
            .map(|r| m.sample(&[*r], &params).unwrap().remove(0))
            .collect();
        assert_same(&a, &alone, "batch vs one at a time");
        let rev: Vec<SampleRequest> = reqs.iter().rev().cloned().collect();
        let mut c = m.sample(&rev, &params).unwrap();
        c.reverse();
        assert_same(&a, &c, "reversed batch");
        // Different seeds give different samples.
        let other: Vec<SampleRequest> = reqs
            .iter()
            .map(|r| SampleRequest {
                seed: r.seed + 77,
                ..*r
            })
            .collect();
        let d = m.sample(&other, &params).unwrap();
        assert!(a.iter().zip(&d).any(|(x, y)| x.tokens != y.tokens));
    }
}

/// Continuous batching (`sample_continuous` with a decode width below the number of requests):
/// every row's tokens, log-probs and pooled hidden state are those of the all-at-once batch,
/// whatever the width, with rows of varied lengths (stop tokens) leaving and waiting ones
/// (prompts from 1 to 29 tokens, some longer than the filled cache columns when admitted)
/// taking their slots, and the cache trimmed when full. On the fused CPU path, bit for bit.
#[test]
fn continuous_batching_leaves_every_row_unchanged() {
    let composed = clipo::model::composed();
    for name in FAMILIES {
        let m = load(name);
        let ps = prompts();
        // G = 3 samples of each prompt; stop tokens end some rows early.
        let reqs: Vec<SampleRequest> =
            ps.iter().enumerate().flat_map(|(i, p)| (0..3).map(move |s| SampleRequest { prompt: p, seed: (i * 10 + s) as u64 })).collect();
        let params = SampleParams { top_p: 0.9, ..SampleParams::sampling(30, 1.0, (3..40).collect()) };
        let all = m.sample(&reqs, &params).unwrap();
        let lens: Vec<usize> = all.iter().map(|s| s.tokens.len()).collect();
        assert!(lens.iter().min() < Some(&4) && lens.iter().max() > Some(&12), "{name}: lengths vary {lens:?}");
        for width in [1, 2, 5, 24] {
            let mut got: Vec<Option<Sample>> = vec![None; reqs.len()];
            let mut order = vec![];
            m.sample_continuous(&reqs, &params, width, |i, s| {
                order.push(i);
                got[i] = Some(s);
                Ok::<(), ()>(())
            })
            .unwrap();
            let got: Vec<Sample> = got.into_iter().map(Option::unwrap).collect();
            // The composed ops multiply the decode rows as one matrix: rounding then depends on
            // the batch (a few 1e-5 over 30 tokens).
            assert_close(&got, &all, &format!("{name}: width {width}"), if composed { 1e-4 } else { 0.0 + 1e-30 });
            if !composed {
                for (x, y) in got.iter().zip(&all) {
                    assert_eq!((&x.logprobs, &x.behavior_logprobs, &x.hidden_official), (&y.logprobs, &y.behavior_logprobs, &y.hidden_official), "{name}: width {width}: bit for bit");
                }
            }
            if width > 1 && width < reqs.len() {
                assert!(order.windows(2).any(|w| w[0] > w[1]), "{name}: width {width}: rows finish out of order");
            }
        }
    }
}

#[test]
fn groups_share_one_prefill_and_match_single_requests() {
    let m = load("tiny-llama");
    let ps = prompts();
    let refs: Vec<&[u32]> = ps[..3].iter().map(|p| p.as_slice()).collect();
    let params = SampleParams::sampling(12, 1.0, vec![]);
    let seed_of = |i: usize, s: usize| (i * 100 + s) as u64;
    let groups = m.sample_groups(&refs, 4, seed_of, &params).unwrap();
    for (i, g) in groups.iter().enumerate() {
        assert_eq!(g.len(), 4);
        let alone: Vec<Sample> = (0..4)
            .map(|s| {
                m.sample(
                    &[SampleRequest {
                        prompt: refs[i],
                        seed: seed_of(i, s),
                    }],
                    &params,
                )
                .unwrap()
                .remove(0)
            })
            .collect();
        assert_same(g, &alone, "group vs single");
        assert!(
            g.iter().any(|s| s.tokens != g[0].tokens),
            "samples of a group differ"
        );
    }
}

#[test]
fn top_k_1_is_greedy() {
    let m = load("tiny-llama-bias");
    let ps = prompts();
    let reqs: Vec<SampleRequest> = ps
        .iter()
        .map(|p| SampleRequest { prompt: p, seed: 5 })
        .collect();
    let params = SampleParams {
        top_k: 1,
        ..SampleParams::sampling(16, 1.0, vec![])
    };
    let a = m.sample(&reqs, &params).unwrap();
    let refs: Vec<&[u32]> = ps.iter().map(|p| p.as_slice()).collect();
    let g = m.greedy(&refs, 16, &[]).unwrap();
    for (x, y) in a.iter().zip(&g) {
        assert_eq!(x.tokens, y.tokens);
    }
}

#[test]
fn stop_tokens_end_rows_early_and_the_others_go_on() {
    let m = load("tiny-qwen2");
    let ps = prompts();
    let refs: Vec<&[u32]> = ps.iter().map(|p| p.as_slice()).collect();
    let free = m.greedy(&refs, 16, &[]).unwrap();
    // Stop at row 0's 3rd token and row 5's 7th: those rows end there with Eos (or earlier if
    // the token appears before), the others are unaffected unless they emit one of them.
    let stops = vec![free[0].tokens[2], free[5].tokens[6]];
    let stopped = m.greedy(&refs, 16, &stops).unwrap();
    for (f, s) in free.iter().zip(&stopped) {
        match f.tokens.iter().position(|t| stops.contains(t)) {
            Some(k) => {
                assert_eq!(s.tokens, f.tokens[..=k].to_vec());
                assert_eq!(s.finish, FinishReason::Eos);
            }
            None => {
                assert_eq!(s.tokens, f.tokens);
                assert_eq!(s.finish, FinishReason::Length);
            }
        }
    }
    assert!(stopped[0].tokens.len() <= 3 && stopped[5].tokens.len() <= 7);
}

#[test]
fn sampler_logprobs_equal_teacher_forced_scores() {
    for name in FAMILIES {
        let m = load(name);
        let ps = prompts();
        let t = 0.7;
        let reqs: Vec<SampleRequest> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| SampleRequest {
                prompt: p,
                seed: i as u64,
            })
            .collect();
        let params = SampleParams {
            top_p: 0.8,
            ..SampleParams::sampling(18, t, vec![5, 6, 7, 8, 9])
        };
        let samples = m.sample(&reqs, &params).unwrap();
        let seqs: Vec<Sequence> = ps
            .iter()
            .zip(&samples)
            .map(|(p, s)| Sequence {
                prompt: p,
                response: &s.tokens,
            })
            .collect();
        let mut worst = 0f32;
        for scored in [
            m.response_logprobs(&seqs, t).unwrap(),
            m.response_logprobs_nograd(&seqs, t, 3).unwrap(),
        ] {
            for (i, s) in samples.iter().enumerate() {
                for (a, b) in scored.logprobs_row(i).unwrap().iter().zip(&s.logprobs) {
                    worst = worst.max(rel(*a, *b));
                }
            }
            let ent: Vec<Vec<f32>> = scored.entropy.to_vec2().unwrap();
            assert!(ent.iter().flatten().all(|e| *e >= 0.0 && e.is_finite()));
        }
        println!("{name}: sampler log-probs vs teacher-forced max |diff|/max(1,|lp|) {worst:.1e}");
        // Two code paths (f64 on the host vs f32 on the device; fused vs graph kernels) over
        // logits of magnitude ~25 (f32 ulp 2e-6): a few ulp apart.
        assert!(worst < 5e-5, "{name}: {worst}");
    }
}

/// Final-norm hidden states of prompt + response, unbatched: (P + L, d).
fn teacher_forced_hidden(m: &Model, prompt: &[u32], response: &[u32]) -> Vec<Vec<f32>> {
    let all: Vec<u32> = prompt.iter().chain(response).cloned().collect();
    let n = all.len();
    let x = Tensor::from_vec(all, (1, n), &Device::Cpu).unwrap();
    m.forward_hidden_nograd(&x, &[0])
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn pooled_hidden_states_match_teacher_forcing() {
    for name in FAMILIES {
        let m = load(name);
        let ps = prompts();
        let reqs: Vec<SampleRequest> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| SampleRequest {
                prompt: p,
                seed: 40 + i as u64,
            })
            .collect();
        let samples = m
            .sample(
                &reqs,
                &SampleParams::sampling(15, 1.0, vec![10, 11, 12, 13, 14, 15]),
            )
            .unwrap();
        let seqs: Vec<Sequence> = ps
            .iter()
            .zip(&samples)
            .map(|(p, s)| Sequence {
                prompt: p,
                response: &s.tokens,
            })
            .collect();
        let mean_a: Vec<Vec<f32>> = m.mean_hidden(&seqs, 3).unwrap().to_vec2().unwrap();
        let mean_b: Vec<Vec<f32>> = m
            .response_logprobs_nograd(&seqs, 1.0, 8)
            .unwrap()
            .mean_hidden
            .to_vec2()
            .unwrap();
        let mean_c: Vec<Vec<f32>> = m
            .response_logprobs(&seqs, 1.0)
            .unwrap()
            .mean_hidden
            .to_vec2()
            .unwrap();
        let (mut w_off, mut w_mean) = (0f32, 0f32);
        for (i, s) in samples.iter().enumerate() {
            let (p, l) = (ps[i].len(), s.tokens.len());
            let h = teacher_forced_hidden(&m, &ps[i], &s.tokens);
            let d = h[0].len();
            // official: response tokens 1..L-1 (columns p .. p+L-2), divided by L.
            let official: Vec<f32> = (0..d)
                .map(|j| (p..p + l - 1).map(|c| h[c][j]).sum::<f32>() / l as f32)
                .collect();
            // mean: all L response tokens (columns p .. p+L-1).
            let mean: Vec<f32> = (0..d)
                .map(|j| (p..p + l).map(|c| h[c][j]).sum::<f32>() / l as f32)
                .collect();
            for j in 0..d {
                w_off = w_off.max((official[j] - s.hidden_official[j]).abs());
                for got in [&mean_a, &mean_b, &mean_c] {
                    w_mean = w_mean.max((mean[j] - got[i][j]).abs());
                }
            }
        }
        let finishes: Vec<&str> = samples.iter().map(|s| s.finish.as_str()).collect();
        println!("{name}: official max |diff| {w_off:.1e}, mean max |diff| {w_mean:.1e}; finishes {finishes:?}");
        assert!(
            w_off < 1e-5 && w_mean < 1e-5,
            "{name}: official {w_off}, mean {w_mean}"
        );
    }
}

/// The behaviour log-prob of a top-k / top-p / min-p draw is the log-prob under the truncated,
/// renormalised distribution, checked against an independent computation from teacher-forced
/// logits; the untruncated log-prob is kept beside it; greedy behaviour log-probs are 0.
#[test]
fn behaviour_logprobs_are_those_of_the_truncated_distribution() {
    let m = load("tiny-llama");
    let ps = prompts();
    let (temperature, top_p, top_k, min_p) = (0.8f64, 0.9f64, 40usize, 0.02f64);
    let params = SampleParams { top_p, top_k, min_p, ..SampleParams::sampling(12, temperature, vec![]) };
    let reqs: Vec<SampleRequest> = ps.iter().enumerate().map(|(i, p)| SampleRequest { prompt: p, seed: 77 + i as u64 }).collect();
    let samples = m.sample(&reqs, &params).unwrap();
    let (mut worst_b, mut worst_u, mut truncated) = (0f64, 0f64, 0usize);
    for (p, s) in ps.iter().zip(&samples) {
        let ids: Vec<u32> = p.iter().chain(&s.tokens).copied().collect();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits: Vec<Vec<f32>> = m.logits_nograd(&x, &[0]).unwrap().get(0).unwrap().to_vec2().unwrap();
        for (k, &tok) in s.tokens.iter().enumerate() {
            // softmax(z / T), sorted; keep the top_k most likely, then while the mass before a
            // token is < top_p (at least one), then those at least min_p times the most likely;
            // renormalise. (These random logits have no ties.)
            let z: Vec<f64> = logits[p.len() - 1 + k].iter().map(|&l| f64::from(l) / temperature).collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let probs: Vec<f64> = z.iter().map(|v| (v - max).exp() / total).collect();
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b)));
            order.truncate(top_k);
            let kept_total: f64 = order.iter().map(|&i| probs[i]).sum();
            let (mut before, mut kept) = (0f64, vec![]);
            for &i in &order {
                if !kept.is_empty() && before / kept_total >= top_p {
                    break;
                }
                before += probs[i];
                kept.push(i);
            }
            kept.retain(|&i| probs[i] >= min_p * probs[order[0]]);
            assert!(kept.contains(&(tok as usize)), "token {tok} drawn outside the kept set");
            truncated += usize::from(kept.len() < probs.len());
            let mass: f64 = kept.iter().map(|&i| probs[i]).sum();
            let want_b = (probs[tok as usize] / mass).ln();
            worst_b = worst_b.max((f64::from(s.behavior_logprobs[k]) - want_b).abs());
            worst_u = worst_u.max((f64::from(s.logprobs[k]) - probs[tok as usize].ln()).abs());
        }
    }
    assert!(truncated > 0);
    assert!(worst_b < 1e-4 && worst_u < 1e-4, "behaviour {worst_b:.2e}, untruncated {worst_u:.2e}");
    // Greedy: the draw is certain.
    let g = m.greedy(&[ps[0].as_slice()], 5, &[]).unwrap();
    assert!(g[0].behavior_logprobs.iter().all(|&b| b == 0.0));
}
