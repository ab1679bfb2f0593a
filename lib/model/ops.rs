//! Fused CPU kernels with hand-written backward passes (candle `CustomOp1/2/3`), for f32 and f64.
//!
//! Each op replaces a chain of a dozen small candle ops (and their temporaries) on the training
//! path and on the no-grad path alike; the maths is the same as the composed version in
//! [`super::transformer`] (which still serves other devices and half precision):
//!
//! - [`rms_norm`]: `y = (x * rsqrt(mean(x^2) + eps)) * w` (sum of squares accumulated in f64).
//! - [`rope`]: rotate-half rotary embedding of a (B, T, H, hd) tensor with per-row tables.
//! - [`attention`]: causal, left-padded, GQA softmax attention of q (B, T, H, hd) against k, v
//!   (B, Tk, Hkv, hd); query i of row b sits at column `past + i` and sees columns
//!   `pad[b] ..= past + i`. Or packed: sequences one after another in one row, no padding
//!   (each token sees its own sequence up to itself). With a window W (Mistral's sliding
//!   window), query column c sees only columns `c + 1 - W ..= c` of those. The probabilities are recomputed in the
//!   backward pass (nothing of size T x Tk is kept). A query with no visible key (a pad
//!   column) outputs zeros.
//! - [`silu_mul`]: `silu(gate) * up`.
//! - [`token_logprobs`]: for logits (N, V) and targets (N,): (N, 3) = [log p(target),
//!   entropy, logsumexp] of softmax(logits / temperature), one pass over the vocabulary; the
//!   backward pass (`g (onehot - p) / temperature` for the log-prob, `-p (log p + H) /
//!   temperature` for the entropy) reuses the stored logsumexp and entropy.
//! - [`matmul_small_m`]: `x W^T` for up to 16 rows of x (decoding), no graph: W streamed once
//!   through AVX-512 (or AVX2/FMA) dot products, each output summed in a fixed order so that a
//!   row's bits do not depend on its batch.
//!
//! Matrix products inside attention go through the `gemm` crate single-threaded, one
//! (row, kv head) unit per rayon task.

use std::sync::Arc;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Storage,
    Tensor, WithDType,
};
use candle_core::backend::BackendStorage;
use num_traits::Float;
use rayon::prelude::*;

/// The float types the kernels are written for.
pub(crate) trait Flt: WithDType + Float + Send + Sync + 'static {
    /// `x = exp(x)` for every element: vectorised for f32 ([`super::exp`]), the standard
    /// library's for f64.
    fn exp_in_place(xs: &mut [Self]);
}
impl Flt for f32 {
    fn exp_in_place(xs: &mut [f32]) {
        super::exp::exp_in_place(xs)
    }
}
impl Flt for f64 {
    fn exp_in_place(xs: &mut [f64]) {
        xs.iter_mut().for_each(|x| *x = x.exp())
    }
}

#[inline]
fn c<T: Flt>(x: f64) -> T {
    <T as WithDType>::from_f64(x)
}
#[inline]
fn f<T: Flt>(x: T) -> f64 {
    <T as WithDType>::to_f64(x)
}

/// Makes glibc keep freed blocks of up to 32 MiB in the heap and never trim it, once per process.
///
/// The forward and backward passes allocate and free hundreds of MB of activations per step;
/// with glibc's defaults most of them are fresh `mmap`s whose pages the kernel zeroes on first
/// touch (`clear_page` took 13% of a SmolLM2 training step and a third of the tiny model's).
/// Skipped when the user set `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`. The cost: the
/// heap keeps its high-water mark (freed memory is reused, not returned to the system).
pub(crate) fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let set = |k: &str| std::env::var_os(k).is_some();
            if !set("MALLOC_MMAP_THRESHOLD_") && !set("MALLOC_TRIM_THRESHOLD_") {
                // SAFETY: mallopt only changes allocator parameters.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                    libc::mallopt(libc::M_TOP_PAD, 64 << 20);
                }
            }
        }
    });
}

/// The composed-ops switch: when on, the CPU runs the generic candle ops that CUDA (and bf16)
/// run instead of the fused kernels, so the device's code path is tested on every CI run.
/// Set by `CLIPO_COMPOSED=1` in the environment or by [`set_composed`].
static COMPOSED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Turns the composed-ops switch on or off for this process.
pub fn set_composed(on: bool) {
    COMPOSED.store(u8::from(on), std::sync::atomic::Ordering::Relaxed);
}

/// Whether the composed-ops switch is on (first call reads `CLIPO_COMPOSED`).
pub fn composed() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match COMPOSED.load(Relaxed) {
        2 => {
            let on = std::env::var("CLIPO_COMPOSED").is_ok_and(|v| v == "1");
            let _ = COMPOSED.compare_exchange(2, u8::from(on), Relaxed, Relaxed);
            COMPOSED.load(Relaxed) == 1
        }
        v => v == 1,
    }
}

/// Whether the fused kernels serve tensors of this device and dtype.
pub(crate) fn fused_for(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && matches!(dtype, DType::F32 | DType::F64) && !composed()
}

/// Whether the fused kernels serve tensors of this device and dtype.
pub(crate) fn supported(t: &Tensor) -> bool {
    fused_for(t.device(), t.dtype())
}

/// The contiguous slice of a CPU storage under `l`.
fn contig<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("fused op: non-contiguous input {:?}", l.shape()),
    }
}

fn storage<T: WithDType>(v: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(v)
}

/// Runs `f` over the contiguous data of `t` (f32 or f64 only).
fn read<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => f(contig::<T>(cs, l)?),
        _ => bail!("fused op: cpu only"),
    }
}

/// A raw pointer that rayon tasks writing disjoint parts may share.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    #[inline]
    fn get(self) -> *mut T {
        self.0
    }
}

/// Rows handled per rayon task for row-wise kernels of width `d` (about 16K elements).
fn rows_per_task(n: usize, d: usize) -> usize {
    let per = (16384 / d.max(1)).max(1);
    per.min(n.max(1))
}

// ------------------------------------------------------------------------------------------
// RMSNorm

struct RmsNormOp {
    eps: f64,
}

fn rms_fwd<T: Flt>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::zero(); x.len()];
    let per = rows_per_task(x.len() / d, d);
    y.par_chunks_mut(per * d)
        .zip(x.par_chunks(per * d))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                let ss: f64 = xr.iter().map(|&v| f(v) * f(v)).sum();
                let r: T = c(1.0 / (ss / d as f64 + eps).sqrt());
                for ((o, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                    *o = (xv * r) * wv;
                }
            }
        });
    y
}

/// (dx, dw) for y = (x r) w.
fn rms_bwd<T: Flt>(x: &[T], w: &[T], dy: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let d = w.len();
    let mut dx = vec![T::zero(); x.len()];
    let per = rows_per_task(x.len() / d, d);
    let dw = dx
        .par_chunks_mut(per * d)
        .zip(x.par_chunks(per * d).zip(dy.par_chunks(per * d)))
        .map(|(dxc, (xc, dyc))| {
            let mut dw = vec![0f64; d];
            for ((dxr, xr), dyr) in dxc.chunks_mut(d).zip(xc.chunks(d)).zip(dyc.chunks(d)) {
                let ss: f64 = xr.iter().map(|&v| f(v) * f(v)).sum();
                let r = 1.0 / (ss / d as f64 + eps).sqrt();
                // xhat = x r ; g = dy w ; dx = r (g - xhat mean(g xhat))
                let mut dot = 0f64;
                for i in 0..d {
                    let xh = f(xr[i]) * r;
                    let g = f(dyr[i]) * f(w[i]);
                    dot += g * xh;
                    dw[i] += f(dyr[i]) * xh;
                }
                let mean = dot / d as f64;
                for i in 0..d {
                    let xh = f(xr[i]) * r;
                    let g = f(dyr[i]) * f(w[i]);
                    dxr[i] = c(r * (g - xh * mean));
                }
            }
            dw
        })
        .reduce(
            || vec![0f64; d],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    (dx, dw.into_iter().map(c).collect())
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "clipo-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => storage(rms_fwd::<f32>(contig(s1, l1)?, contig(s2, l2)?, self.eps)),
            DType::F64 => storage(rms_fwd::<f64>(contig(s1, l1)?, contig(s2, l2)?, self.eps)),
            dt => bail!("rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn go<T: Flt>(x: &Tensor, w: &Tensor, dy: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
            let (dx, dw) =
                read::<T, _>(x, |x| read::<T, _>(w, |w| read::<T, _>(dy, |dy| Ok(rms_bwd(x, w, dy, eps)))))?;
            Ok((
                Tensor::from_vec(dx, x.shape(), x.device())?,
                Tensor::from_vec(dw, w.shape(), w.device())?,
            ))
        }
        let (dx, dw) = match x.dtype() {
            DType::F32 => go::<f32>(x, w, dy, self.eps)?,
            DType::F64 => go::<f64>(x, w, dy, self.eps)?,
            dt => bail!("rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// RMSNorm over the last dimension of a contiguous x, weight w (d,).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(w, RmsNormOp { eps })
}

// ------------------------------------------------------------------------------------------
// Rotary embedding

/// Rope tables for B*T (row, column) pairs: `cos`/`sin` (B*T, hd/2), in f64 (exact images of the
/// f32 values for f32 models).
#[derive(Clone)]
pub(crate) struct RopeTables {
    pub cos: Arc<Vec<f64>>,
    pub sin: Arc<Vec<f64>>,
    pub half: usize,
}

#[derive(Clone)]
struct RopeOp {
    tables: RopeTables,
    /// Rotate by minus the angle (the backward pass).
    inverse: bool,
}

fn rope_apply<T: Flt>(x: &[T], tab: &RopeTables, inverse: bool, heads_x_hd: usize) -> Vec<T> {
    let half = tab.half;
    let hd = 2 * half;
    let bt = x.len() / heads_x_hd;
    let mut y = vec![T::zero(); x.len()];
    let per = rows_per_task(bt, heads_x_hd);
    let sign = if inverse { -1.0 } else { 1.0 };
    y.par_chunks_mut(per * heads_x_hd)
        .zip(x.par_chunks(per * heads_x_hd))
        .enumerate()
        .for_each(|(ci, (yc, xc))| {
            let mut cs = vec![T::zero(); half];
            let mut sn = vec![T::zero(); half];
            for (ri, (yr, xr)) in yc.chunks_mut(heads_x_hd).zip(xc.chunks(heads_x_hd)).enumerate() {
                let row = ci * per + ri;
                for i in 0..half {
                    cs[i] = c(tab.cos[row * half + i]);
                    sn[i] = c(sign * tab.sin[row * half + i]);
                }
                for (yh, xh) in yr.chunks_mut(hd).zip(xr.chunks(hd)) {
                    let (x1, x2) = xh.split_at(half);
                    let (y1, y2) = yh.split_at_mut(half);
                    for i in 0..half {
                        // x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1)
                        y1[i] = x1[i] * cs[i] + (-x2[i]) * sn[i];
                        y2[i] = x2[i] * cs[i] + x1[i] * sn[i];
                    }
                }
            }
        });
    y
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "clipo-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        if dims.len() != 4 || dims[3] != 2 * self.tables.half {
            bail!("rope: expected (B, T, H, hd), got {:?}", dims);
        }
        if dims[0] * dims[1] * self.tables.half != self.tables.cos.len() {
            bail!("rope: tables for {} positions, input {:?}", self.tables.cos.len() / self.tables.half, dims);
        }
        let hh = dims[2] * dims[3];
        let out = match s.dtype() {
            DType::F32 => storage(rope_apply::<f32>(contig(s, l)?, &self.tables, self.inverse, hh)),
            DType::F64 => storage(rope_apply::<f64>(contig(s, l)?, &self.tables, self.inverse, hh)),
            dt => bail!("rope: unsupported dtype {dt:?}"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let inv = RopeOp {
            tables: self.tables.clone(),
            inverse: !self.inverse,
        };
        Ok(Some(dy.contiguous()?.apply_op1(inv)?))
    }
}

/// Rotate-half rope of x (B, T, H, hd) with tables for its B*T positions.
pub(crate) fn rope(x: &Tensor, tables: &RopeTables) -> Result<Tensor> {
    x.contiguous()?.apply_op1(RopeOp {
        tables: tables.clone(),
        inverse: false,
    })
}

// ------------------------------------------------------------------------------------------
// Attention

/// Which keys each query of an attention call sees.
#[derive(Clone)]
pub(crate) enum AttnRows {
    /// q (B, T, H, hd) holds the queries at columns `past ..` of B left-padded rows; row b's
    /// first `pads[b]` columns are padding.
    Padded { pads: Arc<Vec<usize>>, past: usize },
    /// q (1, N, H, hd) holds sequences of `lens` tokens one after another (no padding, no past):
    /// each token sees its own sequence's tokens up to itself.
    Packed { lens: Arc<Vec<usize>> },
}

#[derive(Clone)]
struct AttnOp {
    rows: AttnRows,
    /// Keys a query sees at most, itself included (`usize::MAX`: no window).
    window: usize,
    scale: f64,
    /// Forward with the plain-loop kernel (bit-identical rows whatever the batch: sampling).
    rows_kernel: bool,
}

/// Geometry of one attention call. Element (b, t, h, e) of q is at `b*qb + (t*H + h)*hd + e`;
/// of k/v at `koff + b*kb + (j*KV + g)*hd + e` (and likewise voff, vb).
#[derive(Clone, Copy)]
struct Geo {
    b: usize,
    t: usize,
    tk: usize,
    h: usize,
    kv: usize,
    hd: usize,
    kb: usize,
    vb: usize,
}

/// k/v layout (B, Tk, KV, hd) with an arbitrary batch stride: (offset, batch stride).
fn kv_view(l: &Layout) -> Result<(usize, usize)> {
    let st = l.stride();
    let d = l.shape().dims();
    if d.len() != 4 || st[3] != 1 || st[2] != d[3] || st[1] != d[2] * d[3] {
        bail!("attention: k/v must be (B, Tk, KV, hd) with contiguous rows, got {:?} {:?}", d, st);
    }
    Ok((l.start_offset(), st[0]))
}

#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn mm<T: 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    read_dst: bool,
    lhs: *const T,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const T,
    rhs_rs: usize,
    rhs_cs: usize,
    one: T,
    beta: T,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        read_dst,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        one,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// `x = exp(x - m)` for every element (vectorised exponentials), returning the sum in order:
/// the unnormalised softmax of scores whose maximum is m.
fn exp_shifted<T: Flt>(xs: &mut [T], m: T) -> T {
    for x in xs.iter_mut() {
        *x = *x - m;
    }
    T::exp_in_place(xs);
    xs.iter().fold(T::zero(), |s, &x| s + x)
}

/// The first key column query column `col` sees: after the padding and within the window.
#[inline]
fn first_key(col: usize, pad: usize, window: usize) -> usize {
    pad.max((col + 1).saturating_sub(window))
}

/// Scores -> probabilities in place for one (row, head): p (T, Tk), masked as documented.
/// Returns nothing; rows with no visible key become zeros.
fn softmax_rows<T: Flt>(p: &mut [T], t: usize, tk: usize, pad: usize, past: usize, window: usize) {
    for i in 0..t {
        let row = &mut p[i * tk..(i + 1) * tk];
        let hi = (past + i).min(tk - 1);
        if past + i < pad {
            row.fill(T::zero());
            continue;
        }
        let pad = first_key(past + i, pad, window);
        let mut m = T::neg_infinity();
        for &v in &row[pad..=hi] {
            m = Float::max(m, v);
        }
        let inv = T::one() / exp_shifted(&mut row[pad..=hi], m);
        for v in &mut row[pad..=hi] {
            *v = *v * inv;
        }
        row[..pad].fill(T::zero());
        row[hi + 1..].fill(T::zero());
    }
}

/// Dot product with a fixed summation order (8 partial sums), independent of the batch.
#[inline]
fn dot<T: Flt>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = acc[l] + ca[l] * cb[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in n8..a.len() {
        s = s + a[i] * b[i];
    }
    s
}

/// The forward pass with plain loops, one query row at a time: every sum runs over the row's
/// own keys in the same order whatever the batch, padding or number of queries, so a row's
/// result is bit-identical in any batch. Used when there are few queries per row (decoding).
#[allow(clippy::too_many_arguments)]
fn attn_fwd_rows<T: Flt>(q: &[T], k: &[T], v: &[T], g: Geo, pads: &[usize], past: usize, window: usize, scale: f64) -> Vec<T> {
    let Geo { b, t, tk, h, kv, hd, kb, vb } = g;
    let rep = h / kv;
    let mut out = vec![T::zero(); b * t * h * hd];
    let sc: T = c(scale);
    out.par_chunks_mut(t * h * hd).enumerate().for_each(|(bi, ob)| {
        let pad = pads[bi].min(tk);
        let mut p = vec![T::zero(); tk];
        for i in 0..t {
            if past + i < pad {
                continue;
            }
            let hi = (past + i).min(tk - 1);
            let pad = first_key(past + i, pad, window);
            for hh in 0..h {
                let gi = hh / rep;
                let qr = &q[(bi * t + i) * h * hd + hh * hd..][..hd];
                let mut m = T::neg_infinity();
                for j in pad..=hi {
                    let kr = &k[bi * kb + (j * kv + gi) * hd..][..hd];
                    p[j] = dot(qr, kr) * sc;
                    m = Float::max(m, p[j]);
                }
                let inv = T::one() / exp_shifted(&mut p[pad..=hi], m);
                let o = &mut ob[i * h * hd + hh * hd..][..hd];
                for j in pad..=hi {
                    let w = p[j] * inv;
                    let vr = &v[bi * vb + (j * kv + gi) * hd..][..hd];
                    for e in 0..hd {
                        o[e] = o[e] + w * vr[e];
                    }
                }
            }
        }
    });
    out
}

/// One (sequence, kv head) unit's slice of an attention call: element offsets of its first
/// query row in q (and out / dq), of key column 0 in k, v and in the contiguous dk / dv, and its
/// extent: `t` queries at columns `past ..`, `tk` key columns of which `pad ..` are visible.
#[derive(Clone, Copy)]
struct Seg {
    q0: usize,
    k0: usize,
    v0: usize,
    dkv0: usize,
    t: usize,
    tk: usize,
    pad: usize,
    past: usize,
}

/// The sequences of a call: rows of a left-padded batch, or the segments of a packed one.
fn segments(g: Geo, rows: &AttnRows) -> Vec<Seg> {
    let Geo { b, t, tk, h, kv, hd, kb, vb } = g;
    match rows {
        AttnRows::Padded { pads, past } => (0..b)
            .map(|bi| Seg {
                q0: bi * t * h * hd,
                k0: bi * kb,
                v0: bi * vb,
                dkv0: bi * tk * kv * hd,
                t,
                tk,
                pad: pads[bi].min(tk),
                past: *past,
            })
            .collect(),
        AttnRows::Packed { lens } => {
            let mut off = 0;
            lens.iter()
                .map(|&n| {
                    let s = Seg { q0: off * h * hd, k0: off * kv * hd, v0: off * kv * hd, dkv0: off * kv * hd, t: n, tk: n, pad: 0, past: 0 };
                    off += n;
                    s
                })
                .collect()
        }
    }
}

fn attn_fwd<T: Flt>(q: &[T], k: &[T], v: &[T], g: Geo, segs: &[Seg], window: usize, scale: f64) -> Vec<T> {
    let Geo { b, t, h, kv, hd, .. } = g;
    let rep = h / kv;
    let mut out = vec![T::zero(); b * t * h * hd];
    let optr = SendPtr(out.as_mut_ptr());
    let scratch = segs.iter().map(|s| s.t * s.tk).max().unwrap_or(0);
    (0..segs.len() * kv).into_par_iter().for_each_init(
        || vec![T::zero(); scratch],
        |p, unit| {
            let (s, gi) = (segs[unit / kv], unit % kv);
            // Only key columns pad.. take part (so a row's sums do not depend on its padding).
            let Seg { t, tk, pad, .. } = s;
            let n = tk - pad;
            if n == 0 {
                return;
            }
            let kp = unsafe { k.as_ptr().add(s.k0 + pad * kv * hd + gi * hd) };
            let vp = unsafe { v.as_ptr().add(s.v0 + pad * kv * hd + gi * hd) };
            for r in 0..rep {
                let hi = gi * rep + r;
                let qp = unsafe { q.as_ptr().add(s.q0 + hi * hd) };
                unsafe {
                    // S = scale * Q K^T over the columns pad..tk (row stride tk)
                    mm(t, n, hd, p.as_mut_ptr().add(pad), tk, false, qp, h * hd, 1, kp, 1, kv * hd, T::one(), c(scale));
                }
                softmax_rows(p, t, tk, pad, s.past, window);
                unsafe {
                    let op = optr.get().add(s.q0 + hi * hd);
                    mm(t, hd, n, op, h * hd, false, p.as_ptr().add(pad), tk, 1, vp, kv * hd, 1, T::one(), T::one());
                }
            }
        },
    );
    out
}

/// (dq, dk, dv) with dq like q and dk, dv contiguous (B, Tk, KV, hd).
#[allow(clippy::too_many_arguments)]
fn attn_bwd<T: Flt>(q: &[T], k: &[T], v: &[T], dout: &[T], g: Geo, segs: &[Seg], window: usize, scale: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Geo { b, t, tk, h, kv, hd, .. } = g;
    let rep = h / kv;
    let mut dq = vec![T::zero(); b * t * h * hd];
    let mut dk = vec![T::zero(); b * tk * kv * hd];
    let mut dv = vec![T::zero(); b * tk * kv * hd];
    let (dqp, dkp, dvp) = (SendPtr(dq.as_mut_ptr()), SendPtr(dk.as_mut_ptr()), SendPtr(dv.as_mut_ptr()));
    let scratch = segs.iter().map(|s| s.t * s.tk).max().unwrap_or(0);
    (0..segs.len() * kv).into_par_iter().for_each_init(
        || (vec![T::zero(); scratch], vec![T::zero(); scratch]),
        |(p, dp), unit| {
            let (s, gi) = (segs[unit / kv], unit % kv);
            let Seg { t, tk, pad, .. } = s;
            let n = tk - pad;
            if n == 0 {
                return;
            }
            let kp = unsafe { k.as_ptr().add(s.k0 + pad * kv * hd + gi * hd) };
            let vp = unsafe { v.as_ptr().add(s.v0 + pad * kv * hd + gi * hd) };
            let dkg = unsafe { dkp.get().add(s.dkv0 + pad * kv * hd + gi * hd) };
            let dvg = unsafe { dvp.get().add(s.dkv0 + pad * kv * hd + gi * hd) };
            for r in 0..rep {
                let hi = gi * rep + r;
                let off = s.q0 + hi * hd;
                let qp = unsafe { q.as_ptr().add(off) };
                let dop = unsafe { dout.as_ptr().add(off) };
                unsafe {
                    mm(t, n, hd, p.as_mut_ptr().add(pad), tk, false, qp, h * hd, 1, kp, 1, kv * hd, T::one(), c(scale));
                }
                softmax_rows(p, t, tk, pad, s.past, window);
                unsafe {
                    // dP = dO V^T
                    mm(t, n, hd, dp.as_mut_ptr().add(pad), tk, false, dop, h * hd, 1, vp, 1, kv * hd, T::one(), T::one());
                }
                // dS = P (dP - rowsum(P dP)) * scale
                let sc: T = c(scale);
                for i in 0..t {
                    let pr = &p[i * tk + pad..(i + 1) * tk];
                    let dr = &mut dp[i * tk + pad..(i + 1) * tk];
                    let mut s = T::zero();
                    for j in 0..n {
                        s = s + pr[j] * dr[j];
                    }
                    for j in 0..n {
                        dr[j] = pr[j] * (dr[j] - s) * sc;
                    }
                }
                let first = r == 0;
                unsafe {
                    // dQ = dS K
                    mm(t, hd, n, dqp.get().add(off), h * hd, false, dp.as_ptr().add(pad), tk, 1, kp, kv * hd, 1, T::one(), T::one());
                    // dK += dS^T Q
                    mm(n, hd, t, dkg, kv * hd, !first, dp.as_ptr().add(pad), 1, tk, qp, h * hd, 1, T::one(), T::one());
                    // dV += P^T dO
                    mm(n, hd, t, dvg, kv * hd, !first, p.as_ptr().add(pad), 1, tk, dop, h * hd, 1, T::one(), T::one());
                }
            }
        },
    );
    (dq, dk, dv)
}

impl AttnOp {
    fn geo(&self, lq: &Layout, lk: &Layout, lv: &Layout) -> Result<Geo> {
        let qd = lq.shape().dims();
        let kd = lk.shape().dims();
        if qd.len() != 4 || kd.len() != 4 || lv.shape().dims() != kd {
            bail!("attention: shapes q {:?} k {:?} v {:?}", qd, kd, lv.shape());
        }
        let (b, t, h, hd) = (qd[0], qd[1], qd[2], qd[3]);
        let (tk, kv) = (kd[1], kd[2]);
        let rows_fit = match &self.rows {
            AttnRows::Padded { pads, past } => pads.len() == b && past + t <= tk,
            AttnRows::Packed { lens } => b == 1 && t == tk && lens.iter().sum::<usize>() == t,
        };
        if kd[0] != b || kd[3] != hd || h % kv != 0 || !rows_fit {
            bail!("attention: shapes q {:?} k {:?} do not fit the rows", qd, kd);
        }
        let (_, kb) = kv_view(lk)?;
        let (_, vb) = kv_view(lv)?;
        Ok(Geo { b, t, tk, h, kv, hd, kb, vb })
    }
}

impl CustomOp3 for AttnOp {
    fn name(&self) -> &'static str {
        "clipo-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geo(lq, lk, lv)?;
        fn go<T: Flt>(
            op: &AttnOp,
            g: Geo,
            (sq, lq): (&CpuStorage, &Layout),
            (sk, lk): (&CpuStorage, &Layout),
            (sv, lv): (&CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let q = contig::<T>(sq, lq)?;
            let k = &sk.as_slice::<T>()?[lk.start_offset()..];
            let v = &sv.as_slice::<T>()?[lv.start_offset()..];
            Ok(storage(match (&op.rows, op.rows_kernel) {
                (AttnRows::Padded { pads, past }, true) => attn_fwd_rows(q, k, v, g, pads, *past, op.window, op.scale),
                (rows, _) => attn_fwd(q, k, v, g, &segments(g, rows), op.window, op.scale),
            }))
        }
        let out = match sq.dtype() {
            DType::F32 => go::<f32>(self, g, (sq, lq), (sk, lk), (sv, lv))?,
            DType::F64 => go::<f64>(self, g, (sq, lq), (sk, lk), (sv, lv))?,
            dt => bail!("attention: unsupported dtype {dt:?}"),
        };
        Ok((out, lq.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn go<T: Flt>(op: &AttnOp, q: &Tensor, k: &Tensor, v: &Tensor, dout: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
            let (k, v) = (k.contiguous()?, v.contiguous()?);
            let g = op.geo(q.layout(), k.layout(), v.layout())?;
            let (dq, dk, dv) = read::<T, _>(q, |qs| {
                read::<T, _>(&k, |ks| {
                    read::<T, _>(&v, |vs| read::<T, _>(dout, |ds| Ok(attn_bwd(qs, ks, vs, ds, g, &segments(g, &op.rows), op.window, op.scale))))
                })
            })?;
            Ok((
                Tensor::from_vec(dq, q.shape(), q.device())?,
                Tensor::from_vec(dk, k.shape(), k.device())?,
                Tensor::from_vec(dv, v.shape(), v.device())?,
            ))
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => go::<f32>(self, q, k, v, dout)?,
            DType::F64 => go::<f64>(self, q, k, v, dout)?,
            dt => bail!("attention: unsupported dtype {dt:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Causal softmax attention: q (B, T, H, hd) contiguous, k/v (B, Tk, KV, hd) with contiguous
/// rows (a batch-strided view of a KV cache is fine) -> (B, T, H, hd); `rows` says whether the
/// batch is left-padded or packed (B = 1, T = Tk = the sum of the sequence lengths).
/// `rows_kernel`: the plain-loop forward whose rows do not depend on the batch (sampling, padded
/// rows only); otherwise `gemm` per (sequence, kv head) (teacher-forced scoring and training).
/// `window`: a query sees at most this many keys, itself included (Mistral's sliding window).
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rows: AttnRows, window: Option<usize>, rows_kernel: bool) -> Result<Tensor> {
    let hd = q.dim(3)?;
    let op = AttnOp {
        rows,
        window: window.unwrap_or(usize::MAX),
        scale: 1.0 / (hd as f64).sqrt(),
        rows_kernel,
    };
    q.contiguous()?.apply_op3(k, v, op)
}

// ------------------------------------------------------------------------------------------
// SiLU(gate) * up

struct SiluMulOp;

impl CustomOp2 for SiluMulOp {
    fn name(&self) -> &'static str {
        "clipo-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("silu_mul: shapes {:?} {:?}", l1.shape(), l2.shape());
        }
        fn go<T: Flt>(g: &[T], u: &[T]) -> Vec<T> {
            let mut y = vec![T::zero(); g.len()];
            y.par_chunks_mut(16384)
                .zip(g.par_chunks(16384).zip(u.par_chunks(16384)))
                .for_each(|(yc, (gc, uc))| {
                    // sigmoid(g) = 1 / (1 + exp(-g)), the exponentials first (vectorised)
                    for (o, &gv) in yc.iter_mut().zip(gc) {
                        *o = -gv;
                    }
                    T::exp_in_place(yc);
                    for ((o, &gv), &uv) in yc.iter_mut().zip(gc).zip(uc) {
                        let sig = T::one() / (T::one() + *o);
                        *o = gv * sig * uv;
                    }
                });
            y
        }
        let out = match s1.dtype() {
            DType::F32 => storage(go::<f32>(contig(s1, l1)?, contig(s2, l2)?)),
            DType::F64 => storage(go::<f64>(contig(s1, l1)?, contig(s2, l2)?)),
            dt => bail!("silu_mul: unsupported dtype {dt:?}"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn go<T: Flt>(g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
            let (dg, du) = read::<T, _>(g, |gs| {
                read::<T, _>(u, |us| {
                    read::<T, _>(dy, |ds| {
                        let mut dg = vec![T::zero(); gs.len()];
                        let mut du = vec![T::zero(); gs.len()];
                        dg.par_chunks_mut(16384)
                            .zip(du.par_chunks_mut(16384))
                            .enumerate()
                            .for_each(|(ci, (dgc, duc))| {
                                let o = ci * 16384;
                                for i in 0..dgc.len() {
                                    dgc[i] = -gs[o + i];
                                }
                                T::exp_in_place(dgc);
                                for i in 0..dgc.len() {
                                    let (x, up, d) = (gs[o + i], us[o + i], ds[o + i]);
                                    let s = T::one() / (T::one() + dgc[i]);
                                    let silu = x * s;
                                    duc[i] = d * silu;
                                    dgc[i] = d * up * s * (T::one() + x * (T::one() - s));
                                }
                            });
                        Ok((dg, du))
                    })
                })
            })?;
            Ok((Tensor::from_vec(dg, g.shape(), g.device())?, Tensor::from_vec(du, u.shape(), u.device())?))
        }
        let (dg, du) = match g.dtype() {
            DType::F32 => go::<f32>(g, u, dy)?,
            DType::F64 => go::<f64>(g, u, dy)?,
            dt => bail!("silu_mul: unsupported dtype {dt:?}"),
        };
        Ok((Some(dg), Some(du)))
    }
}

/// silu(gate) * up, elementwise.
pub(crate) fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMulOp)
}

// ------------------------------------------------------------------------------------------
// Log-prob of the target token (and entropy, logsumexp) in one pass

struct LogprobOp {
    inv_t: f64,
}

fn lp_fwd<T: Flt>(z: &[T], tg: &[u32], v: usize, inv_t: f64) -> Vec<T> {
    let n = tg.len();
    let mut out = vec![T::zero(); n * 3];
    const BLOCK: usize = 1024;
    out.par_chunks_mut(3).enumerate().for_each_init(|| vec![T::zero(); 2 * BLOCK], |buf, (i, o)| {
        let row = &z[i * v..(i + 1) * v];
        let it: T = c(inv_t);
        let mut m = T::neg_infinity();
        for &x in row {
            m = Float::max(m, x * it);
        }
        let (mut s, mut sz) = (0f64, 0f64);
        let (zb, eb) = buf.split_at_mut(BLOCK);
        for block in row.chunks(BLOCK) {
            let n = block.len();
            for (k, &x) in block.iter().enumerate() {
                zb[k] = x * it - m;
            }
            eb[..n].copy_from_slice(&zb[..n]);
            T::exp_in_place(&mut eb[..n]);
            for k in 0..n {
                let e = f(eb[k]);
                s += e;
                sz += e * f(zb[k]);
            }
        }
        let lse_s = s.ln();
        let target = f(row[tg[i] as usize] * it - m);
        o[0] = c(target - lse_s);
        o[1] = c(lse_s - sz / s);
        o[2] = c(f(m) + lse_s);
    });
    out
}

impl CustomOp2 for LogprobOp {
    fn name(&self) -> &'static str {
        "clipo-token-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        let tg = contig::<u32>(s2, l2)?;
        if tg.len() != n || tg.iter().any(|&x| x as usize >= v) {
            bail!("token_logprobs: {} targets for {} rows of {} logits (or a target out of range)", tg.len(), n, v);
        }
        let out = match s1.dtype() {
            DType::F32 => storage(lp_fwd::<f32>(contig(s1, l1)?, tg, v, self.inv_t)),
            DType::F64 => storage(lp_fwd::<f64>(contig(s1, l1)?, tg, v, self.inv_t)),
            dt => bail!("token_logprobs: unsupported dtype {dt:?}"),
        };
        Ok((out, Shape::from((n, 3))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn go<T: Flt>(logits: &Tensor, targets: &Tensor, res: &Tensor, dy: &Tensor, inv_t: f64) -> Result<Tensor> {
            let (n, v) = logits.dims2()?;
            let tg: Vec<u32> = targets.to_vec1()?;
            let dz = read::<T, _>(logits, |z| {
                read::<T, _>(res, |r| {
                    read::<T, _>(dy, |d| {
                        let mut dz = vec![T::zero(); n * v];
                        dz.par_chunks_mut(v).enumerate().for_each(|(i, out)| {
                            // With s = z / T, log p_j = s_j - lse, H = -sum_j p_j log p_j:
                            //   d log p_t / d s_j = [j = t] - p_j
                            //   d H / d s_j       = -p_j (log p_j + H)
                            //   d lse / d s_j     = p_j
                            // and d s_j / d z_j = 1 / T.
                            let (g_lp, g_h, g_lse) = (f(d[i * 3]) * inv_t, f(d[i * 3 + 1]) * inv_t, f(d[i * 3 + 2]) * inv_t);
                            if g_lp == 0.0 && g_h == 0.0 && g_lse == 0.0 {
                                return;
                            }
                            let it: T = c(inv_t);
                            let (h, lse) = (r[i * 3 + 1], r[i * 3 + 2]);
                            let row = &z[i * v..(i + 1) * v];
                            // p_j = exp(log p_j), the exponentials first (vectorised)
                            for (o, &x) in out.iter_mut().zip(row) {
                                *o = x * it - lse;
                            }
                            T::exp_in_place(out);
                            if g_h == 0.0 {
                                let g: T = c(g_lse - g_lp);
                                for o in out.iter_mut() {
                                    *o = g * *o;
                                }
                            } else {
                                let (g, gh): (T, T) = (c(g_lse - g_lp), c(g_h));
                                for (o, &x) in out.iter_mut().zip(row) {
                                    let (lp, p) = (x * it - lse, *o);
                                    *o = g * p - gh * p * (lp + h);
                                }
                            }
                            let t = tg[i] as usize;
                            out[t] = out[t] + c(g_lp);
                        });
                        Ok(dz)
                    })
                })
            })?;
            Tensor::from_vec(dz, (n, v), logits.device())
        }
        let dz = match logits.dtype() {
            DType::F32 => go::<f32>(logits, targets, res, dy, self.inv_t)?,
            DType::F64 => go::<f64>(logits, targets, res, dy, self.inv_t)?,
            dt => bail!("token_logprobs: unsupported dtype {dt:?}"),
        };
        Ok((Some(dz), None))
    }
}

/// logits (N, V), targets (N,) u32 -> (N, 3): [log p(target), entropy, logsumexp] under
/// softmax(logits / temperature). Differentiable in every column (the entropy's gradient serves
/// the entropy bonus).
pub(crate) fn token_logprobs(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    logits.contiguous()?.apply_op2(
        &targets.contiguous()?,
        LogprobOp {
            inv_t: 1.0 / temperature,
        },
    )
}

// ------------------------------------------------------------------------------------------
// x W^T for a few rows (decoding): W streamed once, each row of W dotted with every row of x

/// Up to this many rows of x, [`matmul_small_m`] serves the no-grad linear layers.
pub(crate) const SMALL_M: usize = 16;

struct SmallMatmul;

/// out[i] = x_i . w for M rows x_i (stride k) of x: each 8-float chunk of w is loaded once
/// and multiplied into M accumulators; each output sums its chunks in order, then its 8 lanes in
/// a fixed tree, so the result does not depend on M.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_dot_avx2<const M: usize>(x: *const f32, w: *const f32, k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); M];
    let mut ch = 0;
    while ch + 8 <= k {
        let wv = _mm256_loadu_ps(w.add(ch));
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(i * k + ch)), wv, *a);
        }
        ch += 8;
    }
    for (i, a) in acc.iter().enumerate() {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
        let mut tot = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        for c in ch..k {
            tot += *x.add(i * k + c) * *w.add(c);
        }
        out[i] = tot;
    }
}

/// y[i, j] = x_i . w_j for the rows j of one task, with AVX2 (f32 only).
#[cfg(target_arch = "x86_64")]
unsafe fn small_mm_rows_avx2(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, js: std::ops::Range<usize>, y: *mut f32) {
    let mut out = [0f32; 8];
    for j in js {
        let wj = w.as_ptr().add(j * k);
        let mut g = 0;
        while g < m {
            let mm = (m - g).min(8);
            let xg = x.as_ptr().add(g * k);
            match mm {
                1 => rows_dot_avx2::<1>(xg, wj, k, &mut out),
                2 => rows_dot_avx2::<2>(xg, wj, k, &mut out),
                3 => rows_dot_avx2::<3>(xg, wj, k, &mut out),
                4 => rows_dot_avx2::<4>(xg, wj, k, &mut out),
                5 => rows_dot_avx2::<5>(xg, wj, k, &mut out),
                6 => rows_dot_avx2::<6>(xg, wj, k, &mut out),
                7 => rows_dot_avx2::<7>(xg, wj, k, &mut out),
                _ => rows_dot_avx2::<8>(xg, wj, k, &mut out),
            }
            for i in 0..mm {
                *y.add((g + i) * n + j) = out[i];
            }
            g += mm;
        }
    }
}

/// out[i][j] = x_i . w_j for M rows x_i (stride k) of x and J rows w_j (stride k) of w, with
/// AVX-512: each 16-float chunk of the J weight rows is loaded once and multiplied into M x J
/// accumulators (J > 1 gives M = 1 independent FMA chains). Each output sums its chunks in order,
/// then its 16 lanes in a fixed tree, then the tail: the result depends on neither M nor J.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_dot_avx512<const M: usize, const J: usize>(x: *const f32, w: *const f32, k: usize, out: &mut [[f32; J]; M]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); J]; M];
    let mut ch = 0;
    while ch + 16 <= k {
        let mut wv = [_mm512_setzero_ps(); J];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(w.add(j * k + ch));
            // The same chunk of the next J rows (J k floats ahead): rows of 2-6 KB are too short
            // for the hardware prefetcher to ramp up; with it, 8 x 576 rows against 200k weight
            // rows on one core take 39 ms instead of 67 (11.8 vs 6.9 GB/s). A prefetch past the
            // end of w is a hint and never faults.
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((J + j) * k + ch) as *const i8);
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(x.add(i * k + ch));
            for (a, v) in row.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, *v, *a);
            }
        }
        ch += 16;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // The fixed tree over the lanes l: h_q = l_q + l_(q+8), g_q = h_q + h_(q+4),
            // sum = (g_0 + g_1) + (g_2 + g_3), on 128-bit quarters (Q0 + Q2 = h_0..3,
            // Q1 + Q3 = h_4..7) instead of sixteen scalars.
            let h_lo = _mm_add_ps(_mm512_extractf32x4_ps::<0>(*a), _mm512_extractf32x4_ps::<2>(*a));
            let h_hi = _mm_add_ps(_mm512_extractf32x4_ps::<1>(*a), _mm512_extractf32x4_ps::<3>(*a));
            let g = _mm_add_ps(h_lo, h_hi);
            let pairs = _mm_hadd_ps(g, g); // (g0 + g1, g2 + g3, ..)
            let mut tot = _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs));
            for c in ch..k {
                tot += *x.add(i * k + c) * *w.add(j * k + c);
            }
            out[i][j] = tot;
        }
    }
}

/// y[i, j] = x_i . w_j for the rows j of one task, with AVX-512 (f32 only): up to 8 rows of x at
/// a time against 4 (M <= 4) or 3 (M > 4) rows of w, at most 24 accumulators (+ the weight
/// chunks and one x chunk: 28 of the 32 registers).
#[cfg(target_arch = "x86_64")]
unsafe fn small_mm_rows_avx512(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, js: std::ops::Range<usize>, y: *mut f32) {
    unsafe fn block<const M: usize, const J: usize>(x: *const f32, w: *const f32, k: usize, n: usize, g: usize, j: usize, y: *mut f32) {
        let mut out = [[0f32; J]; M];
        rows_dot_avx512::<M, J>(x, w, k, &mut out);
        for (i, row) in out.iter().enumerate() {
            for (jj, v) in row.iter().enumerate() {
                *y.add((g + i) * n + j + jj) = *v;
            }
        }
    }
    macro_rules! by_m {
        ($mm:expr, $jb:literal, $xg:expr, $wj:expr, $g:expr, $j:expr) => {
            match $mm {
                1 => block::<1, $jb>($xg, $wj, k, n, $g, $j, y),
                2 => block::<2, $jb>($xg, $wj, k, n, $g, $j, y),
                3 => block::<3, $jb>($xg, $wj, k, n, $g, $j, y),
                4 => block::<4, $jb>($xg, $wj, k, n, $g, $j, y),
                5 => block::<5, $jb>($xg, $wj, k, n, $g, $j, y),
                6 => block::<6, $jb>($xg, $wj, k, n, $g, $j, y),
                7 => block::<7, $jb>($xg, $wj, k, n, $g, $j, y),
                _ => block::<8, $jb>($xg, $wj, k, n, $g, $j, y),
            }
        };
    }
    let mut g = 0;
    while g < m {
        let mm = (m - g).min(8);
        let xg = x.as_ptr().add(g * k);
        let mut j = js.start;
        while j < js.end {
            let wj = w.as_ptr().add(j * k);
            if mm <= 4 && j + 4 <= js.end {
                by_m!(mm, 4, xg, wj, g, j);
                j += 4;
            } else if mm > 4 && j + 3 <= js.end {
                by_m!(mm, 3, xg, wj, g, j);
                j += 3;
            } else if j + 2 <= js.end {
                by_m!(mm, 2, xg, wj, g, j);
                j += 2;
            } else {
                by_m!(mm, 1, xg, wj, g, j);
                j += 1;
            }
        }
        g += mm;
    }
}

fn small_mm<T: Flt>(x: &[T], w: &[T], m: usize, k: usize, n: usize) -> Vec<T> {
    let mut y = vec![T::zero(); m * n];
    let yp = SendPtr(y.as_mut_ptr());
    // The widest kernel this CPU runs, for f32 (f64 takes the portable loop).
    type Kernel = unsafe fn(&[f32], &[f32], usize, usize, usize, std::ops::Range<usize>, *mut f32);
    let f32s = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
    #[cfg(target_arch = "x86_64")]
    let kernel: Option<Kernel> = if f32s && is_x86_feature_detected!("avx512f") {
        Some(small_mm_rows_avx512)
    } else if f32s && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(small_mm_rows_avx2)
    } else {
        None
    };
    #[cfg(not(target_arch = "x86_64"))]
    let kernel: Option<Kernel> = None;
    let rows_per_task = 64;
    (0..n.div_ceil(rows_per_task)).into_par_iter().for_each(|task| {
        let js = task * rows_per_task..((task + 1) * rows_per_task).min(n);
        if let Some(kernel) = kernel {
            // SAFETY: T is f32 (checked with the kernel's choice), the CPU has the kernel's
            // features, tasks write disjoint columns of y.
            unsafe {
                let xf = std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len());
                let wf = std::slice::from_raw_parts(w.as_ptr() as *const f32, w.len());
                kernel(xf, wf, m, k, n, js, yp.get() as *mut f32);
            }
            return;
        }
        for j in js {
            let wj = &w[j * k..(j + 1) * k];
            for i in 0..m {
                let v = dot(&x[i * k..(i + 1) * k], wj);
                unsafe { *yp.get().add(i * n + j) = v };
            }
        }
    });
    y
}

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "clipo-small-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            bail!("small matmul: x {:?} w {:?}", l1.shape(), l2.shape());
        }
        let out = match s1.dtype() {
            DType::F32 => storage(small_mm::<f32>(contig(s1, l1)?, contig(s2, l2)?, m, k, n)),
            DType::F64 => storage(small_mm::<f64>(contig(s1, l1)?, contig(s2, l2)?, m, k, n)),
            dt => bail!("small matmul: unsupported dtype {dt:?}"),
        };
        Ok((out, Shape::from((m, n))))
    }
}

/// x (m, k) times w (n, k) transposed -> (m, n), without a graph: for a few rows of x (decoding),
/// where `gemm` would repack all of w on every call. Each output is one dot product in a fixed
/// order, so a row's result does not depend on the other rows.
pub(crate) fn matmul_small_m(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &SmallMatmul)
}

/// `x W^T` for any number of rows, [`SMALL_M`] rows at a time through [`matmul_small_m`]: each
/// row's bits do not depend on how many rows share the call (decoding, where rows of different
/// prompts share a batch). Streams the weights once per SMALL_M rows.
pub(crate) fn matmul_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let m = x.dim(0)?;
    if m <= SMALL_M {
        return matmul_small_m(x, w);
    }
    let parts = (0..m).step_by(SMALL_M).map(|s| matmul_small_m(&x.narrow(0, s, SMALL_M.min(m - s))?, w)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// Central finite differences of sum(f(x) * coef) against the analytic gradient, in f64.
    fn check_grad(inputs: &[Var], f: &dyn Fn(&[Tensor]) -> Tensor) {
        let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let n = out.elem_count();
        let coef: Vec<f64> = (0..n).map(|i| 0.3 + ((i * 7919) % 17) as f64 / 17.0).collect();
        let coef = Tensor::from_vec(coef, out.shape(), &Device::Cpu).unwrap();
        let loss = |ts: &[Tensor]| (f(ts) * &coef).unwrap().sum_all().unwrap();
        let grads = loss(&ts).backward().unwrap();
        for (vi, var) in inputs.iter().enumerate() {
            let g: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in (0..base.len()).step_by((base.len() / 23).max(1)) {
                let eps = 1e-6;
                let mut plus = base.clone();
                plus[i] += eps;
                let mut minus = base.clone();
                minus[i] -= eps;
                let eval = |vals: Vec<f64>| {
                    let mut ts = ts.clone();
                    ts[vi] = Tensor::from_vec(vals, var.as_tensor().shape(), &Device::Cpu).unwrap();
                    loss(&ts).to_scalar::<f64>().unwrap()
                };
                let num = (eval(plus) - eval(minus)) / (2.0 * eps);
                assert!((num - g[i]).abs() < 1e-6 * (1.0 + num.abs()), "input {vi} elem {i}: numeric {num} analytic {}", g[i]);
            }
        }
    }

    fn randn(shape: &[usize], seed: u64) -> Var {
        let t = Tensor::randn(0f64, 1.0, shape, &Device::Cpu).unwrap();
        // deterministic enough for the check; seed only varies the scale
        Var::from_tensor(&(t * (0.5 + seed as f64 * 0.1)).unwrap()).unwrap()
    }

    #[test]
    fn rms_norm_grad() {
        let x = randn(&[7, 12], 1);
        let w = randn(&[12], 2);
        check_grad(&[x, w], &|t| rms_norm(&t[0], &t[1], 1e-5).unwrap());
    }

    #[test]
    fn rms_norm_matches_composed() {
        let x = randn(&[5, 16], 1);
        let w = randn(&[16], 2);
        let a = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let var = x.as_tensor().sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let b = x
            .as_tensor()
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(w.as_tensor())
            .unwrap();
        let d: f64 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-12, "{d}");
    }

    fn tables(b: usize, t: usize, half: usize) -> RopeTables {
        let mut cos = vec![];
        let mut sin = vec![];
        for r in 0..b * t {
            for i in 0..half {
                let a = (r % t) as f64 * 0.3 / (i + 1) as f64 + r as f64 * 0.01;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        RopeTables { cos: Arc::new(cos), sin: Arc::new(sin), half }
    }

    #[test]
    fn rope_grad() {
        let x = randn(&[2, 3, 2, 8], 1);
        let tab = tables(2, 3, 4);
        check_grad(&[x], &|t| rope(&t[0], &tab).unwrap());
    }

    /// The composed reference: additive mask, softmax, GQA by repetition.
    fn attn_ref(q: &Tensor, k: &Tensor, v: &Tensor, pads: &[usize], past: usize) -> Tensor {
        attn_ref_window(q, k, v, pads, past, usize::MAX)
    }

    /// The reference with a sliding window: query column c sees columns c + 1 - window ..= c.
    fn attn_ref_window(q: &Tensor, k: &Tensor, v: &Tensor, pads: &[usize], past: usize, window: usize) -> Tensor {
        let (b, t, h, hd) = q.dims4().unwrap();
        let (_, tk, kv, _) = k.dims4().unwrap();
        let rep = h / kv;
        let q = q.transpose(1, 2).unwrap().contiguous().unwrap(); // (B, H, T, hd)
        let expand = |x: &Tensor| {
            let x = x.transpose(1, 2).unwrap(); // (B, KV, Tk, hd)
            let x = x.unsqueeze(2).unwrap().broadcast_as((b, kv, rep, tk, hd)).unwrap();
            x.reshape((b, h, tk, hd)).unwrap()
        };
        let (k, v) = (expand(k), expand(v));
        let s = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
        let mut mask = vec![];
        for &pad in pads {
            for i in 0..t {
                for j in 0..tk {
                    let lo = pad.max((past + i + 1).saturating_sub(window));
                    mask.push(if j >= lo && j <= past + i { 0.0 } else { -1e30 });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, t, tk), &Device::Cpu).unwrap();
        let p = candle_nn::ops::softmax(&s.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
        p.matmul(&v).unwrap().transpose(1, 2).unwrap()
    }

    #[test]
    fn attention_matches_reference_and_grad() {
        let (b, t, h, kv, hd) = (3, 5, 4, 2, 6);
        let pads = Arc::new(vec![0, 2, 4]);
        let q = randn(&[b, t, h, hd], 1);
        let k = randn(&[b, t, kv, hd], 2);
        let v = randn(&[b, t, kv, hd], 3);
        let a = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), padded(&pads, 0), None, false).unwrap();
        let a2 = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), padded(&pads, 0), None, true).unwrap();
        let d2: f64 = (&a - a2).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d2 < 1e-12, "{d2}");
        let r = attn_ref(q.as_tensor(), k.as_tensor(), v.as_tensor(), &pads, 0);
        for (bi, &pad) in pads.iter().enumerate() {
            // pad queries see nothing: the fused op outputs zeros there, the reference garbage
            let (a, r) = (a.get(bi).unwrap(), r.get(bi).unwrap());
            let z: f64 = a.narrow(0, 0, pad).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert_eq!(z, 0.0);
            let d = (a.narrow(0, pad, t - pad).unwrap() - r.narrow(0, pad, t - pad).unwrap()).unwrap();
            let d: f64 = d.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(d < 1e-12, "{d}");
        }
        check_grad(&[q, k, v], &|ts| attention(&ts[0], &ts[1], &ts[2], padded(&pads, 0), None, false).unwrap());
    }

    #[test]
    fn windowed_attention_matches_reference_and_grad() {
        // Mistral's sliding window of 3 keys over 7 columns: padded (with a past), packed, and
        // the plain-loop kernel, against the masked reference; gradients by finite differences.
        let (b, t, h, kv, hd, w) = (2, 7, 4, 2, 6, 3);
        let pads = Arc::new(vec![0, 2]);
        let q = randn(&[b, t, h, hd], 4);
        let k = randn(&[b, t, kv, hd], 5);
        let v = randn(&[b, t, kv, hd], 6);
        let a = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), padded(&pads, 0), Some(w), false).unwrap();
        let a2 = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), padded(&pads, 0), Some(w), true).unwrap();
        let d2: f64 = (&a - a2).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d2 < 1e-12, "{d2}");
        let r = attn_ref_window(q.as_tensor(), k.as_tensor(), v.as_tensor(), &pads, 0, w);
        let full = attn_ref(q.as_tensor(), k.as_tensor(), v.as_tensor(), &pads, 0);
        for (bi, &pad) in pads.iter().enumerate() {
            let (a, r, full) = (a.get(bi).unwrap(), r.get(bi).unwrap(), full.get(bi).unwrap());
            let d = (a.narrow(0, pad, t - pad).unwrap() - r.narrow(0, pad, t - pad).unwrap()).unwrap();
            let d: f64 = d.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(d < 1e-12, "{d}");
            // the window changes the queries that have more than w visible keys
            let d = (a.narrow(0, t - 1, 1).unwrap() - full.narrow(0, t - 1, 1).unwrap()).unwrap();
            assert!(d.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() > 1e-3);
        }
        check_grad(&[q.clone(), k.clone(), v.clone()], &|ts| attention(&ts[0], &ts[1], &ts[2], padded(&pads, 0), Some(w), false).unwrap());
        // packed: the window counts within each sequence
        let packed = AttnRows::Packed { lens: Arc::new(vec![5, 2]) };
        let flat = |x: &Var| x.as_tensor().narrow(0, 0, 1).unwrap();
        let (q1, k1, v1) = (flat(&q), flat(&k), flat(&v));
        let a = attention(&q1, &k1, &v1, packed.clone(), Some(w), false).unwrap();
        let r1 = attn_ref_window(&q1.narrow(1, 0, 5).unwrap(), &k1.narrow(1, 0, 5).unwrap(), &v1.narrow(1, 0, 5).unwrap(), &[0], 0, w);
        let r2 = attn_ref_window(&q1.narrow(1, 5, 2).unwrap(), &k1.narrow(1, 5, 2).unwrap(), &v1.narrow(1, 5, 2).unwrap(), &[0], 0, w);
        let r = Tensor::cat(&[r1, r2], 1).unwrap();
        let d: f64 = (a - r).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-12, "{d}");
        let (q1, k1, v1) = (Var::from_tensor(&q1).unwrap(), Var::from_tensor(&k1).unwrap(), Var::from_tensor(&v1).unwrap());
        check_grad(&[q1, k1, v1], &|ts| attention(&ts[0], &ts[1], &ts[2], packed.clone(), Some(w), false).unwrap());
    }

    fn padded(pads: &Arc<Vec<usize>>, past: usize) -> AttnRows {
        AttnRows::Padded { pads: pads.clone(), past }
    }

    #[test]
    fn packed_attention_matches_padded_and_grad() {
        // Sequences of 4, 1 and 3 tokens: packed one after another, and left-padded to 4.
        let (h, kv, hd, lens) = (4, 2, 6, [4usize, 1, 3]);
        let (b, t, n) = (lens.len(), 4, lens.iter().sum::<usize>());
        let q = randn(&[1, n, h, hd], 1);
        let k = randn(&[1, n, kv, hd], 2);
        let v = randn(&[1, n, kv, hd], 3);
        let packed = AttnRows::Packed { lens: Arc::new(lens.to_vec()) };
        let a = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), packed.clone(), None, false).unwrap();
        // The padded batch: row b holds its tokens in its last lens[b] columns, zeros before.
        let pads = Arc::new(lens.iter().map(|&l| t - l).collect::<Vec<_>>());
        let pad_rows = |x: &Tensor| {
            let mut rows = vec![];
            let mut off = 0;
            for &l in &lens {
                let seq = x.narrow(1, off, l).unwrap();
                rows.push(seq.pad_with_zeros(1, t - l, 0).unwrap());
                off += l;
            }
            Tensor::cat(&rows, 0).unwrap()
        };
        let (qp, kp, vp) = (pad_rows(q.as_tensor()), pad_rows(k.as_tensor()), pad_rows(v.as_tensor()));
        let r = attention(&qp, &kp, &vp, padded(&pads, 0), None, false).unwrap();
        assert_eq!(r.dims(), &[b, t, h, hd]);
        let mut off = 0;
        for (bi, &l) in lens.iter().enumerate() {
            // the same bits: each sequence's sums run over the same keys in the same order
            let want: Vec<f64> = r.get(bi).unwrap().narrow(0, t - l, l).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f64> = a.get(0).unwrap().narrow(0, off, l).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, want, "sequence {bi}");
            off += l;
        }
        check_grad(&[q, k, v], &|ts| attention(&ts[0], &ts[1], &ts[2], packed.clone(), None, false).unwrap());
        // lengths that do not add up to the packed rows are refused
        let bad = AttnRows::Packed { lens: Arc::new(vec![4, 1]) };
        assert!(attention(&qp.narrow(0, 0, 1).unwrap(), &kp.narrow(0, 0, 1).unwrap(), &vp.narrow(0, 0, 1).unwrap(), bad, None, false).is_err());
    }

    #[test]
    fn attention_with_past_and_strided_cache() {
        // queries at columns past.. of a cache with capacity > Tk (a batch-strided view)
        let (b, t, h, kv, hd, past, cap) = (2, 2, 2, 1, 4, 3, 9);
        let pads = Arc::new(vec![1, 0]);
        let q = randn(&[b, t, h, hd], 1);
        let full = randn(&[b, cap, kv, hd], 2);
        let k = full.as_tensor().narrow(1, 0, past + t).unwrap();
        let v = (full.as_tensor().narrow(1, 0, past + t).unwrap() * 0.7).unwrap().contiguous().unwrap();
        let a = attention(q.as_tensor(), &k, &v, padded(&pads, past), None, false).unwrap();
        let a2 = attention(q.as_tensor(), &k, &v, padded(&pads, past), None, true).unwrap();
        let d2: f64 = (&a - a2).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d2 < 1e-12, "{d2}");
        let r = attn_ref(q.as_tensor(), &k, &v, &pads, past);
        let d: f64 = (a - r).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-12, "{d}");
    }

    #[test]
    fn small_matmul_matches() {
        for (m, k, n) in [(1, 5, 3), (3, 67, 70), (8, 576, 40), (5, 33, 7), (13, 100, 9), (16, 576, 41)] {
            for dt in [DType::F32, DType::F64] {
                let x = Tensor::randn(0f64, 1.0, (m, k), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                let w = Tensor::randn(0f64, 1.0, (n, k), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                let a = matmul_small_m(&x, &w).unwrap().to_dtype(DType::F64).unwrap();
                let r = x.matmul(&w.t().unwrap()).unwrap().to_dtype(DType::F64).unwrap();
                let d: f64 = (a - r).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                assert!(d < 1e-3, "{m} {k} {n} {dt:?}: {d}");
            }
        }
    }

    #[test]
    fn small_matmul_rows_do_not_depend_on_the_batch() {
        // Row i of x W^T has the same bits alone and inside any batch of up to SMALL_M rows.
        let (k, n) = (147, 23);
        let x = Tensor::randn(0f32, 1.0, (SMALL_M, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let full: Vec<Vec<f32>> = matmul_small_m(&x, &w).unwrap().to_vec2().unwrap();
        for m in [1, 2, 3, 5, 8, 11] {
            for start in [0, SMALL_M - m] {
                let part: Vec<Vec<f32>> = matmul_small_m(&x.narrow(0, start, m).unwrap(), &w).unwrap().to_vec2().unwrap();
                for (i, row) in part.iter().enumerate() {
                    assert_eq!(row, &full[start + i], "m {m}, row {}", start + i);
                }
            }
        }
    }

    #[test]
    fn silu_mul_grad() {
        let g = randn(&[4, 9], 1);
        let u = randn(&[4, 9], 2);
        check_grad(&[g, u], &|t| silu_mul(&t[0], &t[1]).unwrap());
    }

    #[test]
    fn token_logprobs_match_and_grad() {
        let z = randn(&[5, 11], 3);
        let tg = Tensor::new(&[0u32, 10, 3, 3, 7], &Device::Cpu).unwrap();
        let out = token_logprobs(z.as_tensor(), &tg, 0.7).unwrap();
        let zz = (z.as_tensor() / 0.7).unwrap();
        let ls = candle_nn::ops::log_softmax(&zz, D::Minus1).unwrap();
        let want = ls.gather(&tg.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap();
        let ent = (ls.exp().unwrap() * &ls).unwrap().sum(1).unwrap().neg().unwrap();
        let got = out.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        let d: f64 = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-12, "{d}");
        let got = out.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        let d: f64 = (got - ent).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-12, "{d}");
        check_grad(&[z.clone()], &|t| token_logprobs(&t[0], &tg, 0.7).unwrap().narrow(1, 0, 1).unwrap());
        // entropy alone, and all three columns at once
        check_grad(&[z.clone()], &|t| token_logprobs(&t[0], &tg, 0.7).unwrap().narrow(1, 1, 1).unwrap());
        check_grad(&[z], &|t| token_logprobs(&t[0], &tg, 0.7).unwrap());
    }
}
