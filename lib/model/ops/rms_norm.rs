//! RMSNorm over the last dimension, `y = (x * rsqrt(mean(x^2) + eps)) * w` (sum of squares
//! accumulated in f64); the backward gives dx and dw from x, w and dy alone.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use candle_core::backend::BackendStorage;
use rayon::prelude::*;

use super::{c, contig, f, read, rows_per_task, storage, Flt};

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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::{check_grad, randn};
    use candle_core::D;

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
}
