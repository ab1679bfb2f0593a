//! Rotate-half rotary embedding of a (B, T, H, hd) tensor with per-row tables; the backward
//! rotates the gradient by minus the angle.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use candle_core::backend::BackendStorage;
use rayon::prelude::*;

use super::{c, contig, rows_per_task, storage, Flt};

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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::{check_grad, randn};

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
}
