//! The model configuration, read from a Hugging Face `config.json`.
//!
//! Four architectures are supported: `LlamaForCausalLM`, `Qwen2ForCausalLM`,
//! `Qwen3ForCausalLM` and `MistralForCausalLM`. Every option that would change the maths and
//! that we do not implement (yarn or longrope scaling, Qwen's per-layer sliding windows, another
//! activation) is rejected with an error that names it, never ignored.
//!
//! Family differences the model has to honour (transformers' `modeling_<family>.py`):
//! - Llama: `attention_bias` puts a bias on q, k, v **and** o; `mlp_bias` on gate, up and down;
//!   `head_dim` may be given explicitly.
//! - Qwen2: q, k and v always have a bias, o and the MLP never do.
//! - Qwen3: per-head RMSNorms `q_norm` and `k_norm` (weights of size `head_dim`) on the
//!   projected queries and keys before rope; `attention_bias` on q, k, v and o as Llama (false in
//!   every released checkpoint); `head_dim` explicit (128 while hidden / heads is 64 in 0.6B).
//! - Mistral: the Llama layout without any bias, and `sliding_window`: a query sees the last
//!   `sliding_window` keys, itself included (transformers' `kv_idx > q_idx - sliding_window`).
//!
//! Rope scaling (`rope_type`): `default`, `linear` (frequencies / factor), `dynamic` (NTK: the
//! default frequencies until a position reaches `max_position_embeddings`, refused past it) and
//! `llama3` (Llama 3.1 / 3.2: low frequencies / factor, high ones kept, a smooth ramp between),
//! computed as `modeling_rope_utils.py` does. Transformers 5 writes them as `rope_parameters`
//! (with `rope_theta` inside); older versions as a top-level `rope_theta` and `rope_scaling`
//! (keyed `rope_type` or `type`). Both are read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// Which decoder family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// `LlamaForCausalLM` (Llama 2/3, SmolLM2, ...).
    Llama,
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5).
    Qwen2,
    /// `Qwen3ForCausalLM` (Qwen3 dense models): q/k norms.
    Qwen3,
    /// `MistralForCausalLM` (Mistral 7B, Ministral, ...): sliding-window attention.
    Mistral,
}

/// The rope frequencies' scaling, from `rope_parameters` or `rope_scaling`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `default` (or none): `inv_freq[i] = 1 / base^(2i/d)`.
    Default,
    /// `linear`: `inv_freq / factor` (positions interpolated by `factor`).
    Linear { factor: f64 },
    /// `dynamic` (NTK-aware): the default frequencies while every position is below
    /// `max_position_embeddings`. transformers then grows the base with the longest sequence
    /// seen so far (state kept across calls): not implemented, a longer call is refused.
    Dynamic { factor: f64, max_position_embeddings: usize },
    /// `llama3` (Llama 3.1 / 3.2): wavelengths above `original_max_position_embeddings /
    /// low_freq_factor` divided by `factor`, below `.. / high_freq_factor` kept, interpolated in
    /// between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// `config.json` as written by transformers; the field names are the JSON keys.
///
/// Keys we do not use are ignored. Use [`Config::from_file`] or [`Config::from_json`], which also
/// validate; deserialising directly skips the checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Absent or null (a config saved without a model): the family comes from `model_type`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no GQA).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    /// Top-level rope base (transformers < 5).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Rope parameters (transformers >= 5): `{"rope_type": "default", "rope_theta": ...}`.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Rope scaling (transformers < 5): null, or `{"rope_type": "llama3", "factor": ...}`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Llama and Qwen2 default to untied (`false`) when the key is absent.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama only: bias on q, k, v and o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama only: bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Qwen2 / Qwen3 only: must be false.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Mistral: the attention window in tokens (null: none). Qwen2/Qwen3 write it too and use it
    /// only under `use_sliding_window`.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// transformers 5: each layer's attention (`full_attention` or `sliding_attention`).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    /// An id or a list of ids.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn default_max_pos() -> usize {
    4096
}

fn default_act() -> String {
    "silu".to_string()
}

impl Config {
    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            err: e,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            e => e,
        })
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Config = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("bad config.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The decoder family, from `architectures[0]` (or `model_type` when that is absent).
    pub fn family(&self) -> Result<Family> {
        let arch = self.architectures.first().map(String::as_str);
        match (arch, self.model_type.as_deref()) {
            (Some("LlamaForCausalLM"), _) => Ok(Family::Llama),
            (Some("Qwen2ForCausalLM"), _) => Ok(Family::Qwen2),
            (Some("Qwen3ForCausalLM"), _) => Ok(Family::Qwen3),
            (Some("MistralForCausalLM"), _) => Ok(Family::Mistral),
            (Some(other), _) => Err(Error::Unsupported(format!(
                "architecture {other:?} (supported: LlamaForCausalLM, Qwen2ForCausalLM, \
                 Qwen3ForCausalLM, MistralForCausalLM)"
            ))),
            (None, Some("llama")) => Ok(Family::Llama),
            (None, Some("qwen2")) => Ok(Family::Qwen2),
            (None, Some("qwen3")) => Ok(Family::Qwen3),
            (None, Some("mistral")) => Ok(Family::Mistral),
            (None, other) => Err(Error::Unsupported(format!(
                "model_type {other:?} without architectures (supported: llama, qwen2, qwen3, mistral)"
            ))),
        }
    }

    /// Checks every option we do not implement.
    pub fn validate(&self) -> Result<()> {
        let family = self.family()?;
        if self.architectures.len() > 1 {
            return Err(Error::Unsupported(format!(
                "several architectures {:?}",
                self.architectures
            )));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported(format!(
                "hidden_act {:?} (only silu)",
                self.hidden_act
            )));
        }
        self.rope_scaling()?;
        if matches!(family, Family::Qwen2 | Family::Qwen3) && self.use_sliding_window {
            return Err(Error::Unsupported(format!(
                "use_sliding_window = true ({family:?}: per-layer sliding windows)"
            )));
        }
        if let Some(other) = self
            .layer_types
            .iter()
            .flatten()
            .find(|t| t.as_str() != "full_attention")
        {
            return Err(Error::Unsupported(format!(
                "layer_types {other:?} (only full_attention layers; Mistral's sliding_window applies to all)"
            )));
        }
        if family == Family::Mistral && self.sliding_window == Some(0) {
            return Err(Error::Config("sliding_window 0 (Mistral)".into()));
        }
        if family == Family::Qwen2 && (self.attention_bias || self.mlp_bias) {
            return Err(Error::Unsupported(
                "attention_bias / mlp_bias on Qwen2 (its biases are fixed: q, k, v only)".into(),
            ));
        }
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads());
        if h == 0 || kv == 0 || h % kv != 0 {
            return Err(Error::Config(format!(
                "num_attention_heads {h} must be a positive multiple of num_key_value_heads {kv}"
            )));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(h) {
            return Err(Error::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {h}",
                self.hidden_size
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim {} must be even",
                self.head_dim()
            )));
        }
        Ok(())
    }

    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The rope base: `rope_parameters.rope_theta`, else `rope_theta`, else 10000.
    pub fn rope_base(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|v| v.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }

    /// The rope scaling of `rope_parameters` (transformers 5), else of `rope_scaling`; an
    /// unsupported type, or a missing or bad factor, is an error naming it.
    pub fn rope_scaling(&self) -> Result<RopeScaling> {
        let (key, v) = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(v), _) if !v.is_null() => ("rope_parameters", v),
            (_, Some(v)) if !v.is_null() => ("rope_scaling", v),
            _ => return Ok(RopeScaling::Default),
        };
        let m = v
            .as_object()
            .ok_or_else(|| Error::Config(format!("{key} {v} is not an object")))?;
        // transformers reads partial_rotary_factor for every type; we rotate whole heads.
        if let Some(f) = m.get("partial_rotary_factor") {
            if f.as_f64() != Some(1.0) {
                return Err(Error::Unsupported(format!("{key}.partial_rotary_factor {f} (only 1)")));
            }
        }
        let ty = m
            .get("rope_type")
            .or_else(|| m.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        let num = |k: &str| -> Result<f64> {
            m.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
                Error::Config(format!("{key} of rope_type {ty:?} needs a number {k:?}: {v}"))
            })
        };
        let factor = || -> Result<f64> {
            let f = num("factor")?;
            if f < 1.0 {
                return Err(Error::Config(format!("{key}.factor {f} (must be at least 1)")));
            }
            Ok(f)
        };
        match ty {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
            "dynamic" => Ok(RopeScaling::Dynamic {
                factor: factor()?,
                max_position_embeddings: self.max_position_embeddings,
            }),
            "llama3" => {
                let (low, high) = (num("low_freq_factor")?, num("high_freq_factor")?);
                if low >= high {
                    return Err(Error::Config(format!(
                        "{key}: low_freq_factor {low} must be below high_freq_factor {high}"
                    )));
                }
                Ok(RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    // transformers falls back to max_position_embeddings when it is absent
                    original_max_position_embeddings: match m.get("original_max_position_embeddings") {
                        None => self.max_position_embeddings as f64,
                        Some(_) => num("original_max_position_embeddings")?,
                    },
                })
            }
            other => Err(Error::Unsupported(format!(
                "{key} rope_type {other:?} (supported: default, linear, dynamic, llama3)"
            ))),
        }
    }

    /// Whether q, k and v carry a bias.
    pub fn qkv_bias(&self) -> bool {
        match self.family() {
            Ok(Family::Qwen2) => true,
            Ok(Family::Llama | Family::Qwen3) => self.attention_bias,
            // MistralAttention has no bias whatever the config says.
            _ => false,
        }
    }

    /// Whether o_proj carries a bias (`attention_bias` of Llama and Qwen3).
    pub fn o_bias(&self) -> bool {
        matches!(self.family(), Ok(Family::Llama | Family::Qwen3)) && self.attention_bias
    }

    /// Whether queries and keys go through per-head RMSNorms (`q_norm`, `k_norm`: Qwen3).
    pub fn qk_norm(&self) -> bool {
        matches!(self.family(), Ok(Family::Qwen3))
    }

    /// The attention window in tokens (Mistral's `sliding_window`), `None` for full attention.
    pub fn attention_window(&self) -> Option<usize> {
        match self.family() {
            Ok(Family::Mistral) => self.sliding_window,
            _ => None,
        }
    }

    /// Whether the MLP projections carry a bias (Llama's `mlp_bias` only).
    pub fn mlp_bias(&self) -> bool {
        matches!(self.family(), Ok(Family::Llama)) && self.mlp_bias
    }

    /// `eos_token_id` as a list (empty when absent).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        ids_of(self.eos_token_id.as_ref())
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (hd, h, kv) = (
            self.head_dim(),
            self.num_attention_heads,
            self.num_key_value_heads(),
        );
        let qkv_b = if self.qkv_bias() {
            h * hd + 2 * kv * hd
        } else {
            0
        };
        let o_b = if self.o_bias() { d } else { 0 };
        let mlp_b = if self.mlp_bias() { 2 * i + d } else { 0 };
        let attn = d * h * hd + 2 * d * kv * hd + h * hd * d + qkv_b + o_b;
        let mlp = 3 * d * i + mlp_b;
        let qk_norm = if self.qk_norm() { 2 * hd } else { 0 };
        let layer = attn + mlp + 2 * d + qk_norm;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + self.num_hidden_layers * layer + d + head
    }
}

fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":256,
        "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
        "num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"rope_scaling":null,"tie_word_embeddings":true,"eos_token_id":[2,3]}"#;

    #[test]
    fn reads_llama() {
        let c = Config::from_json(LLAMA).unwrap();
        assert_eq!(c.family().unwrap(), Family::Llama);
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.num_key_value_heads(), 2);
        assert_eq!(c.eos_token_ids(), vec![2, 3]);
        assert!(!c.qkv_bias());
    }

    #[test]
    fn rejects_unsupported_options() {
        let bad = LLAMA.replace("LlamaForCausalLM", "Gemma2ForCausalLM");
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("Gemma2ForCausalLM"), "{e}");
        let bad = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
        );
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("rope_scaling") && e.contains("\"yarn\""), "{e}");
        // llama3 without its frequency factors names the missing key
        let bad = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"llama3","factor":8.0}"#,
        );
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("low_freq_factor"), "{e}");
        let bad = LLAMA.replace(
            r#""rope_theta":10000.0"#,
            r#""rope_parameters":{"rope_type":"longrope","rope_theta":1e4}"#,
        );
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("rope_parameters") && e.contains("longrope"), "{e}");
        let q = LLAMA
            .replace("LlamaForCausalLM", "Qwen2ForCausalLM")
            .replace(
                "\"rope_theta\"",
                "\"use_sliding_window\":true,\"rope_theta\"",
            );
        let e = Config::from_json(&q).unwrap_err().to_string();
        assert!(e.contains("use_sliding_window"), "{e}");
    }

    #[test]
    fn reads_a_qwen25_config() {
        // Qwen2.5-3B-Instruct's config.json (transformers 4.x layout).
        let c = Config::from_json(
            r#"{"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
            "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 11008,
            "max_position_embeddings": 32768, "max_window_layers": 70, "model_type": "qwen2",
            "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
            "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
            "vocab_size": 151936}"#,
        )
        .unwrap();
        assert_eq!(c.family().unwrap(), Family::Qwen2);
        assert_eq!((c.head_dim(), c.num_key_value_heads()), (128, 2));
        assert_eq!(c.rope_base(), 1e6);
        assert!(c.qkv_bias() && !c.o_bias() && !c.mlp_bias());
        // 3.09B parameters, as published.
        assert_eq!(c.num_parameters(), 3_085_938_688);
    }

    #[test]
    fn reads_a_llama32_config() {
        // Llama-3.2-1B-Instruct's config.json (transformers 4.x layout).
        let c = Config::from_json(
            r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
            "attention_dropout": 0.0, "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
            "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
            "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
            "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
            "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0,
            "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256}"#,
        )
        .unwrap();
        assert_eq!(
            c.rope_scaling().unwrap(),
            RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            }
        );
        assert_eq!(c.rope_base(), 500000.0);
        // 1.24B parameters, as published.
        assert_eq!(c.num_parameters(), 1_235_814_400);
    }

    #[test]
    fn reads_a_qwen3_config() {
        // Qwen3-0.6B's config.json: head_dim 128 although hidden / heads = 64.
        let c = Config::from_json(
            r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
            "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
            "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
            "initializer_range": 0.02, "intermediate_size": 3072,
            "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
            "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
            "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
            "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
            "vocab_size": 151936}"#,
        )
        .unwrap();
        assert_eq!(c.family().unwrap(), Family::Qwen3);
        assert_eq!(c.head_dim(), 128);
        assert!(c.qk_norm() && !c.qkv_bias() && !c.o_bias() && !c.mlp_bias());
        assert_eq!(c.attention_window(), None);
        // 0.6B: 596M parameters with tied embeddings (751.6M counting the embedding twice).
        assert_eq!(c.num_parameters(), 596_049_920);
    }

    #[test]
    fn reads_a_mistral_config() {
        // Mistral-7B-v0.1's config.json: a 4096-token window.
        let c = Config::from_json(
            r#"{"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
            "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
            "intermediate_size": 14336, "max_position_embeddings": 32768,
            "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
            "sliding_window": 4096, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
            "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000}"#,
        )
        .unwrap();
        assert_eq!(c.family().unwrap(), Family::Mistral);
        assert_eq!(c.attention_window(), Some(4096));
        assert!(!c.qkv_bias() && !c.o_bias() && !c.mlp_bias() && !c.qk_norm());
        assert_eq!(c.num_parameters(), 7_241_732_096);
    }

    #[test]
    fn reads_transformers5_rope_parameters() {
        let c = LLAMA.replace(
            r#""rope_theta":10000.0"#,
            r#""rope_parameters":{"rope_type":"default","rope_theta":500.0}"#,
        );
        let c = Config::from_json(&c).unwrap();
        assert_eq!(c.rope_base(), 500.0);
    }
}
