//! What changes from one RL step to the next: the learning-rate schedule and the adaptive KL
//! controller, both as verl computes them, both functions of the RL step and of state that the
//! policy directory carries, so a resumed run continues where it stopped.
//!
//! Learning rate (verl `verl/utils/torch_functional.py`; the scheduler steps once per actor
//! update, so at an update the scheduler's `current_step` is the number of earlier updates; with
//! a warm-up the first update therefore has rate 0, as verl's does, verl issue 3674):
//!
//! ```text
//! constant:  f(s) = s / max(1, W)  if s < W,  else 1
//! cosine:    f(s) = m + (1 - m) s / max(1, W)                                   s < W
//!            f(s) = max(m, cos(pi * 2 * 0.5 * p) * (1 - m) / 2 + (1 + m) / 2)    otherwise,
//!            p = (s - W) / max(1, T - W)
//! lr(s) = lr * f(s)
//! ```
//! with W the warm-up steps (`lr_warmup_steps`, or `int(lr_warmup_steps_ratio * T)`), T the
//! run's total steps, m `min_lr_ratio`. With the actor warm-up A (verl's `critic_warmup`), the
//! first update is at RL step max(A, 1), so the update at step t has s = t - max(A, 1).
//!
//! Adaptive KL (verl `AdaptiveKLController`, used with the KL in the reward):
//! ```text
//! e = clip(current_kl / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n / horizon)
//! ```
//! current_kl the batch mean of each response's token-mean KL, n the number of responses.

use crate::error::{Error, Result};

/// `warmup_style` of verl's actor optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LrStyle {
    Constant,
    Cosine,
}

impl std::str::FromStr for LrStyle {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("unknown learning-rate style `{s}` (constant, cosine)")),
        }
    }
}

/// A learning-rate schedule over actor updates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LrSchedule {
    pub style: LrStyle,
    /// W: warm-up updates (0: none).
    pub warmup_steps: u64,
    /// T: the run's total steps (needed by cosine).
    pub total_steps: u64,
    /// m: the floor of the cosine, as a fraction of the peak.
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    /// Checked construction: `warmup_ratio` (in [0, 1]) is used when `warmup_steps` is None, as
    /// verl's `lr_warmup_steps = -1`.
    pub fn new(style: LrStyle, warmup_steps: Option<u64>, warmup_ratio: f64, total_steps: Option<u64>, min_lr_ratio: f64) -> Result<Self> {
        crate::args::unit("--lr-warmup-ratio", warmup_ratio)?;
        crate::args::unit("--min-lr-ratio", min_lr_ratio)?;
        let needs_total = style == LrStyle::Cosine || (warmup_steps.is_none() && warmup_ratio > 0.0);
        let total = match total_steps {
            Some(t) => crate::args::count("--total-steps", t)?,
            None if needs_total => {
                return Err(Error::Config("--lr-style cosine and --lr-warmup-ratio need --total-steps (the run's RL steps)".into()))
            }
            None => 0,
        };
        let warmup = warmup_steps.unwrap_or((warmup_ratio * total as f64) as u64);
        Ok(LrSchedule { style, warmup_steps: warmup, total_steps: total, min_lr_ratio })
    }

    /// The factor f(s) at scheduler step `s` (earlier actor updates).
    pub fn factor(&self, s: u64) -> f64 {
        let (s, w, m) = (s as f64, self.warmup_steps as f64, self.min_lr_ratio);
        match self.style {
            LrStyle::Constant if s < w => s / w.max(1.0),
            LrStyle::Constant => 1.0,
            LrStyle::Cosine => {
                if s < w {
                    return m + (1.0 - m) * (s / w.max(1.0));
                }
                let p = (s - w) / (self.total_steps as f64 - w).max(1.0);
                let x = (std::f64::consts::PI * 0.5 * 2.0 * p).cos();
                (x * (1.0 - m) * 0.5 + (1.0 + m) * 0.5).max(m)
            }
        }
    }

    /// The learning rate of the update at RL step `step` with actor warm-up `actor_warmup`.
    pub fn lr_at(&self, peak: f64, step: u64, actor_warmup: u64) -> f64 {
        peak * self.factor(step.saturating_sub(actor_warmup.max(1)))
    }
}

/// The KL coefficient: fixed, or verl's adaptive controller.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KlControl {
    Fixed,
    Adaptive { target: f64, horizon: f64 },
}

impl KlControl {
    /// The coefficient after a step that measured `current_kl` over `n` responses at `beta`.
    pub fn update(&self, beta: f64, current_kl: f64, n: usize) -> f64 {
        match *self {
            KlControl::Fixed => beta,
            KlControl::Adaptive { target, horizon } => {
                let e = (current_kl / target - 1.0).clamp(-0.2, 0.2);
                beta * (1.0 + e * n as f64 / horizon)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_warmup_as_verl() {
        // W = 4: 0, 1/4, 2/4, 3/4, 1, 1 ...
        let s = LrSchedule::new(LrStyle::Constant, Some(4), 0.0, None, 0.0).unwrap();
        let f: Vec<f64> = (0..6).map(|k| s.factor(k)).collect();
        assert_eq!(f, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
        // No warm-up: 1 from the first update (verl's default).
        assert_eq!(LrSchedule::new(LrStyle::Constant, None, 0.0, None, 0.0).unwrap().factor(0), 1.0);
        // The update at RL step t counts the updates before it; with actor warm-up 3 the first
        // update is step 3 (s = 0).
        assert_eq!(s.lr_at(1e-6, 3, 3), 0.0);
        assert_eq!(s.lr_at(1e-6, 5, 3), 0.5e-6);
        assert_eq!(s.lr_at(1e-6, 2, 0), 0.25e-6);
    }

    #[test]
    fn cosine_with_floor_as_verl() {
        // W = 2, T = 12, m = 0.1: warm-up 0.1, 0.55; then p = (s - 2) / 10:
        // s = 2 -> 1; s = 7 -> cos(pi/2) = 0 -> 0.55; s = 12 -> cos(pi) = -1 -> 0.1; s = 20 -> p = 1.8,
        // cos(1.8 pi) = 0.809 -> 0.45 * 0.809 + 0.55 = 0.914 (num_cycles 0.5 leaves the wave
        // to rise again past T, as torch's does).
        let s = LrSchedule::new(LrStyle::Cosine, Some(2), 0.0, Some(12), 0.1).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(s.factor(0), 0.1));
        assert!(close(s.factor(1), 0.55));
        assert!(close(s.factor(2), 1.0));
        assert!(close(s.factor(7), 0.55));
        assert!(close(s.factor(12), 0.1));
        assert!(close(s.factor(20), 0.45 * (1.8 * std::f64::consts::PI).cos() + 0.55));
        // The ratio: W = int(0.25 * 10) = 2.
        assert_eq!(LrSchedule::new(LrStyle::Cosine, None, 0.25, Some(10), 0.0).unwrap().warmup_steps, 2);
        assert!(LrSchedule::new(LrStyle::Cosine, None, 0.0, None, 0.0).is_err());
        assert!(LrSchedule::new(LrStyle::Constant, None, 0.0, None, 1.5).is_err());
    }

    #[test]
    fn adaptive_kl_as_verl() {
        let c = KlControl::Adaptive { target: 0.1, horizon: 10000.0 };
        // kl 0.3: e = clip(2, .., 0.2) = 0.2; n = 256: beta * (1 + 0.2 * 256 / 10000) = 0.001 * 1.00512
        assert!((c.update(0.001, 0.3, 256) - 0.001 * 1.00512).abs() < 1e-15);
        // kl 0.05: e = -0.5 -> -0.2: 0.001 * (1 - 0.00512)
        assert!((c.update(0.001, 0.05, 256) - 0.001 * 0.99488).abs() < 1e-15);
        // kl 0.11: e = 0.1
        assert!((c.update(0.002, 0.11, 100) - 0.002 * (1.0 + 0.1 * 100.0 / 10000.0)).abs() < 1e-15);
        assert_eq!(KlControl::Fixed.update(0.001, 5.0, 256), 0.001);
    }
}
