//! Batched sampling with a KV cache (REFERENCE.md §1 rollout, §2 `official` pooling).
//!
//! - Prompts of different lengths are left-padded into one batch; each row has its own rope
//!   positions and padding mask (see [`super::transformer`]). Identical prompts (the G samples
//!   of one prompt) are prefilled once and their cache rows copied.
//! - Every random number comes from the sample's own ChaCha8 stream seeded by its `seed` (one
//!   uniform draw per generated token), so a sample does not depend on the batch it ran in (up to
//!   float rounding of the batched matmuls, ~1e-6 in the log-probs).
//! - **Log-probs**: the log-prob recorded for each sampled token is under the temperature-scaled
//!   distribution `softmax(logits / temperature)` **before** top-k / top-p truncation. This is
//!   what the trainer recomputes ([`Model::response_logprobs`] with the same temperature), so the
//!   PPO ratio is 1 at the first step. With top-k / top-p on, the token is drawn from the
//!   truncated, renormalised distribution, but its recorded log-prob is still the untruncated one.
//! - Truncation follows transformers' order: temperature, then top-k, then top-p (keep the
//!   smallest set of most likely tokens whose probability reaches `top_p`, at least one).
//! - Greedy mode takes the first maximum of the logits (as `torch.argmax`) and draws nothing;
//!   its log-probs are still under `softmax(logits / temperature)`.
//! - A row finishes with `Eos` when it emits one of `stop_tokens` (kept as its last token) and
//!   with `Length` after `max_new_tokens` tokens. Finished rows are dropped from the batch (and
//!   their KV-cache rows) so they stop costing compute.
//! - `official` pooled hidden state (REFERENCE.md §2): the sum of the final-norm hidden states
//!   computed at each decode step's *input* token (response tokens 1..L-1; the prompt's last
//!   token and the last emitted token are never summed), divided by L, accumulated in f32.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::transformer::{KvCache, Model};
use super::{Error, Result};

/// How to decode.
#[derive(Debug, Clone)]
pub struct SampleParams {
    /// Most tokens generated per sample (the stop token included).
    pub max_new_tokens: usize,
    /// Divides the logits; > 0. Also defines the recorded log-probs in greedy mode.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f64,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Tokens that end a sample (e.g. `<|im_end|>`, `<|endoftext|>`).
    pub stop_tokens: Vec<u32>,
    /// Take the argmax instead of sampling (evaluation).
    pub greedy: bool,
    /// Stop strings: checked after each token; `Some(i)` ends the row with
    /// [`FinishReason::Stop`]`(i)` (the tokens that completed the string are kept).
    pub stop_check: Option<StopCheck>,
}

/// A stop-string test over a row's tokens so far (the caller decodes them): the index of the
/// stop string that the newest token completed, if any.
#[derive(Clone)]
pub struct StopCheck(pub std::sync::Arc<dyn Fn(&[u32]) -> Option<usize> + Send + Sync>);

impl std::fmt::Debug for StopCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopCheck")
    }
}

impl SampleParams {
    /// Plain sampling at `temperature`, no truncation.
    pub fn sampling(max_new_tokens: usize, temperature: f64, stop_tokens: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            temperature,
            top_p: 1.0,
            top_k: 0,
            stop_tokens,
            greedy: false,
            stop_check: None,
        }
    }

    /// Greedy decoding (log-probs under temperature 1).
    pub fn greedy(max_new_tokens: usize, stop_tokens: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop_tokens,
            greedy: true,
            stop_check: None,
        }
    }

    fn check(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::Input(format!(
                "temperature {} must be > 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Input(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// One sample to draw: its prompt and the seed of its random stream (the caller derives it
/// from (seed, step, prompt_id, sample_idx)).
#[derive(Debug, Clone, Copy)]
pub struct SampleRequest<'a> {
    pub prompt: &'a [u32],
    pub seed: u64,
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It emitted a stop token (the last token of `tokens`).
    Eos,
    /// It reached `max_new_tokens`.
    Length,
    /// Its newest token completed stop string i (`SampleParams::stop_check`).
    Stop(usize),
}

impl FinishReason {
    /// `eos`, `length` or `stop` (the trajectories table writes `stop:TEXT`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
            FinishReason::Stop(_) => "stop",
        }
    }
}

/// One generated response.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Response token ids (L of them), the stop token included when finish is `Eos`.
    pub tokens: Vec<u32>,
    /// Log-prob of each token under softmax(logits / temperature), before truncation.
    pub logprobs: Vec<f32>,
    /// Log-prob of each token under the distribution it was drawn from: after temperature,
    /// top-k and top-p, renormalised (0 in greedy mode, where the draw is certain; equal to
    /// `logprobs` without truncation). The behaviour policy of the rollout (verl's
    /// `rollout_log_probs`).
    pub behavior_logprobs: Vec<f32>,
    pub finish: FinishReason,
    /// (d,) REFERENCE.md §2 `official`: sum of final-norm hidden states at response tokens
    /// 1..L-1 (fed back as decode inputs), divided by L. Zeros when L = 0.
    pub hidden_official: Vec<f32>,
}

struct Row {
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    behavior_logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    hidden_sum: Vec<f32>,
}

/// An error of [`Model::sample_continuous`]: the model's, or the one the caller's `done`
/// returned (which stops the decoding).
#[derive(Debug)]
pub enum StreamError<E> {
    Model(Error),
    Done(E),
}

impl<E> From<Error> for StreamError<E> {
    fn from(e: Error) -> Self {
        StreamError::Model(e)
    }
}

impl<E> From<candle_core::Error> for StreamError<E> {
    fn from(e: candle_core::Error) -> Self {
        StreamError::Model(e.into())
    }
}

/// A prompt prefilled on its own: its single-row cache, the logits at its last token, and how
/// many of the waiting requests still need it.
struct Prefilled {
    cache: KvCache,
    logits: Vec<f32>,
    waiting: usize,
}

impl Model {
    /// Samples one response per request, all in one batch. See the module doc for what is
    /// recorded. Results come back in request order.
    pub fn sample(&self, reqs: &[SampleRequest], params: &SampleParams) -> Result<Vec<Sample>> {
        let mut out: Vec<Option<Sample>> = vec![None; reqs.len()];
        let stream = self.sample_continuous(reqs, params, reqs.len(), |i, s| {
            out[i] = Some(s);
            Ok::<(), Error>(())
        });
        match stream {
            Ok(()) => Ok(out.into_iter().map(|s| s.expect("every request finishes")).collect()),
            Err(StreamError::Model(e) | StreamError::Done(e)) => Err(e),
        }
    }

    /// Continuous batching: decodes at most `width` rows at a time and hands each finished
    /// sample to `done(request index, sample)` as it finishes (any order). When a row finishes,
    /// the next waiting request (in request order) takes its slot: its prompt is prefilled on
    /// its own (once for all the requests that share it) and its cache row written into the
    /// freed one, right-aligned with the others (left padding). A row's tokens, log-probs and
    /// hidden state do not depend on its neighbours, its slot or when it was admitted: the
    /// prefill runs alone, the decode projections and the attention go row by row on the fused
    /// path, and a row's positions are its columns minus its padding.
    ///
    /// The cache keeps `1.5 (P + max_new)` columns when requests wait beyond the first `width`
    /// (P the longest prompt); when it fills, the columns that are padding in every row are
    /// dropped: each live row holds at most `P + max_new - 1` columns, so at least a third of
    /// the cache is freed each time.
    pub fn sample_continuous<E>(
        &self,
        reqs: &[SampleRequest],
        params: &SampleParams,
        width: usize,
        mut done: impl FnMut(usize, Sample) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), StreamError<E>> {
        params.check()?;
        if let Some(i) = reqs.iter().position(|r| r.prompt.is_empty()) {
            return Err(Error::Input(format!("request {i} has an empty prompt")).into());
        }
        let d = self.config().hidden_size;
        let new_row = |r: &SampleRequest| Row {
            rng: ChaCha8Rng::seed_from_u64(r.seed),
            tokens: vec![],
            logprobs: vec![],
            behavior_logprobs: vec![],
            finish: None,
            hidden_sum: vec![0f32; d],
        };
        if params.max_new_tokens == 0 {
            for (i, r) in reqs.iter().enumerate() {
                done(i, finish_row(new_row(r), d)).map_err(StreamError::Done)?;
            }
            return Ok(());
        }
        let width = width.max(1);
        let p_max = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
        let capacity = if reqs.len() > width {
            (p_max + params.max_new_tokens) * 3 / 2
        } else {
            p_max + params.max_new_tokens
        };
        // Requests that share a prompt share its prefill: key[i] = the first request with i's.
        let mut first: HashMap<&[u32], usize> = HashMap::new();
        let key: Vec<usize> = reqs.iter().enumerate().map(|(i, r)| *first.entry(r.prompt).or_insert(i)).collect();
        let mut uses: HashMap<usize, usize> = HashMap::new();
        for &k in &key {
            *uses.entry(k).or_default() += 1;
        }
        let mut prefilled: HashMap<usize, Prefilled> = HashMap::new();
        let mut rows: Vec<Option<Row>> = reqs.iter().map(|_| None).collect();
        let mut next = 0usize; // the first request not yet admitted

        // Admits the next waiting request: prefill (shared), first token. Some(i) when it needs
        // a slot, None when it finished at its first token (handed to `done`) or none waits.
        let admit = |rows: &mut Vec<Option<Row>>,
                         prefilled: &mut HashMap<usize, Prefilled>,
                         next: &mut usize,
                         done: &mut dyn FnMut(usize, Sample) -> std::result::Result<(), E>|
         -> std::result::Result<Option<Option<usize>>, StreamError<E>> {
            if *next >= reqs.len() {
                return Ok(None);
            }
            let i = *next;
            *next += 1;
            if !prefilled.contains_key(&key[i]) {
                let (cache, logits) = self.prefill(reqs[i].prompt)?;
                prefilled.insert(key[i], Prefilled { cache, logits, waiting: uses[&key[i]] });
            }
            let entry = prefilled.get_mut(&key[i]).expect("prefilled");
            entry.waiting -= 1;
            let mut row = new_row(&reqs[i]);
            pick(&mut row, &entry.logits, params);
            if row.finish.is_some() {
                done(i, finish_row(row, d)).map_err(StreamError::Done)?;
                return Ok(Some(None));
            }
            rows[i] = Some(row);
            Ok(Some(Some(i)))
        };

        // The first batch: up to `width` rows, merged left-padded.
        let mut live: Vec<usize> = vec![];
        while live.len() < width {
            match admit(&mut rows, &mut prefilled, &mut next, &mut done)? {
                None => break,
                Some(Some(i)) => live.push(i),
                Some(None) => {}
            }
        }
        if live.is_empty() {
            return Ok(());
        }
        let singles: Vec<&KvCache> = live.iter().map(|&i| &prefilled[&key[i]].cache).collect();
        let mut cache = KvCache::from_rows(&singles, capacity)?;
        let mut pads: Vec<usize> = live.iter().map(|&i| cache.len - reqs[i].prompt.len()).collect();
        prefilled.retain(|_, p| p.waiting > 0);

        loop {
            // Finished rows leave; waiting requests take their slots, the rest are dropped.
            let mut free: Vec<usize> = (0..live.len()).filter(|&j| rows[live[j]].is_none()).collect();
            let mut f = 0;
            while f < free.len() {
                let Some(admitted) = admit(&mut rows, &mut prefilled, &mut next, &mut done)? else { break };
                let Some(i) = admitted else { continue };
                let len = reqs[i].prompt.len();
                if len > cache.len {
                    // A prompt longer than the filled columns: every row gets more padding.
                    let grow = len - cache.len;
                    cache.shift(grow as isize)?;
                    pads.iter_mut().for_each(|p| *p += grow);
                }
                let j = free[f];
                pads[j] = cache.write_row(j, &prefilled[&key[i]].cache)?;
                live[j] = i;
                prefilled.retain(|_, p| p.waiting > 0);
                f += 1;
            }
            free.drain(..f);
            if !free.is_empty() {
                let keep: Vec<u32> = (0..live.len()).filter(|j| !free.contains(j)).map(|j| j as u32).collect();
                if keep.is_empty() {
                    break;
                }
                cache.select_rows(&keep)?;
                live = keep.iter().map(|&j| live[j as usize]).collect();
                pads = keep.iter().map(|&j| pads[j as usize]).collect();
            }
            if cache.len == cache.capacity() {
                // Full: drop the columns that are padding in every row (see the doc above).
                let m = *pads.iter().min().expect("live rows");
                cache.shift(-(m as isize))?;
                pads.iter_mut().for_each(|p| *p -= m);
            }
            let input: Vec<u32> = live.iter().map(|&i| *rows[i].as_ref().expect("live").tokens.last().unwrap()).collect();
            let ids = Tensor::from_vec(input, (live.len(), 1), self.device())?;
            let hidden = self.step(&ids, &pads, &mut cache)?.squeeze(1)?; // (n, d)
            let hv: Vec<Vec<f32>> = hidden.to_dtype(DType::F32)?.to_vec2()?;
            let logits: Vec<Vec<f32>> = self.lm_head_rows(&hidden)?.to_dtype(DType::F32)?.to_vec2()?;
            for (j, &i) in live.iter().enumerate() {
                let row = rows[i].as_mut().expect("live");
                for (s, h) in row.hidden_sum.iter_mut().zip(&hv[j]) {
                    *s += h;
                }
                pick(row, &logits[j], params);
                if row.finish.is_some() {
                    let row = rows[i].take().expect("live");
                    done(i, finish_row(row, d)).map_err(StreamError::Done)?;
                }
            }
        }
        Ok(())
    }

    /// A prompt's prefill on its own (its bits then do not depend on the other prompts of the
    /// batch): its single-row cache and the logits (V,) at its last token.
    fn prefill(&self, prompt: &[u32]) -> Result<(KvCache, Vec<f32>)> {
        let ids = Tensor::from_slice(prompt, (1, prompt.len()), self.device())?;
        let mut c = KvCache::new(self.config(), 1, prompt.len(), self.dtype(), self.device())?;
        let hidden = self.step(&ids, &[0], &mut c)?; // (1, len, d)
        let last = hidden.narrow(1, prompt.len() - 1, 1)?.squeeze(1)?; // (1, d)
        let logits = self.lm_head_rows(&last)?.to_dtype(DType::F32)?.squeeze(0)?.to_vec1()?;
        Ok((c, logits))
    }

    /// G samples for each prompt; `seed_of(prompt_idx, sample_idx)` gives each its seed.
    /// Returns `out[prompt_idx][sample_idx]`.
    pub fn sample_groups(
        &self,
        prompts: &[&[u32]],
        g: usize,
        seed_of: impl Fn(usize, usize) -> u64,
        params: &SampleParams,
    ) -> Result<Vec<Vec<Sample>>> {
        let reqs: Vec<SampleRequest> = prompts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (0..g).map(move |s| (i, s, *p)))
            .map(|(i, s, prompt)| SampleRequest {
                prompt,
                seed: seed_of(i, s),
            })
            .collect();
        let mut flat = self.sample(&reqs, params)?.into_iter();
        Ok(prompts
            .iter()
            .map(|_| flat.by_ref().take(g).collect())
            .collect())
    }

    /// Greedy decoding of each prompt (evaluation); returns the samples in prompt order.
    pub fn greedy(
        &self,
        prompts: &[&[u32]],
        max_new_tokens: usize,
        stop_tokens: &[u32],
    ) -> Result<Vec<Sample>> {
        let reqs: Vec<SampleRequest> = prompts
            .iter()
            .map(|p| SampleRequest { prompt: p, seed: 0 })
            .collect();
        self.sample(
            &reqs,
            &SampleParams::greedy(max_new_tokens, stop_tokens.to_vec()),
        )
    }
}

fn finish_row(r: Row, d: usize) -> Sample {
    let l = r.tokens.len();
    let hidden_official = if l == 0 {
        vec![0f32; d]
    } else {
        r.hidden_sum.iter().map(|s| s / l as f32).collect()
    };
    Sample {
        finish: r.finish.unwrap_or(FinishReason::Length),
        tokens: r.tokens,
        logprobs: r.logprobs,
        behavior_logprobs: r.behavior_logprobs,
        hidden_official,
    }
}

/// Chooses the next token of `row` from its logits (V,), records it, its log-prob and whether
/// the row is finished.
fn pick(row: &mut Row, logits: &[f32], params: &SampleParams) {
    let inv_t = 1.0 / params.temperature;
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 * inv_t).collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    // Unnormalised probabilities exp(z - max), computed once for the logsumexp and the draw.
    let w: Vec<f64> = z.iter().map(|&x| (x - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let lse = max + total.ln();
    let (token, behavior) = if params.greedy {
        (argmax(logits), 0.0)
    } else {
        let u: f64 = row.rng.random();
        let (token, kept) = draw(&z, &w, total, u, params.top_k, params.top_p);
        // log(w_token / kept mass) = (z_token - max) - ln(kept)
        (token, (z[token] - max) - kept.ln())
    };
    row.tokens.push(token as u32);
    row.logprobs.push((z[token] - lse) as f32);
    row.behavior_logprobs.push(behavior as f32);
    if params.stop_tokens.contains(&(token as u32)) {
        row.finish = Some(FinishReason::Eos);
    } else if let Some(i) = params.stop_check.as_ref().and_then(|c| (c.0)(&row.tokens)) {
        row.finish = Some(FinishReason::Stop(i));
    } else if row.tokens.len() >= params.max_new_tokens {
        row.finish = Some(FinishReason::Length);
    }
}

/// First index of the maximum (as `torch.argmax`).
fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Inverse-CDF draw with uniform `u` in [0, 1) from the weights `w` = exp(z - max) (summing to
/// `total`), truncated to the top-k and then the top-p set when those are on (candidates sorted
/// by descending z, ties by index).
/// Draws a token (top-k, then top-p, then the inverse CDF at `u`); also returns the mass of the
/// kept candidates (`total` without truncation), the renormaliser of the behaviour log-prob.
fn draw(z: &[f64], w: &[f64], total: f64, u: f64, top_k: usize, top_p: f64) -> (usize, f64) {
    if top_k == 0 && top_p >= 1.0 {
        return (inverse_cdf(w.iter().cloned().enumerate(), u * total), total);
    }
    let by_z = |a: &usize, b: &usize| z[*b].total_cmp(&z[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..z.len()).collect();
    if top_k > 0 && top_k < idx.len() {
        idx.select_nth_unstable_by(top_k - 1, by_z);
        idx.truncate(top_k);
    }
    idx.sort_unstable_by(by_z);
    let w: Vec<f64> = idx.iter().map(|&i| w[i]).collect();
    let mut total: f64 = w.iter().sum();
    if top_p < 1.0 {
        // Keep token n while the mass of the tokens before it is < top_p (at least one).
        let mut before = 0.0;
        let mut keep = 0;
        for &wi in &w {
            if keep > 0 && before / total >= top_p {
                break;
            }
            before += wi;
            keep += 1;
        }
        idx.truncate(keep);
        total = w[..keep].iter().sum();
    }
    (inverse_cdf(idx.iter().zip(&w).map(|(&i, &wi)| (i, wi)), u * total), total)
}

/// The first candidate whose cumulative weight exceeds `target` (the last positive one if
/// rounding leaves none).
fn inverse_cdf(cands: impl Iterator<Item = (usize, f64)>, target: f64) -> usize {
    let mut cum = 0.0;
    let mut last = 0;
    for (i, w) in cands {
        if w > 0.0 {
            last = i;
        }
        cum += w;
        if cum > target {
            return i;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_and_top_p_keep_the_right_sets() {
        // probs ∝ exp(z): 0.5, 0.25, 0.125, 0.125 (z = ln of those)
        let z: Vec<f64> = [0.5f64, 0.25, 0.125, 0.125]
            .iter()
            .map(|p| p.ln())
            .collect();
        let w: Vec<f64> = z.iter().map(|x| (x - z[0]).exp()).collect();
        let total: f64 = w.iter().sum();
        let draw = |u, k, p| draw(&z, &w, total, u, k, p).0;
        // top_k = 1: always token 0
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(draw(u, 1, 1.0), 0);
        }
        // top_p = 0.6: keeps {0, 1} (mass before token 1 is 0.5 < 0.6; before token 2 is 0.75)
        assert_eq!(draw(0.6, 0, 0.6), 0); // 0.6 * 0.75 = 0.45 < 0.5
        assert_eq!(draw(0.7, 0, 0.6), 1); // 0.525 > 0.5
        assert_eq!(draw(0.999, 0, 0.6), 1);
        // top_p = 0.5: keeps {0} only
        assert_eq!(draw(0.99, 0, 0.5), 0);
        // no truncation: inverse CDF in index order
        assert_eq!(draw(0.49, 0, 1.0), 0);
        assert_eq!(draw(0.74, 0, 1.0), 1);
        assert_eq!(draw(0.80, 0, 1.0), 2);
        assert_eq!(draw(0.95, 0, 1.0), 3);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
