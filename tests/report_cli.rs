//! clipo-report run as a user runs it, on a synthetic run directory: the HTML report, the
//! terminal table, the rollout audit, and errors with exit 2.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array};
use clipo::schema::{advantages as adv, embeddings as emb, rewards as rw, trajectories as tr};
use clipo::table::{Provenance, TableWriter};
use clipo::trajectories::{trajectories_batch, vectors, FinishReason, Trajectory};
use common::{run, s, stderr};

/// One response of the synthetic step: (prompt, sample, data source, correct, contrastive
/// reward, response text).
struct Resp {
    pid: &'static str,
    idx: u32,
    ds: &'static str,
    correct: bool,
    cr: f32,
    text: &'static str,
}

const fn resp(pid: &'static str, idx: u32, correct: bool, cr: f32, text: &'static str) -> Resp {
    Resp { pid, idx, ds: if pid.as_bytes()[1] == b'3' { "arith/perturbed" } else { "arith/train" }, correct, cr, text }
}

/// Step 2's responses. p1 #2 is the planted case: correct, with a contrastive reward far below
/// its group's other correct responses. p3 #0 and p0 #3 are low but not flagged (the lower of
/// two close ones; an incorrect one).
const STEP2: &[Resp] = &[
    resp("p0", 0, true, 0.30, "3 + 4 = 7, so \\boxed{7}"),
    resp("p0", 1, true, 0.32, "Add them: 7. \\boxed{7}"),
    resp("p0", 2, true, 0.31, "seven \\boxed{7}"),
    resp("p0", 3, false, 0.0, "\\boxed{8}"),
    resp("p1", 0, true, 0.30, "Tom has 2 apples and buys 5 more: 2 + 5 = 7. \\boxed{7}"),
    resp("p1", 1, true, 0.31, "2 + 5 = 7 \\boxed{7}"),
    resp("p1", 2, true, 0.05, "PLANTED the question says 7 somewhere so \\boxed{7}"),
    resp("p1", 3, true, 0.32, "7 apples \\boxed{7}"),
    resp("p2", 0, true, 0.10, "\\boxed{3}"),
    resp("p2", 1, false, 0.0, "\\boxed{4}"),
    resp("p3", 0, true, 0.38, "9 - 4 = 5 \\boxed{5}"),
    resp("p3", 1, true, 0.40, "5 \\boxed{5}"),
];

fn prov(table: &'static str) -> Provenance {
    Provenance { table, stage: "test", config: serde_json::json!({}), inputs: vec![] }
}

fn write(path: &Path, batch: RecordBatch, table: &'static str) {
    let mut w = TableWriter::create(path, batch.schema(), &prov(table)).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

fn strings(v: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(v.into_iter().map(Some).collect::<StringArray>())
}

fn f32s(v: impl IntoIterator<Item = f32>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Float32Array>())
}

fn write_rewards(path: &Path, rows: &[Resp]) {
    let cols: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|r| r.pid.to_string())),
        Arc::new(rows.iter().map(|r| r.idx).collect::<UInt32Array>()),
        strings(rows.iter().map(|r| r.ds.to_string())),
        Arc::new(rows.iter().map(|r| r.text.rsplit_once("boxed{").map(|(_, a)| a.trim_end_matches('}').to_string())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.correct)).collect::<BooleanArray>()),
        f32s(rows.iter().map(|r| if r.correct { 1.0 } else { 0.0 })),
        strings(rows.iter().map(|r| if r.correct { "normalized_match" } else { "mismatch" }.to_string())),
    ];
    // The columns of a rewards table written before scorer programs (no `extra`): still read.
    let names = ["prompt_id", "sample_idx", "data_source", "extracted", "correct", "score", "reason"];
    let batch = RecordBatch::try_from_iter(names.into_iter().zip(cols)).unwrap();
    write(path, batch, rw::TABLE);
}

fn write_step(step_dir: &Path, rows: &[Resp], contrastive: bool) {
    let traj: Vec<Trajectory> = rows
        .iter()
        .map(|r| Trajectory {
            prompt_id: r.pid.into(),
            sample_idx: r.idx,
            data_source: r.ds.into(),
            ground_truth: "7".into(),
            prompt_text: "q".into(),
            response_text: r.text.into(),
            prompt_token_ids: vec![1, 2],
            response_token_ids: vec![3, 4, 5],
            response_logprobs: vec![-0.5, -0.1, -0.2],
            behavior_logprobs: vec![-0.5, -0.1, -0.2],
            finish_reason: FinishReason::Eos,
            seed: 7,
            policy: "test".into(),
            hidden: None,
        })
        .collect();
    write(&step_dir.join("trajectories.parquet"), trajectories_batch(&traj, 0).unwrap(), tr::TABLE);
    write_rewards(&step_dir.join("rewards.parquet"), rows);
    if contrastive {
        let zs: Vec<Option<&[f32]>> = rows.iter().map(|_| Some(&[0.6f32, 0.8][..])).collect();
        let cols: Vec<ArrayRef> = vec![
            strings(rows.iter().map(|r| r.pid.to_string())),
            Arc::new(rows.iter().map(|r| r.idx).collect::<UInt32Array>()),
            Arc::new(vectors(&zs, 2).unwrap()),
            f32s(rows.iter().map(|r| 1.0 - r.cr)),
            f32s(rows.iter().map(|r| r.cr)),
            Arc::new(rows.iter().map(|r| Some(r.correct)).collect::<BooleanArray>()),
            Arc::new(rows.iter().map(|_| None::<u32>).collect::<UInt32Array>()),
        ];
        write(&step_dir.join("embeddings.parquet"), RecordBatch::try_new(emb::schema(2), cols).unwrap(), emb::TABLE);
    }
    let score = |r: &Resp| if r.correct { 1.0f32 } else { 0.0 };
    let cr = |r: &Resp| if contrastive { r.cr } else { 0.0 };
    let cols: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|r| r.pid.to_string())),
        Arc::new(rows.iter().map(|r| r.idx).collect::<UInt32Array>()),
        f32s(rows.iter().map(score)),
        f32s(rows.iter().map(cr)),
        f32s(rows.iter().map(|r| score(r) + cr(r))),
        f32s(rows.iter().map(|r| score(r) - 0.5 + (r.idx as f32) * 0.125)),
        Arc::new(rows.iter().map(|_| 3u32).collect::<UInt32Array>()),
        f32s(rows.iter().map(|_| 1.0)),
        f32s(rows.iter().map(|_| 0.0)),
        f32s(rows.iter().map(|_| 0.0)),
    ];
    write(&step_dir.join("policy").join("advantages.parquet"), RecordBatch::try_new(adv::schema(), cols).unwrap(), adv::TABLE);
}

/// Six steps of verl-named metrics (evaluation on steps 1, 3, 5 only), plus a key nobody
/// knows and values that are not numbers.
fn metrics_jsonl(contrastive: bool) -> String {
    let mut out = String::new();
    for step in 1..=6u32 {
        let s = f64::from(step);
        let mut m = serde_json::json!({
            "step": step,
            "critic/score/mean": 0.3 + 0.05 * s,
            "critic/rewards/mean": 0.5 + 0.05 * s,
            "critic/advantages/mean": 0.0, "critic/advantages/max": 1.2, "critic/advantages/min": -1.1,
            "actor/pg_loss": -0.01 * s, "actor/pg_clipfrac": 0.01 * s, "actor/pg_clipfrac_lower": 0.001 * s,
            "actor/ppo_kl": 0.0004 * s, "actor/kl_loss": 0.0, "actor/entropy": 1.5 - 0.1 * s,
            "actor/grad_norm": 0.8, "actor/lr": 1e-4, "actor/updated": true,
            "response_length/mean": 40.0 + s, "response_length/max": 64.0, "response_length/min": 12.0,
            "response_length/clip_ratio": 0.02,
            "timing_s/rollout": 0.4, "timing_s/verify": 0.01, "timing_s/update": 0.5, "timing_s/step": 1.0 + 0.01 * s,
            "rollout/tokens_per_s": 2500.0,
            "my/odd_metric": s * s,
            "note": "not a number",
        });
        let obj = m.as_object_mut().unwrap();
        if contrastive {
            obj.insert("critic/contrastive_reward/mean".into(), (0.2).into());
            obj.insert("timing_s/embed".into(), (0.05).into());
            obj.insert("con_lm_head/loss".into(), (2.0 - 0.1 * s).into());
            obj.insert("con_lm_head/individual_loss_correct/mean".into(), (1.8 - 0.1 * s).into());
            for space in ["embed", "hidden"] {
                for (pair, v) in [("pos", 0.8), ("neg", 0.5), ("pos_neg", 0.3)] {
                    obj.insert(format!("con_lm_head/{space}/{pair}_pair_sim/mean"), (v + 0.01 * s).into());
                    obj.insert(format!("con_lm_head/{space}/{pair}_pair_sim/count"), (12.0).into());
                }
            }
        }
        if step % 2 == 1 {
            obj.insert("eval/test/accuracy".into(), (0.3 + 0.04 * s).into());
            obj.insert("eval/test_p1/accuracy".into(), (0.2 + 0.03 * s).into());
        }
        out += &m.to_string();
        out.push('\n');
    }
    out
}

/// A run directory: metrics for six steps, a summary, step 1 with rewards only (two data
/// sources), step 2 with every table.
fn make_run(dir: &Path, contrastive: bool) {
    std::fs::write(dir.join("metrics.jsonl"), metrics_jsonl(contrastive)).unwrap();
    std::fs::write(
        dir.join("summary.json"),
        r#"{"algo": "grpo+clipo", "steps": 6, "seconds": 6.2, "heldout_accuracy_start": 0.34, "heldout_accuracy_end": 0.54}"#,
    )
    .unwrap();
    let step1 = dir.join("step-000001");
    std::fs::create_dir_all(&step1).unwrap();
    write_rewards(&step1.join("rewards.parquet"), STEP2);
    write_step(&dir.join("step-000002"), STEP2, contrastive);
}

#[test]
fn report_has_every_chart_no_urls_and_the_terminal_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    std::fs::create_dir(&dir).unwrap();
    make_run(&dir, true);
    let o = run("clipo-report", &[s(&dir)]);
    assert!(o.status.success(), "{}", stderr(&o));

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(!dir.join("report.html.tmp").exists());
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(!html.contains("http"), "the report must not reference anything outside the file");
    assert!(!html.contains("<script") && !html.contains("<link"));
    let overview = [
        "Accuracy per data set",
        "Reward (training batch mean)",
        "KL",
        "Entropy",
        "Response length (tokens)",
        "Contrastive loss",
        "Pair similarity, head embeddings",
        "Pair similarity, hidden states",
        "Clip fraction",
        "Timings (seconds per step)",
    ];
    // Every other key, one chart per family: advantages (mean/max/min on one chart), three
    // actor scalars, the pair counts of each space, the clip ratio, tokens/s, the unknown key.
    let sections = [
        "critic/advantages",
        "actor/grad_norm",
        "actor/lr",
        "actor/pg_loss",
        "con_lm_head/embed/*/count",
        "con_lm_head/hidden/*/count",
        "response_length/clip_ratio",
        "rollout/tokens_per_s",
        "my/odd_metric",
    ];
    for title in overview.iter().chain(&sections) {
        assert!(html.contains(&format!("<h3>{title}</h3>")), "no chart titled {title}");
    }
    assert_eq!(html.matches("<svg").count(), overview.len() + sections.len());
    assert_eq!(html.matches("<h3>").count(), overview.len() + sections.len());
    // Series: both eval splits (sparse), training accuracy per data source, the pair types.
    for label in ["eval test", "eval test_p1", "train arith/train", "train arith/perturbed", "pos_neg (one of each)", ">embed<", ">rollout<"] {
        assert!(html.contains(label), "no series {label}");
    }
    assert!(!html.contains("Not recorded in this run"));
    assert!(html.contains("grpo+clipo") && html.contains("heldout_accuracy_end"));
    // Deterministic: a second run writes the same bytes.
    let o2 = run("clipo-report", &[s(&dir)]);
    assert!(o2.status.success());
    assert_eq!(html, std::fs::read_to_string(dir.join("report.html")).unwrap());

    let table = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["step", "reward", "train_acc", "eval:test", "eval:test_p1", "ppo_kl", "con_loss", "resp_len", "seconds"]);
    for (step, line) in lines.iter().enumerate().skip(1).take(6) {
        let row: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(row[0], step.to_string(), "{table}");
        assert_eq!(row.len(), header.len(), "{table}");
    }
    // Step 1 and 2: train accuracy from rewards.parquet (10 of 12 correct); step 3: the mean
    // score; eval only on odd steps.
    assert_eq!(lines[1].split_whitespace().nth(2), Some("0.833"));
    assert_eq!(lines[3].split_whitespace().nth(2), Some("0.450"));
    assert_eq!(lines[2].split_whitespace().nth(3), Some("-"));
    assert_eq!(lines[3].split_whitespace().nth(3), Some("0.420"));
    assert!(table.contains("heldout_accuracy_end: 0.5400"), "{table}");
}

#[test]
fn plain_grpo_run_skips_the_contrastive_charts_and_flags_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path(), false);
    let out = tmp.path().join("elsewhere.html");
    let o = run("clipo-report", &[s(tmp.path()), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!tmp.path().join("report.html").exists());
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("Not recorded in this run: Contrastive loss, Pair similarity, head embeddings, Pair similarity, hidden states."));
    assert!(!html.contains("<h3>Contrastive loss</h3>"));
    assert!(!String::from_utf8(o.stdout).unwrap().contains("con_loss"));

    let o = run("clipo-report", &[s(tmp.path()), "--step", "2", "--samples"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = String::from_utf8(o.stdout).unwrap();
    // The advantages table's contrastive_reward column (all 0 here) stands in.
    assert!(audit.contains("contrastive reward: policy/advantages.parquet"), "{audit}");
    assert!(audit.contains("flagged in this step: 0 of 10 correct responses"), "{audit}");
    assert!(!audit.contains("LOW\n") && !audit.contains(" LOW "), "{audit}");
}

/// `--line` prints one step's line (any step, no --collect needed) and writes nothing; `--step`
/// alone is refused, saying what it goes with.
#[test]
fn line_prints_the_chosen_step_and_step_needs_samples_or_line() {
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path(), true);
    let before = std::fs::read_dir(tmp.path()).unwrap().count();
    let o = run("clipo-report", &[s(tmp.path()), "--line", "--step", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(line.starts_with("step    2  reward ") && line.ends_with('\n') && line.lines().count() == 1, "{line:?}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), before, "--line writes nothing");
    let o = run("clipo-report", &[s(tmp.path()), "--step", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--step needs --samples (audit the step's responses) or --line (print its line)"), "{}", stderr(&o));
}

#[test]
fn audit_flags_the_planted_low_contrastive_correct_response_only() {
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path(), true);
    let o = run("clipo-report", &[s(tmp.path()), "--step", "2", "--samples"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = String::from_utf8(o.stdout).unwrap();
    assert!(audit.contains("4 groups, 12 responses, 10 correct"), "{audit}");
    assert!(audit.contains("flagged in this step: 1 of 10 correct responses: p1 #2\n"), "{audit}");
    // Default choice: the groups with at least two correct responses (p0, p1, p3), not p2.
    assert!(audit.contains("\nprompt p0 (arith/train): 3 of 4 correct"), "{audit}");
    assert!(audit.contains("\nprompt p1 (arith/train): 4 of 4 correct"), "{audit}");
    assert!(audit.contains("\nprompt p3 (arith/perturbed): 2 of 2 correct"), "{audit}");
    assert!(!audit.contains("prompt p2"), "{audit}");
    // Every response of the chosen groups is listed; only the planted one carries the flag.
    let rows: Vec<&str> = audit.lines().filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("idx")).collect();
    assert_eq!(rows.len(), 10, "{audit}");
    let flagged: Vec<&&str> = rows.iter().filter(|l| l.contains(" LOW ")).collect();
    assert_eq!(flagged.len(), 1, "{audit}");
    assert!(flagged[0].contains("PLANTED") && flagged[0].contains("0.050") && flagged[0].trim_start().starts_with("2 "), "{audit}");
    // Score, contrastive reward, advantage and extracted answer of an ordinary row.
    let p0_0 = rows[0].split_whitespace().collect::<Vec<_>>();
    assert_eq!(&p0_0[..5], ["0", "1.00", "0.300", "0.500", "7"], "{audit}");

    // Named prompts, in the order given; --limit caps the default choice.
    let o = run("clipo-report", &[s(tmp.path()), "--step", "2", "--samples", "--prompt", "p2", "--prompt", "p0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = String::from_utf8(o.stdout).unwrap();
    let p2 = audit.find("\nprompt p2").expect("p2 listed");
    let p0 = audit.find("\nprompt p0").expect("p0 listed");
    assert!(p2 < p0 && !audit.contains("\nprompt p1"), "{audit}");
    let o = run("clipo-report", &[s(tmp.path()), "--step", "2", "--samples", "--limit", "1"]);
    let audit = String::from_utf8(o.stdout).unwrap();
    assert_eq!(audit.matches("\nprompt ").count(), 1, "{audit}");

    // Unknown prompt, missing step: exit 2 with the reason.
    let o = run("clipo-report", &[s(tmp.path()), "--step", "2", "--samples", "--prompt", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("prompt `nope` has no responses at step 2"), "{}", stderr(&o));
    let o = run("clipo-report", &[s(tmp.path()), "--step", "9", "--samples"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("step-000009: no such step directory (steps present: 1, 2)"), "{}", stderr(&o));
}

#[test]
fn corrupt_or_missing_metrics_fail_with_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path(), true);
    let path = tmp.path().join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let corrupt = format!("{}\n{}\n{}\n", lines[0], lines[1], &lines[2][..lines[2].len() / 2]);
    std::fs::write(&path, corrupt).unwrap();
    let o = run("clipo-report", &[s(tmp.path())]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}: line 3: not valid JSON", path.display())), "{err}");
    assert!(!tmp.path().join("report.html").exists());

    text = format!("{}\n{{\"critic/score/mean\": 0.5}}\n", lines[0]);
    std::fs::write(&path, text).unwrap();
    let o = run("clipo-report", &[s(tmp.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("metrics.jsonl: line 2: no \"step\" key"), "{}", stderr(&o));

    std::fs::remove_file(&path).unwrap();
    let o = run("clipo-report", &[s(tmp.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{}: No such file", path.display())), "{}", stderr(&o));

    let o = run("clipo-report", &[s(&tmp.path().join("absent"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such run directory"), "{}", stderr(&o));
}
