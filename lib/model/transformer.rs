//! The Llama / Qwen2 / Qwen3 / Mistral decoder: weights, KV cache and the two forward paths.
//!
//! One implementation covers the four families; they differ in which projections carry a
//! bias, Qwen3's q/k norms, the rope scaling and Mistral's attention window (see
//! [`super::config`]). The maths follows transformers' `modeling_llama.py` /
//! `modeling_qwen2.py` / `modeling_qwen3.py` / `modeling_mistral.py`: RMSNorm in f32
//! (`x * rsqrt(mean(x^2) + eps) * w`; Qwen3 also over each head of q and k after the
//! projection, before rope), rotate-half RoPE with `inv_freq = 1 / base^(2i/d)` computed in f32
//! (scaled as `modeling_rope_utils.py` does: [`rope_inv_freq`]), attention scores scaled by
//! `1/sqrt(head_dim)` with an additive mask (causal, left padding, Mistral's window) and softmax
//! in f32, SiLU-gated MLP, final RMSNorm, `lm_head`.
//!
//! Two paths through the same weights:
//! - the **graph** path ([`Model::forward_hidden`]): only ops that backpropagate in candle 0.11
//!   (hand-written RMSNorm, rotate-half RoPE, `ops::softmax`); every weight is a `Var`.
//! - the **no-grad** path ([`Model::forward_hidden_nograd`], sampling, frozen scoring): the same
//!   weights detached (no graph is recorded) and candle's fused `rms_norm`, `rope` and
//!   `softmax_last_dim`, which have no backward. The two agree to ~3e-6 in f32.
//!
//! On the CPU in f32/f64 both paths instead run the fused kernels of [`super::ops`] (custom ops
//! with hand-written backward passes, checked against finite differences): activations stay
//! (B*T, d) matrices, q/k/v are (B, T, H, hd) views of the projections (no transposes, no mask
//! tensor; the attention kernel reads the left padding per row), and the KV cache is time-major
//! (B, capacity, Hkv, hd). The no-grad path also multiplies a few rows (decoding) by streaming
//! the weights once ([`super::ops::matmul_small_m`]) and runs attention with plain loops whose
//! per-row result does not depend on the batch.
//!
//! Padding: rows are **left**-padded; `left_pad[b]` pad columns precede row b's tokens. Row b's
//! token at column c has position `c - left_pad[b]`, and attends to columns
//! `left_pad[b] ..= c`. The mask is additive with a large negative number instead of -inf, so a
//! fully masked row (a pad query) stays finite and cannot poison gradients with NaN. Padding at
//! the right end of a row needs no mask (causality hides it from earlier positions); its outputs
//! are simply ignored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};

use super::config::{Config, RopeScaling};
use super::ops::{self, AttnRows, RopeTables};
use super::{Error, Result};

/// The additive mask value: exp(-1e9 - x) is exactly 0 in f32/bf16/f64. (f16 would overflow.)
const MASK_NEG: f32 = -1.0e9;

/// A linear layer `y = x W^T + b` holding the weight in the Hugging Face (out, in) layout.
#[derive(Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    fn detach(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.as_ref().map(Tensor::detach),
        }
    }

    /// (N, in) -> (N, out). `fast` (no graph wanted): a few rows go through
    /// [`ops::matmul_small_m`] (decoding), which reads the weight once without repacking it.
    /// `rowwise` (a decode step): every row through the streaming kernel, so its bits do not
    /// depend on the other rows of the batch.
    fn forward2_rows(&self, xs: &Tensor, fast: bool, rowwise: bool) -> Result<Tensor> {
        let ys = if fast && (rowwise || xs.dim(0)? <= ops::SMALL_M) {
            ops::matmul_rows(xs, &self.weight)?
        } else {
            xs.matmul(&self.weight.t()?)?
        };
        Ok(match &self.bias {
            Some(bias) => ys.broadcast_add(bias)?,
            None => ys,
        })
    }

    /// (B, T, in) -> (B, T, out)
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, i) = xs.dims3()?;
        let ys = xs.reshape((b * t, i))?.matmul(&self.weight.t()?)?;
        let ys = match &self.bias {
            Some(bias) => ys.broadcast_add(bias)?,
            None => ys,
        };
        Ok(ys.reshape((b, t, ()))?)
    }
}

#[derive(Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    fn detach(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            eps: self.eps,
        }
    }

    /// (..., d) -> (..., d). `fast`: candle's fused kernel (no backward).
    fn forward(&self, xs: &Tensor, fast: bool) -> Result<Tensor> {
        if fast {
            return Ok(candle_nn::ops::rms_norm(
                &xs.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        // transformers: x.float() * rsqrt(mean(x^2) + eps), back to the input dtype, times w.
        let dtype = xs.dtype();
        let x = xs.to_dtype(internal_dtype(dtype))?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(x.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}

/// Softmax and norms run in f32 for half-precision models (as transformers does).
fn internal_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// Per-call inputs shared by every layer: rope tables for each row's positions and the mask.
struct Ctx {
    /// (B, T, hd/2), for the fused rope.
    cos: Tensor,
    sin: Tensor,
    /// (B, 1, T, hd) = cat(cos, cos), for the differentiable rope.
    cos2: Tensor,
    sin2: Tensor,
    /// (B, 1, 1, T, Tk) additive: 0 where allowed, MASK_NEG elsewhere.
    mask: Tensor,
    fast: bool,
    /// The fused CPU kernels ([`super::ops`]) for f32/f64 on the CPU: then `cos`, `sin`,
    /// `cos2`, `sin2` and `mask` are unused placeholders.
    fused: Option<Fused>,
}

/// Per-call state of the fused path.
struct Fused {
    rope: RopeTables,
    /// Left-padded rows (with the columns already in the KV cache) or packed sequences.
    rows: AttnRows,
    /// No graph is wanted (the detached decoder).
    fast: bool,
    b: usize,
    t: usize,
    /// Mistral's attention window.
    window: Option<usize>,
}

impl Fused {
    /// A decode step (one new token a row): the projections go row by row through the streaming
    /// kernel, so a row's bits do not depend on how many rows share the step.
    fn rowwise(&self) -> bool {
        self.fast && self.t == 1
    }
}

/// Packed sequences laid out for the layers ([`Decoder::packed`]).
pub(crate) struct Packed {
    ctx: Ctx,
    /// The ids the embedding reads: (N,) packed, or (B*T,) left-padded.
    ids: Tensor,
    /// The composed path's padded batch: B, T and the (N,) rows of the real tokens in (B*T).
    padded: Option<(usize, usize, Tensor)>,
}

impl Ctx {
    /// x: (B, H, T, hd) -> rotated, rotate-half convention (transformers' `rotate_half`).
    fn rope(&self, x: &Tensor) -> Result<Tensor> {
        if self.fast {
            return Ok(candle_nn::rotary_emb::rope(
                &x.contiguous()?,
                &self.cos,
                &self.sin,
            )?);
        }
        let hd = x.dim(D::Minus1)?;
        let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&self.cos2)? + rotated.broadcast_mul(&self.sin2)?)?)
    }
}

/// The per-layer key/value cache of a batch: preallocated (B, Hkv, capacity, hd) buffers written
/// in place, so a decode step costs no copy of the past. Rows can be dropped (finished samples)
/// or duplicated (G samples of one prefilled prompt) with [`KvCache::select_rows`].
pub(crate) struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Columns filled so far (the same for every row; left padding aligns the rows).
    pub(crate) len: usize,
    capacity: usize,
    /// (B, capacity, Hkv, hd) buffers (the fused path's layout) instead of (B, Hkv, capacity, hd).
    time_major: bool,
}

impl KvCache {
    pub(crate) fn new(
        cfg: &Config,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let time_major = ops::fused_for(device, dtype);
        let (kv, hd) = (cfg.num_key_value_heads(), cfg.head_dim());
        let shape = if time_major {
            (batch, capacity, kv, hd)
        } else {
            (batch, kv, capacity, hd)
        };
        let mut k = Vec::with_capacity(cfg.num_hidden_layers);
        let mut v = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            k.push(Tensor::zeros(shape, dtype, device)?);
            v.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(Self {
            k,
            v,
            len: 0,
            capacity,
            time_major,
        })
    }

    /// Writes k, v (B, Hkv, T, hd) at column `self.len` of `layer`; returns the filled
    /// (B, Hkv, len + T, hd) views.
    /// In the time-major layout, k, v are (B, T, Hkv, hd) and so are the views.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let axis = if self.time_major { 1 } else { 2 };
        let t = k.dim(axis)?;
        if self.len + t > self.capacity {
            return Err(Error::Input(format!(
                "kv cache full: {} + {t} columns > capacity {}",
                self.len, self.capacity
            )));
        }
        self.k[layer].slice_set(&k.contiguous()?, axis, self.len)?;
        self.v[layer].slice_set(&v.contiguous()?, axis, self.len)?;
        Ok((
            self.k[layer].narrow(axis, 0, self.len + t)?,
            self.v[layer].narrow(axis, 0, self.len + t)?,
        ))
    }

    /// A batch cache from single-row caches prefilled one prompt at a time: row j holds
    /// `rows[j]`'s `len` columns after `pads[j] = p - len` columns of zeros (left padding), p the
    /// longest; room for `capacity` columns in all.
    pub(crate) fn from_rows(rows: &[&KvCache], capacity: usize) -> Result<Self> {
        let p = rows.iter().map(|r| r.len).max().unwrap_or(0);
        let first = rows.first().ok_or_else(|| Error::Input("no rows to batch".into()))?;
        let time_major = first.time_major;
        let axis = if time_major { 1 } else { 2 };
        let layers = first.k.len();
        let build = |pick: &dyn Fn(&KvCache) -> &Vec<Tensor>, layer: usize| -> Result<Tensor> {
            let mut parts = Vec::with_capacity(rows.len());
            for r in rows {
                let filled = pick(r)[layer].narrow(axis, 0, r.len)?;
                let mut dims = filled.dims().to_vec();
                let mut pieces = vec![];
                if p > r.len {
                    dims[axis] = p - r.len;
                    pieces.push(Tensor::zeros(dims.as_slice(), filled.dtype(), filled.device())?);
                }
                pieces.push(filled.clone());
                if capacity > p {
                    dims[axis] = capacity - p;
                    pieces.push(Tensor::zeros(dims.as_slice(), filled.dtype(), filled.device())?);
                }
                parts.push(Tensor::cat(&pieces, axis)?);
            }
            Ok(Tensor::cat(&parts, 0)?)
        };
        let k = (0..layers).map(|l| build(&|r: &KvCache| &r.k, l)).collect::<Result<Vec<_>>>()?;
        let v = (0..layers).map(|l| build(&|r: &KvCache| &r.v, l)).collect::<Result<Vec<_>>>()?;
        Ok(Self { k, v, len: p, capacity, time_major })
    }

    /// Room for columns in all (filled or not).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Continuous batching: writes single-row cache `row` into batch row `slot` right-aligned
    /// at column `self.len` (its `self.len - row.len` left-padding columns zeroed); returns that
    /// padding. Needs `row.len <= self.len` ([`KvCache::shift`] makes room).
    pub(crate) fn write_row(&mut self, slot: usize, row: &KvCache) -> Result<usize> {
        if row.len > self.len || row.time_major != self.time_major {
            return Err(Error::Input(format!("kv cache: a row of {} columns does not fit {} filled", row.len, self.len)));
        }
        let pad = self.len - row.len;
        let axis = if self.time_major { 1 } else { 2 };
        let place = |dst: &Tensor, src: &Tensor| -> Result<()> {
            let filled = src.narrow(axis, 0, row.len)?;
            let mut dims = filled.dims().to_vec();
            let mut pieces = vec![];
            if pad > 0 {
                dims[axis] = pad;
                pieces.push(Tensor::zeros(dims.as_slice(), filled.dtype(), filled.device())?);
            }
            pieces.push(filled.clone());
            if self.capacity > self.len {
                dims[axis] = self.capacity - self.len;
                pieces.push(Tensor::zeros(dims.as_slice(), filled.dtype(), filled.device())?);
            }
            dst.slice_set(&Tensor::cat(&pieces, axis)?, 0, slot)?; // (1, capacity, Hkv, hd) at row slot
            Ok(())
        };
        for (dst, src) in self.k.iter().zip(&row.k).chain(self.v.iter().zip(&row.v)) {
            place(dst, src)?;
        }
        Ok(pad)
    }

    /// Moves every row's columns by `m` (> 0: right, adding m columns of left padding to each
    /// row; < 0: left, dropping the first -m columns, which must be padding in every row).
    /// Positions do not change (a row's position is its column minus its padding); `len` moves
    /// by `m`.
    pub(crate) fn shift(&mut self, m: isize) -> Result<()> {
        let (add, drop) = (m.max(0) as usize, (-m).max(0) as usize);
        if drop > self.len || self.len - drop + add > self.capacity {
            return Err(Error::Input(format!("kv cache: cannot shift {} filled columns by {m} in {}", self.len, self.capacity)));
        }
        let axis = if self.time_major { 1 } else { 2 };
        let kept = self.len - drop;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            let mut dims = t.dims().to_vec();
            let mut pieces = vec![];
            if add > 0 {
                dims[axis] = add;
                pieces.push(Tensor::zeros(dims.as_slice(), t.dtype(), t.device())?);
            }
            pieces.push(t.narrow(axis, drop, kept)?);
            dims[axis] = self.capacity - kept - add;
            if dims[axis] > 0 {
                pieces.push(Tensor::zeros(dims.as_slice(), t.dtype(), t.device())?);
            }
            *t = Tensor::cat(&pieces, axis)?;
        }
        self.len = kept + add;
        Ok(())
    }

    /// Keeps (and possibly repeats) the rows listed in `rows`, in that order.
    pub(crate) fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        let device = self.k[0].device().clone();
        let idx = Tensor::new(rows, &device)?;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Qwen3's per-head RMSNorms over head_dim, on the projected queries and keys before rope.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (d, h, kv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads(),
            cfg.head_dim(),
        );
        Ok(Self {
            q_proj: Linear::new(d, h * hd, cfg.qkv_bias(), vb.pp("q_proj"))?,
            k_proj: Linear::new(d, kv * hd, cfg.qkv_bias(), vb.pp("k_proj"))?,
            v_proj: Linear::new(d, kv * hd, cfg.qkv_bias(), vb.pp("v_proj"))?,
            o_proj: Linear::new(h * hd, d, cfg.o_bias(), vb.pp("o_proj"))?,
            q_norm: qk_norm(cfg, vb.pp("q_norm"))?,
            k_norm: qk_norm(cfg, vb.pp("k_norm"))?,
            num_heads: h,
            num_kv_heads: kv,
            head_dim: hd,
        })
    }

    fn detach(&self) -> Self {
        Self {
            q_proj: self.q_proj.detach(),
            k_proj: self.k_proj.detach(),
            v_proj: self.v_proj.detach(),
            o_proj: self.o_proj.detach(),
            q_norm: self.q_norm.as_ref().map(RmsNorm::detach),
            k_norm: self.k_norm.as_ref().map(RmsNorm::detach),
            ..*self
        }
    }

    /// Qwen3's q/k norm of (..., hd) heads (identity without one). `fast`: candle's fused
    /// kernel; `fused`: the fused CPU kernel ([`ops::rms_norm`] over rows of width hd).
    fn head_norm(norm: &Option<RmsNorm>, x: Tensor, fast: bool, fused: bool) -> Result<Tensor> {
        match norm {
            None => Ok(x),
            Some(n) if fused => Ok(ops::rms_norm(&x, &n.weight, n.eps)?),
            Some(n) => n.forward(&x, fast),
        }
    }

    /// (B, T, d) -> (B, T, d)
    fn forward(
        &self,
        xs: &Tensor,
        ctx: &Ctx,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        if let Some(fu) = &ctx.fused {
            return self.forward_fused(xs, fu, cache);
        }
        let (b, t, _) = xs.dims3()?;
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(xs)?.reshape((b, t, h, hd))?;
        let q = Self::head_norm(&self.q_norm, q, ctx.fast, false)?.transpose(1, 2)?;
        let k = self.k_proj.forward(xs)?.reshape((b, t, kv, hd))?;
        let k = Self::head_norm(&self.k_norm, k, ctx.fast, false)?.transpose(1, 2)?;
        let v = self
            .v_proj
            .forward(xs)?
            .reshape((b, t, kv, hd))?
            .transpose(1, 2)?;
        // (B, H, T, hd), (B, Hkv, T, hd)
        let q = ctx.rope(&q)?;
        let k = ctx.rope(&k)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v.contiguous()?),
        };
        let tk = k.dim(2)?;
        // GQA without copying k/v: the `rep` query heads of one kv head are consecutive, so
        // (B, H, T, hd) -> (B, Hkv, rep*T, hd) lines them up against (B, Hkv, Tk, hd).
        let rep = h / kv;
        let q = q.contiguous()?.reshape((b, kv, rep * t, hd))?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?; // (B, Hkv, rep*T, Tk)
        let dtype = scores.dtype();
        let scores = scores
            .to_dtype(internal_dtype(dtype))?
            .reshape((b, kv, rep, t, tk))?
            .broadcast_add(&ctx.mask)?;
        let probs = if ctx.fast {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        };
        let probs = probs.to_dtype(dtype)?.reshape((b, kv, rep * t, tk))?;
        let out = probs.matmul(&v)?; // (B, Hkv, rep*T, hd)
        let out = out
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, h * hd))?;
        self.o_proj.forward(&out)
    }

    /// The fused path: xs (B*T, d) -> (B*T, d); no transposes, no mask tensor.
    fn forward_fused(
        &self,
        xs: &Tensor,
        fu: &Fused,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t) = (fu.b, fu.t);
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (f, rw) = (fu.fast, fu.rowwise());
        let q = self.q_proj.forward2_rows(xs, f, rw)?.reshape((b, t, h, hd))?;
        let k = self.k_proj.forward2_rows(xs, f, rw)?.reshape((b, t, kv, hd))?;
        let v = self.v_proj.forward2_rows(xs, f, rw)?.reshape((b, t, kv, hd))?;
        let q = ops::rope(&Self::head_norm(&self.q_norm, q, f, true)?, &fu.rope)?;
        let k = ops::rope(&Self::head_norm(&self.k_norm, k, f, true)?, &fu.rope)?;
        let rows_kernel = cache.is_some();
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let out = ops::attention(&q, &k, &v, fu.rows.clone(), fu.window, rows_kernel)?;
        self.o_proj.forward2_rows(&out.reshape((b * t, h * hd))?, f, rw)
    }
}

/// Qwen3's q_norm / k_norm (weights of size head_dim), `None` for the other families.
fn qk_norm(cfg: &Config, vb: VarBuilder) -> Result<Option<RmsNorm>> {
    if !cfg.qk_norm() {
        return Ok(None);
    }
    Ok(Some(RmsNorm::new(cfg.head_dim(), cfg.rms_norm_eps, vb)?))
}

#[derive(Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (d, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias());
        Ok(Self {
            gate_proj: Linear::new(d, i, bias, vb.pp("gate_proj"))?,
            up_proj: Linear::new(d, i, bias, vb.pp("up_proj"))?,
            down_proj: Linear::new(i, d, bias, vb.pp("down_proj"))?,
        })
    }

    fn detach(&self) -> Self {
        Self {
            gate_proj: self.gate_proj.detach(),
            up_proj: self.up_proj.detach(),
            down_proj: self.down_proj.detach(),
        }
    }

    /// (N, d) -> (N, d) with the fused silu * up.
    fn forward_fused(&self, xs: &Tensor, fast: bool, rowwise: bool) -> Result<Tensor> {
        let act = ops::silu_mul(&self.gate_proj.forward2_rows(xs, fast, rowwise)?, &self.up_proj.forward2_rows(xs, fast, rowwise)?)?;
        self.down_proj.forward2_rows(&act, fast, rowwise)
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(xs)?)?;
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)?)?)
    }
}

#[derive(Clone)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(d, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(d, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    fn detach(&self) -> Self {
        Self {
            input_layernorm: self.input_layernorm.detach(),
            self_attn: self.self_attn.detach(),
            post_attention_layernorm: self.post_attention_layernorm.detach(),
            mlp: self.mlp.detach(),
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        ctx: &Ctx,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        if ctx.fused.is_some() {
            let (ln1, ln2) = (&self.input_layernorm, &self.post_attention_layernorm);
            let h = ops::rms_norm(xs, &ln1.weight, ln1.eps)?;
            let xs = (self.self_attn.forward(&h, ctx, cache)? + xs)?;
            let h = ops::rms_norm(&xs, &ln2.weight, ln2.eps)?;
            let rowwise = ctx.fused.as_ref().is_some_and(Fused::rowwise);
            return Ok((self.mlp.forward_fused(&h, ctx.fast, rowwise)? + xs)?);
        }
        let h = self.input_layernorm.forward(xs, ctx.fast)?;
        let xs = (self.self_attn.forward(&h, ctx, cache)? + xs)?;
        let h = self.post_attention_layernorm.forward(&xs, ctx.fast)?;
        Ok((self.mlp.forward(&h)? + xs)?)
    }
}

/// The decoder stack; `fast` selects the fused no-grad ops (set on the detached copy only).
#[derive(Clone)]
struct Decoder {
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Tensor,
    head_dim: usize,
    rope_base: f64,
    rope_scaling: RopeScaling,
    /// Mistral's attention window (keys per query, the query's own included).
    window: Option<usize>,
    fast: bool,
}

impl Decoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let vm = vb.pp("model");
        let embed_tokens = vm.get((v, d), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::new(cfg, vm.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(d, cfg.rms_norm_eps, vm.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.get((v, d), "lm_head.weight")?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            head_dim: cfg.head_dim(),
            rope_base: cfg.rope_base(),
            rope_scaling: cfg.rope_scaling()?,
            window: cfg.attention_window(),
            fast: false,
        })
    }

    fn detached(&self) -> Self {
        Self {
            embed_tokens: self.embed_tokens.detach(),
            layers: self.layers.iter().map(Block::detach).collect(),
            norm: self.norm.detach(),
            lm_head: self.lm_head.detach(),
            fast: true,
            ..*self
        }
    }

    /// Rope tables (B, T, hd/2) for the given positions (row-major B*T), as transformers builds
    /// them: f32 `inv_freq`, f32 angle `pos * inv_freq`, f32 cos/sin, then the model dtype.
    fn rope_tables(
        &self,
        positions: &[u32],
        b: usize,
        t: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        // The same values as the fused path's tables (f32 arithmetic for f32 models, exact in
        // f64), as tensors in the model dtype.
        let r = self.rope_tables_f64(positions, dtype)?;
        let table = |v: &[f64]| Tensor::from_vec(v.to_vec(), (b, t, r.half), device)?.to_dtype(dtype);
        Ok((table(&r.cos)?, table(&r.sin)?))
    }

    /// The fused path's rope tables, (B*T, hd/2) in f64: the f32 values transformers computes
    /// (f32 `inv_freq`, f32 angle, f32 cos/sin) for f32 models, f64 throughout for f64.
    fn rope_tables_f64(&self, positions: &[u32], dtype: DType) -> Result<RopeTables> {
        let half = self.head_dim / 2;
        if let RopeScaling::Dynamic { max_position_embeddings, .. } = self.rope_scaling {
            // transformers grows the base once a sequence passes max_position_embeddings and
            // keeps it for later calls: per-call state we do not reproduce.
            if let Some(&p) = positions.iter().find(|&&p| p as usize >= max_position_embeddings) {
                return Err(Error::Unsupported(format!(
                    "dynamic rope scaling at position {p} (implemented below \
                     max_position_embeddings = {max_position_embeddings} only)"
                )));
            }
        }
        fn tables<F: num_traits::Float>(inv: &[F], positions: &[u32]) -> (Vec<f64>, Vec<f64>) {
            let n = positions.len() * inv.len();
            let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for &p in positions {
                for &f in inv {
                    let a = F::from(p).unwrap() * f;
                    cos.push(a.cos().to_f64().unwrap());
                    sin.push(a.sin().to_f64().unwrap());
                }
            }
            (cos, sin)
        }
        let (cos, sin) = if dtype == DType::F64 {
            tables(&inv_freq::<f64>(self.rope_base, self.head_dim, self.rope_scaling), positions)
        } else {
            tables(&inv_freq::<f32>(self.rope_base, self.head_dim, self.rope_scaling), positions)
        };
        Ok(RopeTables {
            cos: Arc::new(cos),
            sin: Arc::new(sin),
            half,
        })
    }

    /// ids (B, T) u32 at columns `past .. past+T` of left-padded rows -> (B, T, d) final-norm
    /// hidden states. With a cache, `past = cache.len` and the new keys/values are appended.
    fn forward(
        &self,
        ids: &Tensor,
        left_pad: &[usize],
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if left_pad.len() != b {
            return Err(Error::Input(format!(
                "{} left-pad lengths for a batch of {b}",
                left_pad.len()
            )));
        }
        let past = cache.as_ref().map_or(0, |c| c.len);
        let device = ids.device();
        let dtype = self.embed_tokens.dtype();

        let d = self.embed_tokens.dim(1)?;
        if ops::supported(&self.embed_tokens) {
            let mut positions = Vec::with_capacity(b * t);
            for &pad in left_pad {
                positions.extend((0..t).map(|i| (past + i).saturating_sub(pad) as u32));
            }
            let rows = AttnRows::Padded { pads: Arc::new(left_pad.to_vec()), past };
            let xs = self.forward_fused(&ids.flatten_all()?, &positions, rows, (b, t), cache)?;
            return Ok(xs.reshape((b, t, d))?);
        }
        let ctx = self.padded_ctx(left_pad, past, t, dtype, device)?;
        let mut xs = self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            xs = layer.forward(&xs, &ctx, c)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(&xs, self.fast)
    }

    /// The composed path's per-call inputs for B left-padded rows of T new columns after
    /// `past` cached ones: rope tables at each row's positions and the additive mask
    /// (B, 1, 1, T, past + T).
    fn padded_ctx(&self, left_pad: &[usize], past: usize, t: usize, dtype: DType, device: &Device) -> Result<Ctx> {
        let b = left_pad.len();
        let tk = past + t;
        let mut positions = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t * tk);
        for &pad in left_pad {
            for i in 0..t {
                let col = past + i;
                positions.push(col.saturating_sub(pad) as u32);
                // Mistral's window: the last `window` columns up to the query's own
                let lo = pad.max((col + 1).saturating_sub(self.window.unwrap_or(usize::MAX)));
                mask.extend((0..tk).map(|j| if j >= lo && j <= col { 0.0 } else { MASK_NEG }));
            }
        }
        let mask =
            Tensor::from_vec(mask, (b, 1, 1, t, tk), device)?.to_dtype(internal_dtype(dtype))?;
        let (cos, sin) = self.rope_tables(&positions, b, t, dtype, device)?;
        let (cos2, sin2) = if self.fast {
            (cos.clone(), sin.clone())
        } else {
            (
                Tensor::cat(&[&cos, &cos], D::Minus1)?.unsqueeze(1)?,
                Tensor::cat(&[&sin, &sin], D::Minus1)?.unsqueeze(1)?,
            )
        };
        Ok(Ctx {
            cos,
            sin,
            cos2,
            sin2,
            mask,
            fast: self.fast,
            fused: None,
        })
    }

    /// The fused path's per-call inputs: rope tables at `positions` and the row layout.
    fn fused_ctx(&self, positions: &[u32], rows: AttnRows, (b, t): (usize, usize), device: &Device) -> Result<Ctx> {
        let rope = self.rope_tables_f64(positions, self.embed_tokens.dtype())?;
        let placeholder = Tensor::zeros((), self.embed_tokens.dtype(), device)?;
        Ok(Ctx {
            cos: placeholder.clone(),
            sin: placeholder.clone(),
            cos2: placeholder.clone(),
            sin2: placeholder.clone(),
            mask: placeholder,
            fast: self.fast,
            fused: Some(Fused { rope, rows, fast: self.fast, b, t, window: self.window }),
        })
    }

    /// The fused CPU path: ids (B*T,) at rope `positions` -> (B*T, d) final-norm hidden states;
    /// `bt` = (B, T) is the layout `rows` describes ((1, N) for packed sequences).
    fn forward_fused(
        &self,
        ids: &Tensor,
        positions: &[u32],
        rows: AttnRows,
        (b, t): (usize, usize),
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let ctx = self.fused_ctx(positions, rows, (b, t), ids.device())?;
        let mut xs = self.embed_tokens.index_select(ids, 0)?; // (B*T, d)
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            xs = layer.forward(&xs, &ctx, c)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok(ops::rms_norm(&xs, &self.norm.weight, self.norm.eps)?)
    }

    /// Packed sequences: ids (N,) u32 holding sequences of `lens` tokens one after another ->
    /// (N, d) final-norm hidden states, each sequence on its own (positions from 0, attention
    /// within the sequence). On the fused path no padding is computed at all; elsewhere the
    /// sequences are left-padded into a batch and their rows gathered back.
    fn forward_packed(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let p = self.packed(ids, lens)?;
        let mut xs = self.embed(&p)?;
        for layer in &self.layers {
            xs = self.layer(layer, &xs, &p)?;
        }
        self.final_norm(&xs, &p)
    }

    /// Lays out packed sequences for the layers: on the fused path as they are ((N, d)
    /// activations), elsewhere left-padded into a (B, T) batch whose rows are gathered back by
    /// [`Self::final_norm`].
    fn packed(&self, ids: &Tensor, lens: &[usize]) -> Result<Packed> {
        let n = ids.dim(0)?;
        if lens.iter().sum::<usize>() != n || lens.contains(&0) {
            return Err(Error::Input(format!(
                "packed sequences of lengths {lens:?} for {n} tokens (each sequence needs a token)"
            )));
        }
        if ops::supported(&self.embed_tokens) {
            let positions: Vec<u32> = lens.iter().flat_map(|&l| 0..l as u32).collect();
            let rows = AttnRows::Packed { lens: Arc::new(lens.to_vec()) };
            let ctx = self.fused_ctx(&positions, rows, (1, n), ids.device())?;
            return Ok(Packed { ctx, ids: ids.clone(), padded: None });
        }
        let t = lens.iter().copied().max().unwrap_or(0);
        let flat: Vec<u32> = ids.to_vec1()?;
        let (mut padded, mut pads, mut keep) = (Vec::with_capacity(lens.len() * t), vec![], vec![]);
        let mut off = 0;
        for (bi, &l) in lens.iter().enumerate() {
            padded.extend(std::iter::repeat_n(0u32, t - l));
            padded.extend_from_slice(&flat[off..off + l]);
            pads.push(t - l);
            keep.extend((bi * t + t - l..(bi + 1) * t).map(|i| i as u32));
            off += l;
        }
        let b = lens.len();
        let ctx = self.padded_ctx(&pads, 0, t, self.embed_tokens.dtype(), ids.device())?;
        let keep = Tensor::from_vec(keep, n, ids.device())?;
        Ok(Packed { ctx, ids: Tensor::from_vec(padded, b * t, ids.device())?, padded: Some((b, t, keep)) })
    }

    /// The token embeddings of a packed batch: (N, d) fused, (B, T, d) composed.
    fn embed(&self, p: &Packed) -> Result<Tensor> {
        let xs = self.embed_tokens.index_select(&p.ids, 0)?;
        Ok(match &p.padded {
            Some((b, t, _)) => xs.reshape((*b, *t, ()))?,
            None => xs,
        })
    }

    /// One decoder layer over a packed batch (no cache).
    fn layer(&self, layer: &Block, xs: &Tensor, p: &Packed) -> Result<Tensor> {
        layer.forward(xs, &p.ctx, None)
    }

    /// The final norm of a packed batch's last activations -> (N, d), the padding dropped.
    fn final_norm(&self, xs: &Tensor, p: &Packed) -> Result<Tensor> {
        match &p.padded {
            None => Ok(ops::rms_norm(xs, &self.norm.weight, self.norm.eps)?),
            Some((_, _, keep)) => Ok(self.norm.forward(xs, self.fast)?.flatten_to(1)?.index_select(keep, 0)?),
        }
    }

    /// (N, d) -> (N, V)
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head_rows(hidden, false)
    }

    /// `rowwise`: every row through the streaming kernel (decode steps), as
    /// [`Linear::forward2_rows`].
    fn lm_head_rows(&self, hidden: &Tensor, rowwise: bool) -> Result<Tensor> {
        if self.fast && ops::supported(hidden) && (rowwise || hidden.dim(0)? <= ops::SMALL_M) {
            return Ok(ops::matmul_rows(hidden, &self.lm_head)?);
        }
        Ok(hidden.matmul(&self.lm_head.t()?)?)
    }
}

/// The rope frequencies `inv_freq` (head_dim / 2) an f32 model of `cfg` rotates by, bit for bit
/// those of transformers' `ROPE_INIT_FUNCTIONS` (for `dynamic`: below max_position_embeddings).
pub fn rope_inv_freq(cfg: &Config) -> Result<Vec<f32>> {
    Ok(inv_freq::<f32>(cfg.rope_base(), cfg.head_dim(), cfg.rope_scaling()?))
}

/// transformers' rope frequencies `inv_freq` (hd/2) under `scaling`, computed in the precision
/// `F` as `modeling_rope_utils.py` does in torch: `1 / base^(2i/hd)`, then for `linear`
/// `inv_freq / factor`, for `llama3` (`_compute_llama3_parameters`) per frequency, with
/// wavelength `w = (1 / inv_freq) 2 pi` (torch's `2 pi / t` is `t.reciprocal() * 2 pi`):
/// `w > L / low` -> `inv_freq / factor`; `w < L / high` -> `inv_freq`; in between
/// `(1 - s) inv_freq / factor + s inv_freq` with `s = ((1 / w) L - low) / (high - low)`,
/// L = original_max_position_embeddings. Python scalars enter f32 arithmetic rounded to f32.
/// `dynamic` is the default below max_position_embeddings (checked by the caller).
fn inv_freq<F: num_traits::Float>(base: f64, hd: usize, scaling: RopeScaling) -> Vec<F> {
    let k = |x: f64| F::from(x).unwrap();
    let default = (0..hd / 2).map(|i| F::one() / k(base).powf(k((2 * i) as f64) / k(hd as f64)));
    match scaling {
        RopeScaling::Default | RopeScaling::Dynamic { .. } => default.collect(),
        RopeScaling::Linear { factor } => default.map(|f| f / k(factor)).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old } => {
            let (low_wavelen, high_wavelen) = (k(old / low), k(old / high));
            default
                .map(|f| {
                    let wavelen = f.recip() * k(2.0 * std::f64::consts::PI);
                    let llama = if wavelen > low_wavelen { f / k(factor) } else { f };
                    let smooth = (wavelen.recip() * k(old) - k(low)) / k(high - low);
                    let smoothed = (F::one() - smooth) * llama / k(factor) + smooth * llama;
                    let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                    if medium {
                        smoothed
                    } else {
                        llama
                    }
                })
                .collect()
        }
    }
}

/// A loaded policy model: the weights as trainable `Var`s (keyed by their Hugging Face names)
/// and the decoder over them.
pub struct Model {
    cfg: Config,
    varmap: VarMap,
    graph: Decoder,
    nograd: Decoder,
    device: Device,
    dtype: DType,
}

impl Model {
    /// Loads a Hugging Face directory: `config.json` plus `model.safetensors` or the shards named
    /// by `model.safetensors.index.json`. Weights are converted to `dtype` on `device`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let mut tensors = HashMap::new();
        for file in safetensors_files(dir)? {
            let loaded = candle_core::safetensors::load(&file, device)
                .map_err(|e| Error::Weights(format!("{}: {e}", file.display())))?;
            tensors.extend(loaded);
        }
        Self::from_tensors(cfg, tensors, device, dtype)
    }

    /// Builds a model from named tensors in Hugging Face naming (what `load` reads). The set of
    /// names must be exactly [`expected_weight_names`] (a `lm_head.weight` beside tied embeddings
    /// and `rotary_emb.inv_freq` buffers are dropped).
    pub fn from_tensors(
        cfg: Config,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        cfg.validate()?;
        if device.is_cpu() {
            ops::tune_allocator();
        }
        let expected: HashSet<String> = expected_weight_names(&cfg).into_iter().collect();
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            let mut unexpected = vec![];
            for (name, t) in tensors {
                if name.ends_with("rotary_emb.inv_freq")
                    || (cfg.tie_word_embeddings && name == "lm_head.weight")
                {
                    continue;
                }
                if !expected.contains(&name) {
                    unexpected.push(name);
                    continue;
                }
                let t = t.to_device(device)?.to_dtype(dtype)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
            if !unexpected.is_empty() {
                unexpected.sort();
                return Err(Error::Weights(format!("unexpected tensors {unexpected:?}")));
            }
            let mut missing: Vec<_> = expected
                .iter()
                .filter(|n| !data.contains_key(*n))
                .cloned()
                .collect();
            if !missing.is_empty() {
                missing.sort();
                return Err(Error::Weights(format!("missing tensors {missing:?}")));
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let graph = Decoder::new(&cfg, vb).map_err(|e| Error::Weights(e.to_string()))?;
        let nograd = graph.detached();
        Ok(Self {
            cfg,
            varmap,
            graph,
            nograd,
            device: device.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The weights, keyed by Hugging Face name (tied `lm_head` is `model.embed_tokens.weight`).
    /// `Var::set` on them updates the model in place (both paths share the storage).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Every trainable weight as (Hugging Face name, Var), sorted by name: for the optimiser
    /// and for saving. A tied `lm_head` is not listed (it is `model.embed_tokens.weight`).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().unwrap();
        let sorted: BTreeMap<_, _> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sorted.into_iter().collect()
    }

    /// Differentiable forward: ids (B, T) u32, left-padded by `left_pad[b]` columns ->
    /// (B, T, d) hidden states after the final norm (what feeds `lm_head`). Pad columns hold
    /// finite garbage.
    pub fn forward_hidden(&self, ids: &Tensor, left_pad: &[usize]) -> Result<Tensor> {
        self.graph.forward(ids, left_pad, None)
    }

    /// The same without a graph, with fused kernels.
    pub fn forward_hidden_nograd(&self, ids: &Tensor, left_pad: &[usize]) -> Result<Tensor> {
        self.nograd.forward(ids, left_pad, None)
    }

    /// Differentiable forward over packed sequences: ids (N,) u32 holding sequences of `lens`
    /// tokens one after another (no padding) -> (N, d) final-norm hidden states. The same
    /// values as [`Model::forward_hidden`] at the sequences' columns of a left-padded batch, for
    /// the work of the real tokens only (on the CPU in f32/f64; elsewhere it pads internally).
    pub fn forward_hidden_packed(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        self.graph.forward_packed(ids, lens)
    }

    /// The same without a graph.
    pub fn forward_hidden_packed_nograd(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        self.nograd.forward_packed(ids, lens)
    }

    /// Differentiable `lm_head`: (..., d) -> (..., V) logits.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let d = *dims
            .last()
            .ok_or_else(|| Error::Input("scalar hidden state".into()))?;
        let n = hidden.elem_count() / d.max(1);
        let logits = self.graph.lm_head(&hidden.reshape((n, d))?)?;
        let mut out = dims;
        *out.last_mut().unwrap() = self.cfg.vocab_size;
        Ok(logits.reshape(out)?)
    }

    /// The graph path in pieces, for the segmented training pass ([`super::train`]): packed
    /// sequences laid out for the layers.
    pub(crate) fn packed_graph(&self, ids: &Tensor, lens: &[usize]) -> Result<Packed> {
        self.graph.packed(ids, lens)
    }

    /// The token embeddings of a packed batch, with the graph.
    pub(crate) fn embed_graph(&self, p: &Packed) -> Result<Tensor> {
        self.graph.embed(p)
    }

    /// Decoder layer `i` over a packed batch, with the graph.
    pub(crate) fn layer_graph(&self, i: usize, xs: &Tensor, p: &Packed) -> Result<Tensor> {
        self.graph.layer(&self.graph.layers[i], xs, p)
    }

    /// The final norm of a packed batch -> (N, d) hidden states, with the graph.
    pub(crate) fn final_norm_graph(&self, xs: &Tensor, p: &Packed) -> Result<Tensor> {
        self.graph.final_norm(xs, p)
    }

    /// Decoder layers.
    pub(crate) fn num_layers(&self) -> usize {
        self.graph.layers.len()
    }

    /// `lm_head` without a graph.
    pub fn lm_head_nograd(&self, hidden: &Tensor) -> Result<Tensor> {
        self.nograd.lm_head(&hidden.detach())
    }

    /// No-grad logits of (n, d) decode-step hidden states, each row's bits independent of the
    /// other rows (on the fused path, [`ops::SMALL_M`] rows at a time through the streaming
    /// kernel).
    pub(crate) fn lm_head_rows(&self, hidden: &Tensor) -> Result<Tensor> {
        self.nograd.lm_head_rows(&hidden.detach(), true)
    }

    /// No-grad logits at every position, (B, T, V): for tests and small inputs only.
    pub fn logits_nograd(&self, ids: &Tensor, left_pad: &[usize]) -> Result<Tensor> {
        let h = self.forward_hidden_nograd(ids, left_pad)?;
        let (b, t, d) = h.dims3()?;
        Ok(self
            .lm_head_nograd(&h.reshape((b * t, d))?)?
            .reshape((b, t, ()))?)
    }

    /// One no-grad step with a KV cache (prefill or decode): ids (B, T) at columns
    /// `cache.len ..` -> (B, T, d) final-norm hidden states.
    pub(crate) fn step(
        &self,
        ids: &Tensor,
        left_pad: &[usize],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.nograd.forward(ids, left_pad, Some(cache))
    }
}

/// Left-pads `seqs` with `pad_id` into (B, T) u32 ids; returns them and each row's pad length.
pub fn left_pad(seqs: &[&[u32]], pad_id: u32, device: &Device) -> Result<(Tensor, Vec<usize>)> {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut pads = Vec::with_capacity(seqs.len());
    for s in seqs {
        pads.push(t - s.len());
        ids.extend(std::iter::repeat_n(pad_id, t - s.len()));
        ids.extend_from_slice(s);
    }
    Ok((Tensor::from_vec(ids, (seqs.len(), t), device)?, pads))
}

/// The tensor names a checkpoint of `cfg` holds, in Hugging Face naming (`lm_head.weight`
/// only when embeddings are untied).
pub fn expected_weight_names(cfg: &Config) -> Vec<String> {
    let mut names = vec![
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
    ];
    if !cfg.tie_word_embeddings {
        names.push("lm_head.weight".into());
    }
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        names.push(format!("{p}.input_layernorm.weight"));
        names.push(format!("{p}.post_attention_layernorm.weight"));
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            names.push(format!("{p}.self_attn.{proj}.weight"));
            let bias = if proj == "o_proj" {
                cfg.o_bias()
            } else {
                cfg.qkv_bias()
            };
            if bias {
                names.push(format!("{p}.self_attn.{proj}.bias"));
            }
        }
        if cfg.qk_norm() {
            names.push(format!("{p}.self_attn.q_norm.weight"));
            names.push(format!("{p}.self_attn.k_norm.weight"));
        }
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            names.push(format!("{p}.mlp.{proj}.weight"));
            if cfg.mlp_bias() {
                names.push(format!("{p}.mlp.{proj}.bias"));
            }
        }
    }
    names
}

/// `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|e| Error::Io {
        path: format!("{} (nor model.safetensors)", index.display()),
        err: e,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Weights(format!("{}: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Weights(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}
