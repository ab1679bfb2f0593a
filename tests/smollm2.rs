//! The real model: SmolLM2-135M-Instruct imported from its GGUF. Greedy decoding reproduces,
//! token for token, what Hugging Face transformers generates from the same imported directory
//! (tests/fixtures/smollm2_greedy.json, made by scripts/make_smollm2_greedy_fixture.py), one
//! prompt at a time and in a batch of 8; clipo-rollout's greedy rollout of GSM8K test prompts
//! gives the same tokens; a sampled rollout verifies end to end. Skips (with the reason printed)
//! when the GGUF is absent: run scripts/fetch_smollm2.sh.

mod common;

use candle_core::{DType, Device};
use clipo::model::Model;
use clipo::schema::trajectories as tr;
use clipo::table::read_table;
use common::{run, shared_data, smollm2_dir, stderr};

/// The transformers greedy fixture, when it has been made (scripts/make_smollm2_greedy_fixture.py).
fn fixture() -> Option<serde_json::Value> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smollm2_greedy.json");
    match std::fs::read_to_string(p) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(_) => {
            common::skip(&format!("{p} is absent (make it with scripts/make_smollm2_greedy_fixture.py)"));
            None
        }
    }
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_decoding_matches_transformers_one_at_a_time_and_batched() {
    let Some(dir) = smollm2_dir("smollm2") else { return };
    let Some(f) = fixture() else { return };
    let model = Model::load(dir, &Device::Cpu, DType::F32).unwrap();
    let cases = f["cases"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt_ids"])).collect();
    let expect: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["greedy_ids"])).collect();
    let stop = clipo::model::hf::read_stop_tokens(dir).unwrap();
    let max_new = f["max_new_tokens"].as_u64().unwrap() as usize;
    for (p, e) in prompts.iter().zip(&expect).take(2) {
        let got = model.greedy(&[p.as_slice()], max_new, &stop).unwrap();
        assert_eq!(&got[0].tokens, e, "one at a time");
    }
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let got = model.greedy(&refs, max_new, &stop).unwrap();
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(&g.tokens, e, "prompt {i} in a batch of {}", refs.len());
    }
}

#[test]
fn rollout_of_gsm8k_test_prompts_greedy_and_sampled_then_verified() {
    let Some(dir) = smollm2_dir("smollm2") else { return };
    let Some(data) = shared_data() else { return };
    let gsm8k = data.join("test/gsm8k.parquet");
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // Greedy: the first 4 prompts, same tokens as transformers (when the fixture exists).
    if let Some(f) = fixture() {
    let t = tmp.path().join("greedy.parquet");
    let o = run("clipo-rollout", &["--policy", &s(dir), "--prompts", &s(&gsm8k), "--out", &s(&t), "--greedy", "--limit", "4", "--max-new-tokens", "64", "--hidden", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = read_table(&t, &[tr::PROMPT_ID, tr::PROMPT_TOKEN_IDS, tr::RESPONSE_TOKEN_IDS], &[]).unwrap();
    for (i, c) in f["cases"].as_array().unwrap().iter().take(4).enumerate() {
        assert_eq!(table.utf8(&tr::PROMPT_ID).value(i), c["prompt_id"].as_str().unwrap());
        let get = |col: &clipo::schema::Column| -> Vec<u32> {
            let a = table.list(col).value(i);
            a.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().values().to_vec()
        };
        assert_eq!(get(&tr::PROMPT_TOKEN_IDS), ids(&c["prompt_ids"]), "prompt {i}: template and tokenizer");
        assert_eq!(get(&tr::RESPONSE_TOKEN_IDS), ids(&c["greedy_ids"]), "prompt {i}: greedy tokens");
    }
    }
    // Sampled: 8 prompts x 4 responses, then verified.
    let (t, r) = (tmp.path().join("t.parquet"), tmp.path().join("r.parquet"));
    let o = run("clipo-rollout", &["--policy", &s(dir), "--prompts", &s(&gsm8k), "--out", &s(&t), "--limit", "8", "--n", "4", "--max-new-tokens", "24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eprintln!("{}", stderr(&o));
    let o = run("clipo-verify", &["--input", &s(&t), "--output", &s(&r), "--summary"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["overall"]["responses"], 32);
    assert_eq!(summary["overall"]["prompts"], 8);
}
