//! clipo-update: one policy update (REFERENCE.md §6), and the supervised warm start.
//!
//! RL: joins trajectories, rewards and (optionally) embeddings on (prompt_id, sample_idx);
//! total reward R = score + contrastive_reward (+ DAPO's soft overlong penalty, - beta * KL when
//! the KL goes in the reward); advantages per prompt group ([`crate::rl::advantages`]); then for
//! each epoch and mini-batch, micro-batches of sequences are scored with gradients, the policy
//! loss (+ KL coefficient x KL, aggregated like the loss) is back-propagated, gradients are
//! summed over micro-batches (the normalisers are the mini-batch's, so the sum is the
//! mini-batch's gradient), clipped to norm 1.0 and applied with AdamW.
//!
//! The old log-probs (the ratio's denominator) are recomputed with the policy's weights before
//! the first step, as verl does (`--old-logprobs recompute`, default); `--old-logprobs rollout`
//! takes the sampler's instead (they differ by top-p/top-k truncation only in how the sampler
//! recorded them, and by floating-point noise).
//!
//! Deviation from verl: a step whose loss has no gradient (every advantage 0, no KL or entropy
//! term) takes no optimiser step, and `actor/updated` is false ([`loss_has_no_gradient`]).
//!
//! The output is a directory: a Hugging Face model (transformers loads it unchanged), the
//! optimizer state (`optimizer.safetensors`), `clipo_state.json` (step, config, input hashes),
//! the audit table `advantages.parquet` and `metrics.json`. It is staged under `<out>.staging`
//! and renamed into place when complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt32Array};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::hf::{save_hf_dir, SaveDtype};
use crate::model::score::Sequence;
use crate::model::Memory;
use crate::optim::{AdamWConfig, Grads, Optimizer};
use crate::policy::{parse_device, parse_dtype, policy_hash, policy_id, Policy};
use crate::prompts::read_prompts;
use crate::schedule::{KlControl, LrSchedule};
use crate::rl::{advantages, aggregate, kl_penalty, policy_loss_weighted, AdvantageEstimator, KlEstimator, Norm, PgStats, PolicyLossConfig};
use crate::schema::{advantages as adv_schema, embeddings as emb, meta, rewards as rw, trajectories as tr};
use crate::table::{check_lineage, file_sha256, read_table, Provenance, Table, TableWriter};

const STAGE: &str = "clipo-update";
pub const STATE_FILE: &str = "clipo_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const ADVANTAGES_FILE: &str = "advantages.parquet";
pub const METRICS_FILE: &str = "metrics.json";

/// Where the ratio's denominator comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OldLogprobs {
    /// Recomputed by a no-grad pass with the policy's weights before the update (verl).
    Recompute,
    /// The sampler's log-probs as stored in the trajectories.
    Rollout,
}

/// verl's `algorithm.rollout_correction`: importance weights pi_old / pi_behavior between the
/// trainer's old log-probs and the sampler's behaviour log-probs, truncated at `threshold`
/// (TIS), per token or per sequence, multiplied into the token losses; or masked (MIS, TRL's
/// `token_mask` / `sequence_mask`): a weight above the threshold drops its token (or sequence)
/// from the loss instead of being truncated.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RolloutIs {
    pub sequence: bool,
    pub threshold: f64,
    pub mask: bool,
}

/// The importance weights of one response: r_t = exp(clamp(old_t - beh_t)) per token, or
/// r = exp(clamp(sum_t old_t - beh_t)) for every token of the sequence; truncated, w = min(r, C),
/// or masked, w = r if r <= C else 0.
fn rollout_is_weights(old: &[f32], behavior: &[f32], is: RolloutIs) -> Vec<f32> {
    let cap = |r: f64| -> f32 {
        if r <= is.threshold {
            r as f32
        } else if is.mask {
            0.0
        } else {
            is.threshold as f32
        }
    };
    let log_r: Vec<f64> = old.iter().zip(behavior).map(|(o, b)| f64::from(o - b).clamp(-20.0, 20.0)).collect();
    if is.sequence {
        vec![cap(log_r.iter().sum::<f64>().clamp(-20.0, 20.0).exp()); old.len()]
    } else {
        log_r.iter().map(|r| cap(r.exp())).collect()
    }
}

/// verl's `rollout_corr/*` mismatch metrics between the behaviour log-probs (the sampler's) and
/// the old log-probs (the trainer's), over every response token: with r = old - behaviour,
/// kl = mean(-r), k3_kl = mean(e^r - 1 - r), chi2_token = mean(e^2r) - 1; per response the
/// perplexities exp(-mean old) and exp(-mean behaviour) (training_ppl, rollout_ppl, their
/// ratio and log difference); the weights e^r (or, with the correction on, the applied ones):
/// mean, std, min, max, the fraction above `threshold` and the effective sample size
/// (sum w)^2 / (n sum w^2).
fn rollout_corr_metrics(old: &[Vec<f32>], behavior: &[&[f32]], applied: Option<&Vec<Vec<f32>>>, threshold: f64) -> serde_json::Map<String, serde_json::Value> {
    let (mut n, mut kl, mut k3, mut chi2) = (0f64, 0f64, 0f64, 0f64);
    let (mut ws, mut ppl_t, mut ppl_r, mut log_diff, mut seqs) = (Vec::new(), 0f64, 0f64, 0f64, 0f64);
    for (i, (o, b)) in old.iter().zip(behavior).enumerate() {
        if o.is_empty() {
            continue;
        }
        let (mut so, mut sb) = (0f64, 0f64);
        for (t, (x, y)) in o.iter().zip(b.iter()).enumerate() {
            let r = f64::from(x - y).clamp(-20.0, 20.0);
            n += 1.0;
            kl -= r;
            k3 += r.exp() - 1.0 - r;
            chi2 += (2.0 * r).exp();
            ws.push(applied.map_or(r.exp(), |a| f64::from(a[i][t])));
            so -= f64::from(*x);
            sb -= f64::from(*y);
        }
        let len = o.len() as f64;
        ppl_t += (so / len).exp();
        ppl_r += (sb / len).exp();
        log_diff += so / len - sb / len;
        seqs += 1.0;
    }
    let mut m = serde_json::Map::new();
    if n == 0.0 {
        return m;
    }
    let mean = ws.iter().sum::<f64>() / n;
    let var = ws.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / n;
    let sum_sq: f64 = ws.iter().map(|w| w * w).sum();
    let f = |x: f64| serde_json::json!(x);
    m.insert("rollout_corr/kl".into(), f(kl / n));
    m.insert("rollout_corr/k3_kl".into(), f(k3 / n));
    m.insert("rollout_corr/chi2_token".into(), f(chi2 / n - 1.0));
    m.insert("rollout_corr/training_ppl".into(), f(ppl_t / seqs));
    m.insert("rollout_corr/rollout_ppl".into(), f(ppl_r / seqs));
    m.insert("rollout_corr/ppl_ratio".into(), f(ppl_t / ppl_r));
    m.insert("rollout_corr/log_ppl_diff".into(), f(log_diff / seqs));
    m.insert("rollout_corr/rollout_is_mean".into(), f(mean));
    m.insert("rollout_corr/rollout_is_std".into(), f(var.sqrt()));
    m.insert("rollout_corr/rollout_is_min".into(), f(ws.iter().copied().fold(f64::INFINITY, f64::min)));
    m.insert("rollout_corr/rollout_is_max".into(), f(ws.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
    m.insert("rollout_corr/rollout_is_ratio_fraction_high".into(), f(ws.iter().filter(|w| **w > threshold).count() as f64 / n));
    m.insert("rollout_corr/rollout_is_eff_sample_size".into(), f(mean * mean * n / sum_sq.max(f64::MIN_POSITIVE)));
    if applied.is_some() {
        // Tokens a masking correction dropped (0 when truncating).
        m.insert("rollout_corr/rollout_is_masked_fraction".into(), f(ws.iter().filter(|w| **w == 0.0).count() as f64 / n));
    }
    m
}

/// DAPO's soft overlong punishment: 0 up to `max_len - buffer`, then falling linearly to
/// `-factor` at `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Overlong {
    pub buffer: usize,
    pub factor: f64,
}

/// The checked configuration of a policy update.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpdateConfig {
    pub policy: PathBuf,
    /// The frozen reference (None: no KL at all).
    pub reference: Option<PathBuf>,
    pub trajectories: PathBuf,
    pub rewards: PathBuf,
    pub embeddings: Option<PathBuf>,
    pub step: u64,
    pub out: PathBuf,
    pub estimator: AdvantageEstimator,
    pub loss: PolicyLossConfig,
    /// KL estimator; None turns the KL off.
    pub kl: Option<KlEstimator>,
    pub kl_coef: f64,
    /// Entropy bonus: the loss is pg_loss - entropy_coef x entropy (aggregated like the loss).
    pub entropy_coef: f64,
    pub kl_in_reward: bool,
    pub dynamic_sampling: bool,
    pub mask_truncated: bool,
    pub overlong: Option<Overlong>,
    /// The response-length budget (overlong shaping, seq-mean-token-sum-norm); None: from the
    /// trajectories' metadata (`max_new_tokens`), else the longest response.
    pub max_response_len: Option<usize>,
    /// AdamW; its `lr` is the peak rate of `lr_schedule`.
    pub optim: AdamWConfig,
    /// Rollout importance-sampling correction (None: off; the mismatch metrics are logged
    /// whenever the trajectories carry behaviour log-probs).
    pub rollout_is: Option<RolloutIs>,
    pub lr_schedule: LrSchedule,
    /// How the KL coefficient moves between steps (adaptive: with the KL in the reward, as verl).
    pub kl_ctrl: KlControl,
    pub max_grad_norm: Option<f64>,
    pub mini_batches: usize,
    /// Sequences per forward/backward pass.
    pub micro_batch: usize,
    /// Token budget per forward/backward pass (replaces `micro_batch` when set).
    pub max_tokens_per_micro_batch: Option<usize>,
    /// Gradient checkpointing and chunked log-probs (the training pass's memory).
    pub memory: Memory,
    pub epochs: usize,
    pub actor_warmup: u64,
    pub old_logprobs: OldLogprobs,
    pub allow_off_policy: bool,
    /// Sampling temperature the log-probs are computed at; None: from the trajectories.
    pub temperature: Option<f64>,
    pub device: String,
    /// Compute dtype (`--dtype`); None: f32 on the CPU, bf16 on CUDA. Master weights and
    /// moments are f32 whatever it is.
    pub dtype: Option<String>,
    /// Masters and moments in host memory, AdamW on the host (DeepSpeed's ZeRO-Offload);
    /// otherwise they live with the weights (a GPU) and AdamW runs there as tensor ops.
    pub offload_optimizer: bool,
    #[serde(skip)]
    pub save_dtype: SaveDtype,
    pub force: bool,
}

/// One trajectory joined with its rewards.
struct Row {
    prompt_id: String,
    sample_idx: u32,
    prompt: Vec<u32>,
    response: Vec<u32>,
    rollout_logprobs: Vec<f32>,
    /// The sampler's log-probs under the distribution it drew from (trajectories written
    /// before they were recorded have none).
    behavior: Option<Vec<f32>>,
    truncated: bool,
    score: f32,
    contrastive: f32,
}

/// Statistics of one sequence at its first update pass, for the audit table.
#[derive(Debug, Clone, Copy, Default)]
struct SeqStats {
    mean_ratio: f32,
    clipped: f32,
    kl: f32,
}

/// What the update did.
#[derive(Debug, Clone, Default)]
pub struct UpdateOutcome {
    pub metrics: serde_json::Map<String, serde_json::Value>,
    pub updated: bool,
    pub up_to_date: bool,
    pub note: Option<String>,
}

fn read_joined(cfg: &UpdateConfig) -> Result<(Vec<Row>, Table)> {
    let traj = read_table(
        &cfg.trajectories,
        &[tr::PROMPT_ID, tr::SAMPLE_IDX, tr::PROMPT_TOKEN_IDS, tr::RESPONSE_TOKEN_IDS, tr::RESPONSE_LOGPROBS, tr::FINISH_REASON, tr::POLICY],
        &[tr::BEHAVIOR_LOGPROBS.name],
    )?;
    let behavior_col = traj.batch.column_by_name(tr::BEHAVIOR_LOGPROBS.name).and_then(|c| c.as_any().downcast_ref::<arrow::array::ListArray>().cloned());
    if traj.num_rows() == 0 {
        return Err(Error::Empty { path: cfg.trajectories.clone(), detail: "no trajectories: nothing to update on".into() });
    }
    let rewards = read_table(&cfg.rewards, &[rw::PROMPT_ID, rw::SAMPLE_IDX, rw::SCORE], &[])?;
    let embeddings = cfg.embeddings.as_ref().map(|p| read_table(p, &[emb::PROMPT_ID, emb::SAMPLE_IDX, emb::CONTRASTIVE_REWARD], &[])).transpose()?;
    // The rewards and embeddings must belong to these trajectories.
    let traj_sha = file_sha256(&cfg.trajectories)?;
    check_lineage(&cfg.rewards, &rewards.metadata, "--trajectories", &cfg.trajectories, &traj_sha, "clipo-verify")?;
    if let Some(e) = &embeddings {
        check_lineage(&e.path, &e.metadata, "--trajectories", &cfg.trajectories, &traj_sha, "clipo-embed")?;
    }
    let keys = traj.row_keys(&tr::PROMPT_ID, &tr::SAMPLE_IDX);
    traj.index_keys(&keys)?;
    let r_index = rewards.index_keys(&rewards.row_keys(&rw::PROMPT_ID, &rw::SAMPLE_IDX))?;
    let e_index = match &embeddings {
        Some(e) => {
            let idx = e.index_keys(&e.row_keys(&emb::PROMPT_ID, &emb::SAMPLE_IDX))?;
            if idx.len() != keys.len() {
                return Err(Error::Join { detail: format!("{} has {} rows, the trajectories {}", e.path.display(), idx.len(), keys.len()) });
            }
            Some(idx)
        }
        None => None,
    };
    if r_index.len() != keys.len() {
        return Err(Error::Join { detail: format!("{} has {} rows, the trajectories {}", cfg.rewards.display(), r_index.len(), keys.len()) });
    }
    let prompt_ids = traj.list(&tr::PROMPT_TOKEN_IDS);
    let response_ids = traj.list(&tr::RESPONSE_TOKEN_IDS);
    let logprobs = traj.list(&tr::RESPONSE_LOGPROBS);
    let finish = traj.utf8(&tr::FINISH_REASON);
    let score = rewards.f32(&rw::SCORE);
    let mut rows = Vec::with_capacity(keys.len());
    for (i, key) in keys.into_iter().enumerate() {
        let missing = |what: &Path| Error::Join {
            detail: format!("{}: row {i} ({}, {}) has no row in {}", cfg.trajectories.display(), key.0, key.1, what.display()),
        };
        let ri = *r_index.get(&key).ok_or_else(|| missing(&cfg.rewards))?;
        let contrastive = match (&embeddings, &e_index) {
            (Some(e), Some(idx)) => {
                let ei = *idx.get(&key).ok_or_else(|| missing(&e.path))?;
                e.f32(&emb::CONTRASTIVE_REWARD).value(ei)
            }
            _ => 0.0,
        };
        let u32s = |a: &arrow::array::ListArray| -> Vec<u32> {
            a.value(i).as_any().downcast_ref::<UInt32Array>().expect("normalised to u32").values().to_vec()
        };
        let response = u32s(response_ids);
        let lp: Vec<f32> = logprobs.value(i).as_any().downcast_ref::<Float32Array>().expect("normalised to f32").values().to_vec();
        if lp.len() != response.len() {
            return Err(Error::bad_value(&cfg.trajectories, i, "response_logprobs", format!("{} log-probs for {} response tokens", lp.len(), response.len())));
        }
        rows.push(Row {
            prompt_id: key.0,
            sample_idx: key.1,
            prompt: u32s(prompt_ids),
            response,
            rollout_logprobs: lp,
            behavior: behavior_col.as_ref().and_then(|c| {
                let v = c.value(i);
                v.as_any().downcast_ref::<Float32Array>().map(|a| a.values().to_vec())
            }),
            truncated: finish.value(i) == "length",
            score: score.value(ri),
            contrastive,
        });
    }
    Ok((rows, traj))
}

/// Map a model error to ours, naming the directory.
fn model_err(dir: &Path) -> impl Fn(crate::model::Error) -> Error + '_ {
    move |e| Error::Model { dir: dir.into(), detail: e.to_string() }
}

/// (B, R) f32 tensor of per-row values, zero-padded to R.
fn padded(rows: &[&[f32]], r: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut v = vec![0f32; rows.len() * r];
    for (b, row) in rows.iter().enumerate() {
        v[b * r..b * r + row.len()].copy_from_slice(row);
    }
    Ok(Tensor::from_vec(v, (rows.len(), r), device)?)
}

pub fn run(cfg: &UpdateConfig) -> Result<UpdateOutcome> {
    let t_start = Instant::now();
    let device = parse_device(&cfg.device)?;
    let (rows, traj) = read_joined(cfg)?;
    let _lock = crate::lock::OutputLock::acquire(&cfg.out)?;
    let mut inputs: Vec<&Path> = vec![&cfg.trajectories, &cfg.rewards];
    if let Some(e) = &cfg.embeddings {
        inputs.push(e);
    }
    let pid = policy_id(&cfg.policy)?;
    let state_config = serde_json::json!({
        "config": cfg, "policy": pid,
    });
    let prov = Provenance::new(adv_schema::TABLE, STAGE, state_config.clone(), &inputs)?;
    // A run killed between removing the old output and renaming its staged copy left a
    // complete copy: put it in place instead of recomputing it.
    let staged = staging_dir(&cfg.out);
    if !cfg.force && !cfg.out.exists() && staged.join(STATE_FILE).is_file() {
        std::fs::rename(&staged, &cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    }
    let state_path = cfg.out.join(STATE_FILE);
    if !cfg.force && state_path.is_file() {
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?).unwrap_or_default();
        // Up to date means whole too: every file as the state recorded it.
        let metrics: Option<serde_json::Map<String, serde_json::Value>> =
            std::fs::read(cfg.out.join(METRICS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let whole = metrics.is_some() && state.get("outputs").is_some_and(|o| o == &serde_json::json!(dir_hashes(&cfg.out).unwrap_or_default()));
        if let (true, Some(metrics)) = (whole && state.get("fingerprint").and_then(|f| f.as_str()) == Some(prov.fingerprint().as_str()), metrics) {
            // The step's metrics again (a loop reprints its step line from them).
            return Ok(UpdateOutcome { up_to_date: true, metrics, ..Default::default() });
        }
    }

    // The trajectories must come from this policy.
    if !cfg.allow_off_policy {
        let policies = traj.utf8(&tr::POLICY);
        if let Some(i) = (0..traj.num_rows()).find(|&i| policy_hash(policies.value(i)) != policy_hash(&pid)) {
            return Err(Error::Config(format!(
                "{}: row {i} was sampled by {}, not by --policy {} ({pid}); pass --allow-off-policy to train on it anyway",
                cfg.trajectories.display(),
                policies.value(i),
                cfg.policy.display()
            )));
        }
    }
    let traj_cfg: serde_json::Value = traj.metadata.get(meta::CONFIG).and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    // Trajectories merged by clipo-filter carry their rollout's config under "rollout".
    let traj_cfg = traj_cfg.get("rollout").cloned().unwrap_or(traj_cfg);
    let temperature = cfg.temperature.unwrap_or_else(|| {
        if traj_cfg.get("greedy").and_then(|g| g.as_bool()) == Some(true) {
            1.0
        } else {
            traj_cfg.get("temperature").and_then(|t| t.as_f64()).unwrap_or(1.0)
        }
    });
    let max_len = cfg
        .max_response_len
        .or_else(|| traj_cfg.get("max_new_tokens").and_then(|m| m.as_u64()).map(|m| m as usize))
        .unwrap_or_else(|| rows.iter().map(|r| r.response.len()).max().unwrap_or(1));

    // Rewards and advantages.
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    let groups: Vec<usize> = rows.iter().map(|r| { let n = group_of.len(); *group_of.entry(r.prompt_id.as_str()).or_insert(n) }).collect();
    let n_groups = group_of.len();
    let mut reward: Vec<f32> = rows
        .iter()
        .map(|r| {
            let mut total = r.score + r.contrastive;
            if let Some(o) = cfg.overlong {
                // expected = max_len - buffer; penalty = min(-(len - expected) / buffer * factor, 0)
                let expected = max_len.saturating_sub(o.buffer) as f64;
                let over = r.response.len() as f64 - expected;
                total += (-over / o.buffer.max(1) as f64 * o.factor).min(0.0) as f32;
            }
            total
        })
        .collect();

    let dtype = parse_dtype(cfg.dtype.as_deref(), &device)?;
    let policy = Policy::load(&cfg.policy, &device, dtype)?;
    let vocab = policy.model.config().vocab_size as u32;
    for (i, r) in rows.iter().enumerate() {
        if let Some(t) = r.prompt.iter().chain(&r.response).find(|&&t| t >= vocab) {
            return Err(Error::bad_value(&cfg.trajectories, i, "response_token_ids", format!("token id {t} is outside the vocabulary ({vocab} tokens)")));
        }
    }
    let seqs: Vec<Sequence> = rows.iter().map(|r| Sequence { prompt: &r.prompt, response: &r.response }).collect();
    let chunk = cfg.micro_batch.max(1);
    let t_ref = Instant::now();
    // During the actor warm-up nothing is trained: the reference and old log-probs are needed
    // only when the KL goes into the reward (the audit table's rewards).
    let warmup = cfg.step < cfg.actor_warmup;
    let need_logprobs = !warmup || cfg.kl_in_reward;
    let ref_lp: Option<Vec<Vec<f32>>> = match (&cfg.reference, cfg.kl) {
        (Some(dir), Some(_)) if need_logprobs => {
            let reference = crate::model::Model::load(dir, &device, dtype).map_err(model_err(dir))?;
            let s = reference.response_logprobs_nograd(&seqs, temperature, chunk).map_err(model_err(dir))?;
            Some((0..rows.len()).map(|b| s.logprobs_row(b)).collect::<std::result::Result<_, _>>().map_err(model_err(dir))?)
        }
        _ => None,
    };
    let ref_secs = t_ref.elapsed().as_secs_f64();
    // Dynamic sampling (drop only, no refill; clipo-filter refills): groups whose verifier
    // scores are all equal carry no signal. As verl's filter_groups, the test is on the score,
    // not on the reward after overlong and KL shaping (which almost never ties).
    let mut keep = vec![true; rows.len()];
    let mut dropped_groups = 0;
    if cfg.dynamic_sampling {
        for g in 0..n_groups {
            let members: Vec<usize> = (0..rows.len()).filter(|&i| groups[i] == g).collect();
            if members.iter().all(|&i| rows[i].score == rows[members[0]].score) {
                dropped_groups += 1;
                for i in members {
                    keep[i] = false;
                }
            }
        }
    }
    // The step's shape: mini-batches of whole groups in the table's order, micro-batches of
    // `chunk` sequences; the old log-probs and the training loop walk the same plan.
    let trainable: Vec<usize> = (0..rows.len()).filter(|&i| keep[i]).collect();
    let plan = mini_batches(&trainable, &groups, cfg.mini_batches);
    let t_old = Instant::now();
    let old_lp: Vec<Vec<f32>> = match cfg.old_logprobs {
        OldLogprobs::Rollout => rows.iter().map(|r| r.rollout_logprobs.clone()).collect(),
        OldLogprobs::Recompute if !need_logprobs => rows.iter().map(|r| r.rollout_logprobs.clone()).collect(),
        OldLogprobs::Recompute => {
            // Composed ops (bf16, CUDA): the trained rows' old log-probs come from the training
            // pass on the training micro-batches, so the first ratio is exactly 1; the no-grad
            // pass scores the others (all rows on the fused CPU kernels, which agree with it).
            let by_training = !warmup && !policy.model.nograd_matches_training();
            let by_nograd: Vec<usize> = (0..rows.len()).filter(|&i| !(by_training && keep[i])).collect();
            let mut old: Vec<Vec<f32>> = vec![Vec::new(); rows.len()];
            if !by_nograd.is_empty() {
                let sub: Vec<Sequence> = by_nograd.iter().map(|&i| seqs[i]).collect();
                let s = policy.model.response_logprobs_nograd(&sub, temperature, chunk).map_err(model_err(&cfg.policy))?;
                for (j, &i) in by_nograd.iter().enumerate() {
                    old[i] = s.logprobs_row(j).map_err(model_err(&cfg.policy))?;
                }
            }
            if by_training {
                for micro in plan.iter().flat_map(|mini| micro_batches(mini, &rows, chunk, cfg.max_tokens_per_micro_batch)) {
                    let mseqs: Vec<Sequence> = micro.iter().map(|&i| seqs[i]).collect();
                    let lp = policy.model.logprobs_as_trained(&mseqs, temperature, cfg.memory).map_err(model_err(&cfg.policy))?;
                    for (&i, row) in micro.iter().zip(lp) {
                        old[i] = row;
                    }
                }
            }
            old
        }
    };
    let old_secs = t_old.elapsed().as_secs_f64();
    // The sampler-trainer mismatch (verl's rollout_correction) where behaviour log-probs exist.
    let behavior: Option<Vec<&[f32]>> = rows
        .iter()
        .map(|r| r.behavior.as_deref().filter(|b| b.len() == r.response.len()))
        .collect();
    if cfg.rollout_is.is_some() && behavior.is_none() {
        return Err(Error::Config(format!(
            "--rollout-is needs behaviour log-probs: {} has no behavior_logprobs column (or rows of the wrong length); sample it with this clipo-rollout",
            cfg.trajectories.display()
        )));
    }
    let is_weights: Option<Vec<Vec<f32>>> = match (cfg.rollout_is, &behavior) {
        (Some(is), Some(b)) if need_logprobs => Some(old_lp.iter().zip(b).map(|(o, b)| rollout_is_weights(o, b, is)).collect()),
        _ => None,
    };
    let corr_metrics = match &behavior {
        Some(b) if need_logprobs => rollout_corr_metrics(&old_lp, b, is_weights.as_ref(), cfg.rollout_is.map_or(2.0, |c| c.threshold)),
        _ => serde_json::Map::new(),
    };
    // The KL coefficient of this step: the adaptive controller's value carried in the input
    // policy's state, else --kl-coef.
    let kl_coef = match cfg.kl_ctrl {
        KlControl::Fixed => cfg.kl_coef,
        KlControl::Adaptive { .. } => read_kl_coef(&cfg.policy)?.unwrap_or(cfg.kl_coef),
    };
    let mut next_kl_coef = kl_coef;
    let mut reward_kl = None;
    if cfg.kl_in_reward {
        if let (Some(reflp), Some(est)) = (&ref_lp, cfg.kl) {
            // verl's apply_kl_penalty: R -= beta sum_t kl_t; current_kl = mean_i mean_t kl_it.
            let mut kl_means = 0f64;
            for (i, r) in reward.iter_mut().enumerate() {
                let a = Tensor::from_slice(&old_lp[i], (1, old_lp[i].len()), &device)?;
                let b = Tensor::from_slice(&reflp[i], (1, reflp[i].len()), &device)?;
                let kl: f32 = kl_penalty(&a, &b, est)?.sum_all()?.to_scalar()?;
                *r -= (kl_coef as f32) * kl;
                kl_means += f64::from(kl) / old_lp[i].len().max(1) as f64;
            }
            let current_kl = kl_means / rows.len() as f64;
            next_kl_coef = cfg.kl_ctrl.update(kl_coef, current_kl, rows.len());
            reward_kl = Some(current_kl);
        }
    }

    let adv = advantages(&reward, &groups, cfg.estimator);

    let mut metrics = serde_json::Map::new();
    let mut note = None;
    let lr = cfg.lr_schedule.lr_at(cfg.optim.lr, cfg.step, cfg.actor_warmup);
    let optim = AdamWConfig { lr, ..cfg.optim };
    let mut optimizer = match policy.dir.join(OPTIMIZER_FILE) {
        p if p.is_file() => Optimizer::load(&p)?,
        _ => Optimizer::default(),
    };
    keep_masters(&mut optimizer, &cfg.policy, dtype)?;
    optimizer.offload = cfg.offload_optimizer;
    // Not trained (warm-up, every group dropped): the audit's ratios are 1.
    let mut done = Done { stats: vec![SeqStats { mean_ratio: 1.0, ..Default::default() }; rows.len()], ..Default::default() };
    let t_update = Instant::now();
    let no_gradient = !warmup && !trainable.is_empty() && loss_has_no_gradient(cfg, &trainable, &adv, ref_lp.is_some(), kl_coef, &pid)?;
    let (updated, skip_reason) = if warmup {
        note = Some(format!("actor warm-up: step {} < {}, the policy is copied through unchanged", cfg.step, cfg.actor_warmup));
        (false, Some("actor warm-up"))
    } else if trainable.is_empty() {
        note = Some("every group was dropped by dynamic sampling (every group's verifier scores are equal): the policy is copied through unchanged".into());
        (false, Some("every group dropped"))
    } else if no_gradient {
        note = Some(format!(
            "no-op update: every advantage of step {} is 0 (in every group all responses got the same reward: {}), so the loss has no gradient; the policy is copied through unchanged",
            cfg.step,
            if rows.iter().all(|r| r.score == 0.0) { "every score is 0" } else { "no group has both better and worse responses" }
        ));
        (false, Some("every advantage 0"))
    } else {
        let batch = Batch { cfg, rows: &rows, seqs: &seqs, adv: &adv, old_lp: &old_lp, ref_lp: ref_lp.as_ref(), is_weights: is_weights.as_ref(), plan: &plan, max_len, temperature, chunk, kl_coef };
        done = optimise(&batch, &policy.model, &mut optimizer, &optim)?;
        if done.skipped == done.steps {
            note = Some(format!("every optimiser step of step {} had a non-finite gradient norm and was skipped: the policy is unchanged", cfg.step));
            (false, Some("non-finite gradients"))
        } else {
            (true, None)
        }
    };
    optimizer.sync_to_host()?;
    let tensors = optimizer.weights_to_save(&policy.model.vars())?;
    if updated {
        for (name, t) in &tensors {
            crate::checkpoint::ensure_finite_tensor("weight", name, t, cfg.step)?;
        }
    }
    let update_secs = t_update.elapsed().as_secs_f64();

    // Stage the output directory, then rename it into place.
    let staging = staging_dir(&cfg.out);
    if staging.exists() {
        // A staged copy of an earlier run (killed before its rename, or incomplete): rebuilt.
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    if updated {
        save_hf_dir(&staging, &cfg.policy, &tensors, cfg.save_dtype).map_err(|e| Error::Model { dir: staging.clone(), detail: e.to_string() })?;
        let shapes: HashMap<String, Vec<usize>> = tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
        optimizer.save(&staging.join(OPTIMIZER_FILE), &shapes)?;
    } else {
        copy_model_dir(&cfg.policy, &staging)?;
    }

    // The audit table.
    let col_f32 = |f: &dyn Fn(usize) -> f32| -> ArrayRef { Arc::new((0..rows.len()).map(f).collect::<Float32Array>()) };
    let batch = RecordBatch::try_new(
        adv_schema::schema(),
        vec![
            Arc::new(rows.iter().map(|r| Some(r.prompt_id.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.sample_idx).collect::<UInt32Array>()),
            col_f32(&|i| rows[i].score),
            col_f32(&|i| rows[i].contrastive),
            col_f32(&|i| reward[i]),
            col_f32(&|i| if keep[i] { adv[i] } else { 0.0 }),
            Arc::new(rows.iter().map(|r| r.response.len() as u32).collect::<UInt32Array>()),
            col_f32(&|i| done.stats[i].mean_ratio),
            col_f32(&|i| done.stats[i].clipped),
            col_f32(&|i| done.stats[i].kl),
        ],
    )
    .map_err(|e| Error::Other(format!("building the advantages table: {e}")))?;
    let mut w = TableWriter::create(&staging.join(ADVANTAGES_FILE), adv_schema::schema(), &prov)?;
    w.write(&batch)?;
    w.finish()?;

    // Metrics with verl's names.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let f = |v: f64| serde_json::json!(v);
    let lens: Vec<f64> = rows.iter().map(|r| r.response.len() as f64).collect();
    let advs: Vec<f64> = (0..rows.len()).filter(|&i| keep[i]).map(|i| f64::from(adv[i])).collect();
    let passes = (done.steps.max(1)) as f64;
    metrics.insert("step".into(), serde_json::json!(cfg.step));
    metrics.insert("actor/pg_loss".into(), f(done.pg / passes));
    metrics.insert("actor/pg_clipfrac".into(), f(done.clip / passes));
    metrics.insert("actor/pg_clipfrac_lower".into(), f(done.clip_lower / passes));
    metrics.insert("actor/ppo_kl".into(), f(done.ppo_kl / passes));
    metrics.insert("actor/kl_loss".into(), f(done.kl / passes));
    metrics.insert("actor/entropy".into(), f(done.entropy / passes));
    metrics.insert("actor/grad_norm".into(), f(done.grad_norm / (done.steps - done.skipped).max(1) as f64));
    metrics.insert("actor/skipped_steps".into(), serde_json::json!(done.skipped));
    metrics.insert("actor/lr".into(), f(lr));
    metrics.insert("actor/kl_coef".into(), f(kl_coef));
    if let Some(k) = reward_kl {
        metrics.insert("actor/reward_kl_penalty".into(), f(k));
        metrics.insert("actor/reward_kl_penalty_coeff".into(), f(kl_coef));
    }
    metrics.insert("actor/updated".into(), serde_json::json!(updated));
    if let Some(why) = skip_reason {
        // Why the policy was copied through (read by `clipo-report --collect --line`).
        metrics.insert("actor/not_updated".into(), serde_json::json!(why));
    }
    metrics.insert("critic/score/mean".into(), f(mean(&rows.iter().map(|r| f64::from(r.score)).collect::<Vec<_>>())));
    metrics.insert("critic/contrastive_reward/mean".into(), f(mean(&rows.iter().map(|r| f64::from(r.contrastive)).collect::<Vec<_>>())));
    metrics.insert("critic/rewards/mean".into(), f(mean(&reward.iter().map(|&r| f64::from(r)).collect::<Vec<_>>())));
    metrics.insert("critic/advantages/mean".into(), f(mean(&advs)));
    metrics.insert("critic/advantages/max".into(), f(advs.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(if advs.is_empty() { 0.0 } else { f64::NEG_INFINITY })));
    metrics.insert("critic/advantages/min".into(), f(advs.iter().copied().fold(f64::INFINITY, f64::min).min(if advs.is_empty() { 0.0 } else { f64::INFINITY })));
    metrics.insert("response_length/mean".into(), f(mean(&lens)));
    metrics.insert("response_length/max".into(), f(lens.iter().copied().fold(0.0, f64::max)));
    metrics.insert("response_length/min".into(), f(lens.iter().copied().fold(f64::INFINITY, f64::min)));
    metrics.insert("response_length/clip_ratio".into(), f(rows.iter().filter(|r| r.truncated).count() as f64 / rows.len() as f64));
    metrics.insert("dynamic_sampling/dropped_groups".into(), serde_json::json!(dropped_groups));
    metrics.extend(corr_metrics);
    metrics.insert("timing_s/ref".into(), f(ref_secs));
    metrics.insert("timing_s/old_log_prob".into(), f(old_secs));
    metrics.insert("timing_s/update_actor".into(), f(update_secs));
    metrics.insert("timing_s/step".into(), f(t_start.elapsed().as_secs_f64()));
    let metrics_path = staging.join(METRICS_FILE);
    std::fs::write(&metrics_path, serde_json::Value::Object(metrics.clone()).to_string() + "\n").map_err(|e| Error::io(&metrics_path, e))?;

    let state = serde_json::json!({
        "step": cfg.step,
        "stage": STAGE,
        "version": env!("CARGO_PKG_VERSION"),
        "updated": updated,
        "optimizer_step": optimizer.step,
        "kl_ctrl": { "value": next_kl_coef },
        "policy_in": pid,
        "config": state_config,
        "inputs": prov.inputs.iter().map(|(p, s)| serde_json::json!({"path": p, "sha256": s})).collect::<Vec<_>>(),
        "fingerprint": prov.fingerprint(),
        "outputs": dir_hashes(&staging)?,
    });
    let sp = staging.join(STATE_FILE);
    std::fs::write(&sp, serde_json::to_string_pretty(&state).expect("json") + "\n").map_err(|e| Error::io(&sp, e))?;
    if cfg.out.exists() {
        std::fs::remove_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    }
    std::fs::rename(&staging, &cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    Ok(UpdateOutcome { metrics, updated, up_to_date: false, note })
}

/// What the optimisation phase reads: the step's rows and everything computed for them.
#[derive(Clone, Copy)]
struct Batch<'a> {
    cfg: &'a UpdateConfig,
    rows: &'a [Row],
    seqs: &'a [Sequence<'a>],
    adv: &'a [f32],
    old_lp: &'a [Vec<f32>],
    ref_lp: Option<&'a Vec<Vec<f32>>>,
    is_weights: Option<&'a Vec<Vec<f32>>>,
    plan: &'a [Vec<usize>],
    max_len: usize,
    temperature: f64,
    chunk: usize,
    kl_coef: f64,
}

/// What the optimisation phase did: sums over its passes (mean = sum / steps), the audit
/// figures of each sequence's first pass, the optimiser steps taken and skipped.
#[derive(Default)]
struct Done {
    stats: Vec<SeqStats>,
    pg: f64,
    kl: f64,
    entropy: f64,
    clip: f64,
    clip_lower: f64,
    ppo_kl: f64,
    grad_norm: f64,
    steps: usize,
    skipped: usize,
}

/// The optimisation loop (REFERENCE.md §6): for each epoch and mini-batch, the micro-batches'
/// policy loss (+ KL, - entropy bonus) backpropagated under the mini-batch's normalisers, then
/// one AdamW step.
fn optimise(b: &Batch, model: &crate::model::Model, optimizer: &mut Optimizer, optim: &AdamWConfig) -> Result<Done> {
    let vars = model.vars();
    let Batch { cfg, rows, seqs, adv, old_lp, ref_lp, is_weights, plan, max_len, temperature, chunk, kl_coef } = *b;
    let device = model.device().clone();
    let mut d = Done { stats: vec![SeqStats { mean_ratio: 1.0, ..Default::default() }; rows.len()], ..Default::default() };
    for epoch in 0..cfg.epochs {
        for members in plan {
            let loss_len = |i: usize| if cfg.mask_truncated && rows[i].truncated { 0 } else { rows[i].response.len() };
            let norm = Norm {
                tokens: members.iter().map(|&i| loss_len(i) as f64).sum(),
                seqs: members.len() as f64,
                norm_len: max_len as f64,
            };
            let mut grads = Grads::new();
            for micro in micro_batches(members, rows, chunk, cfg.max_tokens_per_micro_batch).iter().map(Vec::as_slice) {
                let mseqs: Vec<Sequence> = micro.iter().map(|&i| seqs[i]).collect();
                let pass = model.train_pass(&mseqs, temperature, cfg.memory).map_err(model_err(&cfg.policy))?;
                let scored = &pass.scored;
                let (b, r) = scored.logprobs.dims2()?;
                let logp = scored.logprobs.to_dtype(DType::F32)?;
                let old = padded(&micro.iter().map(|&i| old_lp[i].as_slice()).collect::<Vec<_>>(), r, &device)?;
                let a = Tensor::from_vec(micro.iter().map(|&i| adv[i]).collect::<Vec<f32>>(), b, &device)?;
                let lmask: Vec<f32> = micro.iter().flat_map(|&i| (0..r).map(move |t| if t < loss_len(i) { 1.0 } else { 0.0 })).collect();
                let lmask = Tensor::from_vec(lmask, (b, r), &device)?;
                let w = is_weights.as_ref().map(|w| padded(&micro.iter().map(|&i| w[i].as_slice()).collect::<Vec<_>>(), r, &device)).transpose()?;
                let (pg, st): (Tensor, PgStats) = policy_loss_weighted(&logp, &old, &a, &lmask, &cfg.loss, &norm, w.as_ref())?;
                let mut total = pg.clone();
                let mut kl_tok = None;
                if let (Some(reflp), Some(est), false) = (&ref_lp, cfg.kl, cfg.kl_in_reward) {
                    let rl = padded(&micro.iter().map(|&i| reflp[i].as_slice()).collect::<Vec<_>>(), r, &device)?;
                    let kl = kl_penalty(&logp, &rl, est)?;
                    let kl_loss = aggregate(&kl, &lmask, cfg.loss.agg, &norm)?;
                    d.kl += f64::from(kl_loss.to_scalar::<f32>()?);
                    total = (total + (kl_loss * kl_coef)?)?;
                    kl_tok = Some(kl.detach().to_vec2::<f32>()?);
                }
                d.entropy += aggregate(&scored.entropy.detach(), &lmask, crate::rl::Aggregation::TokenMean, &norm)?.to_scalar::<f32>()? as f64;
                if cfg.entropy_coef != 0.0 {
                    // verl: policy_loss = pg_loss - entropy_coeff * agg_loss(entropy, loss_agg_mode)
                    let ent_loss = aggregate(&scored.entropy, &lmask, cfg.loss.agg, &norm)?;
                    total = (total - (ent_loss * cfg.entropy_coef)?)?;
                }
                // A non-finite loss gives a non-finite gradient norm: the optimiser skips that
                // mini-batch's step and the metrics count it.
                d.pg += f64::from(pg.to_scalar::<f32>()?);
                let weight = micro.iter().map(|&i| loss_len(i) as f64).sum::<f64>() / norm.tokens.max(1.0);
                d.clip += f64::from(st.clipfrac) * weight;
                d.clip_lower += f64::from(st.clipfrac_lower) * weight;
                d.ppo_kl += f64::from(st.ppo_kl) * weight;
                pass.backward(&total, &mut grads).map_err(model_err(&cfg.policy))?;
                if epoch == 0 {
                    // Per-sequence audit figures at the first pass (before this mini-batch's step).
                    let lp = logp.detach().to_vec2::<f32>()?;
                    for (bi, &i) in micro.iter().enumerate() {
                        let n = rows[i].response.len().max(1);
                        let (mut ratio, mut clipped, mut kl) = (0f64, 0f64, 0f64);
                        for t in 0..rows[i].response.len() {
                            let rho = f64::from((lp[bi][t] - old_lp[i][t]).clamp(-20.0, 20.0)).exp();
                            ratio += rho;
                            let (lo, hi) = (1.0 - cfg.loss.clip_low, 1.0 + cfg.loss.clip_high);
                            let a = f64::from(adv[i]);
                            clipped += f64::from(u8::from(-a * rho.clamp(lo, hi) > -a * rho));
                            kl += kl_tok.as_ref().map_or(0.0, |k| f64::from(k[bi][t]));
                        }
                        d.stats[i] = SeqStats { mean_ratio: (ratio / n as f64) as f32, clipped: (clipped / n as f64) as f32, kl: (kl / n as f64) as f32 };
                    }
                }
            }
            let step = optimizer.step(&vars, &grads, cfg.max_grad_norm, optim)?;
            if step.skipped {
                d.skipped += 1;
            } else {
                d.grad_norm += step.grad_norm;
            }
            d.steps += 1;
        }
    }
    Ok(d)
}

/// Whether this step's loss has no gradient at all, so that the optimiser step is skipped and
/// `actor/updated` is false: every trained row's advantage is exactly 0 (REFERENCE.md §6: a
/// group whose rewards are all equal has A = 0, so the PPO term is 0 for every token), the
/// entropy coefficient is 0, and no KL term is in the loss, or the policy has the reference's
/// weights (step 1 of a run, or every step of an actor warm-up: the KL and its gradient are 0
/// but for rounding; the weights are compared by hash only when the rest holds).
///
/// Deviation from verl, which calls the optimiser on a zero gradient anyway: AdamW would then
/// apply its weight decay and the momentum of earlier steps (and turn the rounding noise of a
/// zero KL into a full learning-rate step, as Adam normalises the gradient's size away). Here
/// such a step leaves the policy and the optimizer state as they were, and says so.
fn loss_has_no_gradient(cfg: &UpdateConfig, trainable: &[usize], adv: &[f32], kl_computed: bool, kl_coef: f64, policy: &str) -> Result<bool> {
    if !trainable.iter().all(|&i| adv[i] == 0.0) || cfg.entropy_coef != 0.0 {
        return Ok(false);
    }
    if !kl_computed || cfg.kl_in_reward || kl_coef == 0.0 {
        return Ok(true);
    }
    let Some(reference) = cfg.reference.as_deref() else { return Ok(true) };
    if crate::paths::canonical(reference) == crate::paths::canonical(&cfg.policy) {
        return Ok(true);
    }
    Ok(policy_hash(&policy_id(reference)?) == policy_hash(policy))
}

/// Mixed precision: when the model computes in a narrower dtype than f32, the optimiser keeps
/// f32 masters read from the checkpoint as it is on disk (an f32 checkpoint keeps every bit).
fn keep_masters(optimizer: &mut Optimizer, dir: &Path, dtype: DType) -> Result<()> {
    if dtype == DType::F32 {
        return Ok(());
    }
    let m = crate::model::Model::load(dir, &candle_core::Device::Cpu, DType::F32).map_err(model_err(dir))?;
    let weights: Vec<(String, Tensor)> = m.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    optimizer.keep_masters(&weights)
}

/// Mini-batches of whole groups: the groups of `rows` in the order they first appear (the
/// table's order: the epoch's shuffle, then refill rounds), cut into `n` consecutive slices of
/// ceil(groups / n) groups, as verl splits its batch in the dataloader's order; each mini-batch
/// lists its rows in table order.
fn mini_batches(rows: &[usize], groups: &[usize], n: usize) -> Vec<Vec<usize>> {
    // Groups are numbered in the order they first appear, so sorted ids are table order.
    let order: Vec<usize> = rows.iter().map(|&i| groups[i]).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let per = order.len().div_ceil(n.max(1)).max(1);
    order
        .chunks(per)
        .map(|gs| rows.iter().copied().filter(|&i| (gs[0]..=gs[gs.len() - 1]).contains(&groups[i])).collect())
        .collect()
}

/// A mini-batch's micro-batches, in order: `chunk` sequences each, or with a token budget as
/// many consecutive sequences as fit in `budget` prompt + response tokens (at least one).
fn micro_batches(mini: &[usize], rows: &[Row], chunk: usize, budget: Option<usize>) -> Vec<Vec<usize>> {
    let Some(budget) = budget else { return mini.chunks(chunk.max(1)).map(<[usize]>::to_vec).collect() };
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut tokens = 0;
    for &i in mini {
        let n = rows[i].prompt.len() + rows[i].response.len();
        match out.last_mut() {
            Some(last) if tokens + n <= budget => {
                last.push(i);
                tokens += n;
            }
            _ => {
                out.push(vec![i]);
                tokens = n;
            }
        }
    }
    out
}

/// `<out>.staging`, beside `out`: where a policy directory is written before its rename.
fn staging_dir(out: &Path) -> PathBuf {
    let mut n = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    n.push(".staging");
    out.with_file_name(n)
}

/// SHA-256 of every file of an output directory but the state file and metrics.json (which
/// holds timings, so two identical runs differ there; it is checked to be whole JSON instead),
/// by name.
fn dir_hashes(dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && name != STATE_FILE && name != METRICS_FILE {
            out.insert(name, file_sha256(&entry.path())?);
        }
    }
    Ok(out)
}

/// The KL coefficient an earlier update left for the next step (`kl_ctrl.value` of the policy
/// directory's clipo_state.json), if any.
fn read_kl_coef(policy: &Path) -> Result<Option<f64>> {
    let p = policy.join(STATE_FILE);
    if !p.is_file() {
        return Ok(None);
    }
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).map_err(|e| Error::io(&p, e))?)
        .map_err(|e| Error::Other(format!("{}: not JSON ({e}); remake it with the clipo-update that wrote this policy", p.display())))?;
    Ok(state.pointer("/kl_ctrl/value").and_then(|v| v.as_f64()))
}

/// Copy a model directory's files (not its clipo stage outputs) to `out`.
fn copy_model_dir(src: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let name = entry.file_name();
        let skip = [STATE_FILE, ADVANTAGES_FILE, METRICS_FILE].iter().any(|s| name == *s);
        if entry.path().is_file() && !skip {
            std::fs::copy(entry.path(), out.join(&name)).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Supervised warm start

/// `clipo-update --objective sft`: next-token cross-entropy on reference solutions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SftConfig {
    pub policy: PathBuf,
    /// Prompts with solutions (`extra_info.answer`).
    pub prompts: PathBuf,
    pub out: PathBuf,
    pub steps: usize,
    /// Examples per optimiser step.
    pub batch_size: usize,
    pub micro_batch: usize,
    /// Gradient checkpointing and chunked log-probs.
    pub memory: Memory,
    pub optim: AdamWConfig,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    pub device: String,
    /// Compute dtype, as [`UpdateConfig::dtype`].
    pub dtype: Option<String>,
    /// Masters and moments in host memory, AdamW on the host (DeepSpeed's ZeRO-Offload);
    /// otherwise they live with the weights (a GPU) and AdamW runs there as tensor ops.
    pub offload_optimizer: bool,
    #[serde(skip)]
    pub save_dtype: SaveDtype,
}

/// Trains on (rendered prompt, solution + stop token) pairs, the loss being the token mean of
/// -log p over solution tokens. Prints one line every `log_every` steps through `log`.
pub fn run_sft(cfg: &SftConfig, log: &mut dyn FnMut(usize, f64)) -> Result<f64> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let device = parse_device(&cfg.device)?;
    let prompts = read_prompts(&cfg.prompts)?;
    let _lock = crate::lock::OutputLock::acquire(&cfg.out)?;
    let dtype = parse_dtype(cfg.dtype.as_deref(), &device)?;
    let policy = Policy::load(&cfg.policy, &device, dtype)?;
    let stop = *policy.stop_tokens.first().ok_or_else(|| Error::Model { dir: cfg.policy.clone(), detail: "no stop token".into() })?;
    let mut examples: Vec<(Vec<u32>, Vec<u32>)> = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let sol = p.solution.as_deref().ok_or_else(|| Error::bad_value(&cfg.prompts, i, "extra_info.answer", "no reference solution for supervised training"))?;
        let text = policy.render(&p.messages)?;
        let mut response = policy.encode(sol)?;
        response.push(stop);
        examples.push((policy.encode(&text)?, response));
    }
    let vars = policy.model.vars();
    let mut optimizer = Optimizer::default();
    keep_masters(&mut optimizer, &cfg.policy, dtype)?;
    optimizer.offload = cfg.offload_optimizer;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(crate::seed::derive_seed("sft-shuffle", cfg.seed, 0, "", 0));
    let mut order: Vec<usize> = Vec::new();
    let mut last = f64::NAN;
    for step in 0..cfg.steps {
        let mut batch = Vec::with_capacity(cfg.batch_size);
        while batch.len() < cfg.batch_size {
            if order.is_empty() {
                order = (0..examples.len()).collect();
                order.shuffle(&mut rng);
            }
            batch.push(order.pop().expect("refilled"));
        }
        let tokens: f64 = batch.iter().map(|&i| examples[i].1.len() as f64).sum();
        let mut grads = Grads::new();
        let mut loss_sum = 0f64;
        for micro in batch.chunks(cfg.micro_batch.max(1)) {
            let seqs: Vec<Sequence> = micro.iter().map(|&i| Sequence { prompt: &examples[i].0, response: &examples[i].1 }).collect();
            let pass = policy.model.train_pass(&seqs, 1.0, cfg.memory).map_err(model_err(&cfg.policy))?;
            let loss = (pass.scored.logprobs.to_dtype(DType::F32)?.sum_all()?.neg()? / tokens)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            pass.backward(&loss, &mut grads).map_err(model_err(&cfg.policy))?;
        }
        if optimizer.step(&vars, &grads, cfg.max_grad_norm, &cfg.optim)?.skipped {
            eprintln!("clipo-update sft: step {step}: loss {loss_sum}, non-finite gradient norm: step skipped");
        }
        last = loss_sum;
        log(step, loss_sum);
    }
    optimizer.sync_to_host()?;
    let tensors = optimizer.weights_to_save(&vars)?;
    for (name, t) in &tensors {
        crate::checkpoint::ensure_finite_tensor("weight", name, t, cfg.steps as u64)?;
    }
    save_hf_dir(&cfg.out, &cfg.policy, &tensors, cfg.save_dtype).map_err(|e| Error::Model { dir: cfg.out.clone(), detail: e.to_string() })?;
    let sp = cfg.out.join(STATE_FILE);
    let state = serde_json::json!({ "stage": STAGE, "objective": "sft", "config": cfg, "final_loss": last,
        "inputs": [{"path": cfg.prompts.display().to_string(), "sha256": file_sha256(&cfg.prompts)?}] });
    std::fs::write(&sp, serde_json::to_string_pretty(&state).expect("json") + "\n").map_err(|e| Error::io(&sp, e))?;
    Ok(last)
}
