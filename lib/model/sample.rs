//! Batched sampling with a KV cache and continuous batching (REFERENCE.md §1 rollout, §2
//! `official` pooling).
//!
//! - Prompts of different lengths share each decode step as left-padded rows; each row has its
//!   own rope positions and padding (see [`super::transformer`]). Each distinct prompt is
//!   prefilled on its own, once for all the samples that share it.
//! - **Continuous batching** ([`Model::sample_continuous`]): at most `width` rows decode at a
//!   time; a finished row's slot goes to the next waiting request. A row's bits do not depend
//!   on its neighbours, its slot or when it was admitted (tests/model_sample.rs).
//! - Every random number comes from the sample's own ChaCha8 stream seeded by its `seed` (one
//!   uniform draw per generated token), so a sample does not depend on the batch it ran in.
//! - **Log-probs**: `logprobs` are under the temperature-scaled distribution
//!   `softmax(logits / temperature)` **before** truncation: what the trainer recomputes
//!   ([`Model::response_logprobs`] with the same temperature), so the PPO ratio is 1 at the first
//!   step. `behavior_logprobs` are under the distribution the token was drawn from (after top-k,
//!   top-p and min-p, renormalised; 0 greedy): verl's `rollout_log_probs`.
//! - Truncation follows transformers' order and tie rules ([`keep_set`]): temperature, top-k
//!   (ties with the k-th kept), top-p over the top-k set (a token stays while the mass of the
//!   strictly more likely ones is < top_p), min-p (p >= min_p * p_max). The draw is the inverse
//!   CDF of the kept tokens in index order at the row's uniform.
//! - Greedy mode takes the first maximum of the logits (as `torch.argmax`) and draws nothing.
//! - **Where the choice is made**: on the fused CPU path the logits come to the host and the
//!   choice is made there in f64; on the composed path (CUDA, bf16, `CLIPO_COMPOSED=1`) it is
//!   made on the device by [`super::device_pick`] (the same kept set and draw), and only the
//!   token and its two log-probs cross.
//! - A row finishes with `Eos` when it emits one of `stop_tokens` (kept as its last token), with
//!   `Stop(i)` when its newest token completes stop string i, and with `Length` after
//!   `max_new_tokens` tokens.
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
    /// Drop tokens whose probability is below `min_p` times the most likely one's (after
    /// temperature; as vLLM's and transformers' `min_p`); 0 = off.
    pub min_p: f64,
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
            min_p: 0.0,
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
            min_p: 0.0,
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
        if !(0.0..1.0).contains(&self.min_p) {
            return Err(Error::Input(format!("min_p {} must be in [0, 1)", self.min_p)));
        }
        Ok(())
    }

    /// Whether any truncation (top-k, top-p, min-p) is on.
    pub(crate) fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
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

/// A prompt prefilled on its own: its single-row cache, the logits (1, V) at its last token,
/// and how many of the waiting requests still need it.
struct Prefilled {
    cache: KvCache,
    logits: Tensor,
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
            pick_rows(self, &mut [&mut row], &entry.logits, params)?;
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
            let logits = self.lm_head_rows(&hidden)?; // (n, V)
            // The step's rows in slot order (taken out of `rows` for the pick, then put back).
            let mut slot_rows: Vec<(usize, Row)> = live.iter().map(|&i| (i, rows[i].take().expect("live"))).collect();
            for ((_, row), h) in slot_rows.iter_mut().zip(&hv) {
                for (s, x) in row.hidden_sum.iter_mut().zip(h) {
                    *s += x;
                }
            }
            pick_rows(self, &mut slot_rows.iter_mut().map(|(_, r)| r).collect::<Vec<_>>(), &logits, params)?;
            for (i, row) in slot_rows {
                rows[i] = Some(row);
            }
            for &i in &live {
                let row = rows[i].as_mut().expect("live");
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
    fn prefill(&self, prompt: &[u32]) -> Result<(KvCache, Tensor)> {
        let ids = Tensor::from_slice(prompt, (1, prompt.len()), self.device())?;
        let mut c = KvCache::new(self.config(), 1, prompt.len(), self.dtype(), self.device())?;
        let hidden = self.step(&ids, &[0], &mut c)?; // (1, len, d)
        let last = hidden.narrow(1, prompt.len() - 1, 1)?.squeeze(1)?; // (1, d)
        Ok((c, self.lm_head_rows(&last)?))
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

/// A chosen token: its id, its log-prob under softmax(logits / T) and its behaviour log-prob
/// (under the distribution it was drawn from; 0 greedy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Choice {
    pub token: u32,
    pub logprob: f32,
    pub behavior: f32,
}

/// The row's uniform for its next token (none greedy: the draw is certain).
fn uniform(row: &mut Row, params: &SampleParams) -> f64 {
    if params.greedy {
        0.0
    } else {
        row.rng.random()
    }
}

/// Chooses the next token from logits (V,) with the row's uniform `u`, on the host in f64.
fn choose(logits: &[f32], u: f64, params: &SampleParams) -> Choice {
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
        let (token, kept) = draw(&z, &w, total, u, params);
        // log(w_token / kept mass) = (z_token - max) - ln(kept)
        (token, (z[token] - max) - kept.ln())
    };
    Choice { token: token as u32, logprob: (z[token] - lse) as f32, behavior: behavior as f32 }
}

/// Records the row's next token and whether the row is finished.
fn record(row: &mut Row, c: Choice, params: &SampleParams) {
    row.tokens.push(c.token);
    row.logprobs.push(c.logprob);
    row.behavior_logprobs.push(c.behavior);
    if params.stop_tokens.contains(&c.token) {
        row.finish = Some(FinishReason::Eos);
    } else if let Some(i) = params.stop_check.as_ref().and_then(|c| (c.0)(&row.tokens)) {
        row.finish = Some(FinishReason::Stop(i));
    } else if row.tokens.len() >= params.max_new_tokens {
        row.finish = Some(FinishReason::Length);
    }
}

/// Chooses and records the next token of each row from its logits (n, V): on the host from
/// the (n, V) f32 values (the fused CPU path), or on the device ([`super::device_pick`], the
/// composed path: CUDA, bf16, `CLIPO_COMPOSED=1`) where only the choices cross.
fn pick_rows(model: &Model, rows: &mut [&mut Row], logits: &Tensor, params: &SampleParams) -> Result<()> {
    let us: Vec<f64> = rows.iter_mut().map(|r| uniform(r, params)).collect();
    let choices = if super::ops::fused_for(model.device(), model.dtype()) {
        let host: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        host.iter().zip(&us).map(|(l, &u)| choose(l, u, params)).collect()
    } else {
        super::device_pick::choose(logits, &us, params)?
    };
    for (row, c) in rows.iter_mut().zip(choices) {
        record(row, c, params);
    }
    Ok(())
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

/// Draws a token with uniform `u` in [0, 1) from the weights `w` = exp(z - max) (summing to
/// `total`): the first kept token, in index order, whose inclusive cumulative weight exceeds
/// `u * kept mass`; also returns the kept mass (`total` without truncation), the renormaliser
/// of the behaviour log-prob. The kept set is [`keep_set`]'s.
fn draw(z: &[f64], w: &[f64], total: f64, u: f64, params: &SampleParams) -> (usize, f64) {
    if !params.truncates() {
        return (inverse_cdf(w.iter().cloned().enumerate(), u * total), total);
    }
    let keep = keep_set(z, w, params);
    let kept: f64 = w.iter().zip(&keep).filter(|(_, k)| **k).map(|(wi, _)| wi).sum();
    let cands = w.iter().zip(&keep).enumerate().filter(|(_, (_, k))| **k).map(|(i, (wi, _))| (i, *wi));
    (inverse_cdf(cands, u * kept), kept)
}

/// The tokens a truncated draw keeps, in transformers' order: top-k keeps z >= the k-th largest
/// z (ties kept, as transformers' `TopKLogitsWarper` and vLLM); top-p, over the top-k set, keeps
/// a token while the mass of the strictly more likely tokens is < `top_p` of the set's mass
/// (tokens of equal z together; the most likely always); min-p keeps w >= `min_p` (w = p / p_max).
fn keep_set(z: &[f64], w: &[f64], params: &SampleParams) -> Vec<bool> {
    let mut keep = vec![true; z.len()];
    let by_z = |a: &usize, b: &usize| z[*b].total_cmp(&z[*a]).then(a.cmp(b));
    if params.top_k > 0 && params.top_k < z.len() {
        let mut idx: Vec<usize> = (0..z.len()).collect();
        idx.select_nth_unstable_by(params.top_k - 1, by_z);
        let tau = z[idx[params.top_k - 1]];
        keep = z.iter().map(|&x| x >= tau).collect();
    }
    if params.top_p < 1.0 {
        let mut cands: Vec<usize> = (0..z.len()).filter(|&i| keep[i]).collect();
        cands.sort_unstable_by(by_z);
        let mass: f64 = cands.iter().map(|&i| w[i]).sum();
        let (mut before, mut g) = (0.0, 0);
        while g < cands.len() {
            if before / mass >= params.top_p {
                cands[g..].iter().for_each(|&i| keep[i] = false);
                break;
            }
            let zg = z[cands[g]];
            while g < cands.len() && z[cands[g]] == zg {
                before += w[cands[g]];
                g += 1;
            }
        }
    }
    if params.min_p > 0.0 {
        keep.iter_mut().zip(w).filter(|(_, &wi)| wi < params.min_p).for_each(|(k, _)| *k = false);
    }
    keep
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

    fn params(top_k: usize, top_p: f64, min_p: f64) -> SampleParams {
        SampleParams { top_k, top_p, min_p, ..SampleParams::sampling(1, 1.0, vec![]) }
    }

    #[test]
    fn top_k_top_p_and_min_p_keep_the_right_sets() {
        // probs ∝ exp(z): 0.5, 0.25, 0.125, 0.125 (z = ln of those)
        let z: Vec<f64> = [0.5f64, 0.25, 0.125, 0.125].iter().map(|p| p.ln()).collect();
        let w: Vec<f64> = z.iter().map(|x| (x - z[0]).exp()).collect();
        let total: f64 = w.iter().sum();
        let draw = |u, k, p, m| draw(&z, &w, total, u, &params(k, p, m)).0;
        let kept = |k, p, m| keep_set(&z, &w, &params(k, p, m));
        // top_k = 1: always token 0
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(draw(u, 1, 1.0, 0.0), 0);
        }
        // top_k = 3: the 3rd largest (0.125) is tied: both kept, as transformers' top-k
        assert_eq!(kept(3, 1.0, 0.0), vec![true; 4]);
        // top_p = 0.6: keeps {0, 1} (mass before token 1 is 0.5 < 0.6; before tokens 2, 3 0.75)
        assert_eq!(kept(0, 0.6, 0.0), vec![true, true, false, false]);
        assert_eq!(draw(0.6, 0, 0.6, 0.0), 0); // 0.6 * 0.75 = 0.45 < 0.5
        assert_eq!(draw(0.7, 0, 0.6, 0.0), 1); // 0.525 > 0.5
        assert_eq!(draw(0.999, 0, 0.6, 0.0), 1);
        // top_p = 0.5: keeps {0} only; 0.8: the tied pair together (mass before them 0.75 < 0.8)
        assert_eq!(draw(0.99, 0, 0.5, 0.0), 0);
        assert_eq!(kept(0, 0.8, 0.0), vec![true; 4]);
        // min_p = 0.3: p / p_max = 1, 0.5, 0.25, 0.25 -> {0, 1}; with top_k 1: {0}
        assert_eq!(kept(0, 1.0, 0.3), vec![true, true, false, false]);
        assert_eq!(kept(1, 1.0, 0.3), vec![true, false, false, false]);
        // no truncation: inverse CDF in index order
        assert_eq!(draw(0.49, 0, 1.0, 0.0), 0);
        assert_eq!(draw(0.74, 0, 1.0, 0.0), 1);
        assert_eq!(draw(0.80, 0, 1.0, 0.0), 2);
        assert_eq!(draw(0.95, 0, 1.0, 0.0), 3);
        // truncated: the kept tokens in index order (top_p 0.6: 0.5 | 0.25 of 0.75)
        let (t, kept_mass) = super::draw(&z, &w, total, 0.67, &params(0, 0.6, 0.0));
        assert_eq!((t, kept_mass), (1, 1.5)); // w = 1, 0.5: target 0.67 * 1.5 = 1.005 > 1
    }

    /// The device sampler (candle ops, f64) chooses what the host sampler chooses: the same
    /// tokens and log-probs to 1e-9 over 4 x 40 draws per setting, on logits with ties (rounded
    /// as bf16 rounds) and on smooth ones.
    #[test]
    fn the_device_sampler_chooses_what_the_host_sampler_chooses() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, v) = (4usize, 300usize);
        for tied in [false, true] {
            let logits: Vec<f32> = (0..n * v)
                .map(|_| {
                    let x: f32 = 4.0 * rand_distr::Distribution::<f32>::sample(&rand_distr::StandardNormal, &mut rng);
                    if tied { (x * 4.0).round() / 4.0 } else { x }
                })
                .collect();
            let t = Tensor::from_vec(logits.clone(), (n, v), &candle_core::Device::Cpu).unwrap();
            for p in [
                params(0, 1.0, 0.0),
                params(10, 1.0, 0.0),
                params(0, 0.7, 0.0),
                params(40, 0.9, 0.0),
                params(0, 1.0, 0.05),
                SampleParams { temperature: 0.6, ..params(25, 0.8, 0.01) },
                SampleParams::greedy(1, vec![]),
            ] {
                for _ in 0..40 {
                    let us: Vec<f64> = (0..n).map(|_| rng.random()).collect();
                    let dev = super::super::device_pick::choose(&t, &us, &p).unwrap();
                    for (r, (d, &u)) in dev.iter().zip(&us).enumerate() {
                        let h = choose(&logits[r * v..(r + 1) * v], u, &p);
                        assert_eq!(d.token, h.token, "{p:?} tied {tied} row {r} u {u}");
                        assert!((d.logprob - h.logprob).abs() < 1e-6 && (d.behavior - h.behavior).abs() < 1e-6, "{p:?}: {d:?} vs {h:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
