//! The embedded default policy: a Llama of about 0.9M parameters and its own byte-level BPE
//! tokenizer, built here from a seed with no download (`clipo-model init --preset tiny`).
//!
//! The tokenizer is trained on the embedded task's text ([`crate::task`]) with the same
//! pre-tokenisation as SmolLM2 (single digits, then byte-level), so any text still encodes
//! (bytes are the fallback) and decoding is exact. The chat template is ChatML. The weights are
//! N(0, 0.02) like transformers' default initialisation (RMSNorm weights 1), drawn from our own
//! seeded stream.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{Error, Result};
use crate::model::hf::{write_hf_dir, SaveDtype};
use crate::task::{generate, ArithConfig};

/// ChatML, as SmolLM2 and Qwen2.5 write it (without their default system prompts).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The shape of the tiny policy (the prototype's: d 128, 4 layers, 4 heads, SwiGLU, tied).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TinyPreset {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Tokenizer vocabulary (256 bytes + specials + merges).
    pub vocab: usize,
    pub max_positions: usize,
}

impl TinyPreset {
    pub fn tiny() -> Self {
        // intermediate ~ 8/3 * 128 = 341, rounded up to a multiple of 32.
        TinyPreset { hidden: 128, layers: 4, heads: 4, intermediate: 352, vocab: 512, max_positions: 512 }
    }
}

/// Train the byte-level BPE on the task's text.
pub fn train_tokenizer(vocab: usize, seed: u64) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| Error::Other(format!("training the tiny tokenizer: {e}"));
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    let specials: Vec<AddedToken> = SPECIAL.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let task = generate(&ArithConfig { seed, ..Default::default() }, 4000, 0);
    let mut text: Vec<String> = Vec::new();
    for p in &task.train {
        text.push(p.messages[0].content.clone());
        text.extend(p.solution.clone());
    }
    tok.train(&mut trainer, text.iter()).map_err(err)?;
    tok.add_special_tokens(specials).map_err(err)?;
    Ok(tok)
}

/// Write the tiny policy to `out` (a Hugging Face directory).
pub fn init_tiny(out: &Path, preset: &TinyPreset, seed: u64) -> Result<()> {
    let tok = train_tokenizer(preset.vocab, seed)?;
    let vocab = tok.get_vocab_size(true);
    let id = |s: &str| tok.token_to_id(s).ok_or_else(|| Error::Other(format!("the tiny tokenizer has no {s}")));
    let (eos, bos) = (id("<|im_end|>")?, id("<|endoftext|>")?);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": preset.hidden, "intermediate_size": preset.intermediate,
        "num_hidden_layers": preset.layers, "num_attention_heads": preset.heads, "num_key_value_heads": preset.heads,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": preset.max_positions,
        "tie_word_embeddings": true, "attention_bias": false, "mlp_bias": false, "rope_scaling": null,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": bos, "initializer_range": 0.02,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::derive_seed("tiny-init", seed, 0, "", 0));
    let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut randn = |name: String, shape: (usize, usize)| -> Result<()> {
        let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| normal.sample(&mut rng)).collect();
        tensors.push((name, Tensor::from_vec(v, shape, &dev)?));
        Ok(())
    };
    let (d, f) = (preset.hidden, preset.intermediate);
    randn("model.embed_tokens.weight".into(), (vocab, d))?;
    for l in 0..preset.layers {
        let p = format!("model.layers.{l}");
        for w in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            randn(format!("{p}.self_attn.{w}.weight"), (d, d))?;
        }
        randn(format!("{p}.mlp.gate_proj.weight"), (f, d))?;
        randn(format!("{p}.mlp.up_proj.weight"), (f, d))?;
        randn(format!("{p}.mlp.down_proj.weight"), (d, f))?;
    }
    for l in 0..preset.layers {
        for n in ["input_layernorm", "post_attention_layernorm"] {
            tensors.push((format!("model.layers.{l}.{n}.weight"), Tensor::ones(d, candle_core::DType::F32, &dev)?));
        }
    }
    tensors.push(("model.norm.weight".into(), Tensor::ones(d, candle_core::DType::F32, &dev)?));

    let tokenizer_json = tok.to_string(true).map_err(|e| Error::Other(format!("serialising the tokenizer: {e}")))?;
    let tokenizer_config = serde_json::json!({
        "chat_template": CHAT_TEMPLATE, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": null, "model_max_length": preset.max_positions,
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false,
    });
    let generation_config = serde_json::json!({ "bos_token_id": bos, "eos_token_id": [eos], "pad_token_id": bos });
    let files = vec![
        ("tokenizer.json".to_string(), tokenizer_json.into_bytes()),
        ("tokenizer_config.json".to_string(), serde_json::to_vec_pretty(&tokenizer_config).expect("json")),
        ("generation_config.json".to_string(), serde_json::to_vec_pretty(&generation_config).expect("json")),
    ];
    write_hf_dir(out, config, &tensors, SaveDtype::F32, &files).map_err(|e| Error::Model { dir: out.into(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_tokenizer_round_trips_and_is_deterministic() {
        let a = train_tokenizer(512, 0).unwrap();
        let b = train_tokenizer(512, 0).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        let text = "<|im_start|>user\nMia has 17 shells. Zyx? \\boxed{42}<|im_end|>\n";
        let enc = a.encode(text, false).unwrap();
        assert_eq!(a.decode(enc.get_ids(), false).unwrap(), text);
        // Digits are single tokens; the special tokens are one id each.
        assert!(enc.get_tokens().contains(&"1".to_string()) && enc.get_tokens().contains(&"7".to_string()), "{:?}", enc.get_tokens());
        assert_eq!(enc.get_ids()[0], a.token_to_id("<|im_start|>").unwrap());
        // Words of the task are merged: far fewer tokens than bytes.
        let q = "Mia has 7 shells. She finds 2 more shells. How many shells does Mia have now?";
        assert!(a.encode_fast(q, false).unwrap().len() < 30, "{:?}", a.encode_fast(q, false).unwrap().get_tokens());
    }
}
