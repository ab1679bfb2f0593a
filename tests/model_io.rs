//! Model-directory I/O against fixtures made by transformers' own code paths
//! (scripts/make_model_io_fixtures.py) and, when the GGUF has been fetched
//! (scripts/fetch_smollm2.sh), against the real SmolLM2-135M-Instruct and the PyTorch baseline.
//!
//! Fixtures in tests/fixtures/model_io/:
//! - tiny-llama.gguf: a 2-layer llama written like llama.cpp writes one (Q/K permuted, Q4_1, Q8_0,
//!   untied lm_head); tiny-llama-expected.safetensors: the HF tensors transformers makes from it;
//!   tiny-llama-expected.json: token ids under the tokenizer transformers builds from its vocabulary.
//! - chat_cases.json: SmolLM2's and Qwen2.5's templates and transformers' renderings.
//! - smollm2-prompts.json: the PyTorch baseline's prompts and token ids;
//!   smollm2-weight-checksums.json: sums and values of every HF tensor transformers makes from
//!   the real GGUF.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use clipo::model::chat::{ChatMessage, ChatTemplate, SpecialTokens};
use clipo::model::gguf::{import_gguf, GgufError};
use clipo::model::hf::{self, ModelFiles, ModelInfo, SaveDtype};
use clipo::model::tokenizer::{decode, encode_prompt, load_tokenizer};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/model_io").join(name)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    hf::load_tensors(&ModelFiles::discover(dir).unwrap().weights).unwrap()
}

/// Rewrites the tiny GGUF with changed metadata and without the named tensors.
fn tiny_variant(out: &Path, set: &[(&str, gguf_file::Value)], drop: &[&str]) {
    let mut reader = std::fs::File::open(fixture("tiny-llama.gguf")).unwrap();
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut metadata = content.metadata.clone();
    for (k, v) in set {
        metadata.insert(k.to_string(), v.clone());
    }
    let mut names: Vec<&String> = content
        .tensor_infos
        .keys()
        .filter(|n| !drop.contains(&n.as_str()))
        .collect();
    names.sort();
    let tensors: Vec<_> = names
        .iter()
        .map(|n| {
            (
                n.as_str(),
                content.tensor(&mut reader, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let meta: Vec<_> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<_> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut w = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut w, &meta, &tensor_refs).unwrap();
}

#[test]
fn tiny_gguf_imports_to_the_weights_transformers_makes() {
    let tmp = tempdir();
    let out = tmp.path().join("tiny");
    let summary = import_gguf(&fixture("tiny-llama.gguf"), &out, SaveDtype::F32).unwrap();
    assert_eq!(
        (
            summary.architecture.as_str(),
            summary.layers,
            summary.tensors
        ),
        ("llama", 2, 21)
    );

    let ours = weights(&out);
    let expected = hf::load_tensors(&[fixture("tiny-llama-expected.safetensors")]).unwrap();
    let names = |ts: &[(String, Tensor)]| ts.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&expected));
    for ((name, a), (_, b)) in ours.iter().zip(&expected) {
        assert_eq!(a.dims(), b.dims(), "{name}");
        let diff = values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{name}: max |ours - transformers| = {diff}");
    }
}

#[test]
fn tiny_gguf_config_and_tokenizer_files() {
    let tmp = tempdir();
    let out = tmp.path().join("tiny");
    import_gguf(&fixture("tiny-llama.gguf"), &out, SaveDtype::F32).unwrap();
    let files = ModelFiles::discover(&out).unwrap();
    assert!(
        files.tokenizer_config.is_some()
            && files.generation_config.is_some()
            && files.special_tokens_map.is_some()
    );

    let config = read_json(&out.join("config.json"));
    assert_eq!(
        config["architectures"],
        serde_json::json!(["LlamaForCausalLM"])
    );
    let expect = serde_json::json!({
        "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 265, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": false,
        "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&config[k], v, "config.json {k}");
    }
    assert_eq!(hf::read_stop_tokens(&out).unwrap(), vec![2]);
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(
        (tc["bos_token"].as_str(), tc["eos_token"].as_str()),
        (Some("<|im_start|>"), Some("<|im_end|>"))
    );
    assert!(tc["chat_template"].as_str().unwrap().contains("SmolLM"));
    // a class that makes transformers load tokenizer.json as written (GPT2Tokenizer would not)
    assert_eq!(tc["tokenizer_class"], "PreTrainedTokenizerFast");

    // token ids equal those of the tokenizer transformers builds from the same vocabulary
    let expected = read_json(&fixture("tiny-llama-expected.json"));
    let tokenizer = load_tokenizer(&out).unwrap();
    for (text, ids) in expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["ids"].as_array().unwrap())
    {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(encode_prompt(&tokenizer, text).unwrap(), want, "{text:?}");
        assert_eq!(decode(&tokenizer, &want, false).unwrap(), text);
    }
    let tokenizer_json = read_json(&out.join("tokenizer.json"));
    assert_eq!(
        tokenizer_json["pre_tokenizer"]["pretokenizers"][0]["type"],
        "Digits"
    );
    assert_eq!(tokenizer_json["decoder"]["type"], "ByteLevel");
    assert_eq!(tokenizer_json["added_tokens"].as_array().unwrap().len(), 3);
}

#[test]
fn import_then_save_round_trips() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    import_gguf(&fixture("tiny-llama.gguf"), &src, SaveDtype::F32).unwrap();
    let tensors = weights(&src);

    let f32_dir = tmp.path().join("f32");
    hf::save_hf_dir(&f32_dir, &src, &tensors, SaveDtype::F32).unwrap();
    assert_eq!(
        std::fs::read(src.join("model.safetensors")).unwrap(),
        std::fs::read(f32_dir.join("model.safetensors")).unwrap()
    );
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        assert_eq!(
            std::fs::read(src.join(f)).unwrap(),
            std::fs::read(f32_dir.join(f)).unwrap(),
            "{f}"
        );
    }

    let bf16_dir = tmp.path().join("bf16");
    hf::save_hf_dir(&bf16_dir, &src, &tensors, SaveDtype::Bf16).unwrap();
    assert_eq!(
        read_json(&bf16_dir.join("config.json"))["torch_dtype"],
        "bfloat16"
    );
    let back = weights(&bf16_dir);
    assert_eq!(back.len(), tensors.len());
    for ((name, a), (_, b)) in tensors.iter().zip(&back) {
        assert_eq!(b.dtype(), DType::BF16, "{name}");
        let rounded: Vec<f32> = values(a)
            .iter()
            .map(|x| f32::from_bits((hf::f32_to_bf16_bits(*x) as u32) << 16))
            .collect();
        assert_eq!(values(b), rounded, "{name}");
    }
    assert!(!tmp.path().join("bf16.tmp").exists());
}

#[test]
fn tied_gguf_has_no_lm_head() {
    let tmp = tempdir();
    let gguf = tmp.path().join("tied.gguf");
    tiny_variant(&gguf, &[], &["output.weight"]);
    let out = tmp.path().join("tied");
    import_gguf(&gguf, &out, SaveDtype::Bf16).unwrap();
    assert_eq!(
        read_json(&out.join("config.json"))["tie_word_embeddings"],
        true
    );
    let names: Vec<String> = weights(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 20);
    assert!(!names.contains(&"lm_head.weight".to_string()));
}

#[test]
fn unknown_architecture_fails_naming_it() {
    let tmp = tempdir();
    let gguf = tmp.path().join("mamba.gguf");
    tiny_variant(
        &gguf,
        &[(
            "general.architecture",
            gguf_file::Value::String("mamba".into()),
        )],
        &[],
    );
    let out = tmp.path().join("out");
    let err = import_gguf(&gguf, &out, SaveDtype::F32).unwrap_err();
    assert!(
        matches!(err, GgufError::UnsupportedArchitecture(ref a) if a == "mamba"),
        "{err}"
    );
    assert!(err.to_string().contains("'mamba'"), "{err}");
    assert!(!out.exists() && !tmp.path().join("out.tmp").exists());
}

#[test]
fn missing_tensor_fails_naming_it() {
    let tmp = tempdir();
    let gguf = tmp.path().join("broken.gguf");
    tiny_variant(&gguf, &[], &["blk.1.ffn_up.weight"]);
    let err = import_gguf(&gguf, &tmp.path().join("out"), SaveDtype::F32).unwrap_err();
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn cli_imports_and_describes() {
    let tmp = tempdir();
    let out = tmp.path().join("tiny");
    let bin = env!("CARGO_BIN_EXE_clipo-model");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(bin)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };

    let o = run(&[
        "import-gguf".as_ref(),
        fixture("tiny-llama.gguf").as_os_str(),
        out.as_os_str(),
        "--dtype".as_ref(),
        "bf16".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["info".as_ref(), out.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for line in [
        "architecture: LlamaForCausalLM",
        "layers: 2",
        "hidden size: 32",
        "attention heads: 2 (1 key/value)",
        "parameters: 35552 ",
        "21 BF16",
        "vocabulary: 265 (tokenizer: 265)",
        "stop tokens: 2 <|im_end|>",
        "chat template: present",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    let gguf = tmp.path().join("mamba.gguf");
    tiny_variant(
        &gguf,
        &[(
            "general.architecture",
            gguf_file::Value::String("mamba".into()),
        )],
        &[],
    );
    let o = run(&[
        "import-gguf".as_ref(),
        gguf.as_os_str(),
        tmp.path().join("m").as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("GGUF architecture 'mamba' is not supported"),
        "{err}"
    );

    let o = run(&["info".as_ref(), tmp.path().join("nothing").as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

#[test]
fn chat_templates_render_like_transformers() {
    let cases = read_json(&fixture("chat_cases.json"));
    let mut rendered = 0;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let template = &cases["templates"][name];
        let special = SpecialTokens::from_tokenizer_config(&template["special_tokens"]);
        let chat = ChatTemplate::new(template["source"].as_str().unwrap(), special).unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let got = chat.render(&messages, case["add_generation_prompt"].as_bool().unwrap());
        match case["rendered"].as_str() {
            Some(want) => {
                assert_eq!(got.unwrap(), want, "{name} {messages:?}");
                rendered += 1;
            }
            None => assert!(
                got.is_err(),
                "{name}: transformers fails on {messages:?}, we rendered {got:?}"
            ),
        }
    }
    assert_eq!(rendered, 9);
}

#[test]
fn chat_template_of_an_imported_directory() {
    let tmp = tempdir();
    let out = tmp.path().join("tiny");
    import_gguf(&fixture("tiny-llama.gguf"), &out, SaveDtype::F32).unwrap();
    let chat = ChatTemplate::from_dir(&out).unwrap();
    assert_eq!(
        chat.special_tokens().bos_token.as_deref(),
        Some("<|im_start|>")
    );
    let text = chat
        .render(&[ChatMessage::new("user", "hi")], true)
        .unwrap();
    let sys = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
    assert_eq!(
        text,
        format!("{sys}<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    );

    // chat_template.jinja wins over tokenizer_config.json, as in transformers
    std::fs::write(
        out.join("chat_template.jinja"),
        "{{ bos_token }}{{ messages[0].content }}",
    )
    .unwrap();
    assert_eq!(
        ChatTemplate::from_dir(&out)
            .unwrap()
            .render(&[ChatMessage::new("user", "x")], false)
            .unwrap(),
        "<|im_start|>x"
    );
}

// ---- the real model (skipped, with the reason printed, until scripts/fetch_smollm2.sh has run) ----

/// SmolLM2 imported once per test binary (f32) into target/tmp/.
fn smollm2_dir() -> Option<&'static Path> {
    common::smollm2_dir("model_io-smollm2")
}

#[test]
fn smollm2_tokenizer_gives_the_baseline_ids() {
    let Some(dir) = smollm2_dir() else { return };
    let tokenizer = load_tokenizer(dir).unwrap();
    let prompts = read_json(&fixture("smollm2-prompts.json"));
    for p in prompts["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let want: Vec<u32> = p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(encode_prompt(&tokenizer, text).unwrap(), want, "{text:?}");
        assert_eq!(decode(&tokenizer, &want, false).unwrap(), text);
    }
}

#[test]
fn smollm2_chat_template_renders_the_baseline_prompts() {
    let Some(dir) = smollm2_dir() else { return };
    let chat = ChatTemplate::from_dir(dir).unwrap();
    let prompts = read_json(&fixture("smollm2-prompts.json"));
    for p in prompts["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        // the baseline rendered one user message; the template adds SmolLM2's system prompt
        let user = text
            .split("<|im_start|>user\n")
            .nth(1)
            .unwrap()
            .strip_suffix("<|im_end|>\n<|im_start|>assistant\n")
            .unwrap();
        assert_eq!(
            chat.render(&[ChatMessage::new("user", user)], true)
                .unwrap(),
            text
        );
    }
}

#[test]
fn smollm2_weights_match_transformers_conversion() {
    let Some(dir) = smollm2_dir() else { return };
    let sums = read_json(&fixture("smollm2-weight-checksums.json"));
    let sums = sums.as_object().unwrap();
    let ours = weights(dir);
    assert_eq!(ours.len(), sums.len());
    let close = |a: f64, b: f64, scale: f64| (a - b).abs() <= 1e-6 * scale.max(1.0);
    for (name, t) in &ours {
        let want = &sums[name];
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        let v: Vec<f64> = values(t).into_iter().map(f64::from).collect();
        let sum_abs: f64 = v.iter().map(|x| x.abs()).sum();
        let sum: f64 = v.iter().sum();
        let sum_sq: f64 = v.iter().map(|x| x * x).sum();
        let weighted: f64 = v
            .iter()
            .enumerate()
            .map(|(i, x)| x * ((i % 101) as f64 - 50.0))
            .sum();
        assert!(
            close(sum, want["sum"].as_f64().unwrap(), sum_abs),
            "{name} sum {sum} vs {}",
            want["sum"]
        );
        assert!(
            close(sum_sq, want["sum_sq"].as_f64().unwrap(), sum_sq),
            "{name} sum_sq"
        );
        assert!(
            close(
                weighted,
                want["weighted_sum"].as_f64().unwrap(),
                50.0 * sum_abs
            ),
            "{name} weighted_sum {weighted} vs {}",
            want["weighted_sum"]
        );
        let cols = v.len() / shape[0];
        for (row, key) in [(0, "row0"), (1.min(shape[0] - 1), "row1")] {
            let want_row: Vec<f64> = want[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            for (k, w) in want_row.iter().enumerate() {
                assert!(
                    (v[row * cols + k] - w).abs() <= 1e-6,
                    "{name} {key}[{k}]: {} vs {w}",
                    v[row * cols + k]
                );
            }
        }
    }
}

#[test]
fn smollm2_info() {
    let Some(dir) = smollm2_dir() else { return };
    let info = ModelInfo::read(dir).unwrap();
    assert_eq!(info.architecture, "LlamaForCausalLM");
    assert_eq!(
        (info.layers, info.hidden_size, info.heads, info.kv_heads),
        (Some(30), Some(576), Some(9), Some(3))
    );
    // the parameter count transformers reports for the baseline
    assert_eq!(info.params, 134_515_008);
    assert_eq!(
        (info.vocab_size, info.tokenizer_vocab),
        (Some(49152), 49152)
    );
    assert_eq!(info.stop_tokens, vec![(2, "<|im_end|>".to_string())]);
    assert!(info.chat_template && info.tie_word_embeddings);
    let config = read_json(&dir.join("config.json"));
    assert_eq!(
        (
            config["rope_theta"].as_f64(),
            config["rms_norm_eps"].as_f64()
        ),
        (Some(100000.0), Some(1e-5))
    );
}

/// A parity fixture of each new family (tests/fixtures/tiny-*) with the tiny GGUF's tokenizer
/// files beside it, as a model directory in `tmp`.
fn family_dir(tmp: &Path, name: &str) -> PathBuf {
    let gg = tmp.join("gguf-tokenizer");
    if !gg.is_dir() {
        import_gguf(&fixture("tiny-llama.gguf"), &gg, SaveDtype::F32).unwrap();
    }
    let src = root().join("tests/fixtures").join(name);
    let out = tmp.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(gg.join(f), out.join(f)).unwrap();
    }
    out
}

/// Qwen3 (untied and tied), Llama with llama3 rope scaling and Mistral: saved from the model's
/// weights (f32 and bf16) and reloaded, they give the same logits bit for bit; `clipo-model info`
/// describes them and says what clipo uses of each.
#[test]
fn new_families_save_reload_and_describe() {
    use clipo::model::Model;
    let tmp = tempdir();
    let bin = env!("CARGO_BIN_EXE_clipo-model");
    let cases = [
        ("tiny-qwen3", "architecture: Qwen3ForCausalLM", "clipo loads it: yes (Qwen3 (q/k norms), rope theta 1000000)"),
        ("tiny-qwen3-tied", "tied embeddings: true", "clipo loads it: yes (Qwen3 (q/k norms), rope theta 10000)"),
        ("tiny-llama3-rope", "architecture: LlamaForCausalLM", "rope theta 10000 llama3 x8 from 16 positions"),
        ("tiny-mistral", "architecture: MistralForCausalLM", "clipo loads it: yes (Mistral, rope theta 10000, sliding window 8)"),
    ];
    let ids = Tensor::new(&[[5u32, 17, 99, 3, 200, 42, 7, 8, 9, 10, 11, 12, 13, 14]], &Device::Cpu).unwrap();
    for (name, line1, line2) in cases {
        let src = family_dir(tmp.path(), name);
        for (dtype, save) in [(DType::F32, SaveDtype::F32), (DType::BF16, SaveDtype::Bf16)] {
            let m = Model::load(&src, &Device::Cpu, dtype).unwrap();
            let tensors: Vec<(String, Tensor)> = m.vars().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
            let out = tmp.path().join(format!("{name}-{save}"));
            hf::save_hf_dir(&out, &src, &tensors, save).unwrap();
            let back = Model::load(&out, &Device::Cpu, dtype).unwrap();
            assert_eq!(values(&back.logits_nograd(&ids, &[0]).unwrap()), values(&m.logits_nograd(&ids, &[0]).unwrap()), "{name} {save}");
            let o = Command::new(bin).args(["info".as_ref(), out.as_os_str()]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let text = String::from_utf8(o.stdout).unwrap();
            let params = format!("parameters: {} ", m.config().num_parameters());
            for line in [line1, line2, params.as_str()] {
                assert!(text.contains(line), "{name}: missing {line:?} in\n{text}");
            }
        }
    }
}

/// `clipo-model info` on a directory clipo cannot load says so and names what is unsupported:
/// the architecture, the rope type, Qwen's per-layer sliding windows.
#[test]
fn info_names_what_is_unsupported() {
    let tmp = tempdir();
    let bin = env!("CARGO_BIN_EXE_clipo-model");
    let dir = family_dir(tmp.path(), "tiny-llama3-rope");
    let config = read_json(&dir.join("config.json"));
    let edits: [(&str, serde_json::Value, &str); 3] = [
        ("architectures", serde_json::json!(["Gemma2ForCausalLM"]), "architecture \"Gemma2ForCausalLM\""),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}),
            "rope_parameters rope_type \"yarn\" (supported: default, linear, dynamic, llama3)",
        ),
        ("layer_types", serde_json::json!(["full_attention", "sliding_attention"]), "layer_types \"sliding_attention\""),
    ];
    for (key, value, want) in edits {
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let o = Command::new(bin).args(["info".as_ref(), dir.as_os_str()]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains("clipo loads it: no (unsupported model: ") && text.contains(want), "{key}: {text}");
    }
}

/// Qwen3's shipped chat template (thinking blocks, `enable_thinking`, tools, tool calls and
/// responses, `reasoning_content` and its aliases) renders byte for byte as transformers renders
/// it (tests/fixtures/model_io/qwen3-chat_cases.json, by scripts/make_qwen3_chat_cases.py), and
/// fails where transformers fails; from a model directory's chat_template.jinja too.
#[test]
fn qwen3_chat_template_renders_like_transformers() {
    use clipo::model::chat::RenderExtras;
    let source = std::fs::read_to_string(fixture("qwen3-chat_template.jinja")).unwrap();
    let cases = read_json(&fixture("qwen3-chat_cases.json"));
    let special = SpecialTokens::from_tokenizer_config(&cases["special_tokens"]);
    let chat = ChatTemplate::new(source.clone(), special).unwrap();
    let mut rendered = 0;
    for case in cases["cases"].as_array().unwrap() {
        let extras = RenderExtras {
            tools: Some(case["tools"].clone()).filter(|t| !t.is_null()),
            vars: case["vars"].as_object().unwrap().clone(),
        };
        let messages = minijinja::Value::from_serialize(&case["messages"]);
        let got = chat.render_with(messages, case["add_generation_prompt"].as_bool().unwrap(), &extras);
        match case["rendered"].as_str() {
            Some(want) => {
                assert_eq!(got.unwrap(), want, "{}", case["messages"]);
                rendered += 1;
            }
            None => assert!(got.is_err(), "transformers fails on {}, we rendered {got:?}", case["messages"]),
        }
    }
    assert_eq!(rendered, 11);

    // As a model directory holds it: chat_template.jinja, special tokens from tokenizer_config.json.
    let tmp = tempdir();
    std::fs::write(tmp.path().join("chat_template.jinja"), &source).unwrap();
    std::fs::write(tmp.path().join("tokenizer_config.json"), r#"{"eos_token": "<|im_end|>", "bos_token": null}"#).unwrap();
    let chat = ChatTemplate::from_dir(tmp.path()).unwrap();
    assert_eq!(
        chat.render(&[ChatMessage::new("user", "2 + 3?")], true).unwrap(),
        "<|im_start|>user\n2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// The GGUF name llama.cpp gives a Hugging Face tensor name (the inverse of
/// `gguf::hf_tensor_name`).
fn gguf_tensor_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (part, kind) = rest.rsplit_once('.').unwrap();
    let g = match part {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("{other}"),
    };
    format!("blk.{layer}.{g}.{kind}")
}

/// A parity fixture (tests/fixtures/tiny-qwen2, tiny-qwen3) written as llama.cpp's converter
/// writes a `qwen2` / `qwen3` GGUF: its metadata keys, tensor names, no Q/K permutation (only
/// LlamaModel permutes), f32 tensors, and a byte-level vocabulary of the 256 byte characters
/// (`pre = qwen2`). Returns the fixture's tensors by HF name.
fn fixture_as_gguf(name: &str, arch: &str, out: &Path) -> Vec<(String, Tensor)> {
    use candle_core::quantized::{GgmlDType, QTensor};
    use gguf_file::Value as V;
    let dir = root().join("tests/fixtures").join(name);
    let cfg = read_json(&dir.join("config.json"));
    let mut tensors: Vec<(String, Tensor)> = vec![];
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        if file.starts_with("model") && file.ends_with(".safetensors") {
            tensors.extend(candle_core::safetensors::load(&p, &Device::Cpu).unwrap());
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let u = |k: &str| V::U32(cfg[k].as_u64().unwrap() as u32);
    let theta = cfg["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32;
    let mut meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        (format!("{arch}.block_count"), u("num_hidden_layers")),
        (format!("{arch}.embedding_length"), u("hidden_size")),
        (format!("{arch}.feed_forward_length"), u("intermediate_size")),
        (format!("{arch}.attention.head_count"), u("num_attention_heads")),
        (format!("{arch}.attention.head_count_kv"), u("num_key_value_heads")),
        (format!("{arch}.context_length"), u("max_position_embeddings")),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), V::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32)),
        (format!("{arch}.rope.freq_base"), V::F32(theta)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("qwen2".into())),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
    ];
    if arch == "qwen3" {
        meta.push((format!("{arch}.attention.key_length"), u("head_dim")));
        meta.push((format!("{arch}.attention.value_length"), u("head_dim")));
    }
    // GPT-2's byte alphabet, in byte order: the 256 single-character tokens.
    let printable: Vec<u32> = (33..=126).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut n = 0;
    let tokens: Vec<V> = (0..256u32)
        .map(|b| {
            let c = if printable.contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
            V::String(c.to_string())
        })
        .collect();
    meta.push(("tokenizer.ggml.token_type".into(), V::Array(vec![V::I32(1); 256])));
    meta.push(("tokenizer.ggml.tokens".into(), V::Array(tokens)));
    meta.push(("tokenizer.ggml.merges".into(), V::Array(vec![])));
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| (gguf_tensor_name(n), QTensor::quantize(t, GgmlDType::F32).unwrap()))
        .collect();
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut w = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut w, &meta_refs, &q_refs).unwrap();
    tensors
}

/// Qwen2 and Qwen3 GGUFs import to the fixture's weights bit for bit, into a directory whose
/// config clipo and transformers read as Qwen2ForCausalLM / Qwen3ForCausalLM, and the imported
/// model gives transformers' logits.
#[test]
fn qwen2_and_qwen3_ggufs_import() {
    use clipo::model::Model;
    let tmp = tempdir();
    for (name, arch, class) in [("tiny-qwen2", "qwen2", "Qwen2ForCausalLM"), ("tiny-qwen3", "qwen3", "Qwen3ForCausalLM")] {
        let gguf = tmp.path().join(format!("{name}.gguf"));
        let want = fixture_as_gguf(name, arch, &gguf);
        let out = tmp.path().join(name);
        let summary = import_gguf(&gguf, &out, SaveDtype::F32).unwrap();
        assert_eq!(summary.architecture, arch);
        let got = weights(&out);
        assert_eq!(got.len(), want.len(), "{name}");
        for ((a, x), (b, y)) in got.iter().zip(&want) {
            assert_eq!(a, b);
            assert_eq!(values(x), values(y), "{name} {a}");
        }
        let config = read_json(&out.join("config.json"));
        assert_eq!(config["architectures"][0], class);
        let m = Model::load(&out, &Device::Cpu, DType::F32).unwrap();
        let exp = candle_core::safetensors::load(root().join("tests/fixtures").join(name).join("expected.safetensors"), &Device::Cpu).unwrap();
        let x = exp["prompt_1"].to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap();
        let logits = m.logits_nograd(&x, &[0]).unwrap().squeeze(0).unwrap();
        let d = (logits - &exp["logits_1"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{name}: {d}");
        println!("{name}: {arch} GGUF imported, weights bit for bit, logits within {d:.1e} of transformers'");
    }
}

/// A SentencePiece GGUF (`tokenizer.ggml.model = llama`: scores, byte-fallback tokens, the space
/// marker; written by the `gguf` package, scripts/make_spm_gguf_fixture.py) imports into a
/// directory whose tokenizer gives transformers' ids on 44 texts (with and without the BOS it
/// adds), decodes them back as transformers does, and holds the same merges.
#[test]
fn sentencepiece_gguf_tokenizes_like_transformers() {
    let tmp = tempdir();
    let out = tmp.path().join("spm");
    let summary = import_gguf(&fixture("tiny-spm.gguf"), &out, SaveDtype::F32).unwrap();
    let expected = read_json(&fixture("tiny-spm-expected.json"));
    assert_eq!(summary.vocab_size as u64, expected["vocab_size"].as_u64().unwrap());
    let tok = load_tokenizer(&out).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer.json")).unwrap()).unwrap();
    let theirs = &expected["tokenizer_json"];
    assert_eq!(ours["model"]["merges"], theirs["model"]["merges"]);
    for key in ["pre_tokenizer", "decoder", "post_processor", "normalizer", "added_tokens"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 44);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids = |k: &str| -> Vec<u32> { case[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
        let got = encode_prompt(&tok, text).unwrap();
        assert_eq!(got, ids("ids"), "{text:?}");
        let with_bos = tok.encode_fast(text, true).unwrap().get_ids().to_vec();
        assert_eq!(with_bos, ids("ids_with_bos"), "{text:?} with BOS");
        assert_eq!(decode(&tok, &got, false).unwrap(), case["decoded"].as_str().unwrap(), "{text:?} decoded");
    }
    // the model itself loads
    let m = clipo::model::Model::load(&out, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(m.config().vocab_size as u64, expected["vocab_size"].as_u64().unwrap());
}
