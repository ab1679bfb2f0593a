//! Teacher-forced scoring: log-probs (and entropies) of response tokens given their prompts.
//!
//! REFERENCE.md §6 needs `logp_theta` (with a graph, for the loss), `logp_old` and `logp_ref`
//! (without one); §2's `mean` pooling needs the final-norm hidden states of the response tokens.
//! One forward over the packed sequences `prompt_0 response_0 prompt_1 response_1 ...` gives
//! all three, with no padding computed (as verl's `use_remove_padding`).
//!
//! Layout of a batch of B sequences, N tokens, M of them response tokens: response token i of
//! row b sits at packed row `off_b + |prompt_b| + i` and is predicted by the hidden state of the
//! row before it, so `lm_head` runs on those M rows only (never on the rest of the prompt, never
//! on padding). Results come back as (B, R) tensors, R = the longest response, zeros past each
//! row's end.
//!
//! Log-probs are `z[target] - logsumexp(z)` with `z = logits / temperature` (the sampler's
//! distribution before top-p/top-k truncation; see [`super::sample`]); no full log-softmax is
//! materialised. The max inside logsumexp is detached (its gradient cancels exactly).

use candle_core::{DType, Device, Tensor, D};

use super::transformer::Model;
use super::{Error, Result};

/// Logits held at once by the no-grad path.
use super::train::LOGIT_CHUNK_ELEMS;

/// One prompt and its response, as token ids.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub prompt: &'a [u32],
    pub response: &'a [u32],
}

/// Per-token results of a scoring pass over B sequences, R = the longest response.
pub struct Scored {
    /// (B, R) log-prob of each response token under softmax(logits / temperature); 0 past the
    /// end of a row's response. Carries the graph in [`Model::response_logprobs`].
    pub logprobs: Tensor,
    /// (B, R) f32 entropy (nats) of the same distribution at each response position; 0 past the
    /// end of a row. Carries the graph in [`Model::response_logprobs`] (the entropy bonus).
    pub entropy: Tensor,
    /// (B, R) f32: 1 on response tokens, 0 on padding.
    pub mask: Tensor,
    /// (B, d) f32: REFERENCE.md §2 `mean` pooling, the true mean of the final-norm hidden states
    /// over all L response tokens (zeros when L = 0). No graph.
    pub mean_hidden: Tensor,
    /// Response length of each row.
    pub lens: Vec<usize>,
}

impl Scored {
    /// Row b's log-probs, trimmed to its response length.
    pub fn logprobs_row(&self, b: usize) -> Result<Vec<f32>> {
        let row: Vec<f32> = self.logprobs.get(b)?.to_dtype(DType::F32)?.to_vec1()?;
        Ok(row[..self.lens[b]].to_vec())
    }
}

/// Token layout of a batch (see the module doc).
pub(super) struct Layout {
    /// (N,) u32: every row's prompt and response one after another, no padding.
    pub(super) packed: Tensor,
    /// Row b's token count in `packed`: |prompt_b| + |response_b|.
    pub(super) seq_lens: Vec<usize>,
    /// longest response
    pub(super) r: usize,
    /// (M,) u32, M = the number of response tokens: the row of `packed` whose hidden state
    /// predicts each response token (the token before it).
    pub(super) pred: Tensor,
    /// (M,) u32 the response tokens.
    pub(super) targets: Tensor,
    /// (B*R,) u32: for response slot (b, i), its token's row of `packed`, or N (a zero row) past
    /// the end of the response.
    pub(super) resp: Tensor,
    /// (B*R,) u32: for response slot (b, i), its index among the M response tokens, or M (a
    /// zero) past the end of the response.
    pub(super) slot: Tensor,
    /// (M,) u32: each response token's response slot b*R + i (the inverse of `slot`).
    pub(super) flat: Tensor,
    /// (B, R) f32 1/0
    pub(super) mask: Tensor,
    pub(super) lens: Vec<usize>,
}

impl Layout {
    pub(super) fn new(seqs: &[Sequence], device: &Device) -> Result<Self> {
        if seqs.is_empty() {
            return Err(Error::Input("no sequences to score".into()));
        }
        if let Some(i) = seqs.iter().position(|s| s.prompt.is_empty()) {
            return Err(Error::Input(format!("sequence {i} has an empty prompt")));
        }
        let b = seqs.len();
        let r = seqs.iter().map(|s| s.response.len()).max().unwrap();
        let n: usize = seqs.iter().map(|s| s.prompt.len() + s.response.len()).sum();
        let m: usize = seqs.iter().map(|s| s.response.len()).sum();
        let mut packed = Vec::with_capacity(n);
        let (mut pred, mut targets) = (Vec::with_capacity(m), Vec::with_capacity(m));
        let (mut resp, mut slot, mut mask) = (vec![n as u32; b * r], vec![m as u32; b * r], vec![0f32; b * r]);
        let mut flat = Vec::with_capacity(m);
        for (bi, s) in seqs.iter().enumerate() {
            // response token i of row b: at packed row off + pl + i, predicted by the row before
            let (off, pl) = (packed.len(), s.prompt.len());
            for i in 0..s.response.len() {
                resp[bi * r + i] = (off + pl + i) as u32;
                slot[bi * r + i] = pred.len() as u32;
                mask[bi * r + i] = 1.0;
                pred.push((off + pl + i - 1) as u32);
                flat.push((bi * r + i) as u32);
            }
            packed.extend_from_slice(s.prompt);
            packed.extend_from_slice(s.response);
            targets.extend_from_slice(s.response);
        }
        Ok(Self {
            packed: Tensor::from_vec(packed, n, device)?,
            seq_lens: seqs.iter().map(|s| s.prompt.len() + s.response.len()).collect(),
            r,
            pred: Tensor::from_vec(pred, m, device)?,
            targets: Tensor::from_vec(targets, m, device)?,
            resp: Tensor::from_vec(resp, b * r, device)?,
            slot: Tensor::from_vec(slot, b * r, device)?,
            flat: Tensor::from_vec(flat, m, device)?,
            mask: Tensor::from_vec(mask, (b, r), device)?,
            lens: seqs.iter().map(|s| s.response.len()).collect(),
        })
    }

    /// Per-response-token values (M,) -> (B, R), zeros past each row's end (with the graph).
    pub(super) fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let zero = Tensor::zeros(1, x.dtype(), x.device())?;
        let b = self.lens.len();
        Ok(Tensor::cat(&[x, &zero], 0)?.index_select(&self.slot, 0)?.reshape((b, self.r))?)
    }

    /// Packed hidden states (N, d) -> (B, R, d) at the response tokens, zeros past each row's
    /// end. No graph.
    fn response_hidden(&self, hidden: &Tensor) -> Result<Tensor> {
        let d = hidden.dim(1)?;
        let zero = Tensor::zeros((1, d), hidden.dtype(), hidden.device())?;
        let h = Tensor::cat(&[&hidden.detach(), &zero], 0)?.index_select(&self.resp, 0)?;
        Ok(h.reshape((self.lens.len(), self.r, d))?)
    }
}

/// logits (N, V), targets (N,) u32 -> (log-probs (N,), entropy (N,) f32), both with the graph of
/// `logits`. `z = logits / temperature`.
pub(super) fn token_logprobs(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, Tensor)> {
    if super::ops::supported(logits) {
        // One fused pass (f32/f64 on the CPU): [log p, entropy, logsumexp] per row.
        let out = super::ops::token_logprobs(logits, targets, temperature)?;
        let lp = out.narrow(1, 0, 1)?.squeeze(1)?;
        let ent = out.narrow(1, 1, 1)?.squeeze(1)?.to_dtype(DType::F32)?;
        return Ok((lp, ent));
    }
    // Half-precision logits are upcast (differentiably) so the logsumexp runs in f32.
    let logits = match logits.dtype() {
        DType::BF16 | DType::F16 => logits.to_dtype(DType::F32)?,
        _ => logits.clone(),
    };
    let z = if temperature == 1.0 {
        logits
    } else {
        (logits / temperature)?
    };
    let max = z.max_keepdim(D::Minus1)?.detach(); // (N, 1)
    let shifted = z.broadcast_sub(&max)?; // (N, V)
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // (N, 1)
    let target = shifted.gather(&targets.unsqueeze(1)?, D::Minus1)?; // (N, 1)
    let logprobs = (target - &lse)?.squeeze(1)?;
    // H = lse - sum(p * shifted), p = exp(shifted - lse), with the graph (the entropy bonus).
    let p = shifted.broadcast_sub(&lse)?.exp()?;
    let entropy = (lse.squeeze(1)? - (p * shifted)?.sum(D::Minus1)?)?.to_dtype(DType::F32)?;
    Ok((logprobs, entropy))
}

/// Mean over each row's response tokens of packed hidden states (N, d) -> (B, d) f32, no graph.
pub(super) fn mean_response_hidden(hidden: &Tensor, l: &Layout) -> Result<Tensor> {
    let h = l.response_hidden(hidden)?.to_dtype(DType::F32)?; // (B, R, d)
    let denom: Vec<f32> = l.lens.iter().map(|&n| 1.0 / n.max(1) as f32).collect();
    let denom = Tensor::from_vec(denom, (l.lens.len(), 1), hidden.device())?;
    let summed = h.broadcast_mul(&l.mask.unsqueeze(2)?)?.sum(1)?; // (B, d)
    Ok(summed.broadcast_mul(&denom)?)
}

/// REFERENCE.md §2 `official`: sum over response positions 0..L-2 of the packed hidden states
/// (N, d), divided by L -> (B, d) f32, no graph (zeros when L = 0).
fn official_response_hidden(hidden: &Tensor, l: &Layout) -> Result<Tensor> {
    let h = l.response_hidden(hidden)?.to_dtype(DType::F32)?; // (B, R, d)
    let (b, r) = (l.lens.len(), l.r);
    let fed: Vec<f32> = l.lens.iter().flat_map(|&n| (0..r).map(move |i| if i + 1 < n { 1.0 } else { 0.0 })).collect();
    let fed = Tensor::from_vec(fed, (b, r, 1), hidden.device())?;
    let denom: Vec<f32> = l.lens.iter().map(|&n| 1.0 / n.max(1) as f32).collect();
    let denom = Tensor::from_vec(denom, (b, 1), hidden.device())?;
    Ok(h.broadcast_mul(&fed)?.sum(1)?.broadcast_mul(&denom)?)
}

impl Model {
    /// Log-probs of the response tokens with a graph through every weight (for the policy
    /// loss), plus entropies, mask and `mean` pooled hidden states. `temperature` scales the
    /// logits as the sampler did (REFERENCE.md §6 recomputes under the sampling temperature).
    /// Memory: the graph keeps a few (B, R, V) tensors alive until backward.
    pub fn response_logprobs(&self, seqs: &[Sequence], temperature: f64) -> Result<Scored> {
        check_temperature(temperature)?;
        let l = Layout::new(seqs, self.device())?;
        let b = seqs.len();
        if l.r == 0 {
            return self.empty_scored(&l, b);
        }
        let hidden = self.forward_hidden_packed(&l.packed, &l.seq_lens)?; // (N, d)
        let h = hidden.index_select(&l.pred, 0)?; // (M, d)
        let logits = self.lm_head(&h)?; // (M, V)
        let (lp, ent) = token_logprobs(&logits, &l.targets, temperature)?;
        let logprobs = l.unpack(&lp)?; // (B, R)
        let entropy = l.unpack(&ent)?;
        let mean_hidden = mean_response_hidden(&hidden, &l)?;
        Ok(Scored {
            logprobs,
            entropy,
            mask: l.mask,
            mean_hidden,
            lens: l.lens,
        })
    }

    /// Whether the no-grad pass ([`Self::response_logprobs_nograd`]) gives the training pass's
    /// log-probs: true on the fused CPU kernels (the two agree to ~1e-6), false on the composed
    /// candle ops (bf16, f16, CUDA, `CLIPO_COMPOSED=1`), whose no-grad kernels (candle's fused
    /// rms_norm, rope, softmax) round differently from the graph's: up to 0.16 nats apart in
    /// bf16 on the parity fixtures, a first PPO ratio of 1.17 instead of 1.
    pub fn nograd_matches_training(&self) -> bool {
        super::ops::fused_for(self.device(), self.dtype())
    }

    /// Each row's log-probs by the training pass itself (the graph path, its result detached):
    /// the old log-probs where [`Self::nograd_matches_training`] is false. Called with the
    /// training step's own micro-batches, the first PPO ratio is exactly 1, as verl's
    /// recomputation with the actor makes it.
    pub fn logprobs_as_trained(&self, seqs: &[Sequence], temperature: f64, memory: super::train::Memory) -> Result<Vec<Vec<f32>>> {
        self.train_pass(seqs, temperature, memory)?.logprobs_rows()
    }

    /// The same without a graph (frozen reference, old log-probs, `mean` pooling), with fused
    /// kernels, `chunk_rows` sequences per forward and `lm_head` in slabs of bounded size.
    pub fn response_logprobs_nograd(
        &self,
        seqs: &[Sequence],
        temperature: f64,
        chunk_rows: usize,
    ) -> Result<Scored> {
        check_temperature(temperature)?;
        if seqs.is_empty() {
            return Err(Error::Input("no sequences to score".into()));
        }
        let r_all = seqs.iter().map(|s| s.response.len()).max().unwrap();
        let (mut lps, mut ents, mut masks, mut means) = (vec![], vec![], vec![], vec![]);
        for chunk in seqs.chunks(chunk_rows.max(1)) {
            let l = Layout::new(chunk, self.device())?;
            let b = chunk.len();
            let hidden = self.forward_hidden_packed_nograd(&l.packed, &l.seq_lens)?; // (N, d)
            means.push(mean_response_hidden(&hidden, &l)?);
            let (lp, ent) = if l.r == 0 {
                let z = Tensor::zeros((b, 0), DType::F32, self.device())?;
                (z.clone(), z)
            } else {
                let h = hidden.index_select(&l.pred, 0)?; // (M, d)
                let m = h.dim(0)?;
                let slab = (LOGIT_CHUNK_ELEMS / self.config().vocab_size).max(1);
                let (mut lp, mut ent) = (vec![], vec![]);
                for start in (0..m).step_by(slab) {
                    let len = slab.min(m - start);
                    let logits = self.lm_head_nograd(&h.narrow(0, start, len)?)?;
                    let (a, e) =
                        token_logprobs(&logits, &l.targets.narrow(0, start, len)?, temperature)?;
                    lp.push(a.to_dtype(DType::F32)?);
                    ent.push(e);
                }
                (l.unpack(&Tensor::cat(&lp, 0)?)?, l.unpack(&Tensor::cat(&ent, 0)?)?)
            };
            // Chunks have their own R; pad to the batch's.
            lps.push(lp.pad_with_zeros(1, 0, r_all - l.r)?);
            ents.push(ent.pad_with_zeros(1, 0, r_all - l.r)?);
            masks.push(l.mask.pad_with_zeros(1, 0, r_all - l.r)?);
        }
        Ok(Scored {
            logprobs: Tensor::cat(&lps, 0)?,
            entropy: Tensor::cat(&ents, 0)?,
            mask: Tensor::cat(&masks, 0)?,
            mean_hidden: Tensor::cat(&means, 0)?,
            lens: seqs.iter().map(|s| s.response.len()).collect(),
        })
    }

    /// REFERENCE.md §2 `mean` pooling only (no `lm_head`): (B, d) f32, the mean of the
    /// final-norm hidden states over each response's L tokens, by a teacher-forced no-grad pass.
    pub fn mean_hidden(&self, seqs: &[Sequence], chunk_rows: usize) -> Result<Tensor> {
        self.pooled_hidden(seqs, chunk_rows, false)
    }

    /// REFERENCE.md §2 pooling by a teacher-forced no-grad pass, (B, d) f32: `official` sums the
    /// states at the response tokens a sampler feeds back (positions 0..L-2: the last token is
    /// never fed) and divides by L, as the reference computes it while decoding; otherwise the
    /// true mean over all L. For responses sampled elsewhere (an inference server).
    pub fn pooled_hidden(&self, seqs: &[Sequence], chunk_rows: usize, official: bool) -> Result<Tensor> {
        let mut out = vec![];
        for chunk in seqs.chunks(chunk_rows.max(1)) {
            let l = Layout::new(chunk, self.device())?;
            let hidden = self.forward_hidden_packed_nograd(&l.packed, &l.seq_lens)?;
            out.push(if official { official_response_hidden(&hidden, &l)? } else { mean_response_hidden(&hidden, &l)? });
        }
        if out.is_empty() {
            return Err(Error::Input("no sequences".into()));
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    pub(super) fn empty_scored(&self, l: &Layout, b: usize) -> Result<Scored> {
        let z = Tensor::zeros((b, 0), DType::F32, self.device())?;
        let d = self.config().hidden_size;
        Ok(Scored {
            logprobs: z.to_dtype(self.dtype())?,
            entropy: z.clone(),
            mask: z,
            mean_hidden: Tensor::zeros((b, d), DType::F32, self.device())?,
            lens: l.lens.clone(),
        })
    }
}

pub(super) fn check_temperature(t: f64) -> Result<()> {
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::Input(format!("temperature {t} must be > 0")));
    }
    Ok(())
}
