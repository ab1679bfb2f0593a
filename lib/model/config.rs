//! The model configuration, read from a Hugging Face `config.json`.
//!
//! Two architectures are supported: `LlamaForCausalLM` and `Qwen2ForCausalLM`. Every option that
//! would change the maths and that we do not implement (rope scaling, sliding-window attention,
//! another activation) is rejected with an error that names it, never ignored.
//!
//! Family differences the model has to honour:
//! - Llama: `attention_bias` puts a bias on q, k, v **and** o; `mlp_bias` on gate, up and down;
//!   `head_dim` may be given explicitly.
//! - Qwen2: q, k and v always have a bias, o and the MLP never do.
//!
//! Transformers 5 writes the rope base as `rope_parameters.rope_theta`; older versions as a
//! top-level `rope_theta` (and scaling in `rope_scaling`). Both are read.

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
}

/// `config.json` as written by transformers; the field names are the JSON keys.
///
/// Keys we do not use are ignored. Use [`Config::from_file`] or [`Config::from_json`], which also
/// validate; deserialising directly skips the checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
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
    /// Must be null (or of type "default"): no rope scaling is implemented.
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
    /// Qwen2 only: must be false.
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    /// An id or a list of ids.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
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
            source: e,
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
            (Some(other), _) => Err(Error::Unsupported(format!(
                "architecture {other:?} (supported: LlamaForCausalLM, Qwen2ForCausalLM)"
            ))),
            (None, Some("llama")) => Ok(Family::Llama),
            (None, Some("qwen2")) => Ok(Family::Qwen2),
            (None, other) => Err(Error::Unsupported(format!(
                "model_type {other:?} without architectures (supported: llama, qwen2)"
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
        if let Some(v) = &self.rope_scaling {
            if !is_default_rope(v) {
                return Err(Error::Unsupported(format!("rope_scaling {v} (only null)")));
            }
        }
        if let Some(v) = &self.rope_parameters {
            if !is_default_rope(v) {
                return Err(Error::Unsupported(format!(
                    "rope_parameters {v} (only rope_type \"default\")"
                )));
            }
        }
        if family == Family::Qwen2 && self.use_sliding_window {
            return Err(Error::Unsupported(
                "use_sliding_window = true (Qwen2)".into(),
            ));
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

    /// Whether q, k and v carry a bias.
    pub fn qkv_bias(&self) -> bool {
        match self.family() {
            Ok(Family::Qwen2) => true,
            _ => self.attention_bias,
        }
    }

    /// Whether o_proj carries a bias (Llama's `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        matches!(self.family(), Ok(Family::Llama)) && self.attention_bias
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
        let layer = attn + mlp + 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + self.num_hidden_layers * layer + d + head
    }
}

fn is_default_rope(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => {
            let ty = m.get("rope_type").or_else(|| m.get("type"));
            let ty_ok = matches!(ty.and_then(|t| t.as_str()), None | Some("default"));
            // transformers' default rope reads only rope_theta and partial_rotary_factor.
            let full = m
                .get("partial_rotary_factor")
                .is_none_or(|f| f.as_f64() == Some(1.0));
            ty_ok && full
        }
        _ => false,
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
        let bad = LLAMA.replace("LlamaForCausalLM", "MistralForCausalLM");
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("MistralForCausalLM"), "{e}");
        let bad = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"llama3","factor":8.0}"#,
        );
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("rope_scaling"), "{e}");
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
    fn reads_transformers5_rope_parameters() {
        let c = LLAMA.replace(
            r#""rope_theta":10000.0"#,
            r#""rope_parameters":{"rope_type":"default","rope_theta":500.0}"#,
        );
        let c = Config::from_json(&c).unwrap();
        assert_eq!(c.rope_base(), 500.0);
    }
}
