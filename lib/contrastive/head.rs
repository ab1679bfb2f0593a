//! The contrastive head: weights, forward z = normalize(head(h)), hand-written backward, its
//! own AdamW, and the safetensors checkpoint (REFERENCE.md §3).
//!
//! Weights follow torch's `nn.Linear` layout (out, in), no biases, so the file loads into
//! `nn.Linear(d, D, bias=False)` (name `proj.weight`) or
//! `nn.Sequential(Linear(d, d), ReLU, Linear(d, D))` (names `proj.0.weight`, `proj.2.weight`):
//!
//! ```text
//! linear  y = h W^T                   W (D, d)  `proj.weight`
//! mlp     a = h W0^T, y = relu(a) W2^T    W0 (d, d) `proj.0.weight`, W2 (D, d) `proj.2.weight`
//! z = y / max(||y||, 1e-12)           (F.normalize)
//! ```
//!
//! Init: torch's default Linear init, kaiming_uniform(a = sqrt(5)), is uniform in
//! +-gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)), i.e. +-1/sqrt(fan_in); drawn from a
//! ChaCha20 stream seeded by `derive_seed("head-init", seed, 0, "", 0)`, `proj.0` before `proj.2`.
//!
//! Checkpoint: one safetensors file, f32 tensors `<name>`, `<name>.exp_avg`,
//! `<name>.exp_avg_sq`, metadata `format = pt`, `step` (the AdamW step count) and
//! `clipo.head` (`linear` / `mlp`). A file with the weights only loads with zero moments and
//! step 0.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use safetensors::tensor::{Dtype, SafeTensors, View};

use super::config::{ContrastiveConfig, HeadKind};
use super::loss::{loss_core, LossOutput};
use super::seed::{derive_seed, HEAD_INIT};
use super::{Batch, ContrastiveError, Hidden, Result};

/// Hyper-parameters of the head's AdamW (torch.optim.AdamW, decoupled weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// Learning rate (reference 1e-3, constant).
    pub lr: f64,
    /// Decoupled weight decay (reference 0.01).
    pub weight_decay: f64,
    /// beta1 (0.9).
    pub beta1: f64,
    /// beta2 (0.999).
    pub beta2: f64,
    /// eps (1e-8), added after the bias-corrected square root.
    pub eps: f64,
}

impl AdamW {
    /// The optimiser settings of `cfg`.
    pub fn from_config(cfg: &ContrastiveConfig) -> Self {
        Self {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
        }
    }
}

/// One weight matrix with its AdamW moments, all (rows, cols) row-major f32.
#[derive(Debug, Clone, PartialEq)]
struct Param {
    name: &'static str,
    rows: usize,
    cols: usize,
    value: Vec<f32>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl Param {
    fn new(name: &'static str, rows: usize, cols: usize, value: Vec<f32>) -> Self {
        let n = rows * cols;
        Self {
            name,
            rows,
            cols,
            value,
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        }
    }
}

/// The contrastive head with its optimiser state.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastiveHead {
    kind: HeadKind,
    in_dim: usize,
    out_dim: usize,
    params: Vec<Param>,
    step: u64,
}

/// The weight names and (rows, cols) of a head kind.
fn layout(kind: HeadKind, in_dim: usize, out_dim: usize) -> Vec<(&'static str, usize, usize)> {
    match kind {
        HeadKind::Linear => vec![("proj.weight", out_dim, in_dim)],
        HeadKind::Mlp => vec![
            ("proj.0.weight", in_dim, in_dim),
            ("proj.2.weight", out_dim, in_dim),
        ],
    }
}

/// What one forward/backward pass of [`ContrastiveHead::loss_and_grad`] gives.
#[derive(Debug, Clone)]
pub(crate) struct Pass {
    /// The losses (before any step).
    pub out: LossOutput,
    /// (B, D) the unit embeddings z, f64.
    pub z: Vec<f64>,
    /// Gradient of the head loss per weight, in `params` order (when asked for).
    pub grads: Option<Vec<Vec<f32>>>,
}

impl ContrastiveHead {
    /// A fresh head for hidden size `in_dim` (d) and embedding size `out_dim` (D), initialised
    /// like torch's default Linear from `seed` (see the module doc).
    pub fn init(kind: HeadKind, in_dim: usize, out_dim: usize, seed: u64) -> Result<Self> {
        if in_dim == 0 || out_dim == 0 {
            return Err(ContrastiveError::Shape(format!(
                "head dims must be >= 1, got d = {in_dim}, D = {out_dim}"
            )));
        }
        let mut rng = ChaCha20Rng::seed_from_u64(derive_seed(HEAD_INIT, seed, 0, "", 0));
        let params = layout(kind, in_dim, out_dim)
            .into_iter()
            .map(|(name, rows, cols)| {
                // Every layer reads `cols` inputs: fan_in = cols, bound = 1 / sqrt(fan_in).
                let bound = 1.0 / (cols as f64).sqrt();
                let value = (0..rows * cols)
                    .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
                    .collect();
                Param::new(name, rows, cols, value)
            })
            .collect();
        Ok(Self {
            kind,
            in_dim,
            out_dim,
            params,
            step: 0,
        })
    }

    /// A head with the given weights (in layout order: `proj.weight`, or `proj.0.weight` then
    /// `proj.2.weight`), zero moments and step 0.
    pub fn from_weights(
        kind: HeadKind,
        in_dim: usize,
        out_dim: usize,
        weights: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let shapes = layout(kind, in_dim, out_dim);
        if weights.len() != shapes.len() {
            return Err(ContrastiveError::Shape(format!(
                "{kind} head needs {} weight matrices, got {}",
                shapes.len(),
                weights.len()
            )));
        }
        let mut params = Vec::new();
        for ((name, rows, cols), w) in shapes.into_iter().zip(weights) {
            if w.len() != rows * cols {
                return Err(ContrastiveError::Shape(format!(
                    "{name} has {} values, expected {rows} x {cols}",
                    w.len()
                )));
            }
            params.push(Param::new(name, rows, cols, w));
        }
        Ok(Self {
            kind,
            in_dim,
            out_dim,
            params,
            step: 0,
        })
    }

    /// The head architecture.
    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    /// d, the hidden size the head reads.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// D, the embedding size.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The number of AdamW steps taken (torch's `state["step"]`).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The weights: (name, (rows, cols), row-major values), in layout order.
    pub fn weights(&self) -> Vec<(&'static str, (usize, usize), &[f32])> {
        self.params
            .iter()
            .map(|p| (p.name, (p.rows, p.cols), &p.value[..]))
            .collect()
    }

    /// The AdamW moments of weight `name`: (exp_avg, exp_avg_sq).
    pub fn moments(&self, name: &str) -> Option<(&[f32], &[f32])> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| (&p.exp_avg[..], &p.exp_avg_sq[..]))
    }

    /// Checks that this head is the one `cfg` asks for, reading hidden states of size `in_dim`.
    pub fn check_config(&self, cfg: &ContrastiveConfig, in_dim: usize) -> Result<()> {
        if self.kind != cfg.head || self.out_dim != cfg.proj_dim || self.in_dim != in_dim {
            return Err(ContrastiveError::Shape(format!(
                "head is {} with d = {}, D = {}, but the config and the hidden states ask for {} with d = {in_dim}, D = {}",
                self.kind, self.in_dim, self.out_dim, cfg.head, cfg.proj_dim
            )));
        }
        Ok(())
    }

    /// The weights as (rows, cols) f32 tensors.
    fn weight_tensors(&self) -> Result<Vec<Tensor>> {
        let ws = self
            .params
            .iter()
            .map(|p| Tensor::from_slice(&p.value, (p.rows, p.cols), &Device::Cpu));
        Ok(ws.collect::<candle_core::Result<_>>()?)
    }

    /// z = normalize(head(h)), (B, D) row-major f32.
    pub fn embed(&self, hidden: Hidden<'_>) -> Result<Vec<f32>> {
        if hidden.dim != self.in_dim {
            return Err(ContrastiveError::Shape(format!(
                "hidden size {} but the head reads {}",
                hidden.dim, self.in_dim
            )));
        }
        let h = Tensor::from_slice(hidden.data, (hidden.rows, hidden.dim), &Device::Cpu)?;
        let fwd = forward(self.kind, &self.weight_tensors()?, &h)?;
        let (z, _) = normalize(&fwd.y)?;
        Ok(z.into_iter().map(|v| v as f32).collect())
    }

    /// Forward pass, losses and (when `want_grad`) the head-loss gradient per weight, in f32.
    pub(crate) fn loss_and_grad(
        &self,
        hidden: Hidden<'_>,
        batch: &Batch<'_>,
        cfg: &ContrastiveConfig,
        rl_step: u64,
        want_grad: bool,
    ) -> Result<Pass> {
        let h = Tensor::from_slice(hidden.data, (hidden.rows, hidden.dim), &Device::Cpu)?; // (B, d)
        let ws = self.weight_tensors()?;
        let (out, z, grads) = head_pass(self.kind, &ws, &h, batch, cfg, rl_step, want_grad)?;
        let grads = match grads {
            Some(gs) => Some(
                gs.iter()
                    .map(|g| g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
                    .collect::<candle_core::Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok(Pass { out, z, grads })
    }

    /// One torch.optim.AdamW step with gradients `grads` (one per weight, layout order):
    ///
    /// ```text
    /// t += 1
    /// p <- p * (1 - lr * wd)                       decoupled weight decay
    /// m <- beta1 m + (1 - beta1) g,  v <- beta2 v + (1 - beta2) g^2
    /// p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
    ///
    /// Per element in f64, stored as f32.
    pub fn adamw_step(&mut self, grads: &[Vec<f32>], opt: &AdamW) {
        assert_eq!(grads.len(), self.params.len(), "one gradient per weight");
        self.step += 1;
        let hp = crate::optim::AdamWConfig { lr: opt.lr, weight_decay: opt.weight_decay, beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps };
        for (p, g) in self.params.iter_mut().zip(grads) {
            assert_eq!(g.len(), p.value.len(), "gradient of {} has the wrong size", p.name);
            crate::optim::adamw_update(&mut p.value, g, &mut p.exp_avg, &mut p.exp_avg_sq, self.step, 1.0, &hp);
        }
    }

    /// Writes the weights, the AdamW moments and the step to `path` (via `<path>.tmp` and a
    /// rename, so a crash never leaves a half-written checkpoint).
    pub fn save(&self, path: &Path) -> Result<()> {
        let ck = |msg: String| ContrastiveError::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let mut views: Vec<(String, F32View<'_>)> = Vec::new();
        for p in &self.params {
            let shape = vec![p.rows, p.cols];
            views.push((
                p.name.to_string(),
                F32View {
                    shape: shape.clone(),
                    data: &p.value,
                },
            ));
            views.push((
                format!("{}.exp_avg", p.name),
                F32View {
                    shape: shape.clone(),
                    data: &p.exp_avg,
                },
            ));
            views.push((
                format!("{}.exp_avg_sq", p.name),
                F32View {
                    shape,
                    data: &p.exp_avg_sq,
                },
            ));
        }
        let meta = std::collections::BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("clipo.head".to_string(), self.kind.as_str().to_string()),
        ]);
        for p in &self.params {
            for (suffix, data) in [("", &p.value), (".exp_avg", &p.exp_avg), (".exp_avg_sq", &p.exp_avg_sq)] {
                crate::checkpoint::ensure_finite("contrastive head tensor", &format!("{}{suffix}", p.name), data, self.step)
                    .map_err(|e| ck(e.to_string()))?;
            }
        }
        crate::checkpoint::write_safetensors(path, views, &meta)
            .map_err(|e| ck(e.to_string()))
    }

    /// Reads a head written by [`save`](Self::save), or a bare file with the weights only
    /// (zero moments, step 0). The kind and dims come from the tensor names and shapes.
    pub fn load(path: &Path) -> Result<Self> {
        let ck = |msg: String| ContrastiveError::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|err| ContrastiveError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ck(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| ck(e.to_string()))?;
        let names = st.names();
        let has = |n: &str| names.contains(&n);
        let kind = if has("proj.weight") {
            HeadKind::Linear
        } else if has("proj.0.weight") && has("proj.2.weight") {
            HeadKind::Mlp
        } else {
            return Err(ck(format!(
                "no head weights (proj.weight or proj.0.weight + proj.2.weight) among {names:?}"
            )));
        };
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st.tensor(name).map_err(|e| ck(format!("{name}: {e}")))?;
            let data = match t.dtype() {
                Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect(),
                dt => return Err(ck(format!("{name} has dtype {dt:?}; expected F32 or F64"))),
            };
            Ok((t.shape().to_vec(), data))
        };
        let first = if kind == HeadKind::Linear {
            "proj.weight"
        } else {
            "proj.2.weight"
        };
        let (shape, _) = read(first)?;
        let [out_dim, in_dim] = shape[..] else {
            return Err(ck(format!("{first} has shape {shape:?}; expected (D, d)")));
        };
        let mut params = Vec::new();
        let mut moments_found = Vec::new();
        for (name, rows, cols) in layout(kind, in_dim, out_dim) {
            let (shape, value) = read(name)?;
            if shape != [rows, cols] {
                return Err(ck(format!(
                    "{name} has shape {shape:?}; expected [{rows}, {cols}]"
                )));
            }
            let mut p = Param::new(name, rows, cols, value);
            for (suffix, slot) in [
                ("exp_avg", &mut p.exp_avg),
                ("exp_avg_sq", &mut p.exp_avg_sq),
            ] {
                let mname = format!("{name}.{suffix}");
                if has(&mname) {
                    let (mshape, m) = read(&mname)?;
                    if mshape != [rows, cols] {
                        return Err(ck(format!(
                            "{mname} has shape {mshape:?}; expected [{rows}, {cols}]"
                        )));
                    }
                    *slot = m;
                    moments_found.push(true);
                } else {
                    moments_found.push(false);
                }
            }
            params.push(p);
        }
        let step = if moments_found.iter().all(|&f| f) {
            match header.metadata().as_ref().and_then(|m| m.get("step")) {
                Some(s) => s
                    .parse()
                    .map_err(|_| ck(format!("metadata step {s:?} is not an integer")))?,
                None => return Err(ck("AdamW moments without a `step` metadata entry".into())),
            }
        } else if moments_found.iter().any(|&f| f) {
            return Err(ck("some AdamW moments are missing (need exp_avg and exp_avg_sq of every weight, or none)".into()));
        } else {
            0
        };
        Ok(Self {
            kind,
            in_dim,
            out_dim,
            params,
            step,
        })
    }
}

/// A borrowed f32 tensor for the safetensors writer.
struct F32View<'a> {
    shape: Vec<usize>,
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Activations kept for the backward pass.
struct Forward {
    /// (B, D) head output before normalisation.
    y: Tensor,
    /// (B, d) mlp pre-activation a = h W0^T and relu(a); None for linear.
    hidden: Option<(Tensor, Tensor)>,
}

/// y = head(h) with weights `ws` (layout order) in their dtype.
fn forward(kind: HeadKind, ws: &[Tensor], h: &Tensor) -> Result<Forward> {
    Ok(match kind {
        HeadKind::Linear => Forward {
            y: h.matmul(&ws[0].t()?)?,
            hidden: None,
        }, // (B, d) x (d, D)
        HeadKind::Mlp => {
            let a = h.matmul(&ws[0].t()?)?; // (B, d)
            let r = a.relu()?;
            let y = r.matmul(&ws[1].t()?)?; // (B, D)
            Forward {
                y,
                hidden: Some((a, r)),
            }
        }
    })
}

/// z = y / max(||y||, 1e-12) per row, in f64: (z (B, D), the unclamped norms (B,)).
fn normalize(y: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let (rows, dim) = y.dims2()?;
    let mut z = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mut norms = Vec::with_capacity(rows);
    for row in z.chunks_mut(dim.max(1)).take(rows) {
        let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        let denom = n.max(1e-12);
        row.iter_mut().for_each(|v| *v /= denom);
        norms.push(n);
    }
    Ok((z, norms))
}

/// The whole pass in the weights' dtype (f32 in training, f64 for the gradient check):
/// forward, losses and, when `want_grad`, d(head loss)/dW per weight.
pub(crate) fn head_pass(
    kind: HeadKind,
    ws: &[Tensor],
    h: &Tensor,
    batch: &Batch<'_>,
    cfg: &ContrastiveConfig,
    rl_step: u64,
    want_grad: bool,
) -> Result<(LossOutput, Vec<f64>, Option<Vec<Tensor>>)> {
    let dtype = ws[0].dtype();
    let h = h.to_dtype(dtype)?;
    let fwd = forward(kind, ws, &h)?;
    let (rows, dim) = fwd.y.dims2()?;
    let (z64, norms) = normalize(&fwd.y)?;
    let z = Tensor::from_slice(&z64, (rows, dim), &Device::Cpu)?.to_dtype(dtype)?; // (B, D)
    let (out, dz) = loss_core(&z, &z64, batch, cfg, rl_step, want_grad)?;
    let Some(mut dz) = dz else {
        return Ok((out, z64, None));
    };
    if out.num_anchors == 0 {
        // Nothing to learn from: zero gradients without the backward products.
        let zeros = ws
            .iter()
            .map(|w| w.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        return Ok((out, z64, Some(zeros)));
    }
    // Backward of the normalisation, per row, in place: with n = ||y||,
    // n > 1e-12: dy = (dz - z (z . dz)) / n;  clamped: dy = dz / 1e-12.
    for (i, g) in dz.chunks_mut(dim.max(1)).take(rows).enumerate() {
        let zi = &z64[i * dim..(i + 1) * dim];
        if norms[i] > 1e-12 {
            let zdz: f64 = zi.iter().zip(g.iter()).map(|(a, b)| a * b).sum();
            for (gk, zk) in g.iter_mut().zip(zi) {
                *gk = (*gk - zk * zdz) / norms[i];
            }
        } else {
            g.iter_mut().for_each(|gk| *gk /= 1e-12);
        }
    }
    let dy = Tensor::from_vec(dz, (rows, dim), &Device::Cpu)?.to_dtype(dtype)?; // (B, D)
    let grads = match (&fwd.hidden, kind) {
        (None, _) => vec![dy.t()?.matmul(&h)?], // (D, B) x (B, d) = (D, d)
        (Some((a, r)), _) => {
            let dw2 = dy.t()?.matmul(r)?; // (D, B) x (B, d) = (D, d)
            let dr = dy.matmul(&ws[1])?; // (B, D) x (D, d) = (B, d)
                                         // relu'(a) = 1[a > 0], as torch's threshold_backward.
            let da = dr.mul(&a.gt(0.0)?.to_dtype(dtype)?)?;
            let dw0 = da.t()?.matmul(&h)?; // (d, B) x (B, d) = (d, d)
            vec![dw0, dw2]
        }
    };
    Ok((out, z64, Some(grads)))
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
