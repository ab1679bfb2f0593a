//! A policy as the stages use it: a Hugging Face model directory loaded with its tokenizer,
//! chat template and stop tokens, and an identity (`path@hash`) that every trajectory records
//! so that an update can refuse samples drawn by another policy.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::model::chat::{ChatMessage, ChatTemplate};
use crate::model::hf::{read_stop_tokens, ModelFiles};
use crate::model::tokenizer::{decode, encode_prompt, load_tokenizer};
use crate::model::Model;
use crate::prompts::Message;
use crate::table::hex;

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = s.strip_prefix("cuda:").unwrap_or("0").parse().map_err(|_| Error::Config(format!("--device {s}: expected cuda:N")))?;
            Device::new_cuda(ordinal).map_err(|e| {
                Error::Config(format!("--device {s}: {e} (build with `--features cuda` on a machine with an NVIDIA driver)"))
            })
        }
        _ => Err(Error::Config(format!("--device {s}: expected cpu, cuda or cuda:N"))),
    }
}

/// The compute dtype of `--dtype f32|bf16|f16`; None: [`default_dtype`] of the device.
pub fn parse_dtype(s: Option<&str>, device: &Device) -> Result<DType> {
    match s {
        None => Ok(default_dtype(device)),
        Some("f32" | "float32") => Ok(DType::F32),
        Some("bf16" | "bfloat16") => Ok(DType::BF16),
        Some("f16" | "float16") => Ok(DType::F16),
        Some(other) => Err(Error::Config(format!("--dtype {other}: expected f32, bf16 or f16"))),
    }
}

/// The dtype weights are computed in by default: f32 on the CPU, bf16 on CUDA. Training keeps
/// f32 master weights whatever this is ([`crate::optim::Optimizer::keep_masters`]).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

/// `DIR@` + the first 16 hex digits of SHA-256 over config.json and the weight files.
pub fn policy_id(dir: &Path) -> Result<String> {
    let files = ModelFiles::discover(dir).map_err(|e| Error::Model { dir: dir.into(), detail: e.to_string() })?;
    let mut h = Sha256::new();
    for f in std::iter::once(&files.config).chain(&files.weights) {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        h.update(Sha256::digest(&bytes));
    }
    Ok(format!("{}@{}", dir.display(), &hex(&h.finalize())[..16]))
}

/// The part of a policy id after `@` (the same weights under another path are the same policy).
pub fn policy_hash(id: &str) -> &str {
    id.rsplit_once('@').map_or(id, |(_, h)| h)
}

/// A loaded policy.
pub struct Policy {
    pub dir: PathBuf,
    pub id: String,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub stop_tokens: Vec<u32>,
}

impl Policy {
    /// Loads `dir` with its weights in `dtype` on `device`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Policy> {
        let err = |detail: String| Error::Model { dir: dir.into(), detail };
        let files = ModelFiles::discover(dir).map_err(|e| err(e.to_string()))?;
        let id = policy_id(dir)?;
        let model = Model::load(dir, device, dtype).map_err(|e| err(e.to_string()))?;
        let tokenizer = load_tokenizer(&files.tokenizer).map_err(|e| err(e.to_string()))?;
        let template = ChatTemplate::from_dir(dir).map_err(|e| err(e.to_string()))?;
        let stop_tokens = read_stop_tokens(dir).map_err(|e| err(e.to_string()))?;
        Ok(Policy { dir: dir.into(), id, model, tokenizer, template, stop_tokens })
    }

    /// The prompt text: the chat template rendered with the generation prompt.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        let msgs: Vec<ChatMessage> = messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
        self.template.render(&msgs, true).map_err(|e| Error::Model { dir: self.dir.clone(), detail: format!("chat template: {e}") })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode_prompt(&self.tokenizer, text).map_err(|e| Error::Model { dir: self.dir.clone(), detail: e.to_string() })
    }

    /// Response text without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        decode(&self.tokenizer, ids, true).map_err(|e| Error::Model { dir: self.dir.clone(), detail: e.to_string() })
    }
}
