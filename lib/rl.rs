//! The policy-update maths of REFERENCE.md §6: advantage estimators, policy losses (PPO clip
//! with clip-higher and dual clip, GSPO, GMPO), KL estimators and loss aggregation.
//!
//! Follows verl 0.6 (`core_algos.py`), which the paper's numbers came from. Departures, each
//! named:
//! - A group of one gets advantage 0 (REFERENCE.md §6); verl gives it A = R (mean 0, std 1).
//! - Aggregation takes its normalisers ([`Norm`]) from the whole mini-batch, so summing the
//!   losses of micro-batches gives exactly the gradient of the whole mini-batch (verl divides
//!   each micro-batch by its own token count and rescales, which is exact only for equal counts).
//!
//! Shapes: `logp`, `old_logp`, `ref_logp`, `mask`: (B, T) f32, response tokens only, 0 in the
//! mask on padding; `adv`: (B,) f32, one advantage per sequence broadcast over its tokens.

use std::str::FromStr;

use candle_core::{DType, Result, Tensor, D};

// ---------------------------------------------------------------------------------------------
// Advantages

/// How rewards become advantages within each prompt's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageEstimator {
    /// (R - mean_g) / (std_g + 1e-6), std unbiased (N - 1): GRPO as the paper ran it.
    Grpo,
    /// R - mean_g (Dr.GRPO: no std division).
    GrpoNoStd,
    /// R - mean of the *other* group members = G / (G - 1) * (R - mean_g) (RLOO).
    Rloo,
}

impl FromStr for AdvantageEstimator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "grpo" => Ok(Self::Grpo),
            "grpo-no-std" | "drgrpo" | "dr-grpo" => Ok(Self::GrpoNoStd),
            "rloo" => Ok(Self::Rloo),
            _ => Err(format!("unknown advantage estimator `{s}` (grpo, grpo-no-std, rloo)")),
        }
    }
}

/// GRPO's epsilon in the std denominator.
pub const GRPO_EPS: f64 = 1e-6;

/// One advantage per response. `groups[i]` is the prompt (group) of response i; groups need
/// not be contiguous. A group of one, or one whose rewards are all equal, gets 0.
pub fn advantages(rewards: &[f32], groups: &[usize], est: AdvantageEstimator) -> Vec<f32> {
    assert_eq!(rewards.len(), groups.len());
    let mut members: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (i, &g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(i);
    }
    let mut out = vec![0f32; rewards.len()];
    for idx in members.values() {
        let n = idx.len();
        if n < 2 {
            continue;
        }
        // Accumulate in f64: the reference computes in f32 torch, which agrees to ~1e-7.
        let mean = idx.iter().map(|&i| rewards[i] as f64).sum::<f64>() / n as f64;
        let var = idx.iter().map(|&i| (rewards[i] as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        for &i in idx {
            let centred = rewards[i] as f64 - mean;
            out[i] = match est {
                AdvantageEstimator::Grpo => centred / (var.sqrt() + GRPO_EPS),
                AdvantageEstimator::GrpoNoStd => centred,
                AdvantageEstimator::Rloo => centred * n as f64 / (n - 1) as f64,
            } as f32;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Aggregation

/// How per-token losses become one number (verl's `loss_agg_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// sum(loss * mask) / sum(mask) over the whole mini-batch (default).
    TokenMean,
    /// mean over sequences of sum over tokens.
    SeqMeanTokenSum,
    /// mean over sequences of mean over tokens.
    SeqMeanTokenMean,
    /// sum(loss * mask) / (number of sequences * a constant length) (Dr.GRPO).
    SeqMeanTokenSumNorm,
}

impl FromStr for Aggregation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "token-mean" => Ok(Self::TokenMean),
            "seq-mean-token-sum" => Ok(Self::SeqMeanTokenSum),
            "seq-mean-token-mean" => Ok(Self::SeqMeanTokenMean),
            "seq-mean-token-sum-norm" => Ok(Self::SeqMeanTokenSumNorm),
            _ => Err(format!(
                "unknown aggregation `{s}` (token-mean, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm)"
            )),
        }
    }
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenMean => "token-mean",
            Self::SeqMeanTokenSum => "seq-mean-token-sum",
            Self::SeqMeanTokenMean => "seq-mean-token-mean",
            Self::SeqMeanTokenSumNorm => "seq-mean-token-sum-norm",
        }
    }
}

/// Normalisers of the whole mini-batch, so that micro-batch losses add up to its loss.
#[derive(Debug, Clone, Copy)]
pub struct Norm {
    /// Response tokens in the mini-batch (sum of the mask).
    pub tokens: f64,
    /// Sequences in the mini-batch.
    pub seqs: f64,
    /// The constant length of `seq-mean-token-sum-norm` (verl: the padded response length;
    /// clipo: `max_new_tokens`, so it does not change from batch to batch).
    pub norm_len: f64,
}

impl Norm {
    pub fn of(mask: &Tensor, norm_len: usize) -> Result<Norm> {
        let (b, _t) = mask.dims2()?;
        Ok(Norm { tokens: mask.sum_all()?.to_scalar::<f32>()? as f64, seqs: b as f64, norm_len: norm_len as f64 })
    }
}

/// Aggregate a (B, T) loss matrix into a scalar.
pub fn aggregate(loss: &Tensor, mask: &Tensor, agg: Aggregation, norm: &Norm) -> Result<Tensor> {
    let masked = (loss * mask)?;
    match agg {
        Aggregation::TokenMean => masked.sum_all()? / norm.tokens.max(1.0),
        Aggregation::SeqMeanTokenSum => masked.sum_all()? / norm.seqs.max(1.0),
        Aggregation::SeqMeanTokenMean => {
            // (B,) per-sequence token means; an empty sequence contributes 0.
            let lens = mask.sum(D::Minus1)?.clamp(1.0, f64::MAX)?;
            (masked.sum(D::Minus1)? / lens)?.sum_all()? / norm.seqs.max(1.0)
        }
        Aggregation::SeqMeanTokenSumNorm => masked.sum_all()? / (norm.seqs.max(1.0) * norm.norm_len.max(1.0)),
    }
}

/// sum(x * mask) / max(sum(mask), 1) as an f32 (a metric, no gradient).
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<f32> {
    let n = mask.sum_all()?.to_scalar::<f32>()?;
    Ok((x.detach() * mask)?.sum_all()?.to_scalar::<f32>()? / n.max(1.0))
}

// ---------------------------------------------------------------------------------------------
// Policy losses

/// The policy-gradient objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyLoss {
    /// Token-level PPO clip with separate low/high epsilon and dual clip (the default).
    Ppo,
    /// GSPO: sequence-level, length-normalised ratio.
    Gspo,
    /// GMPO: geometric mean of token ratios, clipped in log space.
    Gmpo,
}

impl FromStr for PolicyLoss {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ppo" | "vanilla" => Ok(Self::Ppo),
            "gspo" => Ok(Self::Gspo),
            "gmpo" => Ok(Self::Gmpo),
            _ => Err(format!("unknown policy loss `{s}` (ppo, gspo, gmpo)")),
        }
    }
}

impl PolicyLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ppo => "ppo",
            Self::Gspo => "gspo",
            Self::Gmpo => "gmpo",
        }
    }
}

/// The settings of [`policy_loss`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PolicyLossConfig {
    pub loss: PolicyLoss,
    /// eps_low: the ratio is clipped below at 1 - eps_low (0.2; GMPO: log-space, 0.4).
    pub clip_low: f64,
    /// eps_high: clipped above at 1 + eps_high (0.2; DAPO's clip-higher uses 0.28).
    pub clip_high: f64,
    /// Dual clip c for negative advantages (3.0); `None` turns it off.
    pub dual_clip: Option<f64>,
    pub agg: Aggregation,
}

impl Default for PolicyLossConfig {
    fn default() -> Self {
        PolicyLossConfig { loss: PolicyLoss::Ppo, clip_low: 0.2, clip_high: 0.2, dual_clip: Some(3.0), agg: Aggregation::TokenMean }
    }
}

/// Statistics of one policy-loss evaluation (verl's names in [`crate::rl`] metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PgStats {
    /// Fraction of response tokens where the clipped term was taken (`actor/pg_clipfrac`).
    pub clipfrac: f32,
    /// Fraction where the dual clip bound was taken (`actor/pg_clipfrac_lower`).
    pub clipfrac_lower: f32,
    /// Masked mean of logp_old - logp (`actor/ppo_kl`).
    pub ppo_kl: f32,
    /// Masked mean of the ratio.
    pub mean_ratio: f32,
}

/// The scalar policy loss (to minimise) and its statistics.
///
/// `logp` carries the gradient; `old_logp` is the log-prob of the policy that sampled (no
/// gradient). PPO: rho = exp(clamp(logp - old, -20, 20)),
/// pg = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)), and for A < 0
/// pg = min(pg, -A c). GSPO and GMPO as in verl (see the function bodies).
pub fn policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    cfg: &PolicyLossConfig,
    norm: &Norm,
) -> Result<(Tensor, PgStats)> {
    policy_loss_weighted(logp, old_logp, adv, mask, cfg, norm, None)
}

/// [`policy_loss`] with per-token weights (B, T) multiplied into the token losses before the
/// aggregation (verl's `pg_losses * rollout_is_weights`, the rollout importance-sampling
/// correction); GMPO, a sequence-level loss, takes none.
pub fn policy_loss_weighted(
    logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    cfg: &PolicyLossConfig,
    norm: &Norm,
    weights: Option<&Tensor>,
) -> Result<(Tensor, PgStats)> {
    let weigh = |pg: Tensor| -> Result<Tensor> {
        Ok(match weights {
            Some(w) => (pg * w.detach())?,
            None => pg,
        })
    };
    let (b, t) = logp.dims2()?;
    let adv_bt = adv.reshape((b, 1))?.broadcast_as((b, t))?.contiguous()?; // (B, T)
    let neg_kl = (logp - old_logp)?.clamp(-20f64, 20f64)?; // log rho, (B, T)
    let ppo_kl = masked_mean(&neg_kl.neg()?, mask)?;
    match cfg.loss {
        Loss::Ppo => {
            let ratio = neg_kl.exp()?;
            let pg1 = (adv_bt.neg()? * &ratio)?;
            let pg2 = (adv_bt.neg()? * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)?)?;
            let clipped = pg1.maximum(&pg2)?;
            let clipfrac = masked_mean(&pg2.gt(&pg1)?.to_dtype(DType::F32)?, mask)?;
            let (pg, clipfrac_lower) = match cfg.dual_clip {
                Some(c) => {
                    let pg3 = (adv_bt.neg()? * c)?;
                    let neg_adv = adv_bt.lt(0f64)?; // (B, T) u8
                    let lower = (clipped.gt(&pg3)?.to_dtype(DType::F32)? * neg_adv.to_dtype(DType::F32)?)?;
                    let pg = neg_adv.where_cond(&clipped.minimum(&pg3)?, &clipped)?;
                    (pg, masked_mean(&lower, mask)?)
                }
                None => (clipped, 0.0),
            };
            let mean_ratio = masked_mean(&ratio, mask)?;
            let loss = aggregate(&weigh(pg)?, mask, cfg.agg, norm)?;
            Ok((loss, PgStats { clipfrac, clipfrac_lower, ppo_kl, mean_ratio }))
        }
        Loss::Gspo => {
            // log s_i = mean_t (logp - old) over the sequence's tokens; the token-level ratio
            // has the value s_i and the gradient of s_i * logp_t (verl's GSPO-token form):
            // log r_t = logp_t - sg(logp_t) + sg(log s_i), clamped above at 10.
            let lens = mask.sum_keepdim(D::Minus1)?.clamp(1.0, f64::MAX)?; // (B, 1)
            let log_s = ((logp - old_logp)? * mask)?.sum_keepdim(D::Minus1)?.broadcast_div(&lens)?; // (B, 1)
            let log_r = (logp - logp.detach())?.broadcast_add(&log_s.detach())?.clamp(f64::MIN, 10f64)?;
            let ratio = log_r.exp()?;
            let pg1 = (adv_bt.neg()? * &ratio)?;
            let pg2 = (adv_bt.neg()? * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)?)?;
            let pg = pg1.maximum(&pg2)?;
            let clipfrac = masked_mean(&pg2.gt(&pg1)?.to_dtype(DType::F32)?, mask)?;
            let mean_ratio = masked_mean(&ratio, mask)?;
            let loss = aggregate(&weigh(pg)?, mask, cfg.agg, norm)?;
            Ok((loss, PgStats { clipfrac, clipfrac_lower: 0.0, ppo_kl, mean_ratio }))
        }
        Loss::Gmpo => {
            // Token log-ratios clipped to [-eps_low, eps_high] on the side that limits the
            // update (sign of A), then r_i = exp(mean_t clipped log-ratio); loss = -A_i r_i
            // averaged over sequences (GMPO is sequence-level; `agg` does not apply).
            let log_r = (logp - old_logp)?; // (B, T)
            let sgn = adv_bt.sign()?;
            let clamped = log_r.clamp(-cfg.clip_low, cfg.clip_high)?;
            let a = (&sgn * &log_r)?;
            let bc = (&sgn * &clamped)?;
            let lim = (a.minimum(&bc)? * &sgn)?;
            let clipfrac = masked_mean(&a.gt(&bc)?.to_dtype(DType::F32)?, mask)?;
            let lens = mask.sum(D::Minus1)?; // (B,)
            let seq_log_r = ((lim * mask)?.sum(D::Minus1)? / (lens + 1e-8)?)?; // (B,)
            let ratio = seq_log_r.exp()?;
            let pg = (adv.neg()? * &ratio)?; // (B,)
            let loss = (pg.sum_all()? / norm.seqs.max(1.0))?;
            let mean_ratio = ratio.detach().mean_all()?.to_scalar::<f32>()?;
            Ok((loss, PgStats { clipfrac, clipfrac_lower: 0.0, ppo_kl, mean_ratio }))
        }
    }
}

use PolicyLoss as Loss;

// ---------------------------------------------------------------------------------------------
// KL to the reference policy

/// The per-token KL estimator (verl's `kl_penalty`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlEstimator {
    /// k1: logp - ref_logp.
    K1,
    /// k2: (logp - ref_logp)^2 / 2.
    K2,
    /// k3 (`low_var_kl`, default): with d = clamp(ref - logp, -20, 20),
    /// clamp(exp(d) - d - 1, -10, 10).
    K3,
}

impl FromStr for KlEstimator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "k1" | "kl" => Ok(Self::K1),
            "k2" | "mse" => Ok(Self::K2),
            "k3" | "low_var_kl" => Ok(Self::K3),
            _ => Err(format!("unknown KL estimator `{s}` (k1, k2, k3/low_var_kl)")),
        }
    }
}

impl KlEstimator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::K1 => "k1",
            Self::K2 => "k2",
            Self::K3 => "low_var_kl",
        }
    }
}

/// Per-token KL estimate, (B, T).
pub fn kl_penalty(logp: &Tensor, ref_logp: &Tensor, est: KlEstimator) -> Result<Tensor> {
    match est {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K2 => (logp - ref_logp)?.sqr()? * 0.5,
        KlEstimator::K3 => {
            let d = (ref_logp - logp)?.clamp(-20f64, 20f64)?;
            ((d.exp()? - &d)? - 1.0)?.clamp(-10f64, 10f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t2(v: &[&[f32]]) -> Tensor {
        let b = v.len();
        let t = v[0].len();
        Tensor::from_vec(v.concat(), (b, t), &Device::Cpu).unwrap()
    }
    fn t1(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }
    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn grpo_advantages_by_hand() {
        // Group 0: rewards 1, 0, 0, 1: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std 0.57735.
        // A = +-0.5 / (0.57735 + 1e-6) = +-0.866024.
        // Group 1: one response -> 0. Group 2: all equal -> 0.
        let r = [1.0, 0.0, 0.0, 1.0, 1.0, 0.7, 0.7];
        let g = [0, 0, 0, 0, 1, 2, 2];
        let a = advantages(&r, &g, AdvantageEstimator::Grpo);
        let expect = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-6);
        for (x, s) in a[..4].iter().zip([1.0, -1.0, -1.0, 1.0]) {
            close(*x, (s * expect) as f32);
        }
        assert_eq!(&a[4..], &[0.0, 0.0, 0.0]);
        // Dr.GRPO: R - mean.
        let a = advantages(&r, &g, AdvantageEstimator::GrpoNoStd);
        assert_eq!(&a[..4], &[0.5, -0.5, -0.5, 0.5]);
        // RLOO: 1 - mean(0, 0, 1) = 2/3; 0 - mean(1, 0, 1) = -2/3.
        let a = advantages(&r, &g, AdvantageEstimator::Rloo);
        close(a[0], 2.0 / 3.0);
        close(a[1], -2.0 / 3.0);
        // Groups need not be contiguous.
        let a = advantages(&[1.0, 0.0, 0.0, 1.0], &[5, 9, 5, 9], AdvantageEstimator::GrpoNoStd);
        assert_eq!(a, vec![0.5, -0.5, -0.5, 0.5]);
    }

    #[test]
    fn ppo_clip_and_dual_clip_edges() {
        // One sequence per case, one token each; old logp 0 so rho = exp(logp).
        // A = +1, rho = e^0.5 = 1.6487 > 1.2: clipped, pg = -1.2.
        // A = +1, rho = e^-0.5 = 0.6065: unclipped (min of -0.6065 and -0.8 is -0.8? no:
        //   pg = max(-0.6065, -0.8) = -0.6065, the unclipped term).
        // A = -1, rho = e^0.5: pg = max(1.6487, 1.2) = 1.6487, below the dual bound 3.
        // A = -1, rho = e^1.5 = 4.4817: max(4.4817, 1.2) = 4.4817 -> dual clip min(., 3) = 3.
        // A = -1, rho = e^-0.5: pg = max(0.6065, 0.8) = 0.8 (clipped).
        let logp = t2(&[&[0.5], &[-0.5], &[0.5], &[1.5], &[-0.5]]);
        let old = logp.zeros_like().unwrap();
        let adv = t1(&[1.0, 1.0, -1.0, -1.0, -1.0]);
        let mask = logp.ones_like().unwrap();
        let norm = Norm::of(&mask, 1).unwrap();
        let cfg = PolicyLossConfig::default();
        let (loss, st) = policy_loss(&logp, &old, &adv, &mask, &cfg, &norm).unwrap();
        let e = |x: f32| x.exp();
        let expect = (-1.2 + -e(-0.5) + e(0.5) + 3.0 + 0.8) / 5.0;
        close(loss.to_scalar::<f32>().unwrap(), expect);
        // Clipped term strictly larger on tokens 0 and 4: 2/5. Dual clip on token 3: 1/5.
        close(st.clipfrac, 0.4);
        close(st.clipfrac_lower, 0.2);
        // ppo_kl = mean(old - logp) = -(0.5 - 0.5 + 0.5 + 1.5 - 0.5) / 5 = -0.3
        close(st.ppo_kl, -0.3);

        // Without dual clip token 3 contributes 4.4817.
        let cfg = PolicyLossConfig { dual_clip: None, ..cfg };
        let (loss, _) = policy_loss(&logp, &old, &adv, &mask, &cfg, &norm).unwrap();
        close(loss.to_scalar::<f32>().unwrap(), (-1.2 - e(-0.5) + e(0.5) + e(1.5) + 0.8) / 5.0);

        // Clip-higher: eps_high 0.28 lets token 0 reach 1.28.
        let cfg = PolicyLossConfig { clip_high: 0.28, ..PolicyLossConfig::default() };
        let (loss, _) = policy_loss(&logp, &old, &adv, &mask, &cfg, &norm).unwrap();
        close(loss.to_scalar::<f32>().unwrap(), (-1.28 - e(-0.5) + e(0.5) + 3.0 + 0.8) / 5.0);
    }

    #[test]
    fn ppo_gradient_flows_only_through_unclipped_tokens() {
        // d/dlogp of -A rho = -A rho on unclipped tokens, 0 on clipped ones; token-mean over 2.
        let logp = Var::from_tensor(&t2(&[&[0.5, -0.1]])).unwrap();
        let old = t2(&[&[0.0, 0.0]]);
        let adv = t1(&[1.0]);
        let mask = t2(&[&[1.0, 1.0]]);
        let norm = Norm::of(&mask, 2).unwrap();
        let (loss, _) = policy_loss(logp.as_tensor(), &old, &adv, &mask, &PolicyLossConfig::default(), &norm).unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        close(g[0][0], 0.0);
        close(g[0][1], -(-0.1f32).exp() / 2.0);
    }

    #[test]
    fn aggregation_modes_by_hand() {
        // loss [[1, 2, 3], [4, 0, 0]], mask [[1, 1, 1], [1, 0, 0]]
        let loss = t2(&[&[1.0, 2.0, 3.0], &[4.0, 9.0, 9.0]]);
        let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0]]);
        let norm = Norm::of(&mask, 4).unwrap();
        let agg = |a| aggregate(&loss, &mask, a, &norm).unwrap().to_scalar::<f32>().unwrap();
        close(agg(Aggregation::TokenMean), 10.0 / 4.0);
        close(agg(Aggregation::SeqMeanTokenSum), (6.0 + 4.0) / 2.0);
        close(agg(Aggregation::SeqMeanTokenMean), (2.0 + 4.0) / 2.0);
        close(agg(Aggregation::SeqMeanTokenSumNorm), 10.0 / (2.0 * 4.0));
    }

    #[test]
    fn micro_batches_add_up_to_the_mini_batch() {
        let logp = t2(&[&[-1.0, -2.0, -0.5], &[-0.3, -0.7, 0.0], &[-1.1, -0.2, -0.9]]);
        let old = t2(&[&[-1.1, -1.8, -0.5], &[-0.2, -0.9, 0.0], &[-1.0, -0.25, -1.0]]);
        let adv = t1(&[0.7, -1.2, 0.4]);
        let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0], &[1.0, 0.0, 0.0]]);
        let norm = Norm::of(&mask, 3).unwrap();
        for agg in [Aggregation::TokenMean, Aggregation::SeqMeanTokenSum, Aggregation::SeqMeanTokenMean, Aggregation::SeqMeanTokenSumNorm] {
            for loss in [PolicyLoss::Ppo, PolicyLoss::Gspo, PolicyLoss::Gmpo] {
                let cfg = PolicyLossConfig { agg, loss, ..Default::default() };
                let full = policy_loss(&logp, &old, &adv, &mask, &cfg, &norm).unwrap().0.to_scalar::<f32>().unwrap();
                let part = |lo: usize, n: usize| {
                    policy_loss(&logp.narrow(0, lo, n).unwrap(), &old.narrow(0, lo, n).unwrap(), &adv.narrow(0, lo, n).unwrap(), &mask.narrow(0, lo, n).unwrap(), &cfg, &norm)
                        .unwrap()
                        .0
                        .to_scalar::<f32>()
                        .unwrap()
                };
                close(part(0, 2) + part(2, 1), full);
            }
        }
    }

    #[test]
    fn kl_estimators_by_hand() {
        // logp = -1, ref = -1.5: k1 = 0.5, k2 = 0.125, d = -0.5, k3 = e^-0.5 + 0.5 - 1 = 0.106531
        // logp = -30, ref = 0: d = 30 -> clamped 20, k3 = e^20 - 21 -> clamped 10.
        let logp = t2(&[&[-1.0, -30.0]]);
        let rf = t2(&[&[-1.5, 0.0]]);
        let k1 = kl_penalty(&logp, &rf, KlEstimator::K1).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(k1[0], vec![0.5, -30.0]);
        let k2 = kl_penalty(&logp, &rf, KlEstimator::K2).unwrap().to_vec2::<f32>().unwrap();
        close(k2[0][0], 0.125);
        let k3 = kl_penalty(&logp, &rf, KlEstimator::K3).unwrap().to_vec2::<f32>().unwrap();
        close(k3[0][0], (-0.5f32).exp() + 0.5 - 1.0);
        close(k3[0][1], 10.0);
    }

    #[test]
    fn gspo_and_gmpo_by_hand() {
        // One sequence, tokens log-ratios 0.1 and 0.3 (mean 0.2), A = 1.
        // GSPO: ratio = e^0.2 = 1.2214 > 1.2 -> clipped: loss = -1.2 per token; seq-mean-token-mean -> -1.2.
        let logp = t2(&[&[0.1, 0.3]]);
        let old = t2(&[&[0.0, 0.0]]);
        let adv = t1(&[1.0]);
        let mask = t2(&[&[1.0, 1.0]]);
        let norm = Norm::of(&mask, 2).unwrap();
        let cfg = PolicyLossConfig { loss: PolicyLoss::Gspo, agg: Aggregation::SeqMeanTokenMean, ..Default::default() };
        let (l, st) = policy_loss(&logp, &old, &adv, &mask, &cfg, &norm).unwrap();
        close(l.to_scalar::<f32>().unwrap(), -1.2);
        close(st.clipfrac, 1.0);
        // GMPO with eps 0.2: token log-ratios clipped to [-0.2, 0.2] for A > 0: 0.1, 0.2 -> mean
        // 0.15 -> loss = -e^0.15.
        let cfg = PolicyLossConfig { loss: PolicyLoss::Gmpo, ..Default::default() };
        let (l, st) = policy_loss(&logp, &old, &adv, &mask, &cfg, &norm).unwrap();
        close(l.to_scalar::<f32>().unwrap(), -(0.15f32).exp());
        close(st.clipfrac, 0.5);
        // A < 0: the lower side binds instead; 0.1 and 0.3 are both above -0.2: unclipped.
        let (l, _) = policy_loss(&logp, &old, &t1(&[-1.0]), &mask, &cfg, &norm).unwrap();
        close(l.to_scalar::<f32>().unwrap(), (0.2f32).exp());
    }
}
