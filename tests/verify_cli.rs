//! clipo-verify run as a user runs it: real files in, real files out, errors with exit 2.

mod common;

use std::path::Path;

use clipo::prompts::read_prompts;
use clipo::schema::trajectories as tr;
use clipo::stages::verify::read_rewards;
use clipo::table::{read_table, Provenance, TableWriter};
use clipo::trajectories::{trajectories_batch, Trajectory};
use common::{traj, run, shared_data, stderr};


fn write_trajectories(path: &Path, rows: &[Trajectory]) {
    let batch = trajectories_batch(rows, 0).unwrap();
    let prov = Provenance { table: tr::TABLE, stage: "test", config: serde_json::json!({}), inputs: vec![] };
    let mut w = TableWriter::create(path, batch.schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

#[test]
fn gsm8k_test_set_with_boxed_ground_truth_scores_100_percent() {
    let Some(data) = shared_data() else { return };
    let prompts = read_prompts(&data.join("test/gsm8k.parquet")).unwrap();
    assert_eq!(prompts.len(), 1319);
    assert_eq!(prompts[17].prompt_id, "conrl/gsm8k/test/17");
    let rows: Vec<Trajectory> = prompts
        .iter()
        .map(|p| traj(&p.prompt_id, 0, &p.data_source, &p.ground_truth, &format!("So the answer is \\boxed{{{}}}.", p.ground_truth)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    write_trajectories(&t, &rows);
    let o = run("clipo-verify", &["--input", t.to_str().unwrap(), "--output", r.to_str().unwrap(), "--summary"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["overall"]["responses"], 1319);
    assert_eq!(summary["overall"]["accuracy"], 1.0);
    assert_eq!(summary["data_sources"]["conrl/gsm8k"]["correct"], 1319);
    let rewards = read_rewards(&r).unwrap();
    assert_eq!(rewards.num_rows(), 1319);
    assert!(rewards.bool(&clipo::schema::rewards::CORRECT).iter().all(|c| c == Some(true)));
}

#[test]
fn rewards_rows_follow_input_rows_with_reasons_and_summary() {
    let rows = vec![
        traj("p0", 0, "conrl/gsm8k", "18", "first \\boxed{17} then \\boxed{18}"),
        traj("p0", 1, "conrl/gsm8k", "18", "no box, 18"),
        traj("p0", 2, "conrl/gsm8k", "18", "\\boxed{18"),
        traj("p0", 3, "conrl/gsm8k", "18", "\\boxed{19}"),
        traj("p1", 0, "conrl/mmlu2k", "C", "\\boxed{C. the third}"),
        traj("p1", 1, "conrl/mmlu2k", "C", "\\boxed{(C)}"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    write_trajectories(&t, &rows);
    let o = run("clipo-verify", &["-i", t.to_str().unwrap(), "-o", r.to_str().unwrap(), "--summary"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rw = read_rewards(&r).unwrap();
    use clipo::schema::rewards::*;
    let correct: Vec<bool> = rw.bool(&CORRECT).iter().map(|c| c.unwrap()).collect();
    assert_eq!(correct, vec![true, false, false, false, true, false]);
    let reason: Vec<&str> = rw.utf8(&REASON).iter().map(|c| c.unwrap()).collect();
    assert_eq!(reason[1], "no_boxed");
    assert_eq!(reason[2], "unclosed_brace");
    assert_eq!(reason[3], "mismatch");
    assert_eq!(rw.utf8(&EXTRACTED).value(0), "18");
    assert_eq!(rw.u32(&SAMPLE_IDX).values().to_vec(), vec![0, 1, 2, 3, 0, 1]);
    let scores: Vec<f32> = rw.f32(&SCORE).values().to_vec();
    assert_eq!(scores, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    // Provenance is stamped into the file.
    assert_eq!(rw.metadata.get("clipo.table").map(String::as_str), Some("rewards"));
    assert_eq!(rw.metadata.get("clipo.schema_version").map(String::as_str), Some("1"));
    // The summary: 2/4 prompts... p0 has 1 of 4 correct, p1 1 of 2.
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["data_sources"]["conrl/gsm8k"]["accuracy"], 0.25);
    assert_eq!(s["data_sources"]["conrl/gsm8k"]["pass_at"]["pass@4"], 1.0);
    // pass@2 for n=4, c=1: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert_eq!(s["data_sources"]["conrl/gsm8k"]["pass_at"]["pass@2"], 0.5);
    assert_eq!(s["overall"]["responses"], 6);

    // Unchanged inputs: the second run is a no-op and leaves the file untouched.
    let before = std::fs::metadata(&r).unwrap().modified().unwrap();
    let o = run("clipo-verify", &["-i", t.to_str().unwrap(), "-o", r.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&r).unwrap().modified().unwrap(), before);
}

#[test]
fn missing_column_fails_before_any_output_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    // A rewards table has no ground_truth or response_text.
    let rows = vec![traj("p0", 0, "conrl/gsm8k", "1", "\\boxed{1}")];
    write_trajectories(&t, &rows);
    let o = run("clipo-verify", &["-i", t.to_str().unwrap(), "-o", r.to_str().unwrap()]);
    assert!(o.status.success());
    let out2 = dir.path().join("r2.parquet");
    let o = run("clipo-verify", &["-i", r.to_str().unwrap(), "-o", out2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("missing column `ground_truth`") && e.contains("r.parquet"), "{e}");
    assert!(!out2.exists() && !dir.path().join("r2.parquet.tmp").exists());
}

#[test]
fn wrong_type_truncated_and_missing_files_fail_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.parquet");
    let out = dir.path().join("o.parquet");
    // sample_idx as text: a type error naming the column.
    {
        use arrow::array::{ArrayRef, RecordBatch, StringArray};
        use std::sync::Arc;
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let batch = RecordBatch::try_from_iter(vec![
            ("prompt_id", s("p")),
            ("sample_idx", s("zero")),
            ("data_source", s("conrl/gsm8k")),
            ("ground_truth", s("1")),
            ("response_text", s("\\boxed{1}")),
        ])
        .unwrap();
        let prov = Provenance { table: "x", stage: "test", config: serde_json::json!({}), inputs: vec![] };
        let mut w = TableWriter::create(&t, batch.schema(), &prov).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    let o = run("clipo-verify", &["-i", t.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("column `sample_idx` has type Utf8"), "{}", stderr(&o));
    assert!(!out.exists());

    // A truncated file.
    let good = dir.path().join("good.parquet");
    write_trajectories(&good, &[traj("p0", 0, "conrl/gsm8k", "1", "\\boxed{1}")]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let o = run("clipo-verify", &["-i", t.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a readable parquet file"), "{}", stderr(&o));
    assert!(!out.exists());

    // A missing file.
    let o = run("clipo-verify", &["-i", "/nonexistent/x.parquet", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
}

#[test]
fn pandas_style_int64_sample_idx_is_accepted() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = (dir.path().join("t.parquet"), dir.path().join("r.parquet"));
    let s = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let batch = RecordBatch::try_from_iter(vec![
        ("prompt_id", s(&["p", "p"])),
        ("sample_idx", Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef),
        ("data_source", s(&["conrl/gsm8k", "conrl/gsm8k"])),
        ("ground_truth", s(&["1", "1"])),
        ("response_text", s(&["\\boxed{1}", "\\boxed{2}"])),
        ("extra", s(&["a", "b"])),
    ])
    .unwrap();
    let prov = Provenance { table: "x", stage: "test", config: serde_json::json!({}), inputs: vec![] };
    let mut w = TableWriter::create(&t, batch.schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let o = run("clipo-verify", &["-i", t.to_str().unwrap(), "-o", r.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let back = read_table(&r, &[clipo::schema::rewards::SAMPLE_IDX], &[]).unwrap();
    assert_eq!(back.u32(&clipo::schema::rewards::SAMPLE_IDX).values().to_vec(), vec![0, 1]);

    // A negative sample_idx cannot be a u32: the row is named.
    let batch = RecordBatch::try_from_iter(vec![
        ("prompt_id", s(&["p", "p"])),
        ("sample_idx", Arc::new(Int64Array::from(vec![0, -1])) as ArrayRef),
        ("data_source", s(&["conrl/gsm8k", "conrl/gsm8k"])),
        ("ground_truth", s(&["1", "1"])),
        ("response_text", s(&["\\boxed{1}", "\\boxed{2}"])),
    ])
    .unwrap();
    let t2 = dir.path().join("t2.parquet");
    let mut w = TableWriter::create(&t2, batch.schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let out = dir.path().join("r2.parquet");
    let o = run("clipo-verify", &["-i", t2.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("row 1, column `sample_idx`"), "{}", stderr(&o));
}
