//! Sampling where the logits are: temperature, top-k, top-p, min-p and the draw as candle ops
//! on the device (CUDA; on the CPU the composed path's twin, `CLIPO_COMPOSED=1`), so only the
//! chosen token and its two log-probs cross to the host each step (n x 3 numbers instead of
//! n x V logits). The host sampler ([`super::sample`]) is the reference: the same kept set and
//! the same inverse-CDF draw in index order with the row's uniform `u`, in f64 on both sides;
//! they differ by the rounding of the sums (a draw that lands within ~1e-12 of a boundary).
//!
//! No sort (candle's CUDA sort holds a row in shared memory, too small for a vocabulary):
//! - top-k keeps z >= tau, tau the k-th largest z (ties kept, as transformers' and vLLM's
//!   top-k), found by bisection on the count #{z >= x} >= k;
//! - top-p keeps z >= x0, x0 the smallest value with M(x0) = sum_{z_j > x0} w_j / K < top_p
//!   over the top-k set (K its mass), found by bisection on M (non-increasing in x);
//! - min-p keeps w >= min_p, w = exp(z - max) = p / p_max;
//! - the draw: the first kept token (index order) whose inclusive cumulative weight exceeds
//!   u * (kept mass), the cumulative sum computed blockwise by two small triangular matmuls.
//!
//! Bisection runs [`ITERS`] halvings of the logit range (~100): the threshold is found to
//! ~1e-13, below any gap between distinct f32 logits that matters.

use candle_core::{DType, Tensor, D};

use super::sample::{Choice, SampleParams};
use super::Result;

/// Halvings of each bisection.
const ITERS: usize = 52;
/// Block width of the cumulative sum: (n*V/BLK, BLK) x (BLK, BLK), then (n, V/BLK) x (V/BLK,
/// V/BLK).
const BLK: usize = 128;

/// Chooses a token for each row of `logits` (n, V) with the rows' uniforms `us` (ignored when
/// greedy): the token, its log-prob under softmax(logits / T) and its behaviour log-prob
/// (under the truncated, renormalised distribution; 0 greedy).
pub(crate) fn choose(logits: &Tensor, us: &[f64], params: &SampleParams) -> Result<Vec<Choice>> {
    let (n, v) = logits.dims2()?;
    let dev = logits.device();
    let z = (logits.to_dtype(DType::F64)? * (1.0 / params.temperature))?; // (n, V)
    let max = z.max_keepdim(1)?; // (n, 1)
    let w = z.broadcast_sub(&max)?.exp()?; // (n, V) = exp(z - max)
    let lse = (&max + w.sum_keepdim(1)?.log()?)?; // (n, 1)
    let (token, behavior) = if params.greedy {
        (z.argmax_keepdim(1)?, None)
    } else {
        let keep = if params.truncates() { Some(keep_mask(&z, &w, params)?) } else { None };
        let wm = match &keep {
            Some(k) => (&w * k)?,
            None => w.clone(),
        };
        let kept = wm.sum_keepdim(1)?; // (n, 1)
        let u = Tensor::from_slice(us, (n, 1), dev)?;
        let target = (u * &kept)?;
        // The first index whose inclusive cumulative weight exceeds the target = how many do not.
        let cum = cumsum(&wm)?;
        let count = cum.broadcast_le(&target)?.to_dtype(DType::F64)?.sum_keepdim(1)?;
        // Rounding past the end: the last kept token (as the host's `inverse_cdf`).
        let index = Tensor::arange(0f64, v as f64, dev)?.unsqueeze(0)?; // (1, V)
        let positive = wm.gt(0f64)?.to_dtype(DType::F64)?;
        let last = positive.broadcast_mul(&index)?.max_keepdim(1)?;
        let token = count.minimum(&last)?.to_dtype(DType::U32)?;
        (token, Some(kept))
    };
    let zt = z.gather(&token, 1)?; // (n, 1)
    let logprob = (&zt - &lse)?;
    let behavior = match behavior {
        None => zt.zeros_like()?,
        Some(kept) => ((&zt - &max)? - kept.log()?)?,
    };
    let tokens: Vec<u32> = token.flatten_all()?.to_vec1()?;
    let lp: Vec<f64> = logprob.flatten_all()?.to_vec1()?;
    let beh: Vec<f64> = behavior.flatten_all()?.to_vec1()?;
    Ok((0..n).map(|i| Choice { token: tokens[i], logprob: lp[i] as f32, behavior: beh[i] as f32 }).collect())
}

/// 1 for the tokens kept by top-k, then top-p over the top-k set, then min-p; 0 elsewhere.
/// z, w: (n, V) f64.
fn keep_mask(z: &Tensor, w: &Tensor, params: &SampleParams) -> Result<Tensor> {
    let (n, v) = z.dims2()?;
    let lo0 = (z.min_keepdim(1)? - 1.0)?; // (n, 1): below every z
    let hi0 = (z.max_keepdim(1)? + 1.0)?; // above every z
    let mut keep = Tensor::ones((n, v), DType::F64, z.device())?;
    if params.top_k > 0 && params.top_k < v {
        // Largest x with #{z >= x} >= k: count(lo) >= k > count(hi).
        let k = params.top_k as f64;
        let (mut lo, mut hi) = (lo0.clone(), hi0.clone());
        for _ in 0..ITERS {
            let mid = ((&lo + &hi)? * 0.5)?;
            let count = z.broadcast_ge(&mid)?.to_dtype(DType::F64)?.sum_keepdim(1)?;
            let ok = count.ge(k)?;
            lo = ok.where_cond(&mid, &lo)?;
            hi = ok.where_cond(&hi, &mid)?;
        }
        keep = z.broadcast_ge(&lo)?.to_dtype(DType::F64)?;
    }
    if params.top_p < 1.0 {
        // Smallest x with M(x) < top_p, M(x) = sum_{z_j > x} w_j / K over the top-k set:
        // M(lo) >= top_p > M(hi); keep z > lo.
        let wk = (w * &keep)?;
        let total = wk.sum_keepdim(1)?;
        let (mut lo, mut hi) = (lo0.clone(), hi0.clone());
        for _ in 0..ITERS {
            let mid = ((&lo + &hi)? * 0.5)?;
            let mass = (z.broadcast_gt(&mid)?.to_dtype(DType::F64)? * &wk)?.sum_keepdim(1)?.div(&total)?;
            let ok = mass.ge(params.top_p)?;
            lo = ok.where_cond(&mid, &lo)?;
            hi = ok.where_cond(&hi, &mid)?;
        }
        keep = (keep * z.broadcast_gt(&lo)?.to_dtype(DType::F64)?)?;
    }
    if params.min_p > 0.0 {
        keep = (keep * w.ge(params.min_p)?.to_dtype(DType::F64)?)?;
    }
    Ok(keep)
}

/// Inclusive cumulative sum along the last axis of w (n, V), blockwise: within blocks of BLK by
/// an upper-triangular (BLK, BLK) matmul, across blocks by a strictly upper-triangular one.
fn cumsum(w: &Tensor) -> Result<Tensor> {
    let (n, v) = w.dims2()?;
    let nb = v.div_ceil(BLK);
    let dev = w.device();
    let padded = if nb * BLK > v { Tensor::cat(&[w, &Tensor::zeros((n, nb * BLK - v), DType::F64, dev)?], 1)? } else { w.clone() };
    let tri = |m: usize, strict: bool| -> Result<Tensor> {
        // [i][j] = 1 when i <= j (i < j strict): x @ tri sums x[..=j] into column j.
        let data: Vec<f64> = (0..m * m).map(|k| if (k / m) < (k % m) || (!strict && k / m == k % m) { 1.0 } else { 0.0 }).collect();
        Ok(Tensor::from_vec(data, (m, m), dev)?)
    };
    let within = padded.reshape((n * nb, BLK))?.matmul(&tri(BLK, false)?)?.reshape((n, nb, BLK))?;
    let totals = within.narrow(2, BLK - 1, 1)?.squeeze(2)?.contiguous()?; // (n, nb)
    let before = totals.matmul(&tri(nb, true)?)?; // (n, nb): the blocks before each
    let cum = within.broadcast_add(&before.unsqueeze(2)?)?.reshape((n, nb * BLK))?;
    Ok(cum.narrow(D::Minus1, 0, v)?)
}
