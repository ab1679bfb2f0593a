//! Similarity, masks, anchors, the four contrastive losses, their gradient w.r.t. the unit
//! embeddings, and the contrastive reward (REFERENCE.md §4).
//!
//! Notation (B rows; u_i group id, c_i correctness; z_i unit embedding):
//!
//! ```text
//! c_ij = z_i . z_j                          raw cosine
//! s_ij = sim(c_ij)                          cosine: c; -cosine: -c; l2: 1 - sqrt(max(2 - 2c, 1e-8))
//! l_ij = s_ij / tau,  l'_ij = l_ij - max_j l_ij   (row max over all j, self included)
//! A(i) = {j != i} (within the group at level `group`), P(i) = {j in A(i): c_j = c_i}
//!        (within the group at levels `group` and `cross`), N(i) = A(i) \ P(i)
//! E_ij = exp(l'_ij), S_A = sum_{A(i)} E_ij, LSE_i = log(S_A + 1e-8), S_P = sum_{P(i)} E_ij
//! infonce    L_i = -(l'_ip - LSE_i)                                   p drawn from P(i)
//! soft_nn    L_i = -(log(S_P + 1e-8) - LSE_i)
//! supcon_in  L_i = -(log(S_P + 1e-8) - LSE_i - log(|P| + 1e-8))
//! supcon_out L_i = -(1 / (|P| + 1e-8)) * sum_{p in P(i)} (l'_ip - LSE_i)
//! a_i = 1[c_i != masked_label] * (skip_trivial ? 1[|P| > 0 and |N| > 0] : 1)
//! head loss = sum_i a_i L_i / (sum_i a_i + 1e-8)
//! ```
//!
//! Gradient w.r.t. the logits of row i (j in A(i); the row max is a constant):
//!
//! ```text
//! infonce            dL_i/dl'_ij = E_ij / (S_A + 1e-8) - 1[j = p]
//! soft_nn, supcon_in dL_i/dl'_ij = E_ij / (S_A + 1e-8) - 1[j in P] E_ij / (S_P + 1e-8)
//! supcon_out         dL_i/dl'_ij = |P| / (|P| + 1e-8) * E_ij / (S_A + 1e-8) - 1[j in P] / (|P| + 1e-8)
//! dL_i/dc_ij = dL_i/dl'_ij * sim'(c_ij) / tau,  sim' = 1, -1, or 1 / sqrt(2 - 2c) (0 where clamped)
//! d(head)/dz_k = w * sum_i a_i sum_j dL_i/dc_ij (1[k = i] z_j + 1[k = j] z_i),  w = 1 / (sum a + 1e-8)
//! ```
//!
//! The `group` level works on per-group blocks (B x 16 x 16 at G = 16); `cross` and `batch`
//! build the (B, B) matrix of c_ij with one matmul and dz = w (G + G^T) z with another.
//! See the module doc of `contrastive` for the choices REFERENCE.md leaves open.

use candle_core::{DType, Device, Tensor, WithDType};

use super::config::{ContrastiveConfig, Level, LossKind, Similarity};
use super::seed::{derive_seed, uniform_index, INFONCE_POSITIVE};
use super::{Batch, ContrastiveError, Result};

/// The losses of one batch, per row in batch order.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput {
    /// (B,) a_i * L_i (0 for non-anchors).
    pub loss: Vec<f64>,
    /// (B,) a_i.
    pub is_anchor: Vec<bool>,
    /// (B,) batch row of the drawn positive, for InfoNCE anchors; None otherwise.
    pub positive: Vec<Option<usize>>,
    /// sum_i a_i L_i / (sum_i a_i + 1e-8); exactly 0 without anchors.
    pub head_loss: f64,
    /// sum_i a_i.
    pub num_anchors: usize,
}

/// s = sim(c) for a raw cosine c.
pub fn similarity(sim: Similarity, c: f64) -> f64 {
    match sim {
        Similarity::Cosine => c,
        Similarity::NegCosine => -c,
        // 1 - ||z_i - z_j|| for unit vectors: ||z_i - z_j||^2 = 2 - 2c; the clamp keeps the
        // sqrt differentiable at i = j.
        Similarity::L2 => 1.0 - (2.0 - 2.0 * c).max(1e-8).sqrt(),
    }
}

/// ds/dc at c (the clamped branch of `l2` has derivative 0).
fn similarity_grad(sim: Similarity, c: f64) -> f64 {
    match sim {
        Similarity::Cosine => 1.0,
        Similarity::NegCosine => -1.0,
        Similarity::L2 => {
            // d/dc (1 - sqrt(2 - 2c)) = (1 / (2 sqrt(2 - 2c))) * 2 = 1 / sqrt(2 - 2c)
            let x = 2.0 - 2.0 * c;
            if x > 1e-8 {
                1.0 / x.sqrt()
            } else {
                0.0
            }
        }
    }
}

/// Contrastive rewards r_con_i = max(c - lambda * L_i * c_i, floor), c_i in {0, 1}, from the
/// masked per-sample losses (REFERENCE.md §4).
pub fn rewards(loss: &[f64], correct: &[bool], cfg: &ContrastiveConfig) -> Vec<f64> {
    loss.iter()
        .zip(correct)
        .map(|(&l, &c)| {
            let c_i = if c { 1.0 } else { 0.0 };
            (cfg.constant - cfg.lambda * l * c_i).max(cfg.floor)
        })
        .collect()
}

/// The losses of a batch of unit embeddings z (B, D) row-major, without gradient. `z` is used
/// as given (the head normalises; here nothing is).
pub fn contrastive_loss(
    z: &[f32],
    dim: usize,
    batch: &Batch<'_>,
    cfg: &ContrastiveConfig,
    rl_step: u64,
) -> Result<LossOutput> {
    let rows = batch.len();
    if z.len() != rows * dim {
        return Err(ContrastiveError::Shape(format!(
            "embeddings have {} values, expected {rows} rows x {dim}",
            z.len()
        )));
    }
    batch.check(rows)?;
    let z64: Vec<f64> = z.iter().map(|&x| f64::from(x)).collect();
    let zt = Tensor::from_slice(z, (rows, dim), &Device::Cpu)?;
    Ok(loss_core(&zt, &z64, batch, cfg, rl_step, false)?.0)
}

/// One row's outcome; `positive` indexes the row's column list.
struct RowResult {
    loss: f64,
    anchor: bool,
    positive: Option<usize>,
}

/// Anchor decision, positive draw, L_i and (for anchors, when `dl` is given) dL_i/dl'_ij of
/// row `i`, whose columns are A(i): shifted logits `lp` (l'_ij), positive flags `in_p`.
/// `e` is scratch of the same length.
#[allow(clippy::too_many_arguments)]
fn eval_row(
    cfg: &ContrastiveConfig,
    batch: &Batch<'_>,
    rl_step: u64,
    i: usize,
    lp: &[f64],
    in_p: &[bool],
    e: &mut [f64],
    dl: Option<&mut [f64]>,
) -> RowResult {
    let n_p = in_p.iter().filter(|&&p| p).count();
    let n_n = in_p.len() - n_p;
    let nontrivial = n_p > 0 && n_n > 0;
    let anchor = cfg.masked_label.keeps(batch.correct[i])
        && (!cfg.skip_trivial || nontrivial)
        // InfoNCE needs a positive to draw; only reachable with skip_trivial off.
        && (cfg.loss != LossKind::InfoNce || n_p > 0);
    if !anchor {
        return RowResult {
            loss: 0.0,
            anchor: false,
            positive: None,
        };
    }
    let mut s_a = 0.0;
    let mut s_p = 0.0;
    let mut sum_lp_p = 0.0;
    for k in 0..lp.len() {
        e[k] = lp[k].exp();
        s_a += e[k];
        if in_p[k] {
            s_p += e[k];
            sum_lp_p += lp[k];
        }
    }
    let lse = (s_a + 1e-8).ln();
    let inv_a = 1.0 / (s_a + 1e-8);
    let n_p = n_p as f64;
    let mut positive = None;
    let loss = match cfg.loss {
        LossKind::InfoNce => {
            let u = derive_seed(
                INFONCE_POSITIVE,
                cfg.seed,
                rl_step,
                batch.prompt_id[i],
                u64::from(batch.sample_idx[i]),
            );
            // The r-th member of P(i) in column (= batch row) order.
            let r = uniform_index(u, n_p as usize);
            let p = (0..in_p.len())
                .filter(|&k| in_p[k])
                .nth(r)
                .expect("r < |P(i)|");
            positive = Some(p);
            if let Some(dl) = dl {
                for k in 0..lp.len() {
                    dl[k] = e[k] * inv_a;
                }
                dl[p] -= 1.0;
            }
            -(lp[p] - lse)
        }
        LossKind::SoftNn | LossKind::SupConIn => {
            let inv_p = 1.0 / (s_p + 1e-8);
            if let Some(dl) = dl {
                for k in 0..lp.len() {
                    dl[k] = e[k] * inv_a - if in_p[k] { e[k] * inv_p } else { 0.0 };
                }
            }
            let base = -((s_p + 1e-8).ln() - lse);
            if cfg.loss == LossKind::SupConIn {
                base + (n_p + 1e-8).ln()
            } else {
                base
            }
        }
        LossKind::SupConOut => {
            let inv_n = 1.0 / (n_p + 1e-8);
            if let Some(dl) = dl {
                for k in 0..lp.len() {
                    dl[k] = n_p * inv_n * e[k] * inv_a - if in_p[k] { inv_n } else { 0.0 };
                }
            }
            // sum_{p in P} (l'_ip - LSE_i) = sum_P l'_ip - |P| LSE_i
            -inv_n * (sum_lp_p - n_p * lse)
        }
    };
    RowResult {
        loss,
        anchor: true,
        positive,
    }
}

/// Group ids mapped to dense indices in order of first appearance: (members per group in row
/// order, group index per row).
pub(crate) fn group_members(group: &[u32]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut index = std::collections::HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut of_row = Vec::with_capacity(group.len());
    for (i, &u) in group.iter().enumerate() {
        let g = *index.entry(u).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[g].push(i);
        of_row.push(g);
    }
    (members, of_row)
}

/// Losses and (when `want_grad`) d(head loss)/dz, (B, D) f64, of unit embeddings given both as
/// a (B, D) tensor `z` (f32 or f64: the dtype the B x B products run in) and as f64 values `z64`.
pub(crate) fn loss_core(
    z: &Tensor,
    z64: &[f64],
    batch: &Batch<'_>,
    cfg: &ContrastiveConfig,
    rl_step: u64,
    want_grad: bool,
) -> Result<(LossOutput, Option<Vec<f64>>)> {
    let (rows, dim) = z.dims2()?;
    batch.check(rows)?;
    if rows == 0 {
        let out = LossOutput {
            loss: vec![],
            is_anchor: vec![],
            positive: vec![],
            head_loss: 0.0,
            num_anchors: 0,
        };
        return Ok((out, want_grad.then(Vec::new)));
    }
    let (rows_out, dz) = match cfg.level {
        Level::Group => {
            let lmax = if cfg.similarity == Similarity::NegCosine {
                Some(batch_row_max(z, cfg)?)
            } else {
                None
            };
            group_level(z64, dim, batch, cfg, rl_step, lmax.as_deref(), want_grad)
        }
        Level::Cross | Level::Batch => match z.dtype() {
            DType::F32 => full_level::<f32>(z, batch, cfg, rl_step, want_grad)?,
            DType::F64 => full_level::<f64>(z, batch, cfg, rl_step, want_grad)?,
            dt => {
                return Err(ContrastiveError::Shape(format!(
                    "embeddings must be f32 or f64, got {dt:?}"
                )))
            }
        },
    };
    let mut loss = Vec::with_capacity(rows);
    let mut is_anchor = Vec::with_capacity(rows);
    let mut positive = Vec::with_capacity(rows);
    for r in rows_out {
        loss.push(r.loss);
        is_anchor.push(r.anchor);
        positive.push(r.positive);
    }
    let num_anchors = is_anchor.iter().filter(|&&a| a).count();
    // L_i is already a_i L_i; without anchors the sum is 0 and so is the head loss.
    let head_loss = loss.iter().sum::<f64>() / (num_anchors as f64 + 1e-8);
    let dz = match dz {
        Some(mut dz) if num_anchors > 0 => {
            let w = 1.0 / (num_anchors as f64 + 1e-8);
            dz.iter_mut().for_each(|g| *g *= w);
            Some(dz)
        }
        _ if want_grad => Some(vec![0.0; rows * dim]),
        _ => None,
    };
    let out = LossOutput {
        loss,
        is_anchor,
        positive,
        head_loss,
        num_anchors,
    };
    Ok((out, dz))
}

/// Per row, what the caller keeps: loss, anchor flag and the positive as a batch row.
struct RowOut {
    loss: f64,
    anchor: bool,
    positive: Option<usize>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The `group` level: per group, the (n, n) block of c_ij. `lmax` gives the row max of the
/// logits over the whole batch (needed for `-cosine`); without it the max is taken over the
/// group, self included. Returns rows and the unscaled sum_i dL_i/dz (B, D).
fn group_level(
    z64: &[f64],
    dim: usize,
    batch: &Batch<'_>,
    cfg: &ContrastiveConfig,
    rl_step: u64,
    lmax: Option<&[f64]>,
    want_grad: bool,
) -> (Vec<RowOut>, Option<Vec<f64>>) {
    let rows = batch.len();
    let (groups, _) = group_members(batch.group);
    let mut out: Vec<RowOut> = (0..rows)
        .map(|_| RowOut {
            loss: 0.0,
            anchor: false,
            positive: None,
        })
        .collect();
    let mut dz = want_grad.then(|| vec![0.0; rows * dim]);
    let zrow = |i: usize| &z64[i * dim..(i + 1) * dim];
    let (mut lp, mut in_p, mut e, mut dl, mut c) = (vec![], vec![], vec![], vec![], vec![]);
    for members in &groups {
        let n = members.len();
        // (n, n) raw cosines of the group, c[a * n + b] = z_{m_a} . z_{m_b}
        c.clear();
        c.resize(n * n, 0.0);
        for a in 0..n {
            for b in a..n {
                let v = dot(zrow(members[a]), zrow(members[b]));
                c[a * n + b] = v;
                c[b * n + a] = v;
            }
        }
        for (a, &i) in members.iter().enumerate() {
            let row_c = &c[a * n..(a + 1) * n];
            let l_max = match lmax {
                Some(m) => m[i],
                None => row_c
                    .iter()
                    .map(|&v| similarity(cfg.similarity, v) / cfg.tau)
                    .fold(f64::NEG_INFINITY, f64::max),
            };
            // Columns: the other n - 1 members, in row order.
            lp.clear();
            in_p.clear();
            for (b, &j) in members.iter().enumerate() {
                if b != a {
                    lp.push(similarity(cfg.similarity, row_c[b]) / cfg.tau - l_max);
                    in_p.push(batch.correct[j] == batch.correct[i]);
                }
            }
            e.resize(lp.len(), 0.0);
            dl.resize(lp.len(), 0.0);
            let r = eval_row(
                cfg,
                batch,
                rl_step,
                i,
                &lp,
                &in_p,
                &mut e,
                dz.is_some().then_some(&mut dl[..]),
            );
            let col_to_row = |k: usize| members[if k < a { k } else { k + 1 }];
            if r.anchor {
                if let Some(dz) = dz.as_mut() {
                    for (k, &g) in dl.iter().enumerate() {
                        let b = if k < a { k } else { k + 1 };
                        let j = members[b];
                        let coef = g * similarity_grad(cfg.similarity, row_c[b]) / cfg.tau;
                        // dc_ij/dz_i = z_j and dc_ij/dz_j = z_i
                        for t in 0..dim {
                            dz[i * dim + t] += coef * z64[j * dim + t];
                            dz[j * dim + t] += coef * z64[i * dim + t];
                        }
                    }
                }
            }
            out[i] = RowOut {
                loss: r.loss,
                anchor: r.anchor,
                positive: r.positive.map(col_to_row),
            };
        }
    }
    (out, dz)
}

/// max_j l_ij over the whole batch, self included, computed from (1024, B) slabs of z z^T.
fn batch_row_max(z: &Tensor, cfg: &ContrastiveConfig) -> Result<Vec<f64>> {
    let (rows, _) = z.dims2()?;
    let zt = z.t()?;
    let mut out = Vec::with_capacity(rows);
    // 1024 rows x 8192 columns x 4 bytes = 32 MiB per slab at B = 8192.
    for start in (0..rows).step_by(1024) {
        let len = 1024.min(rows - start);
        let c = z.narrow(0, start, len)?.matmul(&zt)?; // (len, B)
                                                       // -cosine decreases in c, cosine and l2 increase: the max of s sits at min or max c.
        let ext = if cfg.similarity == Similarity::NegCosine {
            c.min(1)?
        } else {
            c.max(1)?
        };
        for v in ext.to_dtype(DType::F64)?.to_vec1::<f64>()? {
            out.push(similarity(cfg.similarity, v) / cfg.tau);
        }
    }
    Ok(out)
}

/// The `cross` and `batch` levels: the whole (B, B) matrix of c_ij in dtype T, overwritten row
/// by row with dL_i/dc_ij, then dz = (G + G^T) z. Rows are split over the available cores.
fn full_level<T: WithDType>(
    z: &Tensor,
    batch: &Batch<'_>,
    cfg: &ContrastiveConfig,
    rl_step: u64,
    want_grad: bool,
) -> Result<(Vec<RowOut>, Option<Vec<f64>>)> {
    let (rows, _) = z.dims2()?;
    // (B, B) c_ij = z_i . z_j; 8192 x 8192 x 4 bytes = 256 MiB at B = 8192 in f32.
    let mut g: Vec<T> = z.matmul(&z.t()?)?.flatten_all()?.to_vec1::<T>()?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, rows.max(1));
    let rows_per = rows.div_ceil(threads).max(1);
    let same_group = cfg.level == Level::Cross;
    let mut out: Vec<RowOut> = Vec::with_capacity(rows);
    std::thread::scope(|s| {
        let handles: Vec<_> = g
            .chunks_mut(rows_per * rows)
            .enumerate()
            .map(|(t, chunk)| {
                s.spawn(move || {
                    let first = t * rows_per;
                    let (mut lp, mut in_p) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
                    let (mut e, mut dl) = (
                        vec![0.0; rows.saturating_sub(1)],
                        vec![0.0; rows.saturating_sub(1)],
                    );
                    let mut res = Vec::new();
                    for (r, row) in chunk.chunks_mut(rows).enumerate() {
                        let i = first + r;
                        let l_max = row
                            .iter()
                            .map(|v| similarity(cfg.similarity, v.to_f64()) / cfg.tau)
                            .fold(f64::NEG_INFINITY, f64::max);
                        lp.clear();
                        in_p.clear();
                        for (j, v) in row.iter().enumerate() {
                            if j != i {
                                lp.push(similarity(cfg.similarity, v.to_f64()) / cfg.tau - l_max);
                                let same = batch.correct[j] == batch.correct[i];
                                in_p.push(
                                    same && (!same_group || batch.group[j] == batch.group[i]),
                                );
                            }
                        }
                        let rr = eval_row(
                            cfg,
                            batch,
                            rl_step,
                            i,
                            &lp,
                            &in_p,
                            &mut e,
                            want_grad.then_some(&mut dl[..]),
                        );
                        if want_grad {
                            if rr.anchor {
                                for (k, &g) in dl.iter().enumerate() {
                                    let j = if k < i { k } else { k + 1 };
                                    let c = row[j].to_f64();
                                    row[j] = T::from_f64(
                                        g * similarity_grad(cfg.similarity, c) / cfg.tau,
                                    );
                                }
                                row[i] = T::from_f64(0.0);
                            } else {
                                row.fill(T::from_f64(0.0));
                            }
                        }
                        let positive = rr.positive.map(|k| if k < i { k } else { k + 1 });
                        res.push(RowOut {
                            loss: rr.loss,
                            anchor: rr.anchor,
                            positive,
                        });
                    }
                    res
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("contrastive loss worker panicked"));
        }
    });
    if !want_grad || !out.iter().any(|r| r.anchor) {
        return Ok((out, None));
    }
    // G <- G + G^T in place, in 64 x 64 tiles (dz_k gets G_kj z_j from row k and G_jk z_j
    // from row j's gradient w.r.t. its column k).
    const TILE: usize = 64;
    for bi in (0..rows).step_by(TILE) {
        for bj in (bi..rows).step_by(TILE) {
            for i in bi..(bi + TILE).min(rows) {
                let j0 = if bi == bj { i } else { bj };
                for j in j0..(bj + TILE).min(rows) {
                    let v = g[i * rows + j] + g[j * rows + i];
                    g[i * rows + j] = v;
                    g[j * rows + i] = v;
                }
            }
        }
    }
    let gt = Tensor::from_vec(g, (rows, rows), &Device::Cpu)?;
    let dz = gt
        .matmul(z)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?; // (B, D)
    Ok((out, Some(dz)))
}

#[cfg(test)]
#[path = "loss_tests.rs"]
mod tests;
