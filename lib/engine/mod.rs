//! Sampling through inference servers (SGLang, vLLM, llama.cpp and other OpenAI-compatible
//! completion servers): the scale-out path of `clipo-rollout --engine URL`.
//!
//! [`Sampler`] is what the rollout stage asks for: one [`Sample`] per request, in request order.
//! Two implement it: the built-in candle sampler (a [`crate::policy::Policy`]'s model) and [`Engine`], which sends each
//! request (the templated prompt as token ids, one sample, its derived seed) to a server and
//! reads back the response's token ids, per-token log-probs and finish reason. Prompt selection,
//! seeds, resumable parts, hidden states and the table stay in the stage, shared by both.
//!
//! Requests run `concurrency` at a time, spread over the servers (request i on server
//! i mod S); connection errors and 5xx answers are retried with back-off ([`http`]); anything
//! else stops the run with an error naming the server and the request, and the stage writes no
//! part of a batch that did not complete.
//!
//! The engine's per-token log-probs are the behaviour log-probs of the rollout: `clipo-update`
//! recomputes the old log-probs (its default) and logs the mismatch (`rollout_corr/*`).
//! Engines report different distributions (vLLM: the raw model's by default; SGLang and
//! llama.cpp: see [`protocol`]); both columns of the table hold what the engine reported.

pub mod http;
pub mod protocol;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::sample::StreamError;
use crate::model::{FinishReason, Model, Sample, SampleParams, SampleRequest};

pub use protocol::Kind;

/// One sample for each request, in request order.
pub trait Sampler: Sync {
    fn sample(&self, reqs: &[SampleRequest], params: &SampleParams) -> Result<Vec<Sample>>;
    /// Hands each request's sample to `done(request index, sample)` as it finishes (any order),
    /// about `width` in flight at once. The default: `width` requests at a time through
    /// [`Sampler::sample`]; the built-in sampler batches continuously (a finished row's slot goes
    /// to the next waiting request).
    fn sample_stream(
        &self,
        reqs: &[SampleRequest],
        params: &SampleParams,
        width: usize,
        done: &mut dyn FnMut(usize, Sample) -> Result<()>,
    ) -> Result<()> {
        let width = width.max(1);
        for (c, chunk) in reqs.chunks(width).enumerate() {
            for (k, s) in self.sample(chunk, params)?.into_iter().enumerate() {
                done(c * width + k, s)?;
            }
        }
        Ok(())
    }
    /// Whether samples carry the `official` pooled hidden state (else the stage computes it by a
    /// teacher-forced pass of the policy).
    fn has_hidden(&self) -> bool;
}

/// The built-in sampler: the policy's own model (errors name its directory).
impl Sampler for crate::policy::Policy {
    fn sample(&self, reqs: &[SampleRequest], params: &SampleParams) -> Result<Vec<Sample>> {
        self.model.sample(reqs, params).map_err(|e| Error::Model { dir: self.dir.clone(), detail: e.to_string() })
    }

    fn sample_stream(
        &self,
        reqs: &[SampleRequest],
        params: &SampleParams,
        width: usize,
        done: &mut dyn FnMut(usize, Sample) -> Result<()>,
    ) -> Result<()> {
        self.model.sample_continuous(reqs, params, width, done).map_err(|e| match e {
            StreamError::Model(e) => Error::Model { dir: self.dir.clone(), detail: e.to_string() },
            StreamError::Done(e) => e,
        })
    }

    fn has_hidden(&self) -> bool {
        true
    }
}

/// `clipo-rollout --engine ...`: where and how to reach the servers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineConfig {
    /// Base URLs (`http://host:port`); requests are spread over them.
    pub urls: Vec<String>,
    /// The API to speak; None: detected from the first server.
    pub kind: Option<Kind>,
    /// Requests in flight at once, over all servers.
    pub concurrency: usize,
    /// Seconds one request may take.
    pub timeout_s: f64,
    /// Retries of a request on connection errors and 5xx answers.
    pub retries: usize,
    /// The `model` field of OpenAI-compatible requests; None: the server's first model.
    pub model: Option<String>,
}

/// Connected servers speaking one API.
pub struct Engine {
    servers: Vec<http::Server>,
    kind: Kind,
    model: Option<String>,
    concurrency: usize,
}

impl Engine {
    /// Probes the servers (kind and model name) and returns the client.
    pub fn connect(cfg: &EngineConfig) -> Result<Engine> {
        let timeout = Duration::from_secs_f64(cfg.timeout_s);
        let servers: Vec<http::Server> = cfg.urls.iter().map(|u| http::Server::new(u, timeout, cfg.retries)).collect();
        let first = servers.first().ok_or_else(|| Error::Config("--engine: no server given".into()))?;
        let kind = match cfg.kind {
            Some(k) => k,
            None => protocol::detect(first).map_err(|detail| Error::Engine {
                server: first.url.clone(),
                request: "detecting the engine kind (GET /get_model_info, /v1/models)".into(),
                detail,
            })?,
        };
        let model = match (&cfg.model, kind) {
            (Some(m), _) => Some(m.clone()),
            (None, Kind::Sglang | Kind::Llamacpp) => None,
            (None, Kind::Vllm) => Some(protocol::served_model(first).map_err(|detail| Error::Engine {
                server: first.url.clone(),
                request: "GET /v1/models".into(),
                detail,
            })?),
        };
        Ok(Engine { servers, kind, model, concurrency: cfg.concurrency.max(1) })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// SGLang: asks every server to load `dir` (`/update_weights_from_disk`) and checks it serves
    /// it. Other engines cannot reload a policy in place: the error says what to do.
    pub fn reload(&self, dir: &std::path::Path) -> Result<()> {
        for s in &self.servers {
            protocol::reload(self.kind, s, dir).map_err(|detail| Error::Engine {
                server: s.url.clone(),
                request: format!("loading the policy {}", dir.display()),
                detail,
            })?;
        }
        Ok(())
    }
}

impl Sampler for Engine {
    fn sample(&self, reqs: &[SampleRequest], params: &SampleParams) -> Result<Vec<Sample>> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Sample>>> = Mutex::new((0..reqs.len()).map(|_| None).collect());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(reqs.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= reqs.len() || failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let server = &self.servers[i % self.servers.len()];
                    let body = protocol::request(self.kind, self.model.as_deref(), &reqs[i], params);
                    let answer = server
                        .post(protocol::path(self.kind), &body)
                        .map_err(|e| e.to_string())
                        .and_then(|v| protocol::parse(self.kind, &v, params));
                    match answer.and_then(|s| finish(s, params)) {
                        Ok(s) => results.lock().unwrap()[i] = Some(s),
                        Err(detail) => {
                            failed.store(true, Ordering::Relaxed);
                            let mut e = first_error.lock().unwrap();
                            if e.is_none() {
                                *e = Some(Error::Engine {
                                    server: server.url.clone(),
                                    request: format!("request {i} of the batch ({} prompt tokens, seed {})", reqs[i].prompt.len(), reqs[i].seed),
                                    detail,
                                });
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }
        Ok(results.into_inner().unwrap().into_iter().map(|s| s.expect("every request answered")).collect())
    }

    fn has_hidden(&self) -> bool {
        false
    }
}

/// Log-probs an engine did not report (NaN in a [`Sample`]: llama.cpp leaves out tokens that end
/// inside a UTF-8 character) are filled with the policy's own, by a teacher-forced no-grad pass
/// over those responses. Returns how many were filled.
pub fn missing_logprobs(model: &Model, reqs: &[SampleRequest], samples: &mut [Sample], temperature: f64) -> Result<usize> {
    let rows: Vec<usize> = (0..samples.len()).filter(|&i| samples[i].logprobs.iter().any(|x| x.is_nan())).collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<crate::model::Sequence> = rows.iter().map(|&i| crate::model::Sequence { prompt: reqs[i].prompt, response: &samples[i].tokens }).collect();
    let scored = model.response_logprobs_nograd(&seqs, temperature, 8).map_err(|e| Error::Other(e.to_string()))?;
    let mut filled = 0;
    for (k, &i) in rows.iter().enumerate() {
        let mine = scored.logprobs_row(k).map_err(|e| Error::Other(e.to_string()))?;
        let s = &mut samples[i];
        for t in 0..s.tokens.len() {
            if s.logprobs[t].is_nan() {
                s.logprobs[t] = mine[t];
                if s.behavior_logprobs[t].is_nan() {
                    s.behavior_logprobs[t] = mine[t];
                }
                filled += 1;
            }
        }
    }
    Ok(filled)
}

/// The stage's view of a finished response: stop strings applied to the tokens (the first
/// token that completes one ends the response, as the built-in sampler), the stop token's
/// finish reason, and no more than `max_new_tokens`.
fn finish(mut s: Sample, params: &SampleParams) -> std::result::Result<Sample, String> {
    if s.tokens.len() > params.max_new_tokens {
        return Err(format!("{} tokens returned for max {}", s.tokens.len(), params.max_new_tokens));
    }
    if s.logprobs.len() != s.tokens.len() {
        return Err(format!("{} log-probs for {} tokens", s.logprobs.len(), s.tokens.len()));
    }
    if let Some(check) = &params.stop_check {
        for end in 1..=s.tokens.len() {
            if let Some(i) = (check.0)(&s.tokens[..end]) {
                s.tokens.truncate(end);
                s.logprobs.truncate(end);
                s.behavior_logprobs.truncate(end);
                s.finish = FinishReason::Stop(i);
                return Ok(s);
            }
        }
    }
    if let Some(last) = s.tokens.last() {
        if params.stop_tokens.contains(last) {
            s.finish = FinishReason::Eos;
        }
    }
    Ok(s)
}
