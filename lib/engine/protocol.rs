//! The request and response of one sample, per engine API (recorded exchanges in
//! `tests/fixtures/engines/`, each saying where its shape comes from).
//!
//! | kind | route | prompt | sent per request | read back |
//! |---|---|---|---|---|
//! | `sglang` | `POST /generate` | `input_ids` | `sampling_params`: temperature, top_p, top_k (-1 off), max_new_tokens, stop_token_ids, sampling_seed; `return_logprob` | `output_ids`, `meta_info.output_token_logprobs` `[[lp, id, _], ...]`, `meta_info.finish_reason.type` |
//! | `vllm` | `POST /v1/completions` | `prompt` as ids | n 1, max_tokens, temperature, top_p, top_k (-1 off), min_p, seed, stop_token_ids, logprobs 0, return_token_ids, skip_special_tokens false | `choices[0].token_ids`, `choices[0].logprobs.token_logprobs`, `finish_reason` |
//! | `llamacpp` | `POST /completion` (llama.cpp's `llama-server`) | `prompt` as ids | n_predict, temperature, top_p, top_k (0 off), min_p, repeat_penalty 1, seed (u32), n_probs 1, return_tokens, cache_prompt | `tokens`, `completion_probabilities[i].logprob`, `stop_type` |
//!
//! Log-probs are what each engine reports for the sampled token: SGLang after temperature and
//! before top-k/top-p; vLLM the raw model's (`--logprobs-mode processed_logprobs` for the
//! sampled distribution); llama.cpp the distribution before its sampling chain. Greedy requests
//! send temperature 0. Seeds: SGLang honours `sampling_seed` with
//! `--enable-deterministic-inference` only; llama.cpp's seed is 32-bit (the derived seed's two
//! halves xor-ed, never the -1 that means random).
//!
//! llama-cpp-python's server is not supported: it takes no token-id prompts and returns no
//! token ids, so its responses cannot be trained on exactly.

use serde_json::{json, Value};

use super::http::Server;
use crate::model::{FinishReason, Sample, SampleParams, SampleRequest};

/// The API a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sglang,
    Vllm,
    Llamacpp,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sglang" => Ok(Kind::Sglang),
            "vllm" => Ok(Kind::Vllm),
            "llamacpp" | "llama.cpp" => Ok(Kind::Llamacpp),
            _ => Err(format!("--engine-kind {s}: expected sglang, vllm or llamacpp (or leave it out to detect it)")),
        }
    }
}

/// The route one sample is requested on.
pub fn path(kind: Kind) -> &'static str {
    match kind {
        Kind::Sglang => "/generate",
        Kind::Vllm => "/v1/completions",
        Kind::Llamacpp => "/completion",
    }
}

/// What the server is: SGLang answers `/get_model_info` with `model_path`; vLLM lists its
/// models as `owned_by: "vllm"`; llama.cpp's server answers `/props` with
/// `default_generation_settings`.
pub fn detect(server: &Server) -> Result<Kind, String> {
    if let Ok(v) = server.get_once("/get_model_info") {
        if v.get("model_path").is_some() {
            return Ok(Kind::Sglang);
        }
    }
    if let Ok(v) = server.get_once("/props") {
        if v.get("default_generation_settings").is_some() {
            return Ok(Kind::Llamacpp);
        }
    }
    match server.get_once("/v1/models") {
        Ok(v) if owned_by(&v) == Some("vllm") => Ok(Kind::Vllm),
        Ok(v) if owned_by(&v) == Some("sglang") => Ok(Kind::Sglang),
        Ok(v) => Err(format!(
            "an OpenAI-compatible server that is not vLLM (models owned by {:?}): pass --engine-kind; llama-cpp-python's server is not supported (no token ids)",
            owned_by(&v).unwrap_or("nobody")
        )),
        Err(e) => Err(format!("not reachable or not an inference server: {e}")),
    }
}

fn owned_by(models: &Value) -> Option<&str> {
    models.get("data")?.get(0)?.get("owned_by")?.as_str()
}

/// The first model an OpenAI-compatible server lists (the `model` of its requests).
pub fn served_model(server: &Server) -> Result<String, String> {
    let v = server.get_once("/v1/models").map_err(|e| e.to_string())?;
    v.get("data")
        .and_then(|d| d.get(0))
        .and_then(|m| m.get("id"))
        .and_then(|id| id.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("/v1/models lists no model: {v}"))
}

/// Loads a policy directory into the server and checks it is served.
pub fn reload(kind: Kind, server: &Server, dir: &std::path::Path) -> Result<(), String> {
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.to_string_lossy().to_string();
    match kind {
        Kind::Sglang => {
            let v = server.post("/update_weights_from_disk", &json!({ "model_path": dir })).map_err(|e| e.to_string())?;
            if v.get("success").and_then(Value::as_bool) != Some(true) {
                return Err(format!("update_weights_from_disk failed: {v}"));
            }
            let info = server.get_once("/get_model_info").map_err(|e| e.to_string())?;
            match info.get("model_path").and_then(Value::as_str) {
                Some(p) if p == dir => Ok(()),
                p => Err(format!("after update_weights_from_disk the server serves {p:?}, not {dir}")),
            }
        }
        Kind::Vllm => Err("vLLM cannot load weights from a directory in place: restart `vllm serve` on the policy directory before the step's rollout".into()),
        Kind::Llamacpp => Err("llama.cpp serves a GGUF: convert the policy (llama.cpp's convert_hf_to_gguf.py) and restart llama-server on it".into()),
    }
}

/// The derived 64-bit seed as a 32-bit llama.cpp seed (never 0xFFFFFFFF, which means random).
fn seed32(seed: u64) -> u64 {
    let s = (seed ^ (seed >> 32)) & 0xFFFF_FFFF;
    if s == 0xFFFF_FFFF { 0 } else { s }
}

/// The JSON body of one sample's request.
pub fn request(kind: Kind, model: Option<&str>, req: &SampleRequest, p: &SampleParams) -> Value {
    let temperature = if p.greedy { 0.0 } else { p.temperature };
    match kind {
        Kind::Sglang => json!({
            "input_ids": req.prompt,
            "sampling_params": {
                "temperature": temperature,
                "top_p": p.top_p,
                "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 },
                "min_p": p.min_p,
                "max_new_tokens": p.max_new_tokens,
                "stop_token_ids": p.stop_tokens,
                "sampling_seed": req.seed >> 1,
                "skip_special_tokens": false,
                "no_stop_trim": true,
            },
            "return_logprob": true,
            "stream": false,
        }),
        Kind::Vllm => json!({
            "model": model,
            "prompt": req.prompt,
            "n": 1,
            "max_tokens": p.max_new_tokens,
            "temperature": temperature,
            "top_p": p.top_p,
            "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 },
            "min_p": p.min_p,
            "seed": req.seed >> 1,
            "stop_token_ids": p.stop_tokens,
            "logprobs": 0,
            "return_token_ids": true,
            "return_tokens_as_token_ids": true,
            "skip_special_tokens": false,
            "include_stop_str_in_output": true,
        }),
        Kind::Llamacpp => json!({
            "prompt": req.prompt,
            "n_predict": p.max_new_tokens,
            "temperature": temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "min_p": p.min_p,
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "seed": seed32(req.seed),
            "n_probs": 1,
            "return_tokens": true,
            "cache_prompt": true,
            "stream": false,
        }),
    }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, String> {
    let mut cur = v;
    for (i, k) in path.iter().enumerate() {
        cur = match k.parse::<usize>() {
            Ok(n) => cur.get(n),
            Err(_) => cur.get(*k),
        }
        .ok_or_else(|| format!("the response has no `{}`", path[..=i].join(".")))?;
    }
    Ok(cur)
}

fn ids(v: &Value, what: &str) -> Result<Vec<u32>, String> {
    v.as_array()
        .ok_or_else(|| format!("`{what}` is not a list"))?
        .iter()
        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| format!("`{what}` holds {t}, not a token id")))
        .collect()
}

fn logprob(v: &Value, what: &str) -> Result<f32, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() || x == f64::NEG_INFINITY => Ok(x as f32),
        _ => Err(format!("`{what}` holds {v}, not a log-prob")),
    }
}

/// The sample in a response body (finish reason Eos/Length by the engine's account; the caller
/// applies stop strings and checks lengths). A log-prob the engine did not report is NaN (see
/// [`super::missing_logprobs`]).
pub fn parse(kind: Kind, v: &Value, p: &SampleParams) -> Result<Sample, String> {
    let (tokens, logprobs, length) = match kind {
        Kind::Sglang => {
            let tokens = ids(field(v, &["output_ids"])?, "output_ids")?;
            let lps = field(v, &["meta_info", "output_token_logprobs"])?
                .as_array()
                .ok_or("`meta_info.output_token_logprobs` is not a list")?
                .iter()
                .map(|e| logprob(e.get(0).unwrap_or(&Value::Null), "meta_info.output_token_logprobs[i][0]"))
                .collect::<Result<Vec<f32>, String>>()?;
            let reason = field(v, &["meta_info", "finish_reason", "type"])?.as_str().unwrap_or("");
            if reason == "abort" {
                return Err(format!("the server aborted the request: {}", v["meta_info"]["finish_reason"]));
            }
            (tokens, lps, reason == "length")
        }
        Kind::Vllm => {
            let choice = field(v, &["choices", "0"])?;
            let tokens = ids(field(choice, &["token_ids"]).map_err(|e| format!("{e} (vLLM before 0.10.2 returns no token ids: upgrade the server)"))?, "choices[0].token_ids")?;
            let lps = field(choice, &["logprobs", "token_logprobs"])?
                .as_array()
                .ok_or("`choices[0].logprobs.token_logprobs` is not a list")?
                .iter()
                .map(|x| logprob(x, "choices[0].logprobs.token_logprobs"))
                .collect::<Result<Vec<f32>, String>>()?;
            (tokens, lps, field(choice, &["finish_reason"])?.as_str() == Some("length"))
        }
        Kind::Llamacpp => {
            let tokens = ids(field(v, &["tokens"])?, "tokens")?;
            let probs = match v.get("completion_probabilities") {
                Some(probs) => probs.as_array().ok_or("`completion_probabilities` is not a list")?.clone(),
                None if tokens.is_empty() => vec![],
                None => return Err("the response has no `completion_probabilities` (n_probs was sent)".into()),
            };
            // llama-server keeps no entry for a token that ends inside a UTF-8 character (it
            // waits for the character to complete): the entries are the tokens' in order with
            // such tokens left out. Those get NaN here, for the stage to recompute.
            let mut lps = Vec::with_capacity(tokens.len());
            let mut j = 0;
            for &t in &tokens {
                let entry = probs.get(j).filter(|e| e.get("id").and_then(Value::as_u64) == Some(u64::from(t)));
                match entry {
                    Some(e) => {
                        lps.push(logprob(e.get("logprob").unwrap_or(&Value::Null), "completion_probabilities[i].logprob")?);
                        j += 1;
                    }
                    None => lps.push(f32::NAN),
                }
            }
            if j != probs.len() {
                return Err(format!("`completion_probabilities` ({} entries) do not follow `tokens` ({} ids)", probs.len(), tokens.len()));
            }
            (tokens, lps, field(v, &["stop_type"])?.as_str() == Some("limit"))
        }
    };
    if logprobs.len() != tokens.len() {
        return Err(format!("{} log-probs for {} tokens", logprobs.len(), tokens.len()));
    }
    // The behaviour log-probs: what the engine reported (0 for a greedy draw, as the built-in).
    let behavior_logprobs = if p.greedy { vec![0.0; tokens.len()] } else { logprobs.clone() };
    Ok(Sample {
        tokens,
        logprobs,
        behavior_logprobs,
        finish: if length { FinishReason::Length } else { FinishReason::Eos },
        hidden_official: vec![],
    })
}
