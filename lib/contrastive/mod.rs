//! CLIPO's contrastive head, its four losses and the contrastive reward
//! (REFERENCE.md sections 3 and 4).
//!
//! One call, [`embed_step`], does what the `Embed` step of the RL loop needs (REFERENCE.md §1.3):
//!
//! 1. project each response's sequence representation h_i (B, d) with the head and L2-normalise:
//!    z_i = h_i W^T / max(||h_i W^T||, 1e-12)  (B, D)   (`F.normalize` semantics; §3);
//! 2. similarities, masks, anchors and the per-sample loss L_i (already multiplied by a_i; §4);
//! 3. the contrastive reward r_con_i = max(c - lambda * L_i * c_i, floor)  (§4);
//! 4. the head loss sum_i a_i L_i / (sum_i a_i + 1e-8), its gradient w.r.t. the head weights
//!    (hand-written backward, checked against f64 finite differences) and one AdamW step
//!    (§3); the losses and rewards come from the forward pass *before* that step;
//! 5. metrics under verl's `con_lm_head/...` names.
//!
//! Submodules: [`config`] (options and their defaults), [`seed`] (the stable seed hash used for
//! the InfoNCE positive and the head init), [`head`] (weights, forward/backward, AdamW,
//! safetensors checkpoint), [`loss`] (similarity, masks, the four losses and their gradient),
//! [`metrics`] (verl-named metrics).
//!
//! The module holds no Parquet or file IO other than the head checkpoint; the stage
//! `clipo-embed` reads the rows and calls [`embed_step`].
//!
//! # Deviations from REFERENCE.md and choices it leaves open
//!
//! - **No anchor in the batch**: head loss 0 and the head is not stepped
//!   ([`EmbedOutput::stepped`] is false); the reference crashes here (REFERENCE.md §4 says so).
//! - **InfoNCE anchor with P(i) empty** (possible only with `skip_trivial` off): there is no
//!   positive to draw, so the row is *not* an anchor (a_i = 0, L_i = 0). The other three losses
//!   follow the formulas literally (`supcon_out` gives 0, `soft_nn`/`supcon_in` give
//!   -log(1e-8) + LSE_i) and such rows stay anchors.
//! - **Row maximum.** At the `cross` and `batch` levels, and at the `group` level with
//!   `-cosine`, the maximum is taken over the whole batch row exactly as specified. At the
//!   `group` level with `cosine` or `l2` it is taken over the group, self included: the self
//!   term is then the row maximum in exact arithmetic (Cauchy-Schwarz), so the two differ by
//!   f32 rounding only, and this avoids a B x B product (68.7 GFLOP at B = 8192, D = 512). The
//!   row maximum is a constant in the backward pass (as torch code does with `.detach()`); it
//!   moves the loss only through the 1e-8 terms.
//! - **Precision.** The projections run in the head's dtype (f32, as the reference); the
//!   normalisation, exp/log and the loss arithmetic run in f64, so losses differ from a torch
//!   f32 run by f32 rounding (about 1e-6 relative).
//! - **The InfoNCE draw** is `uniform_index(derive_seed("infonce-positive", seed, step,
//!   prompt_id, sample_idx), |P(i)|)` over P(i) listed in batch row order (see [`seed`]); the
//!   reference draws with torch's RNG, which cannot be reproduced here.
//! - **AdamW** updates in f64 per element and stores f32 (torch computes in f32): equal to
//!   torch within f32 rounding.

pub mod config;
pub mod head;
pub mod loss;
pub mod metrics;
pub use crate::seed;

use std::path::PathBuf;

pub use config::{
    ContrastiveConfig, HeadKind, HeadSidecar, Level, LossKind, MaskedLabel, Similarity,
};
pub use head::{AdamW, ContrastiveHead};
pub use loss::{contrastive_loss, rewards, LossOutput};
pub use metrics::{Metrics, PairStats, Stats};

/// Errors of the contrastive module.
#[derive(Debug, thiserror::Error)]
pub enum ContrastiveError {
    /// Inputs whose lengths or shapes disagree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A configuration value out of its range, or an option string that does not parse.
    #[error("invalid contrastive config: {0}")]
    Config(String),
    /// A hidden state that is NaN or infinite.
    #[error("hidden state of row {row} is not finite")]
    NonFinite {
        /// Batch row of the first non-finite value.
        row: usize,
    },
    /// A tensor operation failed in candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A head checkpoint that cannot be read or written.
    #[error("head checkpoint {path}: {msg}")]
    Checkpoint {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// An IO error on a head checkpoint.
    #[error("head checkpoint {path}: {err}")]
    Io {
        /// The safetensors file.
        path: PathBuf,
        /// The underlying error (not a `source`: its text is in the message, and `{:#}` would
        /// print it twice).
        err: std::io::Error,
    },
}

/// Result alias of the contrastive module.
pub type Result<T> = std::result::Result<T, ContrastiveError>;

/// Hidden states h_i of one batch: (B, d) row-major f32 (REFERENCE.md §2).
#[derive(Debug, Clone, Copy)]
pub struct Hidden<'a> {
    /// B * d values, row i at `data[i * dim..(i + 1) * dim]`.
    pub data: &'a [f32],
    /// B, the number of responses.
    pub rows: usize,
    /// d, the hidden size.
    pub dim: usize,
}

impl<'a> Hidden<'a> {
    /// Wraps `data` as (rows, dim); fails when the length is not rows * dim.
    pub fn new(data: &'a [f32], rows: usize, dim: usize) -> Result<Self> {
        if data.len() != rows * dim {
            return Err(ContrastiveError::Shape(format!(
                "hidden states have {} values, expected {rows} rows x {dim} = {}",
                data.len(),
                rows * dim
            )));
        }
        Ok(Self { data, rows, dim })
    }

    /// Row i, (d,).
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Per-row labels of one batch, in row order (all of length B).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// c_i = 1[r_i > 0], the verifier's verdict (REFERENCE.md §1.2).
    pub correct: &'a [bool],
    /// u_i, the prompt (group) id; rows with equal ids form a GRPO group.
    pub group: &'a [u32],
    /// The prompt id string of each row (for the seeded InfoNCE draw).
    pub prompt_id: &'a [&'a str],
    /// The index of the response within its prompt's samples (for the seeded draw).
    pub sample_idx: &'a [u32],
}

impl Batch<'_> {
    /// B, the number of rows.
    pub fn len(&self) -> usize {
        self.correct.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.correct.is_empty()
    }

    /// Checks that every column has B = `rows` entries.
    pub fn check(&self, rows: usize) -> Result<()> {
        let lens = [
            ("correct", self.correct.len()),
            ("group", self.group.len()),
            ("prompt_id", self.prompt_id.len()),
            ("sample_idx", self.sample_idx.len()),
        ];
        for (name, len) in lens {
            if len != rows {
                return Err(ContrastiveError::Shape(format!(
                    "batch column {name} has {len} rows, expected {rows}"
                )));
            }
        }
        Ok(())
    }
}

/// What [`embed_step`] returns, per row in batch order and for the batch.
#[derive(Debug, Clone)]
pub struct EmbedOutput {
    /// (B,) L_i * a_i from the forward pass before the head step (0 for non-anchors).
    pub loss: Vec<f64>,
    /// (B,) a_i, whether row i is an anchor.
    pub is_anchor: Vec<bool>,
    /// (B,) the batch row of the drawn positive (InfoNCE anchors only).
    pub positive: Vec<Option<usize>>,
    /// (B,) r_con_i = max(c - lambda * L_i * c_i, floor).
    pub reward: Vec<f64>,
    /// sum_i a_i L_i / (sum_i a_i + 1e-8); 0 without anchors.
    pub head_loss: f64,
    /// sum_i a_i.
    pub num_anchors: usize,
    /// Whether the head took an AdamW step (false with `fixed_head` or without anchors).
    pub stepped: bool,
    /// (B, D) row-major: the unit embeddings z_i of the forward pass (before the step).
    pub embeddings: Vec<f32>,
    /// verl-named metrics of this step.
    pub metrics: Metrics,
}

/// One embed step on a batch: forward, losses, rewards, metrics, then (unless `fixed_head` or
/// no anchor exists) the head-loss gradient and one AdamW step of `head`.
///
/// `rl_step` is the RL step: it seeds the InfoNCE draw (with `cfg.seed`, the prompt id and the
/// sample index of the anchor) and is unrelated to the head's AdamW step counter.
pub fn embed_step(
    head: &mut ContrastiveHead,
    cfg: &ContrastiveConfig,
    hidden: Hidden<'_>,
    batch: &Batch<'_>,
    rl_step: u64,
) -> Result<EmbedOutput> {
    cfg.validate()?;
    batch.check(hidden.rows)?;
    head.check_config(cfg, hidden.dim)?;
    if let Some(row) = (0..hidden.rows).find(|&i| hidden.row(i).iter().any(|x| !x.is_finite())) {
        return Err(ContrastiveError::NonFinite { row });
    }
    let want_grad = !cfg.fixed_head;
    let pass = head.loss_and_grad(hidden, batch, cfg, rl_step, want_grad)?;
    let reward = rewards(&pass.out.loss, batch.correct, cfg);
    // Metrics read the embeddings of the forward pass, before the step.
    let mut stepped = false;
    if let Some(grads) = &pass.grads {
        if pass.out.num_anchors > 0 {
            head.adamw_step(grads, &AdamW::from_config(cfg));
            stepped = true;
        }
    }
    let metrics = Metrics::compute(&pass.out, hidden, &pass.z, head.out_dim(), batch, stepped);
    let LossOutput {
        loss,
        is_anchor,
        positive,
        head_loss,
        num_anchors,
    } = pass.out;
    Ok(EmbedOutput {
        loss,
        is_anchor,
        positive,
        reward,
        head_loss,
        num_anchors,
        stepped,
        metrics,
        embeddings: pass.z.iter().map(|&x| x as f32).collect(),
    })
}
