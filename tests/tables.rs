//! The table contracts: prompts read from verl parquet and JSONL, round trips, schema checks,
//! atomic writes.

mod common;

use clipo::prompts::{derive_prompt_id, read_prompts, write_prompts, Message};
use clipo::schema::trajectories as tr;
use clipo::table::{read_table, tmp_path, Provenance, TableWriter};
use clipo::trajectories::{trajectories_batch, FinishReason, Trajectory};
use common::shared_data;

fn prov(table: &'static str) -> Provenance {
    Provenance { table, stage: "test", config: serde_json::json!({"k": 1}), inputs: vec![] }
}

#[test]
fn every_shared_data_set_reads_with_stable_ids() {
    let Some(data) = shared_data() else { return };
    let mut total = 0;
    for split in ["train", "test"] {
        for entry in std::fs::read_dir(data.join(split)).unwrap() {
            let path = entry.unwrap().path();
            let prompts = read_prompts(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!prompts.is_empty());
            let p = &prompts[0];
            assert!(p.prompt_id.starts_with(&p.data_source), "{}", p.prompt_id);
            assert!(p.prompt_id.ends_with(&format!("/{split}/0")), "{}", p.prompt_id);
            assert!(p.messages.last().unwrap().content.contains("\\boxed{}"));
            total += prompts.len();
        }
    }
    // 14 test sets and 2 training sets.
    assert_eq!(total, 21_369 + 7_473 + 7_500);
}

#[test]
fn prompts_round_trip_through_parquet_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("mine.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}], "ground_truth": "2"}"#, "\n",
            r#"{"prompt": "2+2?", "ground_truth": 4, "data_source": "toy", "extra_info": {"index": 3, "split": "test"}}"#, "\n",
            "\n",
            r#"{"prompt": [{"role": "user", "content": "3+3?"}], "reward_model": {"ground_truth": "6", "style": "rule"}, "prompt_id": "mine-3"}"#, "\n",
        ),
    )
    .unwrap();
    let prompts = read_prompts(&jsonl).unwrap();
    assert_eq!(prompts.len(), 3);
    assert_eq!(prompts[0].data_source, "mine");
    assert_eq!(prompts[0].messages.len(), 2);
    assert!(prompts[0].prompt_id.starts_with("sha256:") && prompts[0].prompt_id.len() == 23);
    assert_eq!(prompts[1].prompt_id, "toy/test/3");
    assert_eq!(prompts[1].ground_truth, "4");
    assert_eq!(prompts[2].prompt_id, "mine-3");
    assert_eq!(prompts[2].style.as_deref(), Some("rule"));

    let pq = dir.path().join("mine.parquet");
    assert_eq!(write_prompts(&pq, &prompts, &prov("prompts")).unwrap(), 3);
    let back = read_prompts(&pq).unwrap();
    assert_eq!(back, prompts);

    // The hash id depends on the content only.
    let m = vec![Message { role: "user".into(), content: "x".into() }];
    assert_eq!(derive_prompt_id("a", None, None, &m), derive_prompt_id("a", None, None, &m));
    assert_ne!(derive_prompt_id("a", None, None, &m), derive_prompt_id("b", None, None, &m));
}

#[test]
fn bad_prompts_are_refused_with_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("bad.jsonl");
    std::fs::write(&jsonl, "{\"prompt\": \"ok\", \"ground_truth\": \"1\"}\n{\"prompt\": \"no answer\"}\n").unwrap();
    let e = read_prompts(&jsonl).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("line 2") && e.contains("ground_truth"), "{e}");

    std::fs::write(&jsonl, "{\"prompt\": \"  \", \"ground_truth\": \"1\"}\n").unwrap();
    let e = read_prompts(&jsonl).unwrap_err().to_string();
    assert!(e.contains("empty prompt"), "{e}");

    std::fs::write(&jsonl, "").unwrap();
    assert!(read_prompts(&jsonl).unwrap_err().to_string().contains("no prompts"));
}

fn sample(i: u32, hidden: Option<Vec<f32>>) -> Trajectory {
    Trajectory {
        prompt_id: format!("p{}", i / 2),
        sample_idx: i % 2,
        data_source: "toy".into(),
        ground_truth: "2".into(),
        prompt_text: "1+1?".into(),
        response_text: "\\boxed{2}".into(),
        prompt_token_ids: vec![1, 2, 3],
        response_token_ids: vec![4, 5],
        response_logprobs: vec![-0.25, -1.5],
        behavior_logprobs: vec![-0.25, -1.5],
        finish_reason: if i % 2 == 0 { FinishReason::Eos } else { FinishReason::Length },
        seed: 1000 + i as u64,
        policy: "tiny@abc".into(),
        hidden,
    }
}

#[test]
fn trajectories_round_trip_with_hidden_states_and_nan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let rows: Vec<Trajectory> = (0..4).map(|i| sample(i, Some(vec![i as f32, 0.5, -1.0]))).collect();
    let batch = trajectories_batch(&rows, 3).unwrap();
    let mut w = TableWriter::create(&path, batch.schema(), &prov(tr::TABLE)).unwrap();
    w.write(&batch).unwrap();
    assert!(tmp_path(&path).exists() && !path.exists(), "written to <out>.tmp until finished");
    assert_eq!(w.finish().unwrap(), 4);
    assert!(!tmp_path(&path).exists() && path.exists());

    let all = [
        tr::PROMPT_ID, tr::SAMPLE_IDX, tr::DATA_SOURCE, tr::GROUND_TRUTH, tr::PROMPT_TEXT, tr::RESPONSE_TEXT,
        tr::PROMPT_TOKEN_IDS, tr::RESPONSE_TOKEN_IDS, tr::RESPONSE_LOGPROBS, tr::FINISH_REASON, tr::SEED, tr::POLICY,
        tr::HIDDEN,
    ];
    let t = read_table(&path, &all, &[]).unwrap();
    assert_eq!(t.num_rows(), 4);
    assert_eq!(t.vectors(&tr::HIDDEN).value_length(), 3);
    assert_eq!(t.u64(&tr::SEED).value(3), 1003);
    assert_eq!(t.utf8(&tr::FINISH_REASON).value(1), "length");
    assert_eq!(t.metadata["clipo.table"], "trajectories");
    assert_eq!(t.metadata["clipo.config"], "{\"k\":1}");

    // A NaN in a hidden state is named by row and column.
    let mut rows = rows;
    rows[2].hidden = Some(vec![0.0, f32::NAN, 0.0]);
    let batch = trajectories_batch(&rows, 3).unwrap();
    let bad = dir.path().join("bad.parquet");
    let mut w = TableWriter::create(&bad, batch.schema(), &prov(tr::TABLE)).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let e = read_table(&bad, &all, &[]).err().unwrap().to_string();
    assert!(e.contains("row 2, column `hidden`: NaN or infinite value"), "{e}");
}

#[test]
fn a_dropped_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let batch = trajectories_batch(&[sample(0, None)], 0).unwrap();
    {
        let mut w = TableWriter::create(&path, batch.schema(), &prov(tr::TABLE)).unwrap();
        w.write(&batch).unwrap();
    }
    assert!(!path.exists() && !tmp_path(&path).exists());
}
