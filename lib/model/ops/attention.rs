//! Causal softmax attention (left-padded or packed rows, GQA, optional sliding window): the
//! forward through `gemm` per (sequence, kv head) or with plain loops per query row (sampling);
//! the backward recomputes the probabilities and gives dq, dk, dv.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_core::backend::BackendStorage;
use num_traits::Float;
use rayon::prelude::*;

use super::{c, contig, dot, read, storage, Flt, SendPtr};

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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::{check_grad, randn};
    use candle_core::{Device, Var, D};

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
}
