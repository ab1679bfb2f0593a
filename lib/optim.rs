//! AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias correction), in place on
//! f32 buffers, with gradient-norm clipping and a safetensors checkpoint of its moments so that a
//! later step continues exactly (REFERENCE.md §3 for the head, §6 for the policy).
//!
//! ```text
//! p <- p * (1 - lr * wd)
//! m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//! p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//! Per element in f64, stored as f32.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};

/// AdamW's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl AdamWConfig {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamWConfig { lr, weight_decay, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// AdamW's per-step constants at step `t` (1-based).
#[derive(Clone, Copy)]
struct StepConsts {
    b1: f64,
    b2: f64,
    eps: f64,
    bc2_sqrt: f64,
    step_size: f64,
    decay: f64,
    scale: f64,
}

impl StepConsts {
    fn new(t: u64, scale: f64, hp: &AdamWConfig) -> Self {
        let t = t as i32;
        StepConsts {
            b1: hp.beta1,
            b2: hp.beta2,
            eps: hp.eps,
            bc2_sqrt: (1.0 - hp.beta2.powi(t)).sqrt(),
            step_size: hp.lr / (1.0 - hp.beta1.powi(t)),
            decay: 1.0 - hp.lr * hp.weight_decay,
            scale,
        }
    }

    /// One element: updates the moments in place and returns the new value.
    #[inline]
    fn apply(&self, p: f32, g: f32, m: &mut f32, v: &mut f32) -> f32 {
        let g = f64::from(g) * self.scale;
        let mk = self.b1 * f64::from(*m) + (1.0 - self.b1) * g;
        let vk = self.b2 * f64::from(*v) + (1.0 - self.b2) * g * g;
        let w = f64::from(p) * self.decay;
        *m = mk as f32;
        *v = vk as f32;
        (w - self.step_size * mk / (vk.sqrt() / self.bc2_sqrt + self.eps)) as f32
    }
}

/// One AdamW update of `value` at step `t` (1-based) with gradient `grad` scaled by `scale`.
pub fn adamw_update(value: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], t: u64, scale: f64, hp: &AdamWConfig) {
    assert!(value.len() == grad.len() && m.len() == grad.len() && v.len() == grad.len());
    let c = StepConsts::new(t, scale, hp);
    for k in 0..grad.len() {
        value[k] = c.apply(value[k], grad[k], &mut m[k], &mut v[k]);
    }
}

/// Elements per rayon task of the optimizer's loops (a few hundred KB of each buffer).
const PAR_CHUNK: usize = 1 << 16;

/// Runs `f` over the contiguous f32 data of a CPU tensor without copying it; None for other
/// devices, dtypes or layouts.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { return None };
    let (start, end) = layout.contiguous_offsets()?;
    Some(f(&cpu.as_slice::<f32>().ok()?[start..end]))
}

/// What one optimiser step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradient before clipping (`actor/grad_norm`).
    pub grad_norm: f64,
    /// The factor the gradient was multiplied by (1 when not clipped).
    pub clip_scale: f64,
    /// The gradient norm was not finite: nothing changed, not even the step count (verl's
    /// `_optimizer_step` skips such a step the same way).
    pub skipped: bool,
}

pub use crate::model::train::{collect_grads, Grads};

/// AdamW over named trainable tensors (the policy's `Var`s).
///
/// Mixed precision: when the model computes in bf16 or f16, [`keep_masters`](Self::keep_masters)
/// gives the optimiser an f32 master copy of each weight (read in host memory, moved to the
/// weights' device on the first step unless `offload`). AdamW then reads and
/// writes the master (weight decay and the clip act on it), and the weight the model computes
/// with is the master rounded to its dtype after each step. Without masters an update of 1e-6
/// to a bf16 weight above ~5e-4 rounds away (8 significant bits) and the policy never moves.
/// The moments are f32 in every case. Save the masters (`--save-dtype f32`) and a resumed run
/// continues bit for bit.
#[derive(Debug, Clone, Default)]
pub struct Optimizer {
    /// Steps taken so far.
    pub step: u64,
    /// name -> (exp_avg, exp_avg_sq)
    state: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    /// name -> f32 master weights (host memory), for vars held in a narrower dtype.
    masters: BTreeMap<String, Vec<f32>>,
    /// Off the CPU (and unless `offload`): the moments and the f32 masters as tensors where the
    /// weights live, AdamW as tensor ops (no host round trip). Brought back to the host by
    /// [`sync_to_host`](Self::sync_to_host) before saving.
    device_state: BTreeMap<String, (Tensor, Tensor)>,
    device_masters: BTreeMap<String, Tensor>,
    /// Keep masters and moments in host memory and step them on the host's cores, uploading the
    /// new weights (DeepSpeed's ZeRO-Offload; `--offload-optimizer`).
    pub offload: bool,
    /// Where AdamW runs: None decides by the weights' device (tensor ops off the CPU, or on the
    /// CPU under the composed-ops switch); Some(true) forces the tensor ops (tests).
    pub tensor_math: Option<bool>,
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Optimizer {
    /// Keeps an f32 master copy of each named weight (read from the checkpoint in f32, not
    /// from the rounded model weights).
    pub fn keep_masters(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in weights {
            self.masters.insert(name.clone(), to_f32_vec(t)?);
        }
        Ok(())
    }

    /// The weights to save: the f32 masters where they are kept, else the vars themselves.
    pub fn weights_to_save(&self, vars: &[(String, Var)]) -> Result<Vec<(String, Tensor)>> {
        vars.iter()
            .map(|(name, var)| {
                let t = var.as_tensor();
                Ok((name.clone(), match self.masters.get(name) {
                    Some(m) => Tensor::from_slice(m, t.shape(), &candle_core::Device::Cpu)?,
                    None => t.clone(),
                }))
            })
            .collect()
    }

    /// Global L2 norm of the gradients (missing gradients count as zero).
    pub fn grad_norm(grads: &Grads) -> Result<f64> {
        use rayon::prelude::*;
        let sum_sq = |xs: &[f32]| -> f64 {
            xs.par_chunks(PAR_CHUNK).map(|c| c.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>()).sum()
        };
        let mut sq = 0f64;
        for g in grads.values() {
            sq += match with_cpu_f32(g, sum_sq) {
                Some(s) => s,
                None => sum_sq(&to_f32_vec(g)?),
            };
        }
        Ok(sq.sqrt())
    }

    /// One step: clip the global gradient norm to `max_norm` (torch's clip_grad_norm_: scale by
    /// max_norm / (norm + 1e-6) when that is below 1), then AdamW every var that has a gradient.
    /// A non-finite gradient norm skips the step: weights, moments and step count unchanged.
    pub fn step(&mut self, vars: &[(String, Var)], grads: &Grads, max_norm: Option<f64>, hp: &AdamWConfig) -> Result<StepStats> {
        let grad_norm = Self::grad_norm(grads)?;
        if !grad_norm.is_finite() {
            return Ok(StepStats { grad_norm, clip_scale: 0.0, skipped: true });
        }
        let clip_scale = match max_norm {
            Some(c) => (c / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        self.step += 1;
        let c = StepConsts::new(self.step, clip_scale, hp);
        for (name, var) in vars {
            let Some(g) = grads.get(name) else { continue };
            if self.use_tensor_math(var.as_tensor()) {
                self.step_as_tensors(name, var, g, &c)?;
                continue;
            }
            let p = var.as_tensor();
            let n = p.elem_count();
            let (m, v) = self.state.entry(name.clone()).or_insert_with(|| (vec![0.0; n], vec![0.0; n]));
            if m.len() != n || v.len() != n || g.elem_count() != n {
                return Err(Error::Other(format!("{name}: {n} weights, {} gradients, {} optimizer moments", g.elem_count(), m.len())));
            }
            if let Some(master) = self.masters.get_mut(name) {
                // Mixed precision: AdamW on the f32 master, then the model's copy rounded from it.
                if master.len() != n {
                    return Err(Error::Other(format!("{name}: {n} weights, {} master weights", master.len())));
                }
                let gs = to_f32_vec(g)?;
                use rayon::prelude::*;
                master
                    .par_chunks_mut(PAR_CHUNK)
                    .zip(gs.par_chunks(PAR_CHUNK))
                    .zip(m.par_chunks_mut(PAR_CHUNK).zip(v.par_chunks_mut(PAR_CHUNK)))
                    .for_each(|((ws, gs), (ms, vs))| {
                        for k in 0..ws.len() {
                            ws[k] = c.apply(ws[k], gs[k], &mut ms[k], &mut vs[k]);
                        }
                    });
                var.set(&Tensor::from_slice(master, p.shape(), p.device())?.to_dtype(p.dtype())?)?;
                continue;
            }
            // CPU f32: read the weights and the gradient where they are and write the new
            // weights once, in parallel chunks (the same arithmetic as `adamw_update`).
            let fast = with_cpu_f32(g, |gs| {
                with_cpu_f32(p, |ps| {
                    use rayon::prelude::*;
                    let mut out = vec![0f32; n];
                    out.par_chunks_mut(PAR_CHUNK)
                        .zip(ps.par_chunks(PAR_CHUNK))
                        .zip(gs.par_chunks(PAR_CHUNK))
                        .zip(m.par_chunks_mut(PAR_CHUNK).zip(v.par_chunks_mut(PAR_CHUNK)))
                        .for_each(|(((o, ps), gs), (ms, vs))| {
                            for k in 0..o.len() {
                                o[k] = c.apply(ps[k], gs[k], &mut ms[k], &mut vs[k]);
                            }
                        });
                    out
                })
            })
            .flatten();
            let value = match fast {
                Some(out) => out,
                None => {
                    let mut value = to_f32_vec(p)?;
                    adamw_update(&mut value, &to_f32_vec(g)?, m, v, self.step, clip_scale, hp);
                    value
                }
            };
            var.set(&Tensor::from_vec(value, p.shape(), p.device())?.to_dtype(p.dtype())?)?;
        }
        Ok(StepStats { grad_norm, clip_scale, skipped: false })
    }

    fn use_tensor_math(&self, p: &Tensor) -> bool {
        !self.offload && self.tensor_math.unwrap_or_else(|| !p.device().is_cpu() || crate::model::composed())
    }

    /// AdamW as tensor ops where the weight lives, in f32 (the arithmetic of
    /// [`StepConsts::apply`], in f32 instead of f64): the moments, and the f32 master of a weight
    /// held in a narrower dtype, stay on its device.
    fn step_as_tensors(&mut self, name: &str, var: &Var, g: &Tensor, c: &StepConsts) -> Result<()> {
        let p = var.as_tensor();
        let (dev, shape) = (p.device().clone(), p.shape().clone());
        if g.elem_count() != p.elem_count() {
            return Err(Error::Other(format!("{name}: {} weights, {} gradients", p.elem_count(), g.elem_count())));
        }
        if !self.device_state.contains_key(name) {
            let mv = match self.state.remove(name) {
                Some((m, v)) if m.len() == p.elem_count() => (Tensor::from_vec(m, &shape, &dev)?, Tensor::from_vec(v, &shape, &dev)?),
                Some((m, _)) => return Err(Error::Other(format!("{name}: {} weights, {} optimizer moments", p.elem_count(), m.len()))),
                None => (Tensor::zeros(&shape, DType::F32, &dev)?, Tensor::zeros(&shape, DType::F32, &dev)?),
            };
            self.device_state.insert(name.to_string(), mv);
        }
        let narrow = p.dtype() != DType::F32;
        if narrow && !self.device_masters.contains_key(name) {
            let master = match self.masters.remove(name) {
                Some(w) => Tensor::from_vec(w, &shape, &dev)?,
                None => p.to_dtype(DType::F32)?,
            };
            self.device_masters.insert(name.to_string(), master);
        }
        let g = (g.to_dtype(DType::F32)? * c.scale)?;
        let (m, v) = self.device_state.get(name).expect("inserted above");
        // m <- b1 m + (1 - b1) g ; v <- b2 v + (1 - b2) g^2
        let m = ((m * c.b1)? + (&g * (1.0 - c.b1))?)?;
        let v = ((v * c.b2)? + (g.sqr()? * (1.0 - c.b2))?)?;
        let w = match self.device_masters.get(name) {
            Some(w) => w.clone(),
            None => p.to_dtype(DType::F32)?,
        };
        // p <- p (1 - lr wd) - step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps)
        let denom = ((v.sqrt()? / c.bc2_sqrt)? + c.eps)?;
        let w = ((w * c.decay)? - ((&m / &denom)? * c.step_size)?)?;
        var.set(&w.to_dtype(p.dtype())?)?;
        if narrow {
            self.device_masters.insert(name.to_string(), w);
        }
        self.device_state.insert(name.to_string(), (m, v));
        Ok(())
    }

    /// Brings the device moments and masters back to host memory (before saving them).
    pub fn sync_to_host(&mut self) -> Result<()> {
        for (name, (m, v)) in std::mem::take(&mut self.device_state) {
            self.state.insert(name, (to_f32_vec(&m)?, to_f32_vec(&v)?));
        }
        for (name, w) in std::mem::take(&mut self.device_masters) {
            self.masters.insert(name, to_f32_vec(&w)?);
        }
        Ok(())
    }

    /// Save the moments as `{name}.exp_avg` / `{name}.exp_avg_sq` and the step in the metadata.
    pub fn save(&self, path: &Path, shapes: &HashMap<String, Vec<usize>>) -> Result<()> {
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, (m, v)) in &self.state {
            crate::checkpoint::ensure_finite("optimizer moment", &format!("{name}.exp_avg"), m, self.step)?;
            crate::checkpoint::ensure_finite("optimizer moment", &format!("{name}.exp_avg_sq"), v, self.step)?;
            let shape = shapes.get(name).cloned().unwrap_or_else(|| vec![m.len()]);
            for (suffix, data) in [("exp_avg", m), ("exp_avg_sq", v)] {
                bufs.push((format!("{name}.{suffix}"), shape.clone(), data.iter().flat_map(|x| x.to_le_bytes()).collect()));
            }
        }
        let views: Vec<(String, TensorView)> = bufs
            .iter()
            .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::Other(e.to_string()))?)))
            .collect::<Result<_>>()?;
        let meta = BTreeMap::from([("step".to_string(), self.step.to_string()), ("format".to_string(), "pt".to_string())]);
        crate::checkpoint::write_safetensors(path, views, &meta)
    }

    /// Load what [`save`](Self::save) wrote.
    pub fn load(path: &Path) -> Result<Optimizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: String| Error::Other(format!("{}: not an optimizer checkpoint ({e})", path.display()));
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let step = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("step"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no step in the metadata".into()))?;
        let mut state: BTreeMap<String, (Vec<f32>, Vec<f32>)> = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if let Some(p) = name.strip_suffix(".exp_avg_sq") {
                state.entry(p.to_string()).or_default().1 = data;
            } else if let Some(p) = name.strip_suffix(".exp_avg") {
                state.entry(p.to_string()).or_default().0 = data;
            }
        }
        Ok(Optimizer { step, state, ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_matches_torch_by_hand() {
        // torch.optim.AdamW(lr=0.1, weight_decay=0.01), p = 1.0, g = 0.5, step 1:
        // p = 1 * (1 - 0.001) = 0.999; m = 0.05, v = 0.00025; m_hat = 0.5, sqrt(v_hat) = 0.5
        // p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899 (to 1e-7).
        let hp = AdamWConfig::new(0.1, 0.01);
        let (mut p, mut m, mut v) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
        adamw_update(&mut p, &[0.5], &mut m, &mut v, 1, 1.0, &hp);
        assert!((p[0] - 0.899).abs() < 1e-6, "{}", p[0]);
        // Step 2 with g = -0.5: m = 0.9*0.05 - 0.05 = -0.005, v = 0.999*0.00025 + 0.00025 = 0.00049975
        // m_hat = -0.005 / 0.19 = -0.0263158, v_hat = 0.00049975 / 0.001999 = 0.25, sqrt 0.5
        // p = 0.899 * 0.999 + 0.1 * 0.0263158 / 0.5 = 0.898101 + 0.00526316 = 0.903364
        adamw_update(&mut p, &[-0.5], &mut m, &mut v, 2, 1.0, &hp);
        assert!((p[0] - 0.903364).abs() < 1e-5, "{}", p[0]);
    }

    #[test]
    fn clipping_save_and_resume_equal_an_uninterrupted_run() {
        let dev = Device::Cpu;
        let hp = AdamWConfig::new(0.05, 0.01);
        let make = || vec![("w".to_string(), Var::from_vec(vec![1.0f32, -2.0, 3.0], 3, &dev).unwrap())];
        let loss_of = |vars: &[(String, Var)]| (vars[0].1.as_tensor().sqr().unwrap().sum_all().unwrap() * 10.0).unwrap();
        // Uninterrupted: three steps.
        let vars = make();
        let mut opt = Optimizer::default();
        let mut norms = vec![];
        let grads = |vars: &[(String, Var)]| {
            let mut acc = Grads::new();
            collect_grads(vars, &loss_of(vars).backward().unwrap(), &mut acc).unwrap();
            acc
        };
        for _ in 0..3 {
            norms.push(opt.step(&vars, &grads(&vars), Some(1.0), &hp).unwrap());
        }
        // grad = 20 w = (20, -40, 60): norm = 20 * sqrt(14) = 74.83; clipped to 1.
        assert!((norms[0].grad_norm - 20.0 * 14f64.sqrt()).abs() < 1e-3);
        assert!((norms[0].clip_scale - 1.0 / (20.0 * 14f64.sqrt() + 1e-6)).abs() < 1e-9);
        let expect = vars[0].1.as_tensor().to_vec1::<f32>().unwrap();
        // Interrupted after one step, saved, loaded.
        let dir = tempfile::tempdir().unwrap();
        let vars = make();
        let mut opt = Optimizer::default();
        opt.step(&vars, &grads(&vars), Some(1.0), &hp).unwrap();
        let shapes = HashMap::from([("w".to_string(), vec![3])]);
        opt.save(&dir.path().join("opt.safetensors"), &shapes).unwrap();
        let mut opt = Optimizer::load(&dir.path().join("opt.safetensors")).unwrap();
        assert_eq!(opt.step, 1);
        for _ in 0..2 {
            opt.step(&vars, &grads(&vars), Some(1.0), &hp).unwrap();
        }
        assert_eq!(vars[0].1.as_tensor().to_vec1::<f32>().unwrap(), expect);
    }

    /// AdamW as tensor ops (the device path) against the host path, f32 and bf16 with f32
    /// masters, three clipped steps from the same gradients: the same weights, moments and
    /// masters to f32 rounding.
    #[test]
    fn tensor_adamw_equals_the_host_adamw() {
        let dev = Device::Cpu;
        let hp = AdamWConfig::new(0.01, 0.1);
        for dtype in [DType::F32, DType::BF16] {
            let init: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let make = || vec![("w".to_string(), Var::from_tensor(&Tensor::from_vec(init.clone(), (8, 8), &dev).unwrap().to_dtype(dtype).unwrap()).unwrap())];
            let (va, vb) = (make(), make());
            let (mut host, mut tens) = (Optimizer::default(), Optimizer { tensor_math: Some(true), ..Default::default() });
            if dtype != DType::F32 {
                let w = vec![("w".to_string(), Tensor::from_vec(init.clone(), (8, 8), &dev).unwrap())];
                host.keep_masters(&w).unwrap();
                tens.keep_masters(&w).unwrap();
            }
            for k in 0..3 {
                let g: Vec<f32> = (0..64).map(|i| ((i * 13 + k * 7) % 17) as f32 - 8.0).collect();
                let grads = Grads::from([("w".to_string(), Tensor::from_vec(g, (8, 8), &dev).unwrap())]);
                let (a, b) = (host.step(&va, &grads, Some(5.0), &hp).unwrap(), tens.step(&vb, &grads, Some(5.0), &hp).unwrap());
                assert_eq!(a, b);
            }
            assert!(!tens.device_state.is_empty(), "the tensor path ran");
            tens.sync_to_host().unwrap();
            let close = |x: &[f32], y: &[f32], what: &str| {
                for (p, q) in x.iter().zip(y) {
                    assert!((p - q).abs() <= 2e-6 * p.abs().max(1e-3), "{dtype:?} {what}: {p} vs {q}");
                }
            };
            close(&host.state["w"].0, &tens.state["w"].0, "exp_avg");
            close(&host.state["w"].1, &tens.state["w"].1, "exp_avg_sq");
            let (wa, wb) = (host.weights_to_save(&va).unwrap(), tens.weights_to_save(&vb).unwrap());
            close(&to_f32_vec(&wa[0].1).unwrap(), &to_f32_vec(&wb[0].1).unwrap(), "weights");
        }
    }

    #[test]
    fn a_nan_gradient_skips_the_step_and_nothing_changes() {
        let dev = Device::Cpu;
        let vars = vec![("w".to_string(), Var::from_vec(vec![1.0f32, 2.0], 2, &dev).unwrap())];
        let loss = (vars[0].1.as_tensor().log().unwrap() * f64::NAN).unwrap().sum_all().unwrap();
        let mut g = Grads::new();
        collect_grads(&vars, &loss.backward().unwrap(), &mut g).unwrap();
        let mut opt = Optimizer::default();
        let st = opt.step(&vars, &g, Some(1.0), &AdamWConfig::new(0.1, 0.0)).unwrap();
        assert!(st.skipped && st.grad_norm.is_nan());
        assert_eq!(opt.step, 0);
        assert!(opt.state.is_empty(), "no moments were made");
        assert_eq!(vars[0].1.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    }
}
