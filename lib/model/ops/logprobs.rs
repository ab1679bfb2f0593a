//! Log-prob of the target token, entropy and logsumexp of softmax(logits / temperature) in one
//! pass over the vocabulary; the backward reuses the stored logsumexp and entropy.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use candle_core::backend::BackendStorage;
use num_traits::Float;
use rayon::prelude::*;

use super::{c, contig, f, read, storage, Flt};

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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::{check_grad, randn};
    use candle_core::{Device, D};

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
