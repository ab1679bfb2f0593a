//! The stages run as a user runs them, on the embedded tiny policy and task: rollout
//! (determinism, batch-size independence, kill and resume, shards, overlong prompts, hidden
//! states), embed (the contrastive step on real hidden states) and update (the direction of an
//! update, micro-batch accumulation, weight decay alone, resumption).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arrow::array::Array;
use clipo::schema::{rewards as rw, trajectories as tr};
use clipo::table::{read_table, Provenance, TableWriter};
use common::{bin, run, s, stderr};

/// A tiny policy and the arithmetic task, made once per test binary.
fn fixture() -> &'static (PathBuf, PathBuf) {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    let (_, policy, data) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("tiny");
        clipo::tiny::init_tiny(&policy, &clipo::tiny::TinyPreset::tiny(), 0).unwrap();
        let data = dir.path().join("data");
        let job = clipo::stages::data::ArithJob { out_dir: data.clone(), n_train: 200, n_test: 20, task: Default::default() };
        clipo::stages::data::run_arith(&job).unwrap();
        (dir, policy, data)
    });
    // Leak-free: the TempDir lives in the static for the whole test binary.
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| (policy.clone(), data.clone()))
}

fn rollout(out: &Path, extra: &[&str]) -> std::process::Output {
    let (policy, data) = fixture();
    let train = data.join("train.parquet");
    let mut args = vec!["--policy", s(policy), "--prompts", s(&train), "--out", s(out), "--max-new-tokens", "24"];
    if !extra.contains(&"--n") {
        args.extend(["--n", "3"]);
    }
    args.extend_from_slice(extra);
    run("clipo-rollout", &args)
}

fn all_columns() -> Vec<clipo::schema::Column> {
    vec![
        tr::PROMPT_ID, tr::SAMPLE_IDX, tr::DATA_SOURCE, tr::GROUND_TRUTH, tr::PROMPT_TEXT, tr::RESPONSE_TEXT,
        tr::PROMPT_TOKEN_IDS, tr::RESPONSE_TOKEN_IDS, tr::RESPONSE_LOGPROBS, tr::FINISH_REASON, tr::SEED, tr::POLICY,
        tr::HIDDEN,
    ]
}

#[test]
fn rollout_is_deterministic_and_independent_of_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"), dir.path().join("c.parquet"));
    for (out, batch) in [(&a, "1"), (&b, "1"), (&c, "4")] {
        let o = rollout(out, &["--limit", "6", "--batch-size", batch, "--seed", "5"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "same arguments, same bytes");
    assert_eq!(bytes(&a), bytes(&c), "batch size 1 and 4 give the same bytes");
    let t = read_table(&a, &all_columns(), &[]).unwrap();
    assert_eq!(t.num_rows(), 18);
    assert_eq!(t.vectors(&tr::HIDDEN).value_length(), 128);
    assert!(t.utf8(&tr::POLICY).value(0).contains('@'));
    // Greedy evaluation, 20 prompts of different lengths decoded 1 and 16 at a time (left
    // padding, finished rows leaving the batch): the same bytes.
    let (g1, g16) = (dir.path().join("g1.parquet"), dir.path().join("g16.parquet"));
    for (out, batch) in [(&g1, "1"), (&g16, "16")] {
        let o = rollout(out, &["--limit", "20", "--greedy", "--batch-size", batch, "--hidden", "official"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(bytes(&g1) == bytes(&g16), "greedy: batch size 1 and 16 give different bytes");
    let s8 = dir.path().join("s8.parquet");
    assert!(rollout(&s8, &["--limit", "6", "--batch-size", "6", "--seed", "5"]).status.success());
    assert!(bytes(&a) == bytes(&s8), "sampled: batch size 1 and 6 give different bytes");
    // Another seed changes the samples.
    let d = dir.path().join("d.parquet");
    assert!(rollout(&d, &["--limit", "6", "--seed", "6"]).status.success());
    assert_ne!(bytes(&a), bytes(&d));
    // The same arguments again: a no-op.
    let o = rollout(&a, &["--limit", "6", "--batch-size", "1", "--seed", "5"]);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
}

#[test]
fn a_killed_rollout_resumes_to_the_same_bytes_and_refuses_other_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.parquet");
    let args = ["--limit", "40", "--batch-size", "1", "--seed", "9"];
    assert!(rollout(&reference, &args).status.success());

    let out = dir.path().join("t.parquet");
    let parts = dir.path().join("t.parquet.parts");
    let (policy, data) = fixture();
    let train = data.join("train.parquet");
    let mut child = Command::new(bin("clipo-rollout"))
        .args(["--policy", s(policy), "--prompts", s(&train), "--out", s(&out), "--max-new-tokens", "24", "--n", "3"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a few batches are on disk.
    let start = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(&parts).map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet")).count()).unwrap_or(0);
        if n >= 3 || start.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed rollout leaves no output under the final name");
    assert!(parts.is_dir());

    // A run with other arguments never mixes the parts in: it clears them, says so, and writes
    // its own output (the same bytes as that run from scratch).
    let backup = dir.path().join("parts.backup");
    std::fs::create_dir(&backup).unwrap();
    for e in std::fs::read_dir(&parts).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), backup.join(e.file_name())).unwrap();
    }
    let other = ["--limit", "40", "--batch-size", "1", "--seed", "10"];
    let o = rollout(&out, &other);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("held parts of an interrupted run with other arguments: removed"), "{}", stderr(&o));
    let fresh = dir.path().join("fresh.parquet");
    assert!(rollout(&fresh, &other).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&fresh).unwrap());

    // The killed run's parts, back in place: the same arguments resume them.
    std::fs::remove_file(&out).unwrap();
    std::fs::rename(&backup, &parts).unwrap();
    let o = rollout(&out, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resumed after"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&reference).unwrap());
    assert!(!parts.exists());
}

fn rows_by_key(p: &Path) -> std::collections::BTreeMap<(String, u32), Vec<u32>> {
    let t = read_table(p, &all_columns(), &[]).unwrap();
    let ids = t.list(&tr::RESPONSE_TOKEN_IDS);
    (0..t.num_rows())
        .map(|i| {
            let v = ids.value(i);
            let v = v.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().values().to_vec();
            ((t.utf8(&tr::PROMPT_ID).value(i).to_string(), t.u32(&tr::SAMPLE_IDX).value(i)), v)
        })
        .collect()
}

#[test]
fn shards_concatenate_to_the_unsharded_output_and_steps_select_without_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.parquet");
    let args = ["--per-step", "8", "--step", "3", "--seed", "1"];
    assert!(rollout(&all, &args).status.success());
    let mut merged = std::collections::BTreeMap::new();
    for k in 0..2 {
        let out = dir.path().join(format!("s{k}.parquet"));
        let shard = format!("{k}/2");
        let mut a = args.to_vec();
        a.extend(["--shard", &shard]);
        let o = rollout(&out, &a);
        assert!(o.status.success(), "{}", stderr(&o));
        merged.extend(rows_by_key(&out));
    }
    assert_eq!(merged, rows_by_key(&all));
    // 200 prompts, 8 per step: steps 1..=25 make one epoch without repeats.
    let mut seen = std::collections::HashSet::new();
    for step in 1..=25u64 {
        let cfg = clipo::stages::rollout::RolloutConfig {
            policy: PathBuf::new(),
            prompts: fixture().1.join("train.parquet"),
            out: PathBuf::new(),
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 1,
            max_prompt_tokens: 512,
            batch_prompts: 1,
            seed: 1,
            step,
            selection: clipo::stages::rollout::Selection::Step { per_step: 8, round: 0 },
            shard: (0, 1),
            hidden: clipo::stages::rollout::HiddenMode::None,
            system_prompt: clipo::stages::rollout::SystemPrompt::Keep,
            greedy: false,
            stop: vec![],
            device: "cpu".into(),
            dtype: None,
            engine: None,
            engine_reload: false,
            force: false,
        };
        let prompts = clipo::prompts::read_prompts(&cfg.prompts).unwrap();
        for p in clipo::stages::rollout::select(prompts, &cfg).unwrap() {
            assert!(seen.insert(p.prompt_id), "a prompt repeated within the epoch");
        }
    }
    assert_eq!(seen.len(), 200);
}

#[test]
fn overlong_prompts_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    // Templated prompts are about 58-70 tokens long; a 61-token budget skips some of them.
    let o = rollout(&out, &["--limit", "20", "--max-prompt-tokens", "61", "--hidden", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = summary["skipped_prompts"].as_u64().unwrap();
    assert!(skipped > 0 && skipped < 20, "{summary}");
    assert_eq!(summary["responses"].as_u64().unwrap(), (20 - skipped) * 3);
    let t = read_table(&out, &all_columns(), &[]).unwrap();
    assert!(t.list(&tr::PROMPT_TOKEN_IDS).iter().all(|p| p.unwrap().len() <= 61));
    assert_eq!(t.vectors(&tr::HIDDEN).null_count(), t.num_rows(), "--hidden none leaves the column null");
}

#[test]
fn mean_hidden_states_match_a_teacher_forced_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    assert!(rollout(&out, &["--limit", "3", "--hidden", "mean"]).status.success());
    let t = read_table(&out, &all_columns(), &[]).unwrap();
    let model = clipo::model::Model::load(&fixture().0, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    let prompts = t.list(&tr::PROMPT_TOKEN_IDS);
    let responses = t.list(&tr::RESPONSE_TOKEN_IDS);
    let u32s = |a: arrow::array::ArrayRef| a.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().values().to_vec();
    let (ps, rs): (Vec<Vec<u32>>, Vec<Vec<u32>>) = (0..t.num_rows()).map(|i| (u32s(prompts.value(i)), u32s(responses.value(i)))).unzip();
    let seqs: Vec<clipo::model::Sequence> = ps.iter().zip(&rs).map(|(p, r)| clipo::model::Sequence { prompt: p, response: r }).collect();
    let expect = model.mean_hidden(&seqs, 1).unwrap().to_vec2::<f32>().unwrap();
    let hidden = t.vectors(&tr::HIDDEN);
    for (i, row) in expect.iter().enumerate() {
        let got = hidden.value(i);
        let got = got.as_any().downcast_ref::<arrow::array::Float32Array>().unwrap();
        for (a, b) in got.values().iter().zip(row) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
        }
    }
}

#[test]
fn bad_rollout_inputs_fail_with_exit_2_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    let (policy, _) = fixture();
    // A prompts file without the needed columns.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n").unwrap();
    let o = run("clipo-rollout", &["--policy", s(policy), "--prompts", s(&bad), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ground_truth"), "{}", stderr(&o));
    // A policy directory that misses its tokenizer.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(policy.join(f), broken.join(f)).unwrap();
    }
    let o = run("clipo-rollout", &["--policy", s(&broken), "--prompts", s(&fixture().1.join("test.parquet")), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("tokenizer.json"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// Each message names the flag and the path once (never the output path before it) and says
/// what kind of thing was expected.
#[test]
fn wrong_kinds_of_policy_and_prompts_are_named_once_with_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    let (policy, data) = fixture();
    let train = data.join("train.parquet");
    let data_dir = data.to_str().unwrap();
    let fails = |policy: &Path, prompts: &Path, wants: &[&str], named: &Path| {
        let o = run("clipo-rollout", &["--policy", s(policy), "--prompts", s(prompts), "--out", s(&out)]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        for w in wants {
            assert!(err.contains(w), "`{w}` not in: {err}");
        }
        assert_eq!(err.matches(s(named)).count(), 1, "{} named more than once: {err}", named.display());
        assert!(!err.contains(s(&out)), "the output path is not the problem: {err}");
        assert!(!out.exists() && !dir.path().join("t.parquet.parts").exists());
    };
    // A data directory given as the policy: no config.json, and what a model directory holds.
    fails(data, &train, &[&format!("--policy {data_dir} has no config.json: expected a Hugging Face model directory (config.json, model.safetensors"), "import-gguf"], data);
    // A file given as the policy.
    fails(&train, &train, &[&format!("--policy {} is a file: expected a Hugging Face model directory", s(&train))], &train);
    // A model directory without weights.
    let no_weights = dir.path().join("no-weights");
    std::fs::create_dir(&no_weights).unwrap();
    std::fs::copy(policy.join("config.json"), no_weights.join("config.json")).unwrap();
    fails(&no_weights, &train, &["has no model.safetensors (nor model.safetensors.index.json): expected a Hugging Face model directory"], &no_weights);
    // A config.json given as the prompts: one JSON document, not JSON lines.
    let config = policy.join("config.json");
    fails(policy, &config, &["one JSON document over several lines, not JSON lines; expected a prompts table: verl .parquet, or .jsonl"], &config);
    // A file that is neither Parquet nor JSON lines.
    let text = dir.path().join("prompts.txt");
    std::fs::write(&text, "What is 2 + 2?\n").unwrap();
    fails(policy, &text, &["neither Parquet (no PAR1 magic) nor .json/.jsonl; expected a prompts table"], &text);
    // A JSONL line that is not JSON, and one without messages.
    let lines = dir.path().join("p.jsonl");
    std::fs::write(&lines, "{\"messages\": \"hi\", \"ground_truth\": \"4\"}\nnot json\n").unwrap();
    fails(policy, &lines, &["line 2 is not JSON", "expected a prompts table"], &lines);
    std::fs::write(&lines, "{\"question\": \"hi\", \"ground_truth\": \"4\"}\n").unwrap();
    fails(policy, &lines, &["line 1 has no `messages` (or `prompt`); expected a prompts table"], &lines);
    // A directory given as the prompts.
    fails(policy, data, &[&format!("--prompts {data_dir} is a directory: expected a prompts table")], data);
}

/// Ctrl-C stops a rollout with the shell's status 130 and a line saying how to resume; the
/// rerun resumes, and its speed counts only the tokens it sampled itself.
#[test]
fn an_interrupted_rollout_says_how_to_resume_and_the_resumed_run_counts_only_its_own_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    let parts = dir.path().join("t.parquet.parts");
    let (policy, data) = fixture();
    let train = data.join("train.parquet");
    let args = ["--policy", s(policy), "--prompts", s(&train), "--out", s(&out), "--max-new-tokens", "24", "--n", "3", "--limit", "40", "--batch-size", "1", "--seed", "4"];
    let child = Command::new(bin("clipo-rollout"))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let done = |d: &Path| std::fs::read_dir(d).map(|d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet")).count()).unwrap_or(0);
    while done(&parts) < 3 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("clipo-rollout: interrupted; the batches of prompts sampled so far are kept in {}: run the same command again to resume", parts.display())),
        "{err}"
    );
    assert!(!out.exists());

    let o = run("clipo-rollout", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let num = |k: &str| summary[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {summary}"));
    let resumed = num("resumed_batches") as usize;
    assert!(resumed >= 3 && num("batches") == 40.0, "{summary}");
    // The output is in prompt order, 3 samples a prompt and one prompt a batch: the tokens of
    // the resumed batches are those of its first 3 x resumed rows.
    let t = read_table(&out, &[tr::RESPONSE_TOKEN_IDS], &[]).unwrap();
    let ids = t.list(&tr::RESPONSE_TOKEN_IDS);
    let before: usize = (0..3 * resumed).map(|i| ids.value(i).len()).sum();
    assert_eq!(num("generated_tokens") as usize, ids.values().len(), "{summary}");
    assert_eq!(num("sampled_tokens") as usize, ids.values().len() - before, "{summary}");
    assert!(num("tokens_per_second") > 0.0);
    assert!(stderr(&o).contains(&format!("{} sampled now at", num("sampled_tokens"))), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("(resumed after {resumed} of 40 batches)")), "{}", stderr(&o));
}

/// Rewards for a trajectories file: `correct(prompt index in file order, sample_idx)`.
fn write_rewards(traj: &Path, out: &Path, correct: impl Fn(usize, u32) -> bool) {
    use arrow::array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let t = read_table(traj, &[tr::PROMPT_ID, tr::SAMPLE_IDX, tr::DATA_SOURCE], &[]).unwrap();
    let mut order: Vec<String> = vec![];
    let c: Vec<bool> = (0..t.num_rows())
        .map(|i| {
            let p = t.utf8(&tr::PROMPT_ID).value(i).to_string();
            if !order.contains(&p) {
                order.push(p.clone());
            }
            correct(order.iter().position(|x| *x == p).unwrap(), t.u32(&tr::SAMPLE_IDX).value(i))
        })
        .collect();
    let batch = RecordBatch::try_new(
        rw::schema(),
        vec![
            t.column("prompt_id").clone(),
            t.column("sample_idx").clone(),
            t.column("data_source").clone(),
            Arc::new(StringArray::from(vec![None::<&str>; c.len()])) as ArrayRef,
            Arc::new(BooleanArray::from(c.clone())),
            Arc::new(Float32Array::from(c.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect::<Vec<f32>>())),
            Arc::new(StringArray::from(vec!["test"; c.len()])),
            // extra, process, process_detail
            Arc::new(StringArray::from(vec![None::<&str>; c.len()])),
            Arc::new(StringArray::from(vec![None::<&str>; c.len()])),
            Arc::new(StringArray::from(vec![None::<&str>; c.len()])),
        ],
    )
    .unwrap();
    let prov = Provenance { table: rw::TABLE, stage: "test", config: serde_json::json!({}), inputs: vec![] };
    let mut w = TableWriter::create(out, rw::schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

#[test]
fn embed_runs_on_rollout_hidden_states_and_continues_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let (t, r, e, h) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"), dir.path().join("e.parquet"), dir.path().join("h.safetensors"));
    let o = rollout(&t, &["--limit", "4", "--n", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Group k has k+1 correct answers (1, 2, 3, 4 of 4): groups 1 and 2 have anchors.
    write_rewards(&t, &r, |g, s| (s as usize) <= g);
    let args = |head: Option<&Path>, out: &Path, head_out: &Path, step: &str| {
        let mut a = vec!["--trajectories".to_string(), s(&t).into(), "--rewards".into(), s(&r).into(), "--out".into(), s(out).into(),
            "--head-out".into(), s(head_out).into(), "--dim".into(), "16".into(), "--step".into(), step.into()];
        match head {
            Some(h) => a.extend(["--head".to_string(), s(h).into()]),
            None => a.push("--init-head".into()),
        }
        a
    };
    let a = args(None, &e, &h, "1");
    let o = run("clipo-embed", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Anchors: correct answers in groups with >= 2 correct and >= 1 incorrect: 2 + 3 = 5.
    assert_eq!(metrics["con_lm_head/num_anchors"], 5.0);
    use clipo::schema::embeddings as emb;
    let et = read_table(&e, &[emb::PROMPT_ID, emb::SAMPLE_IDX, emb::EMBEDDING, emb::CONTRASTIVE_LOSS, emb::CONTRASTIVE_REWARD, emb::IS_ANCHOR, emb::POSITIVE_SAMPLE_IDX], &[]).unwrap();
    assert_eq!(et.num_rows(), 16);
    assert_eq!(et.vectors(&emb::EMBEDDING).value_length(), 16);
    let anchors = et.bool(&emb::IS_ANCHOR);
    let reward = et.f32(&emb::CONTRASTIVE_REWARD);
    let positive = et.u32(&emb::POSITIVE_SAMPLE_IDX);
    for i in 0..16 {
        let (g, sidx) = (i / 4, (i % 4) as u32);
        let correct = sidx as usize <= g;
        assert_eq!(anchors.value(i), correct && (g == 1 || g == 2), "row {i}");
        if !correct {
            assert_eq!(reward.value(i), 0.0, "incorrect responses get c = 0");
        } else {
            assert!(reward.value(i) <= 0.0 && reward.value(i) >= -0.5);
        }
        if anchors.value(i) {
            // The positive is another correct member of the same group.
            let p = positive.value(i);
            assert!(p != sidx && (p as usize) <= g, "row {i}: positive {p}");
        } else {
            assert!(positive.is_null(i));
        }
    }
    let side: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("h.safetensors.json")).unwrap()).unwrap();
    assert_eq!(side["head_step"], 1);
    // Continue from the head: its step counter goes on.
    let (e2, h2) = (dir.path().join("e2.parquet"), dir.path().join("h2.safetensors"));
    let a = args(Some(&h), &e2, &h2, "2");
    let o = run("clipo-embed", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let side: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("h2.safetensors.json")).unwrap()).unwrap();
    assert_eq!(side["head_step"], 2);
    // A rerun is a no-op; a missing head without --init-head is refused.
    let o = run("clipo-embed", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    let mut a = args(Some(&dir.path().join("nope.safetensors")), &e2, &h2, "2");
    a.push("--force".into());
    let o = run("clipo-embed", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--init-head"), "{}", stderr(&o));
    // Trajectories without hidden states are refused, naming the column.
    let t0 = dir.path().join("t0.parquet");
    assert!(rollout(&t0, &["--limit", "4", "--n", "4", "--hidden", "none"]).status.success());
    let o = run("clipo-embed", &["--trajectories", s(&t0), "--rewards", s(&r), "--init-head", "--out", s(&dir.path().join("x.parquet")), "--head-out", s(&dir.path().join("x.safetensors"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("column `hidden`"), "{}", stderr(&o));
}

fn weights(dir: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn update(args: &[&str]) -> std::process::Output {
    run("clipo-update", args)
}

/// A no-grad scoring pass of `policy` over the trajectories of `traj`.
fn score(policy: &Path, traj: &Path) -> clipo::model::Scored {
    let t = read_table(traj, &all_columns(), &[]).unwrap();
    let model = clipo::model::Model::load(policy, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    let u32s = |a: arrow::array::ArrayRef| a.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().values().to_vec();
    let (ps, rs): (Vec<Vec<u32>>, Vec<Vec<u32>>) =
        (0..t.num_rows()).map(|i| (u32s(t.list(&tr::PROMPT_TOKEN_IDS).value(i)), u32s(t.list(&tr::RESPONSE_TOKEN_IDS).value(i)))).unzip();
    let seqs: Vec<clipo::model::Sequence> = ps.iter().zip(&rs).map(|(p, r)| clipo::model::Sequence { prompt: p, response: r }).collect();
    model.response_logprobs_nograd(&seqs, 1.0, 8).unwrap()
}

fn sum_logprobs(policy: &Path, traj: &Path) -> Vec<f32> {
    score(policy, traj).logprobs.sum(1).unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn an_update_raises_the_rewarded_response_and_lowers_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, _) = fixture();
    let (t, r, out) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"), dir.path().join("p1"));
    assert!(rollout(&t, &["--limit", "1", "--n", "2", "--hidden", "none"]).status.success());
    write_rewards(&t, &r, |_, s| s == 0);
    let o = update(&["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--out", s(&out), "--kl", "off", "--lr", "1e-3", "--step", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = sum_logprobs(policy, &t);
    let after = sum_logprobs(&out, &t);
    assert!(after[0] > before[0], "rewarded: {} -> {}", before[0], after[0]);
    assert!(after[1] < before[1], "unrewarded: {} -> {}", before[1], after[1]);
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // GRPO with 2 samples: A = +-0.5 / (std 0.7071 + 1e-6) = +-0.7071.
    assert!((m["critic/advantages/max"].as_f64().unwrap() - 0.70710576).abs() < 1e-5, "{m}");
    for f in ["advantages.parquet", "optimizer.safetensors", "clipo_state.json", "metrics.json", "tokenizer.json", "config.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // A rerun is a no-op.
    let o = update(&["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--out", s(&out), "--kl", "off", "--lr", "1e-3", "--step", "1"]);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    // The new policy did not sample these: refused unless told otherwise.
    let o = update(&["--policy", s(&out), "--trajectories", s(&t), "--rewards", s(&r), "--out", s(&dir.path().join("p2")), "--kl", "off"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--allow-off-policy"), "{}", stderr(&o));
}

#[test]
fn micro_batches_give_the_full_batch_update_and_zero_advantages_are_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, _) = fixture();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    assert!(rollout(&t, &["--limit", "3", "--n", "3", "--hidden", "none"]).status.success());
    write_rewards(&t, &r, |g, s| (s as usize + g) % 2 == 0);
    let common = ["--policy", s(policy), "--ref", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--lr", "1e-3", "--kl-coef", "0.1"];
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let metrics = |o: std::process::Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let mut args = common.to_vec();
    args.extend(["--micro-batch", "9", "--out", s(&a)]);
    let ma = metrics(update(&args));
    let mut args = common.to_vec();
    args.extend(["--micro-batch", "2", "--out", s(&b)]);
    let mb = metrics(update(&args));
    // Packed by a token budget (verl's dynamic batch size): 9 sequences of ~60-90 tokens in
    // micro-batches of at most 200 tokens (two sequences each, one where they are longer).
    let tb = dir.path().join("tb");
    let mut args = common.to_vec();
    args.extend(["--max-tokens-per-micro-batch", "200", "--out", s(&tb)]);
    let mt = metrics(update(&args));
    // The accumulated gradient (its global norm) and the loss equal the full batch's to 1e-5.
    for key in ["actor/grad_norm", "actor/pg_loss", "actor/kl_loss"] {
        let (x, y, z) = (ma[key].as_f64().unwrap(), mb[key].as_f64().unwrap(), mt[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs().max(0.1), "{key}: {x} vs {y}");
        assert!((x - z).abs() <= 1e-5 * x.abs().max(0.1), "{key}, token budget: {x} vs {z}");
    }
    // AdamW's first step moves a weight by about lr * sign(g), so weights whose gradient is
    // at float-noise level may differ by up to 2 lr; all others agree to 1e-6.
    let (wa, wb, w0) = (weights(&a), weights(&b), weights(policy));
    let (mut moved, mut differ, mut total) = (0f32, 0usize, 0usize);
    for (k, va) in &wa {
        for ((x, y), z) in va.iter().zip(&wb[k]).zip(&w0[k]) {
            assert!((x - y).abs() <= 2e-3, "{k}: {x} vs {y}");
            differ += usize::from((x - y).abs() > 1e-6);
            total += 1;
            moved = moved.max((x - z).abs());
        }
    }
    assert!(differ * 1000 < total, "{differ} of {total} weights differ by more than 1e-6");
    assert!(moved > 1e-4, "the update moved the weights");

    // All rewards equal -> all advantages 0. With KL off, or KL to a reference that is the
    // policy itself, the loss has no gradient: no optimiser step is taken (verl would still
    // apply AdamW's weight decay, p (1 - lr wd)), the policy is copied through byte for byte,
    // and the metrics and the note say so.
    write_rewards(&t, &r, |_, _| true);
    let original = std::fs::read(policy.join("model.safetensors")).unwrap();
    for (name, extra) in [("c", vec!["--kl", "off"]), ("d", vec!["--ref", s(policy)])] {
        let out = dir.path().join(name);
        let mut args = vec!["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--lr", "1e-3", "--out", s(&out), "--force"];
        args.extend(extra);
        let o = update(&args);
        let m = metrics(o.clone());
        assert_eq!(m["actor/updated"], false, "{name}: {m}");
        assert_eq!(m["actor/not_updated"], "every advantage 0", "{name}: {m}");
        assert!(stderr(&o).contains("no-op update: every advantage of step"), "{name}: {}", stderr(&o));
        assert!(std::fs::read(out.join("model.safetensors")).unwrap() == original, "{name}: the weights changed");
    }
    // The same rewards with KL to another reference: the KL term has a gradient, the step is taken.
    let e = dir.path().join("e");
    let me = metrics(update(&["--policy", s(policy), "--ref", s(&a), "--trajectories", s(&t), "--rewards", s(&r), "--lr", "1e-3", "--kl-coef", "0.1", "--out", s(&e), "--force"]));
    assert_eq!(me["actor/updated"], true, "{me}");
    assert!(me.get("actor/not_updated").is_none() && me["actor/grad_norm"].as_f64().unwrap() > 0.0, "{me}");
    assert!(std::fs::read(e.join("model.safetensors")).unwrap() != original, "the KL step moved the weights");
}

/// Token-mean entropy of `policy` over the response positions of `traj`.
fn mean_entropy(policy: &Path, traj: &Path) -> f64 {
    let sc = score(policy, traj);
    let tokens: usize = sc.lens.iter().sum();
    f64::from(sc.entropy.sum_all().unwrap().to_scalar::<f32>().unwrap()) / tokens as f64
}

#[test]
fn the_entropy_bonus_alone_raises_the_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, _) = fixture();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    assert!(rollout(&t, &["--limit", "2", "--n", "3", "--hidden", "none"]).status.success());
    // All rewards equal -> advantages 0, KL off: the entropy bonus is the whole loss.
    write_rewards(&t, &r, |_, _| true);
    let (with, without) = (dir.path().join("with"), dir.path().join("without"));
    let common = ["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--lr", "1e-3", "--kl", "off", "--step", "1"];
    let mut args = common.to_vec();
    args.extend(["--entropy-coef", "0.1", "--out", s(&with)]);
    let o = update(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // loss = pg_loss (0) - 0.1 x entropy: the metric is the entropy before the step.
    let h0 = mean_entropy(policy, &t);
    assert!((m["actor/entropy"].as_f64().unwrap() - h0).abs() < 1e-4, "{m} vs {h0}");
    let h1 = mean_entropy(&with, &t);
    assert!(h1 > h0 + 1e-3, "entropy {h0} -> {h1}");
    let mut args = common.to_vec();
    args.extend(["--out", s(&without)]);
    assert!(update(&args).status.success());
    let h2 = mean_entropy(&without, &t);
    assert!((h2 - h0).abs() < (h1 - h0) / 10.0, "without the bonus: {h0} -> {h2}, with: {h1}");
}

#[test]
fn two_updates_resumed_from_disk_equal_one_run_with_two_mini_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, _) = fixture();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    assert!(rollout(&t, &["--limit", "2", "--n", "3", "--hidden", "none"]).status.success());
    write_rewards(&t, &r, |g, s| (s as usize + g) % 2 == 0);
    // One run: two mini-batches (one prompt each), old log-probs from the rollout.
    let one = dir.path().join("one");
    let o = update(&["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--out", s(&one), "--kl", "off", "--lr", "1e-3", "--mini-batches", "2", "--old-logprobs", "rollout"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Two runs: the first prompt's rows, then the second's from the saved policy and optimizer.
    let split = |keep: usize, name: &str| -> (PathBuf, PathBuf) {
        let full = read_table(&t, &all_columns(), &[]).unwrap();
        let first = full.utf8(&tr::PROMPT_ID).value(0).to_string();
        let mask: arrow::array::BooleanArray = (0..full.num_rows()).map(|i| Some((full.utf8(&tr::PROMPT_ID).value(i) == first) == (keep == 0))).collect();
        let tb = arrow::compute::filter_record_batch(&full.batch, &mask).unwrap();
        let rt = read_table(&r, &[rw::PROMPT_ID, rw::SAMPLE_IDX, rw::DATA_SOURCE, rw::EXTRACTED, rw::CORRECT, rw::SCORE, rw::REASON], &[]).unwrap();
        let rb = arrow::compute::filter_record_batch(&rt.batch, &mask).unwrap();
        let (tp, rp) = (dir.path().join(format!("{name}.t.parquet")), dir.path().join(format!("{name}.r.parquet")));
        let prov = Provenance { table: "x", stage: "test", config: serde_json::json!({}), inputs: vec![] };
        for (p, b) in [(&tp, tb), (&rp, rb)] {
            let mut w = TableWriter::create(p, b.schema(), &prov).unwrap();
            w.write(&b).unwrap();
            w.finish().unwrap();
        }
        (tp, rp)
    };
    let (t1, r1) = split(0, "a");
    let (t2, r2) = split(1, "b");
    let (p1, p2) = (dir.path().join("p1"), dir.path().join("p2"));
    let o = update(&["--policy", s(policy), "--trajectories", s(&t1), "--rewards", s(&r1), "--out", s(&p1), "--kl", "off", "--lr", "1e-3", "--old-logprobs", "rollout"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = update(&["--policy", s(&p1), "--trajectories", s(&t2), "--rewards", s(&r2), "--out", s(&p2), "--kl", "off", "--lr", "1e-3", "--old-logprobs", "rollout", "--allow-off-policy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (wa, wb) = (weights(&one), weights(&p2));
    for (k, va) in &wa {
        for (x, y) in va.iter().zip(&wb[k]) {
            assert!((x - y).abs() < 1e-6, "{k}: {x} vs {y}");
        }
    }
}

/// A rewards table for `traj` with the given `correct` labels, stamped as made from it.
fn rewards_with(traj: &Path, out: &Path, correct: &[bool]) {
    use arrow::array::{BooleanArray, Float32Array, StringArray, UInt32Array};
    let t = read_table(traj, &[tr::PROMPT_ID, tr::SAMPLE_IDX, tr::DATA_SOURCE], &[]).unwrap();
    assert_eq!(t.num_rows(), correct.len());
    let n = correct.len();
    let batch = arrow::array::RecordBatch::try_new(
        rw::schema(),
        vec![
            std::sync::Arc::new(StringArray::from_iter_values(t.utf8(&tr::PROMPT_ID).iter().map(|s| s.unwrap().to_string()))),
            std::sync::Arc::new(UInt32Array::from(t.u32(&tr::SAMPLE_IDX).values().to_vec())),
            std::sync::Arc::new(StringArray::from_iter_values(t.utf8(&tr::DATA_SOURCE).iter().map(|s| s.unwrap().to_string()))),
            std::sync::Arc::new(StringArray::from(vec![None::<&str>; n])),
            std::sync::Arc::new(BooleanArray::from(correct.to_vec())),
            std::sync::Arc::new(Float32Array::from_iter_values(correct.iter().map(|&c| if c { 1.0 } else { 0.0 }))),
            std::sync::Arc::new(StringArray::from_iter_values(std::iter::repeat_n("test", n))),
            // extra, process, process_detail
            std::sync::Arc::new(StringArray::from(vec![None::<&str>; n])),
            std::sync::Arc::new(StringArray::from(vec![None::<&str>; n])),
            std::sync::Arc::new(StringArray::from(vec![None::<&str>; n])),
        ],
    )
    .unwrap();
    let prov = Provenance::new(rw::TABLE, "test", serde_json::json!({}), &[traj]).unwrap();
    let mut w = TableWriter::create(out, rw::schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

#[test]
fn dynamic_sampling_keeps_informative_groups_and_refills_from_further_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t0, t1) = (d.join("t0.parquet"), d.join("t1.parquet"));
    for (t, round) in [(&t0, "0"), (&t1, "1")] {
        let o = rollout(t, &["--per-step", "4", "--step", "1", "--round", round, "--hidden", "official"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let ids = |t: &Path| -> std::collections::BTreeSet<String> {
        read_table(t, &[tr::PROMPT_ID], &[]).unwrap().utf8(&tr::PROMPT_ID).iter().map(|s| s.unwrap().to_string()).collect()
    };
    assert!(ids(&t0).is_disjoint(&ids(&t1)), "a refill round takes other prompts");
    // Groups of 3 (rows in prompt order): round 0 informative, none, none, informative; round 1
    // none, informative, informative, informative.
    let (f, t) = (false, true);
    let (r0, r1) = (d.join("r0.parquet"), d.join("r1.parquet"));
    rewards_with(&t0, &r0, &[t, f, f, f, f, f, t, t, t, f, t, f]);
    rewards_with(&t1, &r1, &[f, f, f, t, f, t, f, f, t, t, f, t]);
    let (mt, mr) = (d.join("t.parquet"), d.join("r.parquet"));
    let filter = |rounds: &[(&Path, &Path)]| {
        let mut args = vec![];
        for (t, r) in rounds {
            args.extend(["--trajectories", s(t), "--rewards", s(r)]);
        }
        args.extend(["--keep", "4", "--out-trajectories", s(&mt), "--out-rewards", s(&mr)]);
        let o = run("clipo-filter", &args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let one = filter(&[(&t0, &r0)]);
    assert_eq!((one["kept"].as_u64(), one["enough"].as_bool()), (Some(2), Some(false)), "{one}");
    let two = filter(&[(&t0, &r0), (&t1, &r1)]);
    assert_eq!(two["kept_by_round"], serde_json::json!([2, 2]), "{two}");
    assert_eq!((two["informative"].as_u64(), two["enough"].as_bool()), (Some(5), Some(true)), "{two}");
    // The merged table: the kept groups in round order, each row marked with its round.
    let merged = read_table(&mt, &all_columns(), &["round"]).unwrap();
    assert_eq!(merged.num_rows(), 12);
    let round = merged.batch.column_by_name("round").unwrap().as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().values().to_vec();
    assert_eq!(round, [vec![0; 6], vec![1; 6]].concat());
    let rr = read_table(&mr, &[rw::CORRECT], &[]).unwrap();
    // round 0: groups 0 (t f f) and 3 (f t f); round 1: groups 1 (t f t) and 2 (f f t).
    assert_eq!(rr.bool(&rw::CORRECT).iter().map(|c| c.unwrap()).collect::<Vec<_>>(), vec![t, f, f, f, t, f, t, f, t, f, f, t]);
    // The update trains on the merged tables (their lineage holds).
    let (policy, _) = fixture();
    let o = run("clipo-update", &["--policy", s(policy), "--trajectories", s(&mt), "--rewards", s(&mr), "--kl", "off", "--step", "1", "--out", s(&d.join("p"))]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_stop_string_ends_a_response_at_the_token_that_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, stopped) = (dir.path().join("plain.parquet"), dir.path().join("stopped.parquet"));
    let args = ["--limit", "8", "--n", "4", "--seed", "3", "--hidden", "none"];
    assert!(rollout(&plain, &args).status.success());
    let mut with_stop = args.to_vec();
    with_stop.extend(["--stop", "ve", "--stop", "x"]);
    let o = rollout(&stopped, &with_stop);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |p: &Path| {
        let t = read_table(p, &all_columns(), &[]).unwrap();
        (0..t.num_rows())
            .map(|i| {
                let ids = t.list(&tr::RESPONSE_TOKEN_IDS).value(i);
                let ids = ids.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().values().to_vec();
                (t.utf8(&tr::RESPONSE_TEXT).value(i).to_string(), ids, t.utf8(&tr::FINISH_REASON).value(i).to_string())
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (read(&plain), read(&stopped));
    let mut stops = 0;
    for ((ta, ia, _), (tb, ib, fb)) in a.iter().zip(&b) {
        // The same seeds: the stopped response is a prefix of the plain one, cut right after the
        // first stop string, which it ends with; one that never met a string is the same.
        assert!(ia.starts_with(ib), "{tb:?} is not a prefix of {ta:?}");
        match fb.strip_prefix("stop:") {
            Some(s) => {
                stops += 1;
                assert!(tb.contains(s), "{tb:?} has no {s:?}");
                let first = ["ve", "x"].iter().filter_map(|s| ta.find(s).map(|p| p + s.len())).min().unwrap();
                assert!(tb.len() <= first + 8 && tb.len() >= first, "{tb:?} cut at {} not right after the first stop in {ta:?}", tb.len());
            }
            None => assert_eq!(ia, ib, "a response that met no stop string is unchanged"),
        }
    }
    assert!(stops >= 4, "only {stops} responses met a stop string");
}

/// verl's rollout correction: the mismatch metrics whenever behaviour log-probs exist, and
/// with `--rollout-is` the truncated weights pi_old / pi_behaviour in the loss.
#[test]
fn rollout_importance_sampling_reweights_the_loss_and_logs_the_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, _) = fixture();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    // Top-p 0.5: each token was drawn from the truncated distribution, more likely than under
    // the full one, so pi_old / pi_behaviour <= 1.
    let o = rollout(&t, &["--limit", "4", "--n", "4", "--top-p", "0.5", "--hidden", "none", "--seed", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    write_rewards(&t, &r, |g, s| (s as usize + g) % 2 == 0);
    let metrics = |out: &str, extra: &[&str]| -> serde_json::Value {
        let out = dir.path().join(out);
        let mut args = vec!["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--kl", "off", "--lr", "1e-3", "--out", s(&out)];
        args.extend_from_slice(extra);
        let o = update(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (off, token, seq) = (metrics("off", &[]), metrics("token", &["--rollout-is", "token"]), metrics("seq", &["--rollout-is", "sequence"]));
    let num = |m: &serde_json::Value, k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {m}"));
    for k in ["rollout_corr/kl", "rollout_corr/k3_kl", "rollout_corr/training_ppl", "rollout_corr/rollout_ppl", "rollout_corr/rollout_is_eff_sample_size"] {
        num(&off, k);
    }
    assert!(num(&off, "rollout_corr/rollout_is_max") <= 1.0 + 1e-4, "{off}");
    assert!(num(&off, "rollout_corr/rollout_is_mean") < 0.99, "{off}");
    assert!(num(&off, "rollout_corr/kl") > 0.0 && num(&off, "rollout_corr/training_ppl") > num(&off, "rollout_corr/rollout_ppl"), "{off}");
    // The weights (<= 1) scale the token losses: the loss and the gradient shrink.
    let (l0, l1, l2) = (num(&off, "actor/pg_loss"), num(&token, "actor/pg_loss"), num(&seq, "actor/pg_loss"));
    let (g0, g1) = (num(&off, "actor/grad_norm"), num(&token, "actor/grad_norm"));
    assert!((l0 - l1).abs() > 1e-4 * l0.abs().max(1e-3) && (l1 - l2).abs() > 1e-6, "{l0} {l1} {l2}");
    assert!(g1 < g0, "grad norm {g0} -> {g1}");
    assert!((num(&token, "rollout_corr/rollout_is_mean") - num(&off, "rollout_corr/rollout_is_mean")).abs() < 1e-6);
    assert_eq!(num(&token, "rollout_corr/rollout_is_masked_fraction"), 0.0);
    // Masked IS at C = the mean weight: the tokens with weight above C leave the loss
    // (truncation keeps them at C).
    let mean = format!("{}", num(&off, "rollout_corr/rollout_is_mean"));
    let c = ["--rollout-is-threshold", mean.as_str()];
    let (trunc, mask) = (metrics("t09", &[&["--rollout-is", "token"], &c[..]].concat()), metrics("m09", &[&["--rollout-is", "token-mask"], &c[..]].concat()));
    let masked = num(&mask, "rollout_corr/rollout_is_masked_fraction");
    assert!(masked > 0.05 && masked < 0.95, "{mask}");
    let cap = num(&off, "rollout_corr/rollout_is_mean") + 1e-6;
    assert!(num(&trunc, "rollout_corr/rollout_is_max") <= cap && num(&mask, "rollout_corr/rollout_is_max") <= cap);
    assert!((num(&trunc, "actor/pg_loss") - num(&mask, "actor/pg_loss")).abs() > 1e-6, "{trunc} {mask}");
    // An unknown mode is refused by name.
    let o = update(&["--policy", s(policy), "--trajectories", s(&t), "--rewards", s(&r), "--kl", "off", "--rollout-is", "tok", "--out", s(&dir.path().join("x"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--rollout-is tok"), "{}", stderr(&o));
}
