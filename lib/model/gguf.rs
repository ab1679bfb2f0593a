//! GGUF import: a llama.cpp model file to a Hugging Face model directory (f32 or bf16 weights, a
//! `tokenizer.json` that gives llama.cpp's ids, the chat template), the directory that the
//! PyTorch baseline's `convert_gguf_to_hf.py` makes with transformers.
//!
//! What llama.cpp's converter (`convert_hf_to_gguf.py`) did, undone here:
//! - renamed every tensor (`blk.3.attn_q.weight` for `model.layers.3.self_attn.q_proj.weight`);
//! - permuted the rows of Q and K within each head (`LlamaModel.permute`), from HF's rotate-half
//!   layout (the first half of a head's dimensions pairs with the second) to GGML's interleaved
//!   one (dimension 2i pairs with 2i+1); see [`unpermute_rows`];
//! - quantized the matrices (SmolLM2: Q4_1, the embeddings Q8_0): dequantized to f32 by candle,
//!   which computes the same `d * q + m` as the `gguf` package that transformers uses;
//! - moved config.json and the tokenizer into metadata (`llama.*`, `tokenizer.ggml.*`).
//!
//! The `llama` architecture is read (SmolLM2, Llama 2/3 without rope scaling, Mistral, which
//! llama.cpp writes as llama), and `qwen2` / `qwen3` (Qwen2.5, Qwen3: no Q/K permutation, whose
//! converter does not permute; q/k/v biases for qwen2, `attn_q_norm` / `attn_k_norm` and
//! `attention.key_length` as head_dim for qwen3); any other fails naming it before anything is
//! written.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use super::hf::{write_hf_dir, HfError, SaveDtype};
use super::tokenizer::{tokenizer_from_gguf_vocab, GgufVocab, TokenizerError, TOKEN_TYPE_CONTROL};

/// The `general.architecture` values [`import_gguf`] reads.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// End-of-turn tokens that chat models stop on besides their EOS (llama.cpp's end-of-generation
/// list); each is added to `generation_config.json` when the vocabulary has it as a control token.
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|eom_id|>",
];

/// Errors of reading a GGUF and importing it.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or is not a valid GGUF.
    #[error("reading GGUF {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// `general.architecture` is one we do not import.
    #[error("GGUF architecture '{0}' is not supported (supported: {list})", list = SUPPORTED_ARCHITECTURES.join(", "))]
    UnsupportedArchitecture(String),
    /// A metadata key is missing or has the wrong type.
    #[error("GGUF metadata '{key}': {message}")]
    Metadata { key: String, message: String },
    /// A tensor is unknown, missing or has the wrong shape.
    #[error("GGUF tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    /// The tokenizer could not be rebuilt.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Writing the directory failed.
    #[error(transparent)]
    Hf(#[from] HfError),
}

fn meta_err(key: &str, message: impl Into<String>) -> GgufError {
    GgufError::Metadata {
        key: key.to_string(),
        message: message.into(),
    }
}

fn tensor_err(name: &str, message: impl std::fmt::Display) -> GgufError {
    GgufError::Tensor {
        name: name.to_string(),
        message: message.to_string(),
    }
}

/// A GGUF's contents in Hugging Face terms, before anything is written.
#[derive(Debug)]
pub struct GgufModel {
    /// `general.architecture`.
    pub architecture: String,
    /// The config.json to write (without `torch_dtype`, which the writer sets).
    pub config: serde_json::Value,
    /// f32 tensors in HF naming and layout, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    pub vocab: GgufVocab,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// What [`import_gguf`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    pub architecture: String,
    pub layers: usize,
    pub tensors: usize,
    pub params: usize,
    pub vocab_size: usize,
    /// Seconds spent reading and dequantizing, and writing.
    pub read_s: f64,
    pub write_s: f64,
}

/// Reads any integer metadata value.
fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

/// A float metadata value as the f64 its f32 prints as (1e-5, not 9.999999747378752e-06), the
/// same number once the model casts it back to f32.
fn as_f64(v: &Value) -> Option<f64> {
    match *v {
        Value::F32(x) => x.to_string().parse().ok(),
        Value::F64(x) => Some(x),
        _ => as_u64(v).map(|x| x as f64),
    }
}

struct Meta<'a>(&'a std::collections::HashMap<String, Value>);

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    fn uint(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get(key).ok_or_else(|| meta_err(key, "missing"))?;
        as_u64(v)
            .map(|x| x as usize)
            .ok_or_else(|| meta_err(key, format!("expected an integer, got {v:?}")))
    }
    fn opt_uint(&self, key: &str) -> Result<Option<usize>, GgufError> {
        self.get(key).map(|_| self.uint(key)).transpose()
    }
    fn float(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.get(key).ok_or_else(|| meta_err(key, "missing"))?;
        as_f64(v).ok_or_else(|| meta_err(key, format!("expected a number, got {v:?}")))
    }
    fn string(&self, key: &str) -> Result<Option<String>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(meta_err(
                key,
                format!("expected a string, got {:?}", v.value_type()),
            )),
        }
    }
    fn bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(meta_err(
                key,
                format!("expected a bool, got {:?}", v.value_type()),
            )),
        }
    }
    fn id(&self, key: &str) -> Result<Option<u32>, GgufError> {
        Ok(self.opt_uint(key)?.map(|x| x as u32))
    }
    fn strings(&self, key: &str) -> Result<Vec<String>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(vec![]);
        };
        let items = v.to_vec().map_err(|e| meta_err(key, e.to_string()))?;
        let strings = items.iter().map(|x| match x {
            Value::String(s) => Ok(s.clone()),
            other => Err(meta_err(
                key,
                format!("expected strings, got {:?}", other.value_type()),
            )),
        });
        strings.collect()
    }
    fn floats(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(vec![]);
        };
        let items = v.to_vec().map_err(|e| meta_err(key, e.to_string()))?;
        let floats = items.iter().map(|x| match *x {
            Value::F32(f) => Ok(f),
            Value::F64(f) => Ok(f as f32),
            _ => Err(meta_err(key, "expected floats")),
        });
        floats.collect()
    }
    fn ints(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(vec![]);
        };
        let items = v.to_vec().map_err(|e| meta_err(key, e.to_string()))?;
        let ints = items.iter().map(|x| match *x {
            Value::I32(i) => Ok(i),
            ref other => as_u64(other)
                .map(|u| u as i32)
                .ok_or_else(|| meta_err(key, "expected integers")),
        });
        ints.collect()
    }
}

/// The tokenizer metadata of a GGUF.
fn read_vocab(meta: &Meta) -> Result<GgufVocab, GgufError> {
    let model = meta
        .string("tokenizer.ggml.model")?
        .ok_or_else(|| meta_err("tokenizer.ggml.model", "missing"))?;
    // llama.cpp and transformers add a BOS to a SentencePiece vocabulary that does not say
    let add_bos_default = model == "llama";
    Ok(GgufVocab {
        pre: meta.string("tokenizer.ggml.pre")?,
        tokens: meta.strings("tokenizer.ggml.tokens")?,
        token_types: meta.ints("tokenizer.ggml.token_type")?,
        merges: meta.strings("tokenizer.ggml.merges")?,
        scores: meta.floats("tokenizer.ggml.scores")?,
        model,
        bos_id: meta.id("tokenizer.ggml.bos_token_id")?,
        eos_id: meta.id("tokenizer.ggml.eos_token_id")?,
        unk_id: meta.id("tokenizer.ggml.unknown_token_id")?,
        pad_id: meta.id("tokenizer.ggml.padding_token_id")?,
        add_bos: meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default),
    })
}

/// The HF name of a llama.cpp tensor name, or `None` for a name llama does not use.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    let top = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(name.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's Q/K row permutation for `n_head` heads (the KV heads for K).
///
/// llama.cpp's `permute(w, n_head)` is
/// `w.reshape(n_head, 2, hd / 2, *rest).swapaxes(1, 2).reshape(w.shape)`: HF row
/// `h*hd + j*hd/2 + i` (half j, index i) becomes GGUF row `h*hd + 2*i + j`. So read the GGUF rows
/// as `(n_head, hd/2, 2, rest)`, swap axes 1 and 2, and flatten back, as transformers'
/// `_reverse_permute_weights` does. Works for weights `(rows, in)` and biases `(rows,)`.
pub fn unpermute_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        candle_core::bail!("{rows} rows do not split into {n_head} heads of an even size")
    }
    let rest: usize = dims[1..].iter().product();
    // (n_head, hd/2, 2, rest) -> (n_head, 2, hd/2, rest)
    let w = w
        .reshape((n_head, rows / n_head / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?;
    w.reshape(dims)
}

/// Reads a GGUF into HF terms: config, f32 tensors with HF names and layout, vocabulary.
pub fn read_gguf(path: &Path) -> Result<GgufModel, GgufError> {
    let read_err = |message: String| GgufError::Read {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| read_err(e.to_string()))?;
    let meta = Meta(&content.metadata);

    let arch = meta
        .string("general.architecture")?
        .ok_or_else(|| meta_err("general.architecture", "missing"))?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(GgufError::UnsupportedArchitecture(arch));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let layers = meta.uint(&key("block_count"))?;
    let hidden = meta.uint(&key("embedding_length"))?;
    let intermediate = meta.uint(&key("feed_forward_length"))?;
    let heads = meta.uint(&key("attention.head_count"))?;
    let kv_heads = meta
        .opt_uint(&key("attention.head_count_kv"))?
        .unwrap_or(heads);
    let eps = meta.float(&key("attention.layer_norm_rms_epsilon"))?;
    let rope_theta = match meta.get(&key("rope.freq_base")) {
        Some(_) => meta.float(&key("rope.freq_base"))?,
        None => 10000.0, // llama.cpp's default for llama
    };
    let context = meta.opt_uint(&key("context_length"))?.unwrap_or(2048);
    // qwen3 writes head_dim as the attention's key length (128 in every Qwen3, != hidden / heads)
    let head_dim = match meta.opt_uint(&key("attention.key_length"))? {
        Some(d) => d,
        None => meta
            .opt_uint(&key("rope.dimension_count"))?
            .unwrap_or(hidden / heads.max(1)),
    };
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || head_dim % 2 != 0 {
        let msg = format!("{heads} heads, {kv_heads} KV heads, head size {head_dim}");
        return Err(meta_err(&key("attention.head_count"), msg));
    }
    if meta.get(&key("rope.scaling.type")).is_some()
        || content.tensor_infos.contains_key("rope_freqs.weight")
    {
        let msg = "rope scaling (rope_freqs) is not supported by the import";
        return Err(tensor_err("rope_freqs.weight", msg));
    }
    let vocab = read_vocab(&meta)?;
    let chat_template = meta.string("tokenizer.chat_template")?;

    // Read, dequantize, rename and un-permute every tensor.
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut has_bias = false;
    let mut has_qk_norm = false;
    for name in names {
        let hf = hf_tensor_name(name)
            .ok_or_else(|| tensor_err(name, format!("not a tensor of a {arch} model")))?;
        if name.starts_with("blk.")
            && name.split('.').nth(1).and_then(|l| l.parse::<usize>().ok()) >= Some(layers)
        {
            return Err(tensor_err(
                name,
                format!("layer beyond block_count {layers}"),
            ));
        }
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| tensor_err(name, e))?;
        let mut t = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| tensor_err(name, e))?;
        // Only llama.cpp's LlamaModel permutes Q and K (Qwen2Model and Qwen3Model do not).
        if arch == "llama" && name.contains(".attn_q.") {
            t = unpermute_rows(&t, heads).map_err(|e| tensor_err(name, e))?;
        } else if arch == "llama" && name.contains(".attn_k.") {
            t = unpermute_rows(&t, kv_heads).map_err(|e| tensor_err(name, e))?;
        }
        has_bias |= name.ends_with(".bias");
        has_qk_norm |= name.contains(".attn_q_norm.");
        tensors.push((hf, t));
    }

    // Check that every tensor a llama has is there with its HF shape.
    let vocab_rows = tensors
        .iter()
        .find(|(n, _)| n == "model.embed_tokens.weight")
        .map(|(_, t)| t.dims()[0])
        .ok_or_else(|| tensor_err("token_embd.weight", "missing"))?;
    let vocab_size = meta.opt_uint(&key("vocab_size"))?.unwrap_or(vocab_rows);
    let tied = !tensors.iter().any(|(n, _)| n == "lm_head.weight");
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab_size, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
    ];
    if !tied {
        expected.push(("lm_head.weight".into(), vec![vocab_size, hidden]));
    }
    let (q_rows, kv_rows) = (heads * head_dim, kv_heads * head_dim);
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        expected.extend([
            (p("input_layernorm.weight"), vec![hidden]),
            (p("post_attention_layernorm.weight"), vec![hidden]),
            (p("self_attn.q_proj.weight"), vec![q_rows, hidden]),
            (p("self_attn.k_proj.weight"), vec![kv_rows, hidden]),
            (p("self_attn.v_proj.weight"), vec![kv_rows, hidden]),
            (p("self_attn.o_proj.weight"), vec![hidden, q_rows]),
            (p("mlp.gate_proj.weight"), vec![intermediate, hidden]),
            (p("mlp.up_proj.weight"), vec![intermediate, hidden]),
            (p("mlp.down_proj.weight"), vec![hidden, intermediate]),
        ]);
        if has_bias || arch == "qwen2" {
            expected.extend([
                (p("self_attn.q_proj.bias"), vec![q_rows]),
                (p("self_attn.k_proj.bias"), vec![kv_rows]),
                (p("self_attn.v_proj.bias"), vec![kv_rows]),
            ]);
        }
        if arch == "qwen3" {
            expected.extend([
                (p("self_attn.q_norm.weight"), vec![head_dim]),
                (p("self_attn.k_norm.weight"), vec![head_dim]),
            ]);
        }
    }
    for (name, shape) in &expected {
        match tensors.iter().find(|(n, _)| n == name) {
            None => return Err(tensor_err(name, "missing from the GGUF")),
            Some((_, t)) if t.dims() != shape.as_slice() => {
                return Err(tensor_err(
                    name,
                    format!("shape {:?}, expected {shape:?}", t.dims()),
                ))
            }
            Some(_) => {}
        }
    }
    if tensors.len() != expected.len() {
        let extra: Vec<_> = tensors
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !expected.iter().any(|(e, _)| e == *n))
            .collect();
        return Err(tensor_err(
            extra[0],
            "not expected in this configuration (a bias on o_proj or the MLP?)",
        ));
    }
    if vocab.tokens.len() > vocab_size {
        let msg = format!(
            "{} tokens but {vocab_size} embedding rows",
            vocab.tokens.len()
        );
        return Err(meta_err("tokenizer.ggml.tokens", msg));
    }

    if has_qk_norm && arch != "qwen3" {
        return Err(tensor_err("blk.0.attn_q_norm.weight", format!("q/k norms in a {arch} model")));
    }
    if has_bias && arch == "qwen3" {
        // Qwen3's attention_bias would put a bias on o_proj too; no released Qwen3 has one.
        return Err(tensor_err("blk.0.attn_q.bias", "q/k/v biases in a qwen3 model"));
    }
    let (architecture, model_type) = match arch.as_str() {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut config = serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "attention_bias": has_bias && arch == "llama",
        "attention_dropout": 0.0,
        "bos_token_id": vocab.bos_id,
        "eos_token_id": vocab.eos_id,
        "pad_token_id": vocab.pad_id,
        "unk_token_id": vocab.unk_id,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": context,
        "mlp_bias": false,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": eps,
        // transformers < 5 and candle read the top-level key, transformers >= 5 the dict.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "tie_word_embeddings": tied,
        "use_cache": true,
        "vocab_size": vocab_size,
    });
    if arch != "llama" {
        // Qwen's configs: no mlp_bias / pretraining_tp keys, full attention in every layer.
        let obj = config.as_object_mut().unwrap();
        obj.remove("mlp_bias");
        obj.remove("pretraining_tp");
        obj.insert("use_sliding_window".into(), false.into());
        obj.insert("sliding_window".into(), serde_json::Value::Null);
    }
    Ok(GgufModel {
        architecture: arch,
        config,
        tensors,
        vocab,
        chat_template,
    })
}

/// The auxiliary files of an imported model: tokenizer.json, tokenizer_config.json (special
/// tokens, chat template), special_tokens_map.json, generation_config.json.
pub fn tokenizer_files(model: &GgufModel) -> Result<Vec<(String, Vec<u8>)>, GgufError> {
    let vocab = &model.vocab;
    let tokenizer = tokenizer_from_gguf_vocab(vocab)?;
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| TokenizerError::Tokenizers {
            context: "serializing tokenizer.json".into(),
            message: e.to_string(),
        })?;

    let special = serde_json::json!({
        "bos_token": vocab.token(vocab.bos_id),
        "eos_token": vocab.token(vocab.eos_id),
        "pad_token": vocab.token(vocab.pad_id),
        "unk_token": vocab.token(vocab.unk_id),
    });
    let special: serde_json::Map<String, serde_json::Value> = special
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let control = vocab.control_ids();
    let added: serde_json::Map<String, serde_json::Value> = control
        .iter()
        .map(|&id| {
            let entry = serde_json::json!({
                "content": vocab.tokens[id as usize], "lstrip": false, "normalized": false,
                "rstrip": false, "single_word": false, "special": true,
            });
            (id.to_string(), entry)
        })
        .collect();
    let mut tokenizer_config = serde_json::json!({
        "add_bos_token": vocab.add_bos,
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model.config["max_position_embeddings"],
        // Not GPT2Tokenizer: transformers 5 rebuilds that class's pre-tokenizer (plain ByteLevel,
        // dropping SmolLM2's digit split); this class loads tokenizer.json as written, in 4 and 5.
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let obj = tokenizer_config.as_object_mut().unwrap();
    if vocab.model == "gpt2" {
        // byte-level BPE: no space before the text (a SentencePiece vocabulary's Metaspace adds one)
        obj.insert("add_prefix_space".into(), false.into());
    }
    obj.extend(special.clone());
    if let Some(template) = &model.chat_template {
        obj.insert("chat_template".into(), template.clone().into());
    }

    // Stop on the EOS and on the end-of-turn control tokens the vocabulary has.
    let mut stops: Vec<u32> = vocab.eos_id.into_iter().collect();
    for (id, token) in vocab.tokens.iter().enumerate() {
        let control = vocab.token_types.get(id) == Some(&TOKEN_TYPE_CONTROL);
        if control && END_OF_TURN_TOKENS.contains(&token.as_str()) && !stops.contains(&(id as u32))
        {
            stops.push(id as u32);
        }
    }
    let generation_config = serde_json::json!({
        "bos_token_id": vocab.bos_id,
        "eos_token_id": stops,
        "pad_token_id": vocab.pad_id,
    });

    let pretty = |v: &serde_json::Value| {
        (serde_json::to_string_pretty(v).expect("JSON serializes") + "\n").into_bytes()
    };
    Ok(vec![
        ("tokenizer.json".into(), tokenizer_json.into_bytes()),
        ("tokenizer_config.json".into(), pretty(&tokenizer_config)),
        (
            "special_tokens_map.json".into(),
            pretty(&serde_json::Value::Object(special)),
        ),
        ("generation_config.json".into(), pretty(&generation_config)),
    ])
}

/// Imports a GGUF as a Hugging Face model directory at `out_dir` (replaced if it exists).
pub fn import_gguf(
    gguf_path: &Path,
    out_dir: &Path,
    dtype: SaveDtype,
) -> Result<ImportSummary, GgufError> {
    let start = Instant::now();
    let model = read_gguf(gguf_path)?;
    let files = tokenizer_files(&model)?;
    let read_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    write_hf_dir(out_dir, model.config.clone(), &model.tensors, dtype, &files)?;
    Ok(ImportSummary {
        architecture: model.architecture,
        layers: model.config["num_hidden_layers"].as_u64().unwrap_or(0) as usize,
        tensors: model.tensors.len(),
        params: model.tensors.iter().map(|(_, t)| t.elem_count()).sum(),
        vocab_size: model.vocab.tokens.len(),
        read_s,
        write_s: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), written out row by row.
    fn llama_cpp_permute(rows: &[Vec<f32>], n_head: usize) -> Vec<Vec<f32>> {
        let hd = rows.len() / n_head;
        let mut out = vec![vec![]; rows.len()];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    out[h * hd + 2 * i + j] = rows[h * hd + j * hd / 2 + i].clone();
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (n_head, hd, cols) = (3, 8, 2);
        let hf: Vec<Vec<f32>> = (0..n_head * hd)
            .map(|r| (0..cols).map(|c| (r * 10 + c) as f32).collect())
            .collect();
        let gguf = llama_cpp_permute(&hf, n_head);
        let t = Tensor::new(gguf.concat(), &Device::Cpu)
            .unwrap()
            .reshape((n_head * hd, cols))
            .unwrap();
        let back = unpermute_rows(&t, n_head)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(back, hf);
        // one head of size 4: GGUF rows [a0, b0, a1, b1] are HF rows [a0, a1, b0, b1]
        let t = Tensor::new(&[0f32, 2.0, 1.0, 3.0], &Device::Cpu).unwrap();
        assert_eq!(
            unpermute_rows(&t, 1).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
        assert!(unpermute_rows(&t, 3).is_err());
    }

    #[test]
    fn names_map_to_hf() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "model.norm.weight"),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
            ),
            (
                "blk.12.ffn_norm.weight",
                "model.layers.12.post_attention_layernorm.weight",
            ),
            (
                "blk.3.attn_q.weight",
                "model.layers.3.self_attn.q_proj.weight",
            ),
            ("blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
            ),
            (
                "blk.29.ffn_down.weight",
                "model.layers.29.mlp.down_proj.weight",
            ),
        ];
        for (gguf, hf) in cases {
            assert_eq!(hf_tensor_name(gguf).as_deref(), Some(hf), "{gguf}");
        }
        for bad in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
            "blk.0.attn_q.scale",
        ] {
            assert_eq!(hf_tensor_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn f32_metadata_prints_short() {
        assert_eq!(as_f64(&Value::F32(1e-5)), Some(1e-5));
        assert_eq!(as_f64(&Value::F32(100000.0)), Some(100000.0));
        assert_eq!(as_u64(&Value::I32(-1)), None);
    }
}
