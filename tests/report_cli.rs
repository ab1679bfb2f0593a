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
            "critic/advantages/mean": 0.0, "critic/advantages/max": 1.2 + 0.1 * s, "critic/advantages/min": -1.1 - 0.1 * s,
            "actor/pg_loss": -0.01 * s, "actor/pg_clipfrac": 0.01 * s, "actor/pg_clipfrac_lower": 0.001 * s,
            "actor/ppo_kl": 0.0004 * s, "actor/kl_loss": 0.0, "actor/entropy": 1.5 - 0.1 * s,
            "actor/grad_norm": 0.8 + 0.01 * s, "actor/updated": true,
            "response_length/mean": 40.0 + s, "response_length/max": 64.0 - s, "response_length/min": 12.0 + s,
            "response_length/clip_ratio": 0.02 * s,
            "timing_s/rollout": 0.4 + 0.01 * s, "timing_s/verify": 0.01 * s, "timing_s/update": 0.5 + 0.02 * s, "timing_s/step": 1.0 + 0.01 * s,
            "rollout/tokens_per_s": 2500.0 + s,
            "my/odd_metric": s * s,
            // No information: a constant learning rate, a KL coefficient, a value of 1e-11.
            "actor/lr": 1e-4, "actor/kl_coef": 0.001, "my/near_zero": 1e-11 * s,
            "note": "not a number",
        });
        let obj = m.as_object_mut().unwrap();
        if contrastive {
            obj.insert("critic/contrastive_reward/mean".into(), (0.2).into());
            obj.insert("timing_s/embed".into(), (0.05 * s).into());
            obj.insert("con_lm_head/loss".into(), (2.0 - 0.1 * s).into());
            obj.insert("con_lm_head/individual_loss_correct/mean".into(), (1.8 - 0.1 * s).into());
            for space in ["embed", "hidden"] {
                for (pair, v) in [("pos", 0.8), ("neg", 0.5), ("pos_neg", 0.3)] {
                    obj.insert(format!("con_lm_head/{space}/{pair}_pair_sim/mean"), (v + 0.01 * s).into());
                    obj.insert(format!("con_lm_head/{space}/{pair}_pair_sim/count"), (12.0 + s).into());
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
    // Step 0: the evaluation of the initial policy, with no metrics line (as --collect writes).
    let eval0 = dir.join("step-000000/eval");
    std::fs::create_dir_all(&eval0).unwrap();
    std::fs::write(eval0.join("test.json"), r#"{"overall": {"accuracy": 0.25}}"#).unwrap();
    std::fs::write(eval0.join("test_p1.json"), r#"{"overall": {"accuracy": 0.125}}"#).unwrap();
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
    // Every other key, one chart per family: advantages (mean/max/min on one chart), two
    // actor scalars, the pair counts of each space, the clip ratio, tokens/s, the unknown key.
    let sections = [
        "critic/advantages",
        "actor/grad_norm",
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
    // Flat series are folded into one line with their values, not drawn: a chart of one flat
    // series by its title, a flat series of a chart that keeps others by its label.
    let flat = html.split("id=\"flat\">").nth(1).and_then(|r| r.split("</p>").next()).expect("a flat line");
    for item in ["KL (kl_loss (to reference) 0)", "critic/advantages (mean 0)", "actor/lr 0.0001", "actor/kl_coef 0.001", "my/near_zero ≈ 0"] {
        assert!(flat.contains(item), "`{item}` not in the flat line: {flat}");
    }
    for gone in ["<h3>actor/lr</h3>", "<h3>actor/kl_coef</h3>", "<h3>my/near_zero</h3>", ">kl_loss (to reference)<"] {
        assert!(!html.contains(gone), "{gone} is drawn");
    }
    // Step 0 starts the evaluation curves (the first point of `eval test` is at x = step 0)
    // and the summary's table; the summary reads as text with units, not JSON.
    let summary = html.split("<h2 id=\"summary\">").nth(1).and_then(|r| r.split("<h2").next()).unwrap();
    assert!(summary.contains("<th>step 0</th><th>step 1</th><th>step 3</th><th>step 5</th><th>change</th>"), "{summary}");
    assert!(summary.contains("<tr><td>test</td><td>25.00%</td><td>34.00%</td><td>42.00%</td><td>50.00%</td><td>+25.00 points</td></tr>"), "{summary}");
    assert!(summary.contains("<td>wall time</td><td>6.2 s</td>") && summary.contains("<td>algorithm</td><td>grpo+clipo</td>"), "{summary}");
    assert!(!summary.contains("heldout_accuracy_end") && !summary.contains("[["), "{summary}");
    assert!(html.contains("6 RL steps (1-6) after the evaluation of the initial policy (step 0)"));
    // Long series are smoothed and say so; these six steps are not.
    assert!(!html.contains("moving average"));
    // The per-step table is folded.
    assert!(html.contains("<details id=\"table\"><summary>Per-step table (7 rows)</summary>"));
    // Deterministic: a second run writes the same bytes.
    let o2 = run("clipo-report", &[s(&dir)]);
    assert!(o2.status.success());
    assert_eq!(html, std::fs::read_to_string(dir.join("report.html")).unwrap());

    let table = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["step", "reward", "train_acc", "eval:test", "eval:test_p1", "ppo_kl", "con_loss", "resp_len", "seconds"]);
    // Step 0 (evaluation only), then the RL steps.
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", "-", "-", "0.250", "0.125", "-", "-", "-", "-"], "{table}");
    for (step, line) in lines.iter().enumerate().skip(2).take(6) {
        let row: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(row[0], (step - 1).to_string(), "{table}");
        assert_eq!(row.len(), header.len(), "{table}");
    }
    // Step 1 and 2: train accuracy from rewards.parquet (10 of 12 correct); step 3: the mean
    // score; eval only on odd steps.
    assert_eq!(lines[2].split_whitespace().nth(2), Some("0.833"));
    assert_eq!(lines[4].split_whitespace().nth(2), Some("0.450"));
    assert_eq!(lines[3].split_whitespace().nth(3), Some("-"));
    assert_eq!(lines[4].split_whitespace().nth(3), Some("0.420"));
    // The summary's evaluations, from step 0, in percent with the change in points.
    assert!(table.contains("  wall time  "), "{table}");
    let test_row = table.lines().find(|l| l.trim_start().starts_with("test ")).expect("a test row");
    assert_eq!(test_row.split_whitespace().collect::<Vec<_>>(), ["test", "25.00%", "34.00%", "42.00%", "50.00%", "+25.00", "points"], "{table}");
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
    assert!(stderr(&o).contains(&format!("--step 9: {} has no step-000009 (steps present: 0-2)", tmp.path().display())), "{}", stderr(&o));
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
    // No metrics.jsonl beside step directories: the message names the next command, once.
    let want = format!("no metrics.jsonl yet (steps present: 0-2): run `clipo-report {} --collect`", tmp.path().display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches(&tmp.path().display().to_string()).count(), 2, "{}", stderr(&o));

    let o = run("clipo-report", &[s(&tmp.path().join("absent"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such run directory"), "{}", stderr(&o));
}

/// A run long enough to be noisy: per-step series are drawn pale with a moving average on top,
/// said in the caption; timings are not averaged (their spikes are the steps that evaluate).
#[test]
fn long_noisy_series_are_smoothed_and_timings_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for step in 1..=40u32 {
        let noise = if step % 2 == 0 { 0.1 } else { -0.1 };
        let line = serde_json::json!({
            "step": step,
            "critic/rewards/mean": 0.3 + 0.005 * f64::from(step) + noise,
            "timing_s/step": if step % 10 == 0 { 9.0 } else { 1.0 + noise },
        });
        text += &(line.to_string() + "\n");
    }
    std::fs::write(tmp.path().join("metrics.jsonl"), text).unwrap();
    // --out in a directory that does not exist yet: it is made.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = elsewhere.path().join("reports/long.html");
    let o = run("clipo-report", &[s(tmp.path()), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    let figure = |title: &str| html.split(&format!("<h3>{title}</h3>")).nth(1).and_then(|r| r.split("</figure>").next()).unwrap().to_string();
    // 40 steps: a window of 5 (40 / 20 = 2, at least 5).
    let reward = figure("Reward (training batch mean)");
    assert!(reward.contains("<title>total reward, moving average of 5 steps</title>"), "{reward}");
    assert!(reward.contains("Pale: each step; bold: the centred moving average of 5 steps."), "{reward}");
    assert_eq!(reward.matches("<polyline").count(), 2);
    let timings = figure("Timings (seconds per step)");
    assert!(!timings.contains("moving average") && timings.matches("<polyline").count() == 1, "{timings}");
}

/// A step of the embedded task, rewarded by clipo-verify itself: two groups whose step checker
/// verdicts and contrastive rewards are set so the leave-one-out flag hits one lucky response,
/// misses one and marks one process-correct response.
const Q1: &str = "Mia has 7 shells. She finds 2 more shells. She gives 4 shells to Leo. How many shells does Mia have now?";
const Q2: &str = "Tom has 3 pens. Ella has 6 eggs. He loses 1 pen. He buys 5 more pens. How many pens does Tom have now?";
/// (prompt, question, ground truth, sample, response, contrastive reward)
const ARITH: &[(&str, &str, &str, u32, &str, f32)] = &[
    ("clipo/arith/train/1", Q1, "5", 0, "Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 5. The answer is \\boxed{5}.", 0.30),
    ("clipo/arith/train/1", Q1, "5", 1, "Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 5. The answer is \\boxed{5}.", 0.31),
    // Lucky (a wrong step) and flagged.
    ("clipo/arith/train/1", Q1, "5", 2, "Mia starts with 7 shells. 7 + 2 = 8. 8 - 4 = 5. The answer is \\boxed{5}.", 0.05),
    ("clipo/arith/train/1", Q1, "5", 3, "Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 6. The answer is \\boxed{6}.", 0.0),
    ("clipo/arith/train/2", Q2, "7", 0, "Tom starts with 3 pens. 3 - 1 = 2. 2 + 5 = 7. The answer is \\boxed{7}.", 0.30),
    // Lucky (the intermediate 2 is skipped) and not flagged.
    ("clipo/arith/train/2", Q2, "7", 1, "Tom starts with 3 pens. 3 - 1 + 5 = 7. The answer is \\boxed{7}.", 0.31),
    // Process-correct and flagged.
    ("clipo/arith/train/2", Q2, "7", 2, "Tom starts with 3 pens. 3 - 1 = 2. 2 + 5 = 7. The answer is \\boxed{7}.", 0.05),
    ("clipo/arith/train/2", Q2, "7", 3, "Tom starts with 3 pens. 3 - 1 = 2. 5 + 2 = 7. The answer is \\boxed{7}.", 0.32),
];

#[test]
fn step_checker_counts_lucky_answers_and_measures_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let step = run_dir.join("step-000001");
    std::fs::create_dir_all(&step).unwrap();
    let traj: Vec<Trajectory> = ARITH
        .iter()
        .map(|&(pid, q, gt, idx, text, _)| Trajectory {
            prompt_text: format!("<|im_start|>user\n{q}\n{}<|im_end|>\n<|im_start|>assistant\n", clipo::task::INSTRUCTION),
            ..common::traj(pid, idx, "clipo/arith", gt, text)
        })
        .collect();
    let traj_path = step.join("trajectories.parquet");
    write(&traj_path, trajectories_batch(&traj, 0).unwrap(), tr::TABLE);

    // clipo-verify sorts every response and counts them in its summary.
    let rewards_path = step.join("rewards.parquet");
    let o = common::ok(run("clipo-verify", &["--input", s(&traj_path), "--output", s(&rewards_path), "--summary"]));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["data_sources"]["clipo/arith"]["process"],
        serde_json::json!({"checked": 8, "process_correct": 5, "lucky": 2, "wrong": 1, "lucky_fraction": 2.0 / 7.0})
    );
    assert!(stderr(&o).contains("steps   clipo/arith 5 process-correct, 2 lucky (28.6% of the correct answers), 1 wrong"), "{}", stderr(&o));
    std::fs::write(step.join("verify.json"), &o.stdout).unwrap();
    let r = clipo::stages::verify::read_rewards(&rewards_path).unwrap();
    let process: Vec<Option<&str>> = r.utf8(&rw::PROCESS).iter().collect();
    let lucky = Some("lucky");
    let ok = Some("process_correct");
    assert_eq!(process, [ok, ok, lucky, Some("wrong"), ok, lucky, ok, ok]);
    let detail: Vec<Option<&str>> = r.utf8(&rw::PROCESS_DETAIL).iter().collect();
    assert_eq!(detail[2], Some("wrong step 7 + 2 = 8; wrong step 8 - 4 = 5; missing step 7 + 2 = 9; missing step 9 - 4 = 5"));
    assert_eq!(detail[5], Some("missing step 3 - 1 = 2; missing step 2 + 5 = 7"));
    assert_eq!(detail[0], Some(""));

    let zs: Vec<Option<&[f32]>> = ARITH.iter().map(|_| Some(&[0.6f32, 0.8][..])).collect();
    let cols: Vec<ArrayRef> = vec![
        strings(ARITH.iter().map(|r| r.0.to_string())),
        Arc::new(ARITH.iter().map(|r| r.3).collect::<UInt32Array>()),
        Arc::new(vectors(&zs, 2).unwrap()),
        f32s(ARITH.iter().map(|r| 1.0 - r.5)),
        f32s(ARITH.iter().map(|r| r.5)),
        Arc::new(ARITH.iter().map(|r| Some(r.5 > 0.0)).collect::<BooleanArray>()),
        Arc::new(ARITH.iter().map(|_| None::<u32>).collect::<UInt32Array>()),
    ];
    write(&step.join("embeddings.parquet"), RecordBatch::try_new(emb::schema(2), cols).unwrap(), emb::TABLE);
    for (st, acc, lucky) in [(0, 0.5, 0.25), (1, 0.75, 0.125)] {
        let eval = run_dir.join(format!("step-{st:06}/eval"));
        std::fs::create_dir_all(&eval).unwrap();
        let e = serde_json::json!({"overall": {"accuracy": acc, "process": {"lucky_fraction": lucky}}});
        std::fs::write(eval.join("test.json"), e.to_string()).unwrap();
    }

    // The run's record: the lucky fractions of training and of each evaluation.
    common::ok(run("clipo-report", &[s(&run_dir), "--collect"]));
    let metrics: serde_json::Value = serde_json::from_str(std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(metrics["critic/lucky_fraction"], serde_json::json!(2.0 / 7.0));
    assert_eq!(metrics["eval/test/lucky_fraction"], serde_json::json!(0.125));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["heldout_lucky_start"].as_f64(), summary["heldout_lucky_end"].as_f64()), (Some(0.25), Some(0.125)));

    // The report: the lucky row under the accuracies, and the flag against the checker: 2 of the
    // 7 correct responses are lucky, 2 are flagged, 1 of them lucky.
    let o = common::ok(run("clipo-report", &[s(&run_dir)]));
    let table = String::from_utf8(o.stdout).unwrap();
    let lucky_row = table.lines().find(|l| l.trim_start().starts_with("test lucky")).expect("a lucky row");
    assert_eq!(lucky_row.split_whitespace().collect::<Vec<_>>(), ["test", "lucky", "25.00%", "12.50%", "-12.50", "points"], "{table}");
    let flag_line = "flag LOW vs step checker (1 steps)  precision 0.50 (1 of 2 flagged are lucky; 28.6% of the 7 correct responses are), recall 0.50 (1 of 2 lucky flagged)";
    assert!(table.contains(flag_line), "{table}");
    assert!(!table.contains("heldout_lucky"), "{table}");
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("<tr><td>test lucky</td><td>25.00%</td><td>12.50%</td>"), "lucky row in the HTML summary");

    // The audit: a steps column, the detail of lucky responses, the step's counts.
    let o = common::ok(run("clipo-report", &[s(&run_dir), "--step", "1", "--samples"]));
    let audit = String::from_utf8(o.stdout).unwrap();
    assert!(audit.contains("step checker: 2 of 7 checked correct responses are lucky (a wrong or missing step)\n"), "{audit}");
    assert!(audit.contains("flag LOW against the step checker: precision 0.50 (1 of 2 flagged"), "{audit}");
    // The columns: idx, score, c_reward, advantage, extracted, reason, steps, flag.
    let row = |pid: &str, idx: &str| -> String {
        let block = audit.split(&format!("\nprompt {pid} ")).nth(1).unwrap();
        block.lines().find(|l| l.split_whitespace().next() == Some(idx)).unwrap().to_string()
    };
    let cells = |r: &str| r.split_whitespace().skip(6).take(2).map(str::to_string).collect::<Vec<_>>();
    let lucky_flagged = row("clipo/arith/train/1", "2");
    assert_eq!(cells(&lucky_flagged), ["lucky", "LOW"], "{audit}");
    assert!(lucky_flagged.ends_with("[wrong step 7 + 2 = 8; wrong step 8 - 4 = 5; missing step 7 + 2 = 9; missing step 9 - 4 = 5]"), "{lucky_flagged}");
    assert_eq!(cells(&row("clipo/arith/train/1", "3")), ["wrong", "Mia"], "{audit}");
    assert_eq!(cells(&row("clipo/arith/train/2", "2")), ["ok", "LOW"], "{audit}");
    assert_eq!(cells(&row("clipo/arith/train/2", "1")), ["lucky", "Tom"], "{audit}");

    // Plain GRPO: no embeddings, and an advantages table whose contrastive rewards are all 0:
    // the flag cannot fire, so the report has no flag line.
    std::fs::remove_file(step.join("embeddings.parquet")).unwrap();
    let score = |r: &(&str, &str, &str, u32, &str, f32)| if r.5 > 0.0 { 1.0f32 } else { 0.0 };
    let cols: Vec<ArrayRef> = vec![
        strings(ARITH.iter().map(|r| r.0.to_string())),
        Arc::new(ARITH.iter().map(|r| r.3).collect::<UInt32Array>()),
        f32s(ARITH.iter().map(score)),
        f32s(ARITH.iter().map(|_| 0.0)),
        f32s(ARITH.iter().map(score)),
        f32s(ARITH.iter().map(|r| score(r) - 0.5)),
        Arc::new(ARITH.iter().map(|_| 3u32).collect::<UInt32Array>()),
        f32s(ARITH.iter().map(|_| 1.0)),
        f32s(ARITH.iter().map(|_| 0.0)),
        f32s(ARITH.iter().map(|_| 0.0)),
    ];
    write(&step.join("policy").join("advantages.parquet"), RecordBatch::try_new(adv::schema(), cols).unwrap(), adv::TABLE);
    let o = common::ok(run("clipo-report", &[s(&run_dir)]));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(!table.contains("flag LOW") && table.contains("test lucky"), "{table}");
}

/// A comparison directory as scripts/compare.sh leaves it: `<algo>/seed-<n>/` runs with
/// evaluations at steps 0, 5 and 10.
fn make_comparison(dir: &Path) {
    // Held-out accuracy at step 10 per seed 0, 1, 2; every other value is derived from it.
    let end: [(&str, [f64; 3]); 3] = [("grpo", [0.5, 0.625, 0.75]), ("clipo", [0.5625, 0.6875, 0.8125]), ("clipo-fixed", [0.5, 0.625, 1.0])];
    for (algo, acc) in end {
        for (seed, a) in acc.iter().enumerate() {
            let run = dir.join(format!("{algo}/seed-{seed}"));
            for step in [0u64, 5, 10] {
                let eval = run.join(format!("step-{step:06}/eval"));
                std::fs::create_dir_all(&eval).unwrap();
                // Step 0 is the shared warm start; step 5 halfway.
                let acc = if step == 0 { 0.25 } else if step == 5 { (0.25 + a) / 2.0 } else { *a };
                let lucky = 0.5 - acc / 2.0;
                for (set, shift) in [("test", 0.0), ("test_p2", -0.125)] {
                    let e = serde_json::json!({"overall": {"accuracy": acc + shift, "process": {"lucky_fraction": lucky}}});
                    std::fs::write(eval.join(format!("{set}.json")), e.to_string()).unwrap();
                }
            }
            std::fs::write(run.join("summary.json"), r#"{"algo": "x", "steps": 10, "seconds": 60.0}"#).unwrap();
        }
    }
}

#[test]
fn compare_summarises_seeds_with_paired_bootstrap_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("compare");
    make_comparison(&dir);
    let o = common::ok(run("clipo-report", &[s(&dir), "--compare"]));
    let text = String::from_utf8(o.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["algos"], serde_json::json!(["grpo", "clipo", "clipo-fixed"]));
    assert_eq!(summary["seeds"], serde_json::json!([0, 1, 2]));
    let acc = &summary["metrics"]["test/accuracy"];
    assert_eq!(acc["steps"], serde_json::json!([0, 5, 10]));
    assert_eq!(acc["end"]["step"], 10);
    // GRPO at the end: 0.5, 0.625, 0.75: mean 0.625, sample sd 0.125.
    assert_eq!(acc["end"]["algos"]["grpo"]["mean"], 0.625);
    assert_eq!(acc["end"]["algos"]["grpo"]["sd"], 0.125);
    assert_eq!(acc["end"]["algos"]["grpo"]["seeds"], serde_json::json!({"0": 0.5, "1": 0.625, "2": 0.75}));
    // CLIPO is 0.0625 above GRPO on every seed: the interval is the point.
    let d = &acc["end"]["diffs"]["clipo - grpo"];
    assert_eq!((d["n"].as_u64(), d["mean"].as_f64()), (Some(3), Some(0.0625)));
    assert_eq!(d["ci95"], serde_json::json!([0.0625, 0.0625]));
    // CLIPO-fixed: 0, 0, +0.25. A resampled mean is k x 0.25 / 3 with k ~ Binomial(3, 1/3):
    // P(k = 0) = 8/27 > 2.5%, P(k <= 2) = 26/27 < 97.5%: the interval is [0, 0.25].
    let d = &acc["end"]["diffs"]["clipo-fixed - grpo"];
    assert_eq!(d["ci95"], serde_json::json!([0.0, 0.25]));
    assert_eq!(d["seeds"], serde_json::json!({"0": 0.0, "1": 0.0, "2": 0.25}));
    // At step 0 (the shared warm start) nothing differs; every step is there.
    assert_eq!(acc["diffs"]["clipo - grpo"]["0"]["ci95"], serde_json::json!([0.0, 0.0]));
    assert_eq!(acc["algos"]["clipo"]["5"]["n"], 3);
    // The lucky fraction and the other split are summarised the same way.
    let lucky = &summary["metrics"]["test/lucky_fraction"]["end"];
    assert_eq!(lucky["algos"]["grpo"]["mean"], 0.1875);
    assert_eq!(lucky["diffs"]["clipo - grpo"]["ci95"], serde_json::json!([-0.03125, -0.03125]));
    assert_eq!(summary["metrics"]["test_p2/accuracy"]["end"]["algos"]["grpo"]["mean"], 0.5);
    assert_eq!(summary["runs"]["clipo"]["1"], serde_json::json!({"seconds": 60.0, "last_step": 10}));
    assert_eq!(summary["bootstrap"]["resamples"], 10000);

    // The printed table: one row per metric at the end, then every evaluation.
    assert!(text.contains("seeds 0 1 2 (3)"), "{text}");
    let end_rows: Vec<&str> = text.split("at every evaluation:").next().unwrap().lines().filter(|l| l.contains(" 10 ")).collect();
    assert_eq!(end_rows.len(), 4, "{text}");
    let held = end_rows.iter().find(|l| l.starts_with("held-out accuracy")).unwrap();
    assert!(held.contains("62.5 ± 12.5") && held.contains("+8.3 [+0.0, +25.0]"), "{text}");
    for label in ["held-out lucky", "distractors accuracy", "distractors lucky"] {
        assert!(end_rows.iter().any(|l| l.starts_with(label)), "{label}: {text}");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.starts_with("# clipo comparison") && report.contains("### held-out accuracy") && report.contains("| metric | step | grpo | clipo | clipo-fixed | clipo - grpo |"), "{report}");
    // The same bytes on a rerun (a fixed bootstrap seed).
    common::ok(run("clipo-report", &[s(&dir), "--compare"]));
    assert_eq!(report, std::fs::read_to_string(dir.join("report.md")).unwrap());

    // No runs: exit 2 naming the directory.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run("clipo-report", &[s(&empty), "--compare"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{}: no <algo>/seed-<n>/ run directories", empty.display())), "{}", stderr(&o));
}
