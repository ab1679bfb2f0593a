//! `silu(gate) * up`, elementwise; the backward gives the gradients of gate and up.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use candle_core::backend::BackendStorage;
use rayon::prelude::*;

use super::{contig, read, storage, Flt};

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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::{check_grad, randn};

    #[test]
    fn silu_mul_grad() {
        let g = randn(&[4, 9], 1);
        let u = randn(&[4, 9], 2);
        check_grad(&[g, u], &|t| silu_mul(&t[0], &t[1]).unwrap());
    }
}
