//! The training pass with bounded memory (issue 16 §3): gradient checkpointing and chunked
//! log-probs, by segments.
//!
//! The plain pass ([`Model::response_logprobs`], then `loss.backward()`) keeps every layer's
//! activations and the (M, V) logits of the micro-batch's M response tokens until the backward.
//! The segmented pass cuts the graph at tensors it holds as leaves and carries the chain rule
//! across each cut itself: a segment y = f(x, W) whose output gradient g = dL/dy is known gets
//! dL/dW and dL/dx from one backward of the surrogate `sum(y * g)`, whose gradient in y is
//! exactly g. The segments, last to first:
//!
//! 1. the loss, over leaves holding the (B, R) log-probs and entropies: g_lp, g_ent;
//! 2. the head, C response tokens at a time: logits (C, V) = h W_head^T, log-prob and entropy
//!    (REFERENCE.md §6 under the sampling temperature), surrogate `sum(lp g_lp + ent g_ent)` ->
//!    dW_head and dh (C, d). No (M, V) tensor exists, forward or backward;
//! 3. the final norm and the gather of the rows that predict response tokens -> g at the last
//!    layer's output;
//! 4. with checkpointing, each layer from its saved input (recomputed: one more forward per
//!    layer, as torch's activation checkpointing), else the layers' graph kept from the forward;
//! 5. the embedding.
//!
//! Memory with checkpointing: the L layer inputs (N, d), one layer's graph and one head chunk's,
//! instead of every layer's graph and the whole head's. The values (log-probs, entropies,
//! hidden states) are the plain pass's bit for bit when one chunk covers the micro-batch (the
//! same ops on the same inputs); the gradients equal the plain backward's up to summation order
//! (tests/model_grad.rs).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use super::score::{check_temperature, mean_response_hidden, token_logprobs, Layout, Scored, Sequence};
use super::transformer::{Model, Packed};
use super::Result;

/// Logits held at once by a chunked head when no chunk is given: 2^25 elements (128 MiB in
/// f32), e.g. 682 tokens of a 49,152-token vocabulary, 220 of Qwen2.5's 151,936.
pub const LOGIT_CHUNK_ELEMS: usize = 1 << 25;

/// Gradients by parameter name, in name order (so the norm sums in one order every run).
pub type Grads = BTreeMap<String, Tensor>;

/// The gradients of `vars` in a backward pass, by name, added (in f32) to what `acc` holds:
/// micro-batches whose losses share the mini-batch's normalisers add up to its gradient, and
/// the segments of one pass add up to the plain backward's.
pub fn collect_grads(vars: &[(String, Var)], store: &GradStore, acc: &mut Grads) -> candle_core::Result<()> {
    collect_grads_on(vars, store, acc, None)
}

/// [`collect_grads`], the sums kept on `device` when given (host memory for the offloaded
/// optimizer, as ZeRO-Offload keeps its gradients).
pub fn collect_grads_on(vars: &[(String, Var)], store: &GradStore, acc: &mut Grads, device: Option<&Device>) -> candle_core::Result<()> {
    for (name, var) in vars {
        if let Some(g) = store.get(var.as_tensor()) {
            let g = g.to_dtype(DType::F32)?;
            let g = match device {
                Some(d) => g.to_device(d)?,
                None => g,
            };
            let sum = match acc.remove(name) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            acc.insert(name.clone(), sum);
        }
    }
    Ok(())
}

/// How the training pass spends memory. The default is the plain pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// Keep each decoder layer's input only and recompute the layer in the backward.
    pub grad_checkpoint: bool,
    /// Response tokens per `lm_head` chunk. `None`: the whole micro-batch at once, or with
    /// checkpointing [`LOGIT_CHUNK_ELEMS`] / vocabulary tokens.
    pub logit_chunk: Option<usize>,
    /// Accumulate the f32 gradients in host memory (with the offloaded optimizer).
    #[serde(default)]
    pub host_grads: bool,
}

impl Memory {
    /// Where the gradient sums live: the host with `host_grads`, else with the weights.
    fn grads_device(&self) -> Option<Device> {
        self.host_grads.then_some(Device::Cpu)
    }

    pub fn segmented(&self) -> bool {
        self.grad_checkpoint || self.logit_chunk.is_some()
    }

    /// Response tokens per head chunk for a vocabulary of `v`.
    pub fn chunk_tokens(&self, v: usize) -> Option<usize> {
        match (self.logit_chunk, self.grad_checkpoint) {
            (Some(c), _) => Some(c.max(1)),
            (None, true) => Some((LOGIT_CHUNK_ELEMS / v.max(1)).max(1)),
            (None, false) => None,
        }
    }
}

/// One micro-batch's forward for training: [`Self::scored`] to build the loss from, then
/// [`Self::backward`].
pub struct TrainPass<'a> {
    model: &'a Model,
    memory: Memory,
    /// Log-probs and entropies that carry the loss's gradient (the graph through the weights in
    /// the plain pass, leaves in the segmented one), the mask, `mean` pooled hidden states.
    pub scored: Scored,
    segments: Option<Segments>,
}

/// What the segmented backward needs from the forward.
struct Segments {
    layout: Layout,
    packed: Packed,
    /// With checkpointing: each layer's input, detached (the embedding output first).
    inputs: Vec<Tensor>,
    /// Without checkpointing: the last layer's output with the layers' graph.
    body: Option<Tensor>,
    /// The last layer's output as a leaf.
    top: Var,
    /// (M, d) final-norm hidden states of the rows that predict response tokens, with the
    /// graph to `top` and the norm weight.
    h: Tensor,
    /// Leaves of `scored.logprobs` and `scored.entropy`.
    lp: Var,
    ent: Var,
    chunk: usize,
    temperature: f64,
}

impl Model {
    /// The training forward of one micro-batch under `memory` (the plain pass by default).
    pub fn train_pass(&self, seqs: &[Sequence], temperature: f64, memory: Memory) -> Result<TrainPass<'_>> {
        let Some(chunk) = memory.chunk_tokens(self.config().vocab_size) else {
            let scored = self.response_logprobs(seqs, temperature)?;
            return Ok(TrainPass { model: self, memory, scored, segments: None });
        };
        check_temperature(temperature)?;
        let layout = Layout::new(seqs, self.device())?;
        if layout.r == 0 {
            let scored = self.empty_scored(&layout, seqs.len())?;
            return Ok(TrainPass { model: self, memory, scored, segments: None });
        }
        let packed = self.packed_graph(&layout.packed, &layout.seq_lens)?;
        // The layers: with checkpointing each layer's graph is dropped as soon as its output
        // is taken (detached), and its input kept for the backward.
        let (mut inputs, mut body) = (vec![], None);
        let mut x = self.embed_graph(&packed)?;
        for i in 0..self.num_layers() {
            if memory.grad_checkpoint {
                let y = self.layer_graph(i, &x.detach(), &packed)?.detach();
                inputs.push(x.detach());
                x = y;
            } else {
                x = self.layer_graph(i, &x, &packed)?;
            }
        }
        if !memory.grad_checkpoint {
            body = Some(x.clone());
        }
        let top = Var::from_tensor(&x.detach())?;
        let hidden = self.final_norm_graph(top.as_tensor(), &packed)?; // (N, d)
        let mean_hidden = mean_response_hidden(&hidden, &layout)?;
        let h = hidden.index_select(&layout.pred, 0)?; // (M, d)
        // The values, a chunk of C tokens at a time: logits (C, V), then log-prob and entropy.
        let hd = h.detach();
        let m = hd.dim(0)?;
        let (mut lps, mut ents) = (vec![], vec![]);
        for start in (0..m).step_by(chunk) {
            let len = chunk.min(m - start);
            let logits = self.lm_head(&hd.narrow(0, start, len)?)?;
            let (a, e) = token_logprobs(&logits, &layout.targets.narrow(0, start, len)?, temperature)?;
            lps.push(a.detach());
            ents.push(e.detach());
        }
        let lp = Var::from_tensor(&layout.unpack(&Tensor::cat(&lps, 0)?)?)?; // (B, R)
        let ent = Var::from_tensor(&layout.unpack(&Tensor::cat(&ents, 0)?)?)?;
        let scored = Scored {
            logprobs: lp.as_tensor().clone(),
            entropy: ent.as_tensor().clone(),
            mask: layout.mask.clone(),
            mean_hidden,
            lens: layout.lens.clone(),
        };
        let segments = Segments { layout, packed, inputs, body, top, h, lp, ent, chunk, temperature };
        Ok(TrainPass { model: self, memory, scored, segments: Some(segments) })
    }
}

impl TrainPass<'_> {
    /// Each row's log-probs, trimmed to its response (detached).
    pub fn logprobs_rows(&self) -> Result<Vec<Vec<f32>>> {
        (0..self.scored.lens.len()).map(|b| self.scored.logprobs_row(b)).collect()
    }

    /// The backward of `loss` (built from [`Self::scored`]): the weights' gradients added to
    /// `grads` by name.
    pub fn backward(self, loss: &Tensor, grads: &mut Grads) -> Result<()> {
        let vars = self.model.vars();
        let on = self.memory.grads_device();
        let add = |st: &GradStore, grads: &mut Grads| collect_grads_on(&vars, st, grads, on.as_ref());
        let Some(s) = self.segments else {
            add(&loss.backward()?, grads)?;
            return Ok(());
        };
        let model = self.model;
        // 1. The loss: its gradient in each response token's log-prob and entropy, (M,).
        let store = loss.backward()?;
        let per_token = |v: &Var| -> Result<Option<Tensor>> {
            Ok(match store.get(v.as_tensor()) {
                Some(g) => Some(g.flatten_all()?.index_select(&s.layout.flat, 0)?),
                None => None,
            })
        };
        let (g_lp, g_ent) = (per_token(&s.lp)?, per_token(&s.ent)?);
        drop(store);
        if g_lp.is_none() && g_ent.is_none() {
            return Ok(()); // the loss does not depend on the policy
        }
        // 2. The head, a chunk at a time: dW_head added, dh (M, d) gathered.
        let hd = s.h.detach();
        let m = hd.dim(0)?;
        let mut dh = Vec::with_capacity(m.div_ceil(s.chunk));
        for start in (0..m).step_by(s.chunk) {
            let len = s.chunk.min(m - start);
            let hc = Var::from_tensor(&hd.narrow(0, start, len)?)?;
            let logits = model.lm_head(hc.as_tensor())?;
            let (a, e) = token_logprobs(&logits, &s.layout.targets.narrow(0, start, len)?, s.temperature)?;
            let mut terms = vec![];
            if let Some(g) = &g_lp {
                terms.push((a * g.narrow(0, start, len)?)?.sum_all()?.to_dtype(DType::F32)?);
            }
            if let Some(g) = &g_ent {
                terms.push((e * g.narrow(0, start, len)?)?.sum_all()?.to_dtype(DType::F32)?);
            }
            let surrogate = terms.into_iter().reduce(|x, y| (x + y).expect("scalars")).expect("a term");
            let st = surrogate.backward()?;
            add(&st, grads)?;
            dh.push(match st.get(hc.as_tensor()) {
                Some(g) => g.clone(),
                None => hd.narrow(0, start, len)?.zeros_like()?,
            });
        }
        // 3. The final norm and the gather: the gradient at the last layer's output.
        let st = (&s.h * Tensor::cat(&dh, 0)?)?.sum_all()?.backward()?;
        add(&st, grads)?;
        let Some(mut g) = st.get(s.top.as_tensor()).cloned() else {
            return Ok(());
        };
        drop(st);
        // 4. The layers, last to first, and 5. the embedding.
        match s.body {
            Some(body) => add(&(body * g)?.sum_all()?.backward()?, grads)?,
            None => {
                let mut inputs = s.inputs;
                for i in (0..inputs.len()).rev() {
                    let x = Var::from_tensor(&inputs.pop().expect("one input per layer"))?;
                    let y = model.layer_graph(i, x.as_tensor(), &s.packed)?;
                    let st = (y * &g)?.sum_all()?.backward()?;
                    add(&st, grads)?;
                    g = match st.get(x.as_tensor()) {
                        Some(gx) => gx.clone(),
                        None => return Ok(()),
                    };
                }
                let x0 = model.embed_graph(&s.packed)?;
                add(&(x0 * g)?.sum_all()?.backward()?, grads)?;
            }
        }
        Ok(())
    }
}
