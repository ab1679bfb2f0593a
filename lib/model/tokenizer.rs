//! Tokenizers: built from a GGUF vocabulary, loaded from a Hugging Face `tokenizer.json`, and
//! the two helpers the pipeline needs (encode a rendered chat prompt, decode a response).
//!
//! A GGUF carries no `tokenizer.json`, only llama.cpp's metadata: `tokenizer.ggml.model`
//! (`gpt2` = byte-level BPE), `.pre` (which split regex the merges were learned with),
//! `.tokens`, `.token_type` (1 normal, 3 control, 4 user-defined), `.merges` and the special
//! token ids. [`tokenizer_from_gguf_vocab`] rebuilds the Hugging Face tokenizer from them, laid out
//! as the model's own `tokenizer.json` is. For SmolLM2 (`pre = smollm`) that is
//! `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false, use_regex=true)]`, a
//! byte-level decoder and the 17 control tokens added as special tokens; it matches llama.cpp
//! token for token (llama.cpp's `smollm` pre-tokenizer splits `\p{N}` first, too). candle's
//! `TokenizerFromGguf` does not: it adds a prefix space.
//!
//! A SentencePiece vocabulary (`tokenizer.ggml.model = llama`: Llama 2, Mistral, TinyLlama)
//! carries scores instead of merges, byte-fallback tokens `<0x00>`..`<0xFF>` and the space marker
//! U+2581. [`tokenizer_from_gguf_vocab`] builds what transformers' GGUF converter builds for it
//! (its `LlamaTokenizer`): BPE with byte fallback over merges derived from the scores
//! (`generate_merges`: every split of a piece into two pieces of the vocabulary, ordered by the
//! piece's score, then the halves' lengths, then file order), a `Metaspace` pre-tokenizer that
//! writes spaces as U+2581 and prepends one to the text's first section, the decoder back
//! (U+2581 -> space, bytes fused, the leading space stripped), a BOS added unless
//! `add_bos_token` is false. Checked token for token against transformers on 44 texts.
//!
//! The PyTorch baseline's tokenizer (transformers' GGUF converter, which does not know `smollm`)
//! has no digit split. It gives the same ids on the 8 benchmark prompts, and on 23 315 of the
//! 23 374 data-set prompts; the other 59 contain two or more spaces before a digit, which it
//! cuts as `Ġ Ġ 2` where the model's own tokenizer gives `ĠĠ 2`. We follow the model's.

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Errors of tokenizer construction, loading, encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The GGUF names a tokenizer family other than byte-level BPE and SentencePiece.
    #[error("unsupported GGUF tokenizer model '{0}' (supported: gpt2, the byte-level BPE; llama, SentencePiece)")]
    UnsupportedModel(String),
    /// The GGUF names a pre-tokenizer whose split regex we do not know.
    #[error("unsupported GGUF pre-tokenizer '{0}' (supported: {SUPPORTED_PRE})")]
    UnsupportedPre(String),
    /// The vocabulary metadata is inconsistent (lengths differ, a merge is malformed, ...).
    #[error("bad GGUF vocabulary: {0}")]
    BadVocab(String),
    /// `tokenizer.json` is missing.
    #[error("no tokenizer.json in {0}")]
    Missing(PathBuf),
    /// The tokenizers library failed (a file it cannot parse, an id out of range, ...).
    #[error("tokenizer {context}: {message}")]
    Tokenizers { context: String, message: String },
}

const SUPPORTED_PRE: &str = "smollm, default, gpt2, qwen2, llama-bpe, llama3";

/// The split regex of Qwen2's `tokenizer.json` (digits one by one).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The split regex of Llama 3's `tokenizer.json` (digits in runs of up to three).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The tokenizer half of a GGUF's metadata, under llama.cpp's key names.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`, e.g. `gpt2`.
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. `smollm`; `None` when absent (treated as `default`).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the vocabulary, index = token id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (empty when absent).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: "left right", best first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores`, one per token (SentencePiece vocabularies; empty when absent).
    pub scores: Vec<f32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (when absent: false for gpt2 vocabularies, true for
    /// SentencePiece ones, as llama.cpp and transformers do).
    pub add_bos: bool,
}

impl GgufVocab {
    /// The token text of `id`, if the id is in range.
    pub fn token(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|i| self.tokens.get(i as usize))
            .map(String::as_str)
    }

    /// The ids of the control tokens (token type 3), in id order.
    pub fn control_ids(&self) -> Vec<u32> {
        let types = self.token_types.iter();
        types
            .enumerate()
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

fn tk_err(context: impl Into<String>) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    let context = context.into();
    move |e| TokenizerError::Tokenizers {
        context,
        message: e.to_string(),
    }
}

/// GPT-2's byte-to-character table: the alphabet a byte-level vocabulary is written in.
fn byte_alphabet() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 0u32;
    for b in 0..256u32 {
        table[b as usize] = if printable.contains(&b) {
            char::from_u32(b).unwrap()
        } else {
            next += 1;
            char::from_u32(255 + next).unwrap()
        };
    }
    table
}

/// The pre-tokenizer a byte-level vocabulary was trained with, from `tokenizer.ggml.pre`.
fn pre_tokenizer_for(pre: Option<&str>) -> Result<PreTokenizerWrapper, TokenizerError> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    let split = |regex: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err("split regex"))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split.into(),
            byte_level(false).into(),
        ])))
    };
    match pre.unwrap_or("default") {
        // SmolLM2's own tokenizer.json: digits one by one, then GPT-2's regex and bytes.
        "smollm" => Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            Digits::new(true).into(),
            byte_level(true).into(),
        ]))),
        "default" | "gpt2" => Ok(byte_level(true).into()),
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_SPLIT),
        "llama-bpe" | "llama3" | "llama-v3" => split(LLAMA3_SPLIT),
        other => Err(TokenizerError::UnsupportedPre(other.into())),
    }
}

/// Builds the Hugging Face tokenizer a GGUF's vocabulary describes (byte-level BPE only).
///
/// Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain
/// added tokens, so each stays whole in text, as llama.cpp and transformers treat them.
pub fn tokenizer_from_gguf_vocab(vocab: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    if vocab.model == "llama" {
        return sentencepiece_tokenizer(vocab);
    }
    if vocab.model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel(vocab.model.clone()));
    }
    let n = vocab.tokens.len();
    if !vocab.token_types.is_empty() && vocab.token_types.len() != n {
        let msg = format!("{} tokens but {} token types", n, vocab.token_types.len());
        return Err(TokenizerError::BadVocab(msg));
    }
    let pre_tokenizer = pre_tokenizer_for(vocab.pre.as_deref())?;

    // Every real token of a byte-level vocabulary is spelled in the byte alphabet; one that is not
    // is respelled byte by byte, as transformers' GGUF converter does.
    let table = byte_alphabet();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let spelled = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut map = tokenizers::models::bpe::Vocab::default();
    for (id, token) in vocab.tokens.iter().enumerate() {
        let key = if spelled(token) {
            token.clone()
        } else {
            token.bytes().map(|b| table[b as usize]).collect()
        };
        map.insert(key, id as u32);
    }
    let mut merges = Vec::with_capacity(vocab.merges.len());
    for (i, merge) in vocab.merges.iter().enumerate() {
        match merge.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(TokenizerError::BadVocab(format!(
                    "merge {i} is not 'left right': {merge:?}"
                )))
            }
        }
    }
    // As in SmolLM2's and GPT-2's tokenizer.json: no unk token, no prefixes, no byte fallback.
    let bpe = BPE::builder()
        .vocab_and_merges(map, merges)
        .build()
        .map_err(tk_err("BPE from the GGUF vocabulary"))?;

    let mut tokenizer = Tokenizer::new(bpe);
    if matches!(vocab.pre.as_deref(), Some("qwen2" | "deepseek-r1-qwen")) {
        tokenizer
            .with_normalizer(Some(NFC))
            .map_err(tk_err("normalizer"))?;
    }
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    if vocab.add_bos {
        let bos = vocab.token(vocab.bos_id).ok_or_else(|| {
            TokenizerError::BadVocab("add_bos_token is set but bos_token_id is not".into())
        })?;
        let post = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
            .map_err(|e| TokenizerError::BadVocab(format!("bos template: {e}")))?
            .special_tokens(vec![(bos.to_string(), vocab.bos_id.unwrap())])
            .build()
            .map_err(|e| TokenizerError::BadVocab(format!("bos template: {e}")))?;
        tokenizer.with_post_processor(Some(post));
    } else {
        tokenizer.with_post_processor(Some(ByteLevel::new(true, false, true)));
    }

    let typed = |kind: i32| {
        let pairs = vocab.tokens.iter().zip(&vocab.token_types);
        pairs
            .filter(move |(_, &t)| t == kind)
            .map(|(s, _)| s.as_str())
    };
    let control: Vec<AddedToken> = typed(TOKEN_TYPE_CONTROL)
        .filter(|t| spelled(t))
        .map(|t| AddedToken::from(t.to_string(), true).normalized(false))
        .collect();
    tokenizer
        .add_special_tokens(control)
        .map_err(tk_err("adding control tokens"))?;
    let user: Vec<AddedToken> = typed(TOKEN_TYPE_USER_DEFINED)
        .filter(|t| spelled(t))
        .map(|t| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    tokenizer
        .add_tokens(user)
        .map_err(tk_err("adding user-defined tokens"))?;

    let size = tokenizer.get_vocab_size(true);
    if size != n {
        let msg =
            format!("the tokenizer has {size} tokens but the GGUF lists {n} (duplicate tokens?)");
        return Err(TokenizerError::BadVocab(msg));
    }
    Ok(tokenizer)
}

/// transformers' `generate_merges(vocab, scores)`: for each token in file order (the first
/// occurrence of a repeated one, with the score of its last), every split into two tokens of the
/// vocabulary, those of one token ordered by the halves' ids; then all of them sorted, stably, by
/// score, left length and right length (in characters), highest first.
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    use std::collections::HashMap;
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut score: HashMap<&str, f32> = HashMap::new();
    let mut order: Vec<&str> = vec![];
    for (i, t) in tokens.iter().enumerate() {
        if ids.insert(t, i).is_none() {
            order.push(t);
        }
        score.insert(t, scores[i]);
    }
    let mut merges: Vec<(&str, &str, f32)> = vec![];
    for t in order {
        let mut local = vec![];
        for (k, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(k);
            if ids.contains_key(l) && ids.contains_key(r) {
                local.push((l, r, score[t]));
            }
        }
        local.sort_by_key(|(l, r, _)| (ids[l], ids[r]));
        merges.extend(local);
    }
    let key = |m: &(&str, &str, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| key(b).partial_cmp(&key(a)).unwrap_or(std::cmp::Ordering::Equal));
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

/// The tokenizer of a SentencePiece vocabulary, laid out as the `tokenizer.json` that
/// transformers' GGUF converter (`LlamaTokenizer`) writes for it (see the module doc).
fn sentencepiece_tokenizer(vocab: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    let n = vocab.tokens.len();
    if vocab.scores.len() != n {
        let msg = format!("{n} tokens but {} scores (a SentencePiece vocabulary needs them)", vocab.scores.len());
        return Err(TokenizerError::BadVocab(msg));
    }
    if !vocab.token_types.is_empty() && vocab.token_types.len() != n {
        let msg = format!("{} tokens but {} token types", n, vocab.token_types.len());
        return Err(TokenizerError::BadVocab(msg));
    }
    let merges = merges_from_scores(&vocab.tokens, &vocab.scores);
    let ids: serde_json::Map<String, serde_json::Value> =
        vocab.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i.into())).collect();
    let typed = |kind: i32| -> Vec<usize> {
        let types = vocab.token_types.iter().enumerate();
        types.filter(|(_, &t)| t == kind).map(|(i, _)| i).collect()
    };
    let added = |i: usize, special: bool| {
        serde_json::json!({"id": i, "content": vocab.tokens[i], "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": special})
    };
    let mut added_tokens: Vec<serde_json::Value> =
        typed(TOKEN_TYPE_CONTROL).into_iter().map(|i| added(i, true)).collect();
    added_tokens.extend(typed(TOKEN_TYPE_USER_DEFINED).into_iter().map(|i| added(i, false)));
    // transformers adds <unk> too: its control list is type 3, and <unk> (type 2) is its unk token
    if let Some(unk) = vocab.unk_id.filter(|&u| (u as usize) < n) {
        if !added_tokens.iter().any(|a| a["id"] == unk) {
            added_tokens.push(added(unk as usize, true));
        }
    }
    added_tokens.sort_by_key(|a| a["id"].as_u64());
    let post_processor = if vocab.add_bos {
        let bos = vocab.token(vocab.bos_id).ok_or_else(|| {
            TokenizerError::BadVocab("add_bos_token is set but bos_token_id is not".into())
        })?;
        let bos_id = vocab.bos_id.unwrap();
        serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}})
    } else {
        serde_json::Value::Null
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": ids, "merges": merges},
    });
    let tokenizer: Tokenizer = json.to_string().parse().map_err(tk_err("SentencePiece vocabulary"))?;
    let size = tokenizer.get_vocab_size(true);
    if size != n {
        let msg = format!("the tokenizer has {size} tokens but the GGUF lists {n} (duplicate tokens?)");
        return Err(TokenizerError::BadVocab(msg));
    }
    Ok(tokenizer)
}

/// Loads `<dir>/tokenizer.json` (or the file itself when given a file).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TokenizerError> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(TokenizerError::Missing(path.to_path_buf()));
    }
    Tokenizer::from_file(&file).map_err(|e| TokenizerError::Tokenizers {
        context: format!("reading {}", file.display()),
        message: e.to_string(),
    })
}

/// Token ids of a prompt already rendered by the chat template.
///
/// Encoded as transformers' `apply_chat_template(tokenize=True)` does: with no special tokens
/// added by the tokenizer (the template writes the BOS itself when the model wants one), while
/// special tokens written in the text (`<|im_start|>`) still map to their ids.
pub fn encode_prompt(tokenizer: &Tokenizer, rendered: &str) -> Result<Vec<u32>, TokenizerError> {
    let enc = tokenizer
        .encode_fast(rendered, false)
        .map_err(tk_err("encoding a prompt"))?;
    Ok(enc.get_ids().to_vec())
}

/// Text of response token ids; special tokens (the stop token, padding) are left out when
/// `skip_special` is set.
pub fn decode(
    tokenizer: &Tokenizer,
    ids: &[u32],
    skip_special: bool,
) -> Result<String, TokenizerError> {
    tokenizer
        .decode(ids, skip_special)
        .map_err(tk_err("decoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: 2 control tokens, the 256 byte characters, and a few merges.
    pub(crate) fn tiny_vocab(pre: &str) -> GgufVocab {
        let table = byte_alphabet();
        let mut tokens = vec!["<|im_start|>".to_string(), "<|im_end|>".to_string()];
        let mut token_types = vec![3, 3];
        tokens.extend(table.iter().map(|c| c.to_string()));
        token_types.extend(std::iter::repeat_n(1, 256));
        let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "1 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
            token_types.push(1);
        }
        GgufVocab {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            tokens,
            token_types,
            merges,
            bos_id: Some(0),
            eos_id: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = byte_alphabet();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], 'Ń');
        assert_eq!(
            t.iter().collect::<std::collections::HashSet<_>>().len(),
            256
        );
    }

    #[test]
    fn control_tokens_stay_whole_and_merges_apply() {
        let tok = tokenizer_from_gguf_vocab(&tiny_vocab("smollm")).unwrap();
        let id = |s: &str| tok.token_to_id(s).unwrap();
        let ids = encode_prompt(&tok, "<|im_start|>a the<|im_end|>").unwrap();
        assert_eq!(ids, vec![0, id("a"), id("Ġthe"), 1]);
        assert_eq!(
            decode(&tok, &ids, false).unwrap(),
            "<|im_start|>a the<|im_end|>"
        );
        assert_eq!(decode(&tok, &ids, true).unwrap(), "a the");
    }

    #[test]
    fn smollm_splits_digits_one_by_one() {
        // "1 2" is a merge, but SmolLM2 never sees two digits in one piece.
        let tok = tokenizer_from_gguf_vocab(&tiny_vocab("smollm")).unwrap();
        let ids = encode_prompt(&tok, "12").unwrap();
        assert_eq!(
            ids,
            vec![tok.token_to_id("1").unwrap(), tok.token_to_id("2").unwrap()]
        );
        let gpt2 = tokenizer_from_gguf_vocab(&tiny_vocab("gpt2")).unwrap();
        assert_eq!(
            encode_prompt(&gpt2, "12").unwrap(),
            vec![gpt2.token_to_id("12").unwrap()]
        );
    }

    #[test]
    fn spaces_before_a_digit_stay_one_piece_as_in_llama_cpp() {
        // llama.cpp's smollm pre-tokenizer and SmolLM2's tokenizer.json split digits first, so
        // "and  2" is [and, ĠĠ, 2]. transformers' GGUF converter (plain ByteLevel) gives
        // [and, Ġ, Ġ, 2]: the PyTorch baseline's tokenizer differs from the model's here.
        let mut v = tiny_vocab("smollm");
        v.merges.push("Ġ Ġ".into());
        v.tokens.push("ĠĠ".into());
        v.token_types.push(1);
        let tok = tokenizer_from_gguf_vocab(&v).unwrap();
        let pieces = |t: &Tokenizer| t.encode("a  2", false).unwrap().get_tokens().to_vec();
        assert_eq!(pieces(&tok), ["a", "ĠĠ", "2"]);
        v.pre = Some("gpt2".into());
        assert_eq!(
            pieces(&tokenizer_from_gguf_vocab(&v).unwrap()),
            ["a", "Ġ", "Ġ", "2"]
        );
    }

    #[test]
    fn no_prefix_space_is_added() {
        // candle's TokenizerFromGguf turns "the" into "Ġthe"; the model's tokenizer does not.
        let tok = tokenizer_from_gguf_vocab(&tiny_vocab("smollm")).unwrap();
        let ids = encode_prompt(&tok, "the").unwrap();
        assert_eq!(ids, ["t", "he"].map(|s| tok.token_to_id(s).unwrap()));
    }

    #[test]
    fn unknown_pre_tokenizer_is_named() {
        let err = tokenizer_from_gguf_vocab(&tiny_vocab("tekken9")).unwrap_err();
        assert!(err.to_string().contains("'tekken9'"), "{err}");
    }

    #[test]
    fn add_bos_puts_bos_first() {
        let mut v = tiny_vocab("gpt2");
        v.add_bos = true;
        let tok = tokenizer_from_gguf_vocab(&v).unwrap();
        let enc = tok.encode("the", true).unwrap();
        assert_eq!(enc.get_ids()[0], 0);
        // the chat path adds nothing: the template writes the BOS.
        assert_ne!(encode_prompt(&tok, "the").unwrap()[0], 0);
    }

    #[test]
    fn round_trips_through_json() {
        let tok = tokenizer_from_gguf_vocab(&tiny_vocab("smollm")).unwrap();
        let dir = std::env::temp_dir().join(format!("clipo-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        tok.save(dir.join("tokenizer.json"), false).unwrap();
        let back = load_tokenizer(&dir).unwrap();
        let text = "<|im_start|>the 12 the\n<|im_end|>";
        assert_eq!(
            encode_prompt(&back, text).unwrap(),
            encode_prompt(&tok, text).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
