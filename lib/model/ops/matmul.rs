//! `x W^T` for a few rows of x (decoding), without a graph and so without a backward: W
//! streamed once through AVX-512 (or AVX2/FMA) dot products summed in a fixed order, so that a
//! row's bits do not depend on its batch.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use candle_core::backend::BackendStorage;
use rayon::prelude::*;

use super::{contig, dot, storage, Flt, SendPtr};

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
    use candle_core::Device;

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
}
