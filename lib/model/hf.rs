//! Hugging Face model directories on disk: what one holds, reading its stop tokens and tensor
//! headers, and writing one that transformers loads unchanged.
//!
//! The layout (the contract with the model code, which reads only these files):
//! - `config.json`: `architectures`, sizes, `tie_word_embeddings`, `torch_dtype`, ...
//! - `model.safetensors` (or shards listed in `model.safetensors.index.json`): tensors in HF
//!   naming (`model.layers.3.self_attn.q_proj.weight`, rows in HF order, not llama.cpp's),
//!   `lm_head.weight` absent when the embeddings are tied, metadata `{"format": "pt"}`.
//! - `tokenizer.json`, `tokenizer_config.json` (special tokens, `chat_template`), optionally
//!   `chat_template.jinja`, `special_tokens_map.json`, `generation_config.json` (stop tokens).
//!
//! Every directory is written into `<out>.tmp/` and renamed into place once complete, so a
//! crash never leaves a half-written model where a reader looks for one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

/// Errors of reading and writing model directories.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// The model directory does not exist.
    #[error("model directory {0} does not exist")]
    NoDir(PathBuf),
    /// A file every model directory needs is missing.
    #[error("{dir} has no {file}")]
    MissingFile { dir: PathBuf, file: String },
    /// No safetensors weights; `found` says what is there instead, if anything.
    #[error("{dir} has no model.safetensors or model.safetensors.index.json{found}")]
    NoWeights { dir: PathBuf, found: String },
    /// A file could not be read, parsed or written.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A JSON file lacks a key or has it with the wrong type.
    #[error("{path}: {message}")]
    BadJson { path: PathBuf, message: String },
    /// The tensors to save do not fit the config (duplicates, lm_head missing when untied, ...).
    #[error("cannot save: {0}")]
    BadTensors(String),
    /// A stop-token id could not be found in generation_config.json nor config.json.
    #[error("no eos_token_id in {0}/generation_config.json or config.json")]
    NoStopTokens(PathBuf),
    /// A tensor operation failed while converting for saving.
    #[error("tensor '{name}': {source}")]
    Tensor {
        name: String,
        source: candle_core::Error,
    },
    /// The tokenizer of the directory could not be read.
    #[error(transparent)]
    Tokenizer(#[from] super::tokenizer::TokenizerError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |e| HfError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The dtype tensors are saved in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    #[default]
    F32,
    Bf16,
}

impl SaveDtype {
    /// The `torch_dtype` written to config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
        }
    }
}

impl std::str::FromStr for SaveDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(SaveDtype::F32),
            "bf16" | "bfloat16" => Ok(SaveDtype::Bf16),
            other => Err(format!("unknown dtype '{other}' (expected f32 or bf16)")),
        }
    }
}

impl std::fmt::Display for SaveDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SaveDtype::F32 => "f32",
            SaveDtype::Bf16 => "bf16",
        })
    }
}

/// The files of a model directory, checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `model.safetensors`, or every shard the index names, in name order.
    pub weights: Vec<PathBuf>,
    /// `model.safetensors.index.json` when sharded.
    pub weights_index: Option<PathBuf>,
    pub tokenizer: PathBuf,
    pub tokenizer_config: Option<PathBuf>,
    pub chat_template_jinja: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    pub special_tokens_map: Option<PathBuf>,
}

impl ModelFiles {
    /// Lists what `dir` holds; fails naming the first missing required file (config.json, the
    /// safetensors weights or every shard of their index, tokenizer.json).
    pub fn discover(dir: &Path) -> Result<Self, HfError> {
        if !dir.is_dir() {
            return Err(HfError::NoDir(dir.to_path_buf()));
        }
        let required = |file: &str| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(HfError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: file.to_string(),
                })
            }
        };
        let optional = |file: &str| Some(dir.join(file)).filter(|p| p.is_file());
        let config = required("config.json")?;
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let (weights, weights_index) = if single.is_file() {
            (vec![single], None)
        } else if index.is_file() {
            let json = read_json(&index)?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| HfError::BadJson {
                    path: index.clone(),
                    message: "no weight_map object".into(),
                })?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            shards.sort();
            shards.dedup();
            let shards = shards
                .iter()
                .map(|s| required(s))
                .collect::<Result<Vec<_>, _>>()?;
            (shards, Some(index))
        } else {
            let other = ["pytorch_model.bin", "model.bin", "model.gguf"]
                .into_iter()
                .find(|f| dir.join(f).is_file());
            let found = other
                .map(|f| format!(" (only {f}, which clipo does not read)"))
                .unwrap_or_default();
            return Err(HfError::NoWeights {
                dir: dir.to_path_buf(),
                found,
            });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            weights_index,
            tokenizer: required("tokenizer.json")?,
            tokenizer_config: optional("tokenizer_config.json"),
            chat_template_jinja: optional("chat_template.jinja"),
            generation_config: optional("generation_config.json"),
            special_tokens_map: optional("special_tokens_map.json"),
        })
    }

    /// Whether a chat template is present (`chat_template.jinja` or tokenizer_config.json's key).
    pub fn has_chat_template(&self) -> Result<bool, HfError> {
        if self.chat_template_jinja.is_some() {
            return Ok(true);
        }
        match &self.tokenizer_config {
            Some(path) => Ok(read_json(path)?
                .get("chat_template")
                .is_some_and(|t| !t.is_null())),
            None => Ok(false),
        }
    }
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<serde_json::Value, HfError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| HfError::BadJson {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn ids_of(value: &serde_json::Value) -> Vec<u32> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => vec![],
    }
}

/// The stop-token ids of a model directory: `generation_config.json`'s `eos_token_id` (an id or
/// a list), else `config.json`'s; in file order, without repeats.
pub fn read_stop_tokens(dir: &Path) -> Result<Vec<u32>, HfError> {
    for file in ["generation_config.json", "config.json"] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let mut ids = read_json(&path)?
            .get("eos_token_id")
            .map(ids_of)
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Err(HfError::NoStopTokens(dir.to_path_buf()))
}

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    pub name: String,
    /// safetensors' dtype name: `F32`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// The tensor headers of safetensors files, read without loading the data; sorted by name.
pub fn read_tensor_headers(files: &[PathBuf]) -> Result<Vec<TensorHeader>, HfError> {
    let mut out = Vec::new();
    for path in files {
        let mut f = std::fs::File::open(path).map_err(io_err(path))?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(io_err(path))?;
        let len = u64::from_le_bytes(len);
        if len > 100_000_000 {
            return Err(HfError::BadJson {
                path: path.clone(),
                message: format!("header of {len} bytes"),
            });
        }
        let mut header = vec![0u8; len as usize];
        f.read_exact(&mut header).map_err(io_err(path))?;
        let bad = |message: String| HfError::BadJson {
            path: path.clone(),
            message,
        };
        let json: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
        for (name, info) in json.into_iter().filter(|(k, _)| k != "__metadata__") {
            let dtype = info
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad(format!("{name}: no dtype")))?;
            let shape = info
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad(format!("{name}: no shape")))?;
            let shape = shape
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>();
            let shape = shape.ok_or_else(|| bad(format!("{name}: bad shape")))?;
            out.push(TensorHeader {
                name,
                dtype: dtype.to_string(),
                shape,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Loads every tensor of safetensors files onto the CPU, sorted by name.
pub fn load_tensors(files: &[PathBuf]) -> Result<Vec<(String, Tensor)>, HfError> {
    let mut out = Vec::new();
    for path in files {
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| {
            HfError::Io {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        out.extend(map);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A summary of a model directory, for `clipo-model info`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub dir: PathBuf,
    /// `architectures[0]` of config.json, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    pub layers: Option<u64>,
    pub hidden_size: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub heads: Option<u64>,
    pub kv_heads: Option<u64>,
    /// config.json's `vocab_size` (embedding rows).
    pub vocab_size: Option<u64>,
    /// Tokens the tokenizer knows, added tokens included.
    pub tokenizer_vocab: usize,
    pub tie_word_embeddings: bool,
    /// Elements over every tensor of the safetensors files (tied embeddings counted once).
    pub params: u64,
    /// Tensor count per safetensors dtype.
    pub dtypes: BTreeMap<String, usize>,
    /// Stop-token ids with their text.
    pub stop_tokens: Vec<(u32, String)>,
    pub chat_template: bool,
    /// Whether clipo's decoder loads config.json: `Ok` with the family and what it uses (rope
    /// scaling, window), or the error naming what is unsupported.
    pub support: std::result::Result<String, String>,
}

impl ModelInfo {
    /// Reads config.json, the safetensors headers, the tokenizer and the stop tokens of `dir`.
    pub fn read(dir: &Path) -> Result<Self, HfError> {
        let files = ModelFiles::discover(dir)?;
        let config = read_json(&files.config)?;
        let uint = |k: &str| config.get(k).and_then(|v| v.as_u64());
        let architecture = config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .ok_or_else(|| HfError::BadJson {
                path: files.config.clone(),
                message: "no architectures list".into(),
            })?
            .to_string();
        let support = super::config::Config::from_file(&files.config)
            .map(|c| describe_support(&c))
            .map_err(|e| e.to_string());
        let headers = read_tensor_headers(&files.weights)?;
        let mut dtypes = BTreeMap::new();
        for h in &headers {
            *dtypes.entry(h.dtype.clone()).or_insert(0) += 1;
        }
        let tokenizer = super::tokenizer::load_tokenizer(&files.tokenizer)?;
        let stop_tokens = read_stop_tokens(dir)?
            .into_iter()
            .map(|id| (id, tokenizer.id_to_token(id).unwrap_or_else(|| "?".into())))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            architecture,
            layers: uint("num_hidden_layers"),
            hidden_size: uint("hidden_size"),
            intermediate_size: uint("intermediate_size"),
            heads: uint("num_attention_heads"),
            kv_heads: uint("num_key_value_heads"),
            vocab_size: uint("vocab_size"),
            tokenizer_vocab: tokenizer.get_vocab_size(true),
            tie_word_embeddings: config
                .get("tie_word_embeddings")
                .and_then(|t| t.as_bool())
                .unwrap_or(false),
            params: headers
                .iter()
                .map(|h| h.shape.iter().product::<usize>() as u64)
                .sum(),
            dtypes,
            stop_tokens,
            chat_template: files.has_chat_template()?,
            support,
        })
    }
}

/// `Qwen3 (q/k norms), rope llama3 (factor 8), window 4096`: the family and what of it is used.
fn describe_support(c: &super::config::Config) -> String {
    use super::config::RopeScaling;
    let mut parts = vec![match c.family() {
        Ok(f) => format!("{f:?}"),
        Err(e) => e.to_string(),
    }];
    if c.qk_norm() {
        parts[0].push_str(" (q/k norms)");
    }
    parts.push(match c.rope_scaling() {
        Ok(RopeScaling::Default) => format!("rope theta {}", c.rope_base()),
        Ok(RopeScaling::Linear { factor }) => format!("rope theta {} linear x{factor}", c.rope_base()),
        Ok(RopeScaling::Dynamic { factor, max_position_embeddings }) => format!(
            "rope theta {} dynamic x{factor} (below {max_position_embeddings} positions only)",
            c.rope_base()
        ),
        Ok(RopeScaling::Llama3 { factor, original_max_position_embeddings, .. }) => format!(
            "rope theta {} llama3 x{factor} from {original_max_position_embeddings} positions",
            c.rope_base()
        ),
        Err(e) => e.to_string(),
    });
    if let Some(w) = c.attention_window() {
        parts.push(format!("sliding window {w}"));
    }
    parts.join(", ")
}

impl std::fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        writeln!(f, "directory: {}", self.dir.display())?;
        writeln!(f, "architecture: {}", self.architecture)?;
        writeln!(f, "layers: {}", opt(self.layers))?;
        writeln!(f, "hidden size: {}", opt(self.hidden_size))?;
        writeln!(f, "intermediate size: {}", opt(self.intermediate_size))?;
        writeln!(
            f,
            "attention heads: {} ({} key/value)",
            opt(self.heads),
            opt(self.kv_heads)
        )?;
        let dtypes: Vec<String> = self
            .dtypes
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect();
        writeln!(
            f,
            "parameters: {} ({:.1} M; tensors: {})",
            self.params,
            self.params as f64 / 1e6,
            dtypes.join(", ")
        )?;
        writeln!(f, "tied embeddings: {}", self.tie_word_embeddings)?;
        writeln!(
            f,
            "vocabulary: {} (tokenizer: {})",
            opt(self.vocab_size),
            self.tokenizer_vocab
        )?;
        let stops: Vec<String> = self
            .stop_tokens
            .iter()
            .map(|(id, t)| format!("{id} {t}"))
            .collect();
        writeln!(f, "stop tokens: {}", stops.join(", "))?;
        writeln!(
            f,
            "chat template: {}",
            if self.chat_template {
                "present"
            } else {
                "absent"
            }
        )?;
        match &self.support {
            Ok(what) => write!(f, "clipo loads it: yes ({what})"),
            Err(why) => write!(f, "clipo loads it: no ({why})"),
        }
    }
}

/// f32 to bf16 bits, rounding to nearest even as torch's `.to(torch.bfloat16)` does.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x0040; // keep the sign, stay a (quiet) NaN
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// A tensor as safetensors sees it, converted to the saved dtype only when written.
struct SaveView<'a> {
    name: &'a str,
    tensor: &'a Tensor,
    dtype: SaveDtype,
    shape: Vec<usize>,
}

impl SaveView<'_> {
    fn bytes(&self) -> Result<Vec<u8>, candle_core::Error> {
        let values = self
            .tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut bytes = Vec::with_capacity(safetensors::View::data_len(self));
        match self.dtype {
            SaveDtype::F32 => values
                .iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
            SaveDtype::Bf16 => values
                .iter()
                .for_each(|v| bytes.extend_from_slice(&f32_to_bf16_bits(*v).to_le_bytes())),
        }
        Ok(bytes)
    }
}

impl safetensors::View for SaveView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            SaveDtype::F32 => safetensors::Dtype::F32,
            SaveDtype::Bf16 => safetensors::Dtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // Checked by `write_hf_dir` before serialization starts.
        Cow::Owned(
            self.bytes()
                .unwrap_or_else(|e| panic!("tensor '{}': {e}", self.name)),
        )
    }
    fn data_len(&self) -> usize {
        let size = match self.dtype {
            SaveDtype::F32 => 4,
            SaveDtype::Bf16 => 2,
        };
        self.shape.iter().product::<usize>() * size
    }
}

/// The tokenizer, chat and generation files copied from a source directory by [`save_hf_dir`].
pub const AUX_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// Saves `tensors` (HF names) as a model directory at `out`, with `source`'s config.json
/// (its `torch_dtype` set to `dtype`) and its tokenizer, chat and generation files.
/// `lm_head.weight` is left out when `source` ties it to the embeddings. Replaces `out`.
pub fn save_hf_dir(
    out: &Path,
    source: &Path,
    tensors: &[(String, Tensor)],
    dtype: SaveDtype,
) -> Result<(), HfError> {
    let config = read_json(&source.join("config.json"))?;
    let mut files = Vec::new();
    for name in AUX_FILES {
        let path = source.join(name);
        if path.is_file() {
            files.push((
                name.to_string(),
                std::fs::read(&path).map_err(io_err(&path))?,
            ));
        }
    }
    write_hf_dir(out, config, tensors, dtype, &files)
}

/// Writes a model directory at `out`: `config` (with `torch_dtype` set to `dtype`) as
/// config.json, the tensors as model.safetensors, and each `(file name, bytes)` of `files`.
/// `lm_head.weight` is left out when `config.tie_word_embeddings` is true and required when it
/// is not. Writes `<out>.tmp/` first and renames it over `out`.
pub fn write_hf_dir(
    out: &Path,
    mut config: serde_json::Value,
    tensors: &[(String, Tensor)],
    dtype: SaveDtype,
    files: &[(String, Vec<u8>)],
) -> Result<(), HfError> {
    let tied = config
        .get("tie_word_embeddings")
        .and_then(|t| t.as_bool())
        .unwrap_or(false);
    let mut names = std::collections::HashSet::new();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        if !names.insert(name.as_str()) {
            return Err(HfError::BadTensors(format!("tensor '{name}' given twice")));
        }
        if tied && name == "lm_head.weight" {
            continue;
        }
        if !matches!(
            tensor.dtype(),
            DType::F32 | DType::BF16 | DType::F16 | DType::F64
        ) {
            return Err(HfError::BadTensors(format!(
                "tensor '{name}' has dtype {:?}",
                tensor.dtype()
            )));
        }
        views.push((
            name.clone(),
            SaveView {
                name,
                tensor,
                dtype,
                shape: tensor.dims().to_vec(),
            },
        ));
    }
    if !tied && !names.contains("lm_head.weight") {
        return Err(HfError::BadTensors(
            "config.json does not tie the embeddings but no lm_head.weight is given".into(),
        ));
    }
    for (name, view) in &views {
        // Fail here, not inside safetensors' writer, on a tensor that cannot be converted.
        view.tensor
            .to_dtype(DType::F32)
            .map_err(|source| HfError::Tensor {
                name: name.clone(),
                source,
            })?;
    }
    let obj = config
        .as_object_mut()
        .ok_or_else(|| HfError::BadTensors("config is not a JSON object".into()))?;
    obj.insert("torch_dtype".into(), dtype.torch_name().into());
    if obj.contains_key("dtype") {
        obj.insert("dtype".into(), dtype.torch_name().into());
    }

    let tmp = tmp_path(out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let config_text =
        serde_json::to_string_pretty(&config).expect("a JSON value serializes") + "\n";
    let config_path = tmp.join("config.json");
    std::fs::write(&config_path, config_text).map_err(io_err(&config_path))?;
    for (name, bytes) in files {
        let path = tmp.join(name);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    let weights = tmp.join("model.safetensors");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &weights).map_err(|e| HfError::Io {
        path: weights.clone(),
        message: e.to_string(),
    })?;
    replace_dir(&tmp, out)
}

/// `<out>.tmp`, beside `out`.
fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "model".into());
    name.push(".tmp");
    out.with_file_name(name)
}

/// Moves the finished `tmp` to `out`, replacing what was there.
fn replace_dir(tmp: &Path, out: &Path) -> Result<(), HfError> {
    if out.exists() {
        let mut old = out.as_os_str().to_os_string();
        old.push(".old");
        let old = PathBuf::from(old);
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        std::fs::rename(out, &old).map_err(io_err(out))?;
        std::fs::rename(tmp, out).map_err(io_err(out))?;
        std::fs::remove_dir_all(&old).map_err(io_err(&old))
    } else {
        std::fs::rename(tmp, out).map_err(io_err(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clipo-hf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bf16_rounds_to_nearest_even_like_candle() {
        let xs = [
            1.0f32,
            -2.5,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            3.3e-39,
            f32::MAX,
            -0.0,
            1e-8,
        ];
        let t = Tensor::new(&xs, &Device::Cpu).unwrap();
        let back = t
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, b) in xs.iter().zip(back) {
            let ours = f32::from_bits((f32_to_bf16_bits(*x) as u32) << 16);
            assert_eq!(ours.to_bits(), b.to_bits(), "{x}");
        }
        // ties go to even: 1 + 1/256 is halfway between 1 and 1 + 1/128
        assert_eq!(f32_to_bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert!(f32::from_bits((f32_to_bf16_bits(f32::NAN) as u32) << 16).is_nan());
    }

    fn toy(tied: bool) -> (serde_json::Value, Vec<(String, Tensor)>) {
        let config = serde_json::json!({"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": tied, "eos_token_id": 2});
        let dev = Device::Cpu;
        let embed = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((3, 2))
            .unwrap();
        let tensors = vec![
            ("model.embed_tokens.weight".to_string(), embed.clone()),
            ("lm_head.weight".to_string(), (embed * 0.5).unwrap()),
        ];
        (config, tensors)
    }

    #[test]
    fn tied_lm_head_is_left_out_and_untied_one_kept() {
        let dir = tempdir("tied");
        for tied in [true, false] {
            let out = dir.join(format!("m-{tied}"));
            let (config, tensors) = toy(tied);
            write_hf_dir(
                &out,
                config,
                &tensors,
                SaveDtype::F32,
                &[("tokenizer.json".into(), b"{}".to_vec())],
            )
            .unwrap();
            let names: Vec<_> = read_tensor_headers(&[out.join("model.safetensors")])
                .unwrap()
                .into_iter()
                .map(|h| h.name)
                .collect();
            assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied);
            assert!(!tmp_path(&out).exists());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn untied_without_lm_head_is_refused() {
        let dir = tempdir("untied");
        let (config, mut tensors) = toy(false);
        tensors.pop();
        let err = write_hf_dir(&dir.join("m"), config, &tensors, SaveDtype::F32, &[]).unwrap_err();
        assert!(err.to_string().contains("lm_head.weight"), "{err}");
        assert!(!dir.join("m").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bf16_save_replaces_and_sets_torch_dtype() {
        let dir = tempdir("bf16");
        let out = dir.join("m");
        let (config, tensors) = toy(false);
        write_hf_dir(&out, config.clone(), &tensors, SaveDtype::F32, &[]).unwrap();
        write_hf_dir(&out, config, &tensors, SaveDtype::Bf16, &[]).unwrap();
        let headers = read_tensor_headers(&[out.join("model.safetensors")]).unwrap();
        assert!(headers.iter().all(|h| h.dtype == "BF16"));
        assert_eq!(
            read_json(&out.join("config.json")).unwrap()["torch_dtype"],
            "bfloat16"
        );
        let back = load_tensors(&[out.join("model.safetensors")]).unwrap();
        let lm = back[0]
            .1
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(lm, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn discover_names_the_missing_file() {
        let dir = tempdir("discover");
        let err = ModelFiles::discover(&dir.join("nope")).unwrap_err();
        assert!(matches!(err, HfError::NoDir(_)));
        let err = ModelFiles::discover(&dir).unwrap_err().to_string();
        assert!(err.ends_with("has no config.json"), "{err}");
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join("pytorch_model.bin"), "").unwrap();
        let err = ModelFiles::discover(&dir).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("pytorch_model.bin"),
            "{err}"
        );
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "s-1.safetensors"}}"#,
        )
        .unwrap();
        let err = ModelFiles::discover(&dir).unwrap_err().to_string();
        assert!(err.ends_with("has no s-1.safetensors"), "{err}");
        std::fs::write(dir.join("s-1.safetensors"), "").unwrap();
        let err = ModelFiles::discover(&dir).unwrap_err().to_string();
        assert!(err.ends_with("has no tokenizer.json"), "{err}");
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        let files = ModelFiles::discover(&dir).unwrap();
        assert_eq!(files.weights, vec![dir.join("s-1.safetensors")]);
        assert!(!files.has_chat_template().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_tokens_prefer_generation_config_and_accept_lists() {
        let dir = tempdir("stop");
        assert!(matches!(
            read_stop_tokens(&dir),
            Err(HfError::NoStopTokens(_))
        ));
        std::fs::write(dir.join("config.json"), r#"{"eos_token_id": 7}"#).unwrap();
        assert_eq!(read_stop_tokens(&dir).unwrap(), vec![7]);
        std::fs::write(
            dir.join("generation_config.json"),
            r#"{"eos_token_id": [2, 0, 2]}"#,
        )
        .unwrap();
        assert_eq!(read_stop_tokens(&dir).unwrap(), vec![2, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
