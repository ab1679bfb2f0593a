//! Users' own rewards through clipo-verify, run as a user runs them: real scorer programs (Python
//! and shell, written into each test's directory), verl reward files through
//! scripts/verl_scorer.py, the choice per data source, and hostile programs (a crash, a hang,
//! garbage, too few lines, answers out of order). Each ends with the documented result, and a
//! failure leaves no output file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use clipo::schema::{rewards as rw, trajectories as tr};
use clipo::stages::verify::read_rewards;
use clipo::table::{Provenance, TableWriter};
use clipo::trajectories::{trajectories_batch, Trajectory};
use common::{traj, ok, run, s, stderr};


/// A trajectories table, with an `extra_info` column of JSON text when given.
fn write_trajectories(path: &Path, rows: &[Trajectory], extra_info: Option<Vec<String>>) {
    let mut batch = trajectories_batch(rows, 0).unwrap();
    if let Some(info) = extra_info {
        let mut fields: Vec<arrow::datatypes::Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(arrow::datatypes::Field::new("extra_info", arrow::datatypes::DataType::Utf8, false));
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(StringArray::from(info)) as ArrayRef);
        batch = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).unwrap();
    }
    let prov = Provenance { table: tr::TABLE, stage: "test", config: serde_json::json!({}), inputs: vec![] };
    let mut w = TableWriter::create(path, batch.schema(), &prov).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

/// `n` rows of one data source: prompt p{i/4}, sample i%4, ground truth "7", response r{i}.
fn rows(n: usize, ds: &str) -> Vec<Trajectory> {
    (0..n).map(|i| traj(&format!("p{}", i / 4), (i % 4) as u32, ds, "7", &format!("r{i}"))).collect()
}

fn python() -> bool {
    let found = std::process::Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        common::skip("no python3 on PATH");
    }
    found
}

fn verl_scorer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verl_scorer.py")
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(rows: &[Trajectory]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        write_trajectories(&dir.path().join("t.parquet"), rows, None);
        Case { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Writes a scorer program into the test's directory and returns its path.
    fn program(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        s(&p).to_string()
    }
    fn verify(&self, args: &[&str]) -> std::process::Output {
        let (t, r) = (self.path("t.parquet"), self.path("r.parquet"));
        let mut all = vec!["-i", s(&t), "-o", s(&r)];
        all.extend_from_slice(args);
        run("clipo-verify", &all)
    }
    /// Asserts a failure with exit 2 whose message holds every `needle`, and no output at all.
    fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        let o = self.verify(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
        assert!(!self.path("r.parquet").exists() && !self.path("r.parquet.tmp").exists(), "partial output left: {e}");
        e
    }
    fn rewards(&self) -> clipo::table::Table {
        read_rewards(&self.path("r.parquet")).unwrap()
    }
}

fn column<'a>(t: &'a clipo::table::Table, c: &clipo::schema::Column) -> Vec<Option<&'a str>> {
    t.utf8(c).iter().collect()
}

/// A Python scorer: partial credit by the length of the response's number, its own reasons and
/// extracted answers, an extra key; answers without echoing the key.
const PY_SCORER: &str = r#"
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    n = int(r["response_text"][1:])
    score = 1.0 if n % 2 == 0 else 0.25
    print(json.dumps({"score": score, "extracted": str(n), "reason": "even" if score == 1 else "odd",
                      "digits": len(str(n)), "gt": r["ground_truth"]}), flush=True)
"#;

#[test]
fn python_scorer_scores_every_row_in_order_with_extra_keys() {
    if !python() {
        return;
    }
    let c = Case::new(&rows(10, "custom/task"));
    let prog = c.program("score.py", PY_SCORER);
    let o = ok(c.verify(&["--scorer", &format!("python3 {prog}"), "--summary"]));
    let r = c.rewards();
    assert_eq!(r.num_rows(), 10);
    // Partial credit flows into `score` as it is; `correct` defaults to score > 0.
    let scores: Vec<f32> = r.f32(&rw::SCORE).values().to_vec();
    assert_eq!(scores, (0..10).map(|i| if i % 2 == 0 { 1.0 } else { 0.25 }).collect::<Vec<f32>>());
    assert!(r.bool(&rw::CORRECT).iter().all(|c| c == Some(true)));
    assert_eq!(column(&r, &rw::EXTRACTED)[3], Some("3"));
    assert_eq!(column(&r, &rw::REASON)[..2], [Some("even"), Some("odd")]);
    assert_eq!(column(&r, &rw::EXTRA)[9], Some(r#"{"digits":1,"gt":"7"}"#));
    assert_eq!(r.u32(&rw::SAMPLE_IDX).values().to_vec(), (0..10).map(|i| i % 4).collect::<Vec<u32>>());
    // The summary: the score distribution and the reasons.
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &s["data_sources"]["custom/task"];
    assert_eq!(d["score"]["mean"], 0.625);
    assert_eq!(d["score"]["min"], 0.25);
    assert_eq!(d["score"]["values"]["0.25"], 5);
    assert_eq!(d["reasons"]["odd"], 5);
    assert!(stderr(&o).contains("reasons custom/task"), "{}", stderr(&o));

    // Unchanged: up to date. Several workers give the same table (forced).
    let o = ok(c.verify(&["--scorer", &format!("python3 {prog}")]));
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    let before = std::fs::read(c.path("r.parquet")).unwrap();
    ok(c.verify(&["--scorer", &format!("python3 {prog}"), "--scorer-workers", "3", "--force"]));
    let again = c.rewards();
    assert_eq!(again.batch, r.batch);
    // The scorer's file is in the fingerprint: editing it rescores.
    std::fs::write(&prog, PY_SCORER.replace("0.25", "0.5")).unwrap();
    let o = ok(c.verify(&["--scorer", &format!("python3 {prog}")]));
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_ne!(std::fs::read(c.path("r.parquet")).unwrap(), before);
    assert_eq!(c.rewards().f32(&rw::SCORE).value(1), 0.5);
}

#[test]
fn shell_scorer_without_json_tools() {
    let mut rs = rows(6, "shell/task");
    rs[2].response_text = "yes".into();
    let c = Case::new(&rs);
    let prog = c.program(
        "score.sh",
        r#"while IFS= read -r line; do
  case "$line" in
    *'"response_text":"yes"'*) echo '{"score": 1, "reason": "said_yes"}' ;;
    *) echo '{"score": 0}' ;;
  esac
done
"#,
    );
    ok(c.verify(&["--scorer", &format!("sh {prog}")]));
    let r = c.rewards();
    assert_eq!(r.f32(&rw::SCORE).values().to_vec(), vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(column(&r, &rw::REASON), vec![Some("incorrect"), Some("incorrect"), Some("said_yes"), Some("incorrect"), Some("incorrect"), Some("incorrect")]);
    assert_eq!(r.bool(&rw::CORRECT).value(2), true);
    assert!(column(&r, &rw::EXTRA).iter().all(Option::is_none));
}

/// A verl-style reward file: verl's keyword call, a float for one data source and a dict with
/// verl's `acc` and `pred` keys for another, `extra_info` read.
const VERL_REWARD: &str = r#"
import re

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    m = re.search(r"answer: (\d+)", solution_str)
    pred = m.group(1) if m else None
    if data_source == "plain":
        return 1.0 if pred == ground_truth else 0.0
    right = pred == ground_truth
    return {"score": 1.0 if right else -1.0, "acc": right, "pred": pred, "index": extra_info["index"]}

def format_only(data_source, solution_str, ground_truth, extra_info=None):
    return 0.1 if "answer:" in solution_str else 0
"#;

#[test]
fn verl_reward_file_runs_unchanged_through_verl_scorer() {
    if !python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rs = vec![
        traj("a", 0, "plain", "7", "so answer: 7"),
        traj("a", 1, "plain", "7", "so answer: 8"),
        traj("b", 0, "dapo", "3", "answer: 3"),
        traj("b", 1, "dapo", "3", "no idea"),
    ];
    let info = (0..4).map(|i| format!(r#"{{"index": {}, "split": "train"}}"#, 10 + i)).collect();
    write_trajectories(&dir.path().join("t.parquet"), &rs, Some(info));
    let c = Case { dir };
    let file = c.program("my_reward.py", VERL_REWARD);
    let cmd = format!("python3 {} {file}", s(&verl_scorer()));
    ok(c.verify(&["--scorer", &cmd]));
    let r = c.rewards();
    assert_eq!(r.f32(&rw::SCORE).values().to_vec(), vec![1.0, 0.0, 1.0, -1.0]);
    // correct: score > 0 for a float; verl's `acc` for a dict.
    assert_eq!(r.bool(&rw::CORRECT).iter().map(Option::unwrap).collect::<Vec<_>>(), vec![true, false, true, false]);
    // `pred` becomes `extracted`; the other keys, with extra_info's index, go to `extra`.
    assert_eq!(column(&r, &rw::EXTRACTED), vec![None, None, Some("3"), None]);
    assert_eq!(column(&r, &rw::EXTRA)[2], Some(r#"{"acc":true,"index":12,"pred":"3"}"#));
    assert_eq!(column(&r, &rw::REASON)[3], Some("incorrect"));

    // FILE.py:FUNCTION picks another function.
    let cmd = format!("python3 {} {file}:format_only", s(&verl_scorer()));
    ok(c.verify(&["--scorer", &cmd]));
    assert_eq!(c.rewards().f32(&rw::SCORE).values().to_vec(), vec![0.1, 0.1, 0.1, 0.0]);

    // A function that raises: the row and the traceback's last line are in the error.
    std::fs::remove_file(c.path("r.parquet")).unwrap();
    let bad = c.program("bad_reward.py", "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1 / 0\n");
    let cmd = format!("python3 {} {bad}", s(&verl_scorer()));
    c.fails(&["--scorer", &cmd], &["row 0 (prompt_id a, sample_idx 0)", "ZeroDivisionError"]);
}

#[test]
fn dispatch_by_data_source_on_a_mixed_file() {
    if !python() {
        return;
    }
    let rs = vec![
        traj("g", 0, "openai/gsm8k", "72", "so #### 72"),
        traj("g", 1, "openai/gsm8k", "72", "the answer is \\boxed{72}"),
        traj("m", 0, "conrl/math", "72", "the answer is \\boxed{72}"),
        traj("m", 1, "conrl/math", "72", "so #### 72"),
        traj("c", 0, "code/apps", "x", "r5"),
        traj("c", 1, "code/apps", "x", "r6"),
    ];
    let c = Case::new(&rs);
    let prog = c.program("score.py", PY_SCORER);
    let o = ok(c.verify(&[
        "--scorer-for",
        "openai/gsm8k=gsm8k",
        "--scorer-for",
        &format!("code/*=python3 {prog}"),
        "--scorer-for",
        "gsm8k=gsm8k-flexible",
    ]));
    let r = c.rewards();
    assert_eq!(r.f32(&rw::SCORE).values().to_vec(), vec![1.0, 0.0, 1.0, 0.0, 0.25, 1.0]);
    assert_eq!(
        column(&r, &rw::REASON),
        vec![Some("exact_match"), Some("no_answer"), Some("normalized_match"), Some("no_boxed"), Some("odd"), Some("even")]
    );
    // A pattern that matches nothing is named (it is a whole-string glob: `gsm8k` is not `openai/gsm8k`).
    assert!(stderr(&o).contains("pattern `gsm8k` matches no data source"), "{}", stderr(&o));

    // `*=builtin` and no flags give the same rewards: the paper's verifier stays the default.
    ok(c.verify(&["--scorer-for", "*=builtin", "--force"]));
    let a = c.rewards();
    ok(c.verify(&["--force"]));
    assert_eq!(c.rewards().batch, a.batch);
    assert_eq!(column(&a, &rw::REASON)[0], Some("no_boxed"));

    // Malformed rules are refused before anything runs.
    std::fs::remove_file(c.path("r.parquet")).unwrap();
    c.fails(&["--scorer-for", "openai/gsm8k"], &["--scorer-for openai/gsm8k: expected PATTERN=SCORER"]);
    c.fails(&["--scorer", "python3 x.py", "--scorer-timeout", "0"], &["--scorer-timeout 0: expected a finite number > 0"]);
    c.fails(&["--scorer", "python3 x.py", "--scorer-workers", "0"], &["--scorer-workers 0: expected a whole number >= 1"]);
}

#[test]
fn scorer_that_crashes_at_row_5_fails_naming_the_row() {
    if !python() {
        return;
    }
    let c = Case::new(&rows(12, "t"));
    let prog = c.program(
        "crash.py",
        r#"
import json, sys
for line in sys.stdin:
    if json.loads(line)["response_text"] == "r5":
        print("scorer: cannot score this one", file=sys.stderr)
        sys.exit(3)
    print(json.dumps({"score": 1}), flush=True)
"#,
    );
    c.fails(
        &["--scorer", &format!("python3 {prog}")],
        &["row 5 (prompt_id p1, sample_idx 1)", "exited with status 3 before answering", "answered 5 of the 12", "cannot score this one"],
    );
    // With three workers the crash is still at row 5 (the second worker's second row).
    c.fails(&["--scorer", &format!("python3 {prog}"), "--scorer-workers", "3"], &["row 5 "]);
    // A command that does not exist.
    c.fails(&["--scorer", "no-such-scorer-program --x"], &["row 0", "exited with status 127", "not found"]);
}

#[test]
fn scorer_that_hangs_times_out_scores_0_and_the_rest_is_scored() {
    if !python() {
        return;
    }
    let mut rs = rows(8, "t");
    rs[3].response_text = "HANG".into();
    let c = Case::new(&rs);
    let prog = c.program(
        "hang.py",
        r#"
import json, sys, time
for line in sys.stdin:
    if json.loads(line)["response_text"] == "HANG":
        time.sleep(3600)
    print(json.dumps({"score": 1, "reason": "fine"}))
"#,
    );
    // No flush in the program: PYTHONUNBUFFERED, set by clipo-verify, makes each line arrive.
    let t = std::time::Instant::now();
    ok(c.verify(&["--scorer", &format!("python3 {prog}"), "--scorer-timeout", "1"]));
    let secs = t.elapsed().as_secs_f64();
    let r = c.rewards();
    assert_eq!(r.f32(&rw::SCORE).values().to_vec(), vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    let reasons = column(&r, &rw::REASON);
    assert_eq!(reasons[3], Some("timeout"));
    assert!(reasons.iter().enumerate().all(|(i, x)| i == 3 || *x == Some("fine")));
    assert_eq!(column(&r, &rw::EXTRA)[3], Some(r#"{"timeout_s":1.0}"#));
    assert!(secs < 30.0, "took {secs:.1} s");

    // A program that never answers is an error after three timeouts in a row, not hours of zeros.
    std::fs::remove_file(c.path("r.parquet")).unwrap();
    let mute = c.program("mute.py", "import sys, time\nfor line in sys.stdin:\n    time.sleep(3600)\n");
    c.fails(&["--scorer", &format!("python3 {mute}"), "--scorer-timeout", "0.5"], &["row 2", "rows 0, 1, 2", "does not answer"]);
}

#[test]
fn scorer_that_prints_garbage_fails_naming_the_row() {
    if !python() {
        return;
    }
    let c = Case::new(&rows(6, "t"));
    let prog = c.program(
        "garbage.py",
        r#"
import json, sys
for i, line in enumerate(sys.stdin):
    print("debug: scoring" if i == 2 else json.dumps({"score": 1}), flush=True)
"#,
    );
    c.fails(&["--scorer", &format!("python3 {prog}")], &["row 2 (prompt_id p0, sample_idx 2)", "`debug: scoring` is not JSON", "stderr"]);
    // A JSON answer without a score.
    let prog = c.program("noscore.py", "import sys\nfor line in sys.stdin:\n    print('{\"correct\": true}', flush=True)\n");
    c.fails(&["--scorer", &format!("python3 {prog}")], &["row 0", "has no `score`"]);
}

#[test]
fn scorer_that_answers_fewer_lines_than_asked_fails_naming_the_first_unanswered_row() {
    if !python() {
        return;
    }
    let c = Case::new(&rows(7, "t"));
    // Reads everything first, then answers all but the last.
    let prog = c.program(
        "fewer.py",
        r#"
import json, sys
lines = sys.stdin.readlines()
for line in lines[:-1]:
    print(json.dumps({"score": 1}))
"#,
    );
    c.fails(&["--scorer", &format!("python3 {prog}")], &["row 6 (prompt_id p1, sample_idx 2)", "exited with status 0 before answering", "answered 6 of the 7"]);
    // More lines than requests.
    let prog = c.program("more.py", "import sys\nfor line in sys.stdin:\n    print('{\"score\": 1}')\nprint('{\"score\": 1}')\n");
    c.fails(&["--scorer", &format!("python3 {prog}")], &["row 6", "more lines than it was sent"]);
    // Answers echoing their key in reverse order: out of order.
    let prog = c.program(
        "reversed.py",
        r#"
import json, sys
reqs = [json.loads(l) for l in sys.stdin]
for r in reversed(reqs):
    print(json.dumps({"score": 1, "prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"]}))
"#,
    );
    c.fails(&["--scorer", &format!("python3 {prog}")], &["row 0", "out of order", "prompt_id \"p1\", sample_idx 2"]);
}
