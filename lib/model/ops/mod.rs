//! Fused CPU kernels with hand-written backward passes (candle `CustomOp1/2/3`), for f32 and f64.
//!
//! Each op replaces a chain of a dozen small candle ops (and their temporaries) on the training
//! path and on the no-grad path alike; the maths is the same as the composed version in
//! [`super::transformer`] (which still serves other devices and half precision):
//!
//! - [`rms_norm()`]: `y = (x * rsqrt(mean(x^2) + eps)) * w` (sum of squares accumulated in f64).
//! - [`rope()`]: rotate-half rotary embedding of a (B, T, H, hd) tensor with per-row tables.
//! - [`attention()`]: causal, left-padded, GQA softmax attention of q (B, T, H, hd) against k, v
//!   (B, Tk, Hkv, hd); query i of row b sits at column `past + i` and sees columns
//!   `pad[b] ..= past + i`. Or packed: sequences one after another in one row, no padding
//!   (each token sees its own sequence up to itself). With a window W (Mistral's sliding
//!   window), query column c sees only columns `c + 1 - W ..= c` of those. The probabilities are recomputed in the
//!   backward pass (nothing of size T x Tk is kept). A query with no visible key (a pad
//!   column) outputs zeros.
//! - [`silu_mul()`]: `silu(gate) * up`.
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
//!
//! One kernel per file, each with its forward, its backward and its tests: `rms_norm.rs`,
//! `rope.rs`, `attention.rs`, `silu_mul.rs`, `logprobs.rs`, `matmul.rs`. This file holds what
//! they share (the float trait, contiguous reads of CPU storage, task sizes, the fixed-order dot
//! product), the composed-ops switch and the allocator tuning.

mod attention;
mod logprobs;
mod matmul;
mod rms_norm;
mod rope;
mod silu_mul;

pub(crate) use attention::{attention, AttnRows};
pub(crate) use logprobs::token_logprobs;
pub(crate) use matmul::{matmul_rows, SMALL_M};
// Used only inside `matmul.rs`; kept at `ops::matmul_small_m`, where `transformer.rs`'s docs link it.
#[allow(unused_imports)]
pub(crate) use matmul::matmul_small_m;
pub(crate) use rms_norm::rms_norm;
pub(crate) use rope::{rope, RopeTables};
pub(crate) use silu_mul::silu_mul;

use candle_core::{bail, CpuStorage, DType, Device, Layout, Result, Storage, Tensor, WithDType};
use num_traits::Float;

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

/// What the kernels' tests share: the finite-difference check and random inputs.
#[cfg(test)]
mod testing {
    use candle_core::{Device, Tensor, Var};

    /// Central finite differences of sum(f(x) * coef) against the analytic gradient, in f64.
    pub(super) fn check_grad(inputs: &[Var], f: &dyn Fn(&[Tensor]) -> Tensor) {
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

    pub(super) fn randn(shape: &[usize], seed: u64) -> Var {
        let t = Tensor::randn(0f64, 1.0, shape, &Device::Cpu).unwrap();
        // deterministic enough for the check; seed only varies the scale
        Var::from_tensor(&(t * (0.5 + seed as f64 * 0.1)).unwrap()).unwrap()
    }
}
