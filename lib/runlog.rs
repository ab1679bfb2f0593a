//! A run directory's record, collected: one line of metrics per RL step in
//! `RUN/metrics.jsonl` and the run's `RUN/summary.json`, both made from the files the stages left
//! in the step directories (see `scripts/loop.mk` for the layout), so they can be rebuilt at
//! any time.
//!
//! Per step `step-NNNNNN/`: `rollout.json` (clipo-rollout's summary) gives `rollout/*`;
//! `verify.json` (clipo-verify --summary) gives `critic/accuracy` and, for the embedded task,
//! `critic/lucky_fraction` (the step checker's fraction of correct answers reached by a wrong
//! or missing step, [`crate::stepcheck`]); `embed.json` (clipo-embed's metrics) the
//! `con_lm_head/*` keys; `policy/metrics.json` (clipo-update) `actor/*`, `critic/*`,
//! `response_length/*`, `timing_s/*`; `eval/<set>.json` gives `eval/<set>/accuracy` and
//! `eval/<set>/lucky_fraction`; `wall.json` (written by the demo driver) `timing_s/step_wall`.
//! Where the reference verifier scored (REFERENCE.md §5: the last `\boxed{}` against the ground
//! truth), `critic/boxed_fraction` and `eval/<set>/boxed_fraction` are the share of responses
//! that wrote a `\boxed{}` at all: a model that has not learnt the format scores 0 whatever it
//! knows, so this is the first thing RL teaches a small model.
//!
//! [`step_line`] is the one line per step the drivers print.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // Stages print one JSON line; take the last non-empty one.
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).map(Some).map_err(|e| Error::Other(format!("{}: not JSON ({e})", path.display())))
}

fn numbers_into(out: &mut Map<String, Value>, prefix: &str, v: &Value) {
    if let Some(obj) = v.as_object() {
        for (k, x) in obj {
            if x.is_number() {
                out.insert(format!("{prefix}{k}"), x.clone());
            }
        }
    }
}

/// The step directories of a run, in step order.
pub fn step_dirs(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(run).map_err(|e| Error::io(run, e))? {
        let entry = entry.map_err(|e| Error::io(run, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("step-").and_then(|n| n.parse::<u64>().ok()) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The metrics of one step directory (empty when nothing is there yet).
pub fn step_metrics(step: u64, dir: &Path) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    m.insert("step".into(), Value::from(step));
    if let Some(v) = read_json(&dir.join("rollout.json"))? {
        for (k, key) in [("tokens_per_second", "rollout/tokens_per_s"), ("seconds", "timing_s/rollout"), ("truncated_fraction", "rollout/truncated_fraction")] {
            if let Some(x) = v.get(k).filter(|x| x.is_number()) {
                m.insert(key.into(), x.clone());
            }
        }
    }
    if let Some(v) = read_json(&dir.join("filter.json"))? {
        for (k, key) in [("rounds", "dynamic_sampling/rounds"), ("groups", "dynamic_sampling/groups"), ("informative", "dynamic_sampling/informative_groups"), ("kept", "dynamic_sampling/kept_groups")] {
            if let Some(x) = v.get(k).filter(|x| x.is_number()) {
                m.insert(key.into(), x.clone());
            }
        }
    }
    if let Some(v) = read_json(&dir.join("verify.json"))? {
        if let Some(a) = v.pointer("/overall/accuracy") {
            m.insert("critic/accuracy".into(), a.clone());
        }
        if let Some(f) = v.pointer("/overall/process/lucky_fraction").filter(|f| f.is_number()) {
            m.insert("critic/lucky_fraction".into(), f.clone());
        }
        if let Some(b) = boxed_fraction(&v) {
            m.insert("critic/boxed_fraction".into(), Value::from(b));
        }
    }
    if let Some(v) = read_json(&dir.join("embed.json"))? {
        numbers_into(&mut m, "", &v);
    }
    if let Some(v) = read_json(&dir.join("policy").join(crate::stages::update::METRICS_FILE))? {
        numbers_into(&mut m, "", &v);
    }
    if let Some(v) = read_json(&dir.join("wall.json"))? {
        if let Some(x) = v.get("seconds") {
            m.insert("timing_s/step_wall".into(), x.clone());
        }
    }
    let eval = dir.join("eval");
    if eval.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&eval)
            .map_err(|e| Error::io(&eval, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        for p in names {
            let set = p.file_stem().unwrap_or_default().to_string_lossy().to_string();
            if let Some(v) = read_json(&p)? {
                if let Some(a) = v.pointer("/overall/accuracy") {
                    m.insert(format!("eval/{set}/accuracy"), a.clone());
                }
                if let Some(f) = v.pointer("/overall/process/lucky_fraction").filter(|f| f.is_number()) {
                    m.insert(format!("eval/{set}/lucky_fraction"), f.clone());
                }
                if let Some(b) = boxed_fraction(&v) {
                    m.insert(format!("eval/{set}/boxed_fraction"), Value::from(b));
                }
            }
        }
    }
    Ok(m)
}

/// The share of responses with a `\boxed{}` in a clipo-verify summary, when every reason in it
/// is one of the reference verifier's (a scorer program's reasons say nothing about boxes);
/// `None` otherwise or when there is no response.
pub fn boxed_fraction(summary: &Value) -> Option<f64> {
    let reasons = summary.pointer("/overall/reasons")?.as_object()?;
    let responses = summary.pointer("/overall/responses")?.as_f64().filter(|n| *n > 0.0)?;
    let reference = |k: &str| crate::verify::Reason::ALL.iter().any(|r| r.as_str() == k);
    if reasons.is_empty() || !reasons.keys().all(|k| reference(k)) {
        return None;
    }
    let unboxed = reasons.get(crate::verify::Reason::NoBoxed.as_str()).and_then(Value::as_f64).unwrap_or(0.0);
    Some(1.0 - unboxed / responses)
}

/// One line for a step of a run (`step`, or the last step directory when `None`), from the
/// files its stages left: the mean total reward, the training accuracy and boxed fraction, the
/// mean response length, the rollout's tokens/s, the step's seconds (the driver's wall clock
/// where `wall.json` exists, else rollout + update), a word when the update changed nothing
/// (`no-op update (every advantage 0)`), and each evaluation's accuracy (and boxed fraction).
/// Step 0 is the evaluation of the starting policy alone.
pub fn step_line(run: &Path, step: Option<u64>) -> Result<String> {
    let steps = step_dirs(run)?;
    let found = match step {
        Some(n) => steps.iter().find(|(s, _)| *s == n),
        None => steps.last(),
    };
    let Some((n, dir)) = found else {
        return Ok(match step {
            Some(n) => format!("step {n:>4}  not run yet"),
            None => "no step yet".into(),
        });
    };
    let m = step_metrics(*n, dir)?;
    let num = |k: &str| m.get(k).and_then(Value::as_f64);
    let fmt = |k: &str, p: usize| num(k).map_or("-".to_string(), |v| format!("{v:.p$}"));
    let mut line = format!("step {n:>4}");
    if *n > 0 {
        line += &format!("  reward {}  acc {}", fmt("critic/rewards/mean", 3), fmt("critic/accuracy", 3));
        if m.contains_key("critic/boxed_fraction") {
            line += &format!("  boxed {}", fmt("critic/boxed_fraction", 2));
        }
        line += &format!("  len {}  {} tok/s", fmt("response_length/mean", 1), fmt("rollout/tokens_per_s", 0));
        line += &format!("  {}", step_seconds(&m).map_or("-".to_string(), |s| format!("{s:.1} s")));
        if let Some(why) = noop_update(dir)? {
            line += &format!("  no-op update ({why})");
        }
    }
    for (k, v) in &m {
        if let Some(set) = k.strip_prefix("eval/").and_then(|k| k.strip_suffix("/accuracy")) {
            line += &format!("  eval {set} {:.3}", v.as_f64().unwrap_or(0.0));
            if let Some(b) = num(&format!("eval/{set}/boxed_fraction")) {
                line += &format!(" (boxed {b:.2})");
            }
        }
    }
    Ok(line)
}

/// Rebuild `RUN/metrics.jsonl` and `RUN/summary.json`; returns the summary.
pub fn collect(run: &Path, algo: &str) -> Result<Value> {
    let steps = step_dirs(run)?;
    let mut lines = String::new();
    let mut evals: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let mut lucky: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let mut boxed: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let mut seconds = 0f64;
    let mut last_step = 0;
    for (n, dir) in &steps {
        let m = step_metrics(*n, dir)?;
        for (k, v) in &m {
            if let Some(set) = k.strip_prefix("eval/").and_then(|k| k.strip_suffix("/accuracy")) {
                evals.entry(set.to_string()).or_default().push((*n, v.as_f64().unwrap_or(0.0)));
            }
            if let Some(set) = k.strip_prefix("eval/").and_then(|k| k.strip_suffix("/lucky_fraction")) {
                lucky.entry(set.to_string()).or_default().push((*n, v.as_f64().unwrap_or(0.0)));
            }
            if let Some(set) = k.strip_prefix("eval/").and_then(|k| k.strip_suffix("/boxed_fraction")) {
                boxed.entry(set.to_string()).or_default().push((*n, v.as_f64().unwrap_or(0.0)));
            }
        }
        seconds += m.get("timing_s/step_wall").and_then(Value::as_f64).unwrap_or(0.0);
        if *n > 0 {
            last_step = last_step.max(*n);
            lines += &(Value::Object(m).to_string() + "\n");
        }
    }
    let mut summary = Map::new();
    summary.insert("algo".into(), Value::from(algo));
    summary.insert("steps".into(), Value::from(last_step));
    summary.insert("seconds".into(), Value::from((seconds * 10.0).round() / 10.0));
    for (set, curve) in &evals {
        let key = if set == "test" { "heldout".to_string() } else { set.clone() };
        if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
            summary.insert(format!("{key}_accuracy_start"), Value::from(first.1));
            summary.insert(format!("{key}_accuracy_end"), Value::from(last.1));
        }
        summary.insert(format!("{key}_curve"), Value::from(curve.iter().map(|(s, a)| serde_json::json!([s, a])).collect::<Vec<_>>()));
        if let Some(b) = boxed.get(set) {
            if let (Some(first), Some(last)) = (b.first(), b.last()) {
                summary.insert(format!("{key}_boxed_start"), Value::from(first.1));
                summary.insert(format!("{key}_boxed_end"), Value::from(last.1));
            }
        }
    }
    // The step checker's lucky fraction of each evaluation (embedded task only).
    for (set, curve) in &lucky {
        let key = if set == "test" { "heldout".to_string() } else { set.clone() };
        if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
            summary.insert(format!("{key}_lucky_start"), Value::from(first.1));
            summary.insert(format!("{key}_lucky_end"), Value::from(last.1));
        }
        summary.insert(format!("{key}_lucky_curve"), Value::from(curve.iter().map(|(s, a)| serde_json::json!([s, a])).collect::<Vec<_>>()));
    }
    let summary = Value::Object(summary);
    for (name, text) in [("metrics.jsonl", lines), ("summary.json", serde_json::to_string_pretty(&summary).expect("json") + "\n")] {
        let path = run.join(name);
        let tmp = crate::table::tmp_path(&path);
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(summary)
}

/// The few lines the drivers close a run with (after [`collect`]): the steps and their seconds,
/// each evaluation set's accuracy (and boxed fraction) at its first and last evaluation, and the
/// training reward and accuracy over the first and last fifth of the steps (per-step values are
/// noisy: 16 prompts move a step's accuracy by several points).
pub fn closing_summary(run: &Path) -> Result<String> {
    let steps = step_dirs(run)?;
    let metrics: Vec<(u64, Map<String, Value>)> = steps.iter().map(|(n, d)| Ok((*n, step_metrics(*n, d)?))).collect::<Result<_>>()?;
    let trained: Vec<&(u64, Map<String, Value>)> = metrics.iter().filter(|(n, m)| *n > 0 && m.contains_key("critic/rewards/mean")).collect();
    let seconds: f64 = metrics.iter().filter(|(n, _)| *n > 0).filter_map(|(_, m)| step_seconds(m)).sum();
    let mut out = format!("{} steps in {:.0} s\n", trained.len(), seconds);
    let mut sets: BTreeMap<String, Vec<(u64, f64, Option<f64>)>> = BTreeMap::new();
    for (n, m) in &metrics {
        for (k, v) in m {
            if let Some(set) = k.strip_prefix("eval/").and_then(|k| k.strip_suffix("/accuracy")) {
                let boxed = m.get(&format!("eval/{set}/boxed_fraction")).and_then(Value::as_f64);
                sets.entry(set.to_string()).or_default().push((*n, v.as_f64().unwrap_or(0.0), boxed));
            }
        }
    }
    for (set, curve) in &sets {
        let (first, last) = (curve[0], curve[curve.len() - 1]);
        out += &format!("eval {set}: accuracy {:.3} -> {:.3} (step {} -> {})", first.1, last.1, first.0, last.0);
        if let (Some(a), Some(b)) = (first.2, last.2) {
            out += &format!(", boxed {a:.2} -> {b:.2}");
        }
        out += "\n";
    }
    if !trained.is_empty() {
        let fifth = trained.len().div_ceil(5);
        let (head, tail) = (&trained[..fifth], &trained[trained.len() - fifth..]);
        let mean = |part: &[&(u64, Map<String, Value>)], key: &str| -> String {
            let v: Vec<f64> = part.iter().filter_map(|(_, m)| m.get(key).and_then(Value::as_f64)).collect();
            if v.is_empty() { "-".into() } else { format!("{:.3}", v.iter().sum::<f64>() / v.len() as f64) }
        };
        let span = |part: &[&(u64, Map<String, Value>)]| format!("steps {}-{}", part[0].0, part[part.len() - 1].0);
        out += &format!(
            "training reward {} ({}) -> {} ({}), accuracy {} -> {}",
            mean(head, "critic/rewards/mean"),
            span(head),
            mean(tail, "critic/rewards/mean"),
            span(tail),
            mean(head, "critic/accuracy"),
            mean(tail, "critic/accuracy")
        );
        let noop = steps.iter().filter(|(n, d)| *n > 0 && matches!(noop_update(d), Ok(Some(_)))).count();
        if noop > 0 {
            out += &format!("; {noop} of {} updates were no-ops", trained.len());
        }
        out += "\n";
    }
    Ok(out)
}

/// A step's seconds: the driver's wall clock (`wall.json`) where there is one, else the
/// rollout's and the update's (verify and embed take a fraction of a second).
fn step_seconds(m: &Map<String, Value>) -> Option<f64> {
    let num = |k: &str| m.get(k).and_then(Value::as_f64);
    num("timing_s/step_wall").or_else(|| Some(num("timing_s/rollout")? + num("timing_s/step")?))
}

/// Why a step directory's update left the policy unchanged (`actor/updated` false in its
/// `policy/metrics.json`: clipo-update's `actor/not_updated`), or `None` when it trained or has
/// not run.
fn noop_update(dir: &Path) -> Result<Option<String>> {
    let Some(v) = read_json(&dir.join("policy").join(crate::stages::update::METRICS_FILE))? else { return Ok(None) };
    if v.get("actor/updated") != Some(&Value::Bool(false)) {
        return Ok(None);
    }
    Ok(Some(v.get("actor/not_updated").and_then(Value::as_str).unwrap_or("see the update's note").to_string()))
}

/// One epoch of a run as its steps' rollouts took it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochAudit {
    pub epoch: u64,
    pub steps: Vec<u64>,
    /// Prompts sampled in the epoch (round 0: the steps' own prompts).
    pub prompts: usize,
    pub distinct: usize,
}

/// Per epoch (from each step's rollout.json), the prompts its steps took and how many are
/// distinct: with verl's drop_last epochs every prompt is seen at most once per epoch. Reads
/// each step's round-0 trajectories (`rounds/trajectories-0.parquet` under dynamic sampling).
pub fn epoch_audit(run: &Path) -> Result<Vec<EpochAudit>> {
    use crate::schema::trajectories as tr;
    let mut epochs: std::collections::BTreeMap<u64, (Vec<u64>, Vec<String>)> = Default::default();
    for (n, dir) in step_dirs(run)? {
        let Some(v) = read_json(&dir.join("rollout.json"))? else { continue };
        let Some(epoch) = v.pointer("/epoch/epoch").and_then(Value::as_u64) else { continue };
        let t = [dir.join("rounds/trajectories-0.parquet"), dir.join("trajectories.parquet")].into_iter().find(|p| p.is_file());
        let Some(t) = t else { continue };
        let table = crate::table::read_table(&t, &[tr::PROMPT_ID], &[])?;
        let ids: std::collections::BTreeSet<String> = table.utf8(&tr::PROMPT_ID).iter().flatten().map(str::to_string).collect();
        let e = epochs.entry(epoch).or_default();
        e.0.push(n);
        e.1.extend(ids);
    }
    Ok(epochs
        .into_iter()
        .map(|(epoch, (steps, ids))| {
            let distinct = ids.iter().collect::<std::collections::BTreeSet<_>>().len();
            EpochAudit { epoch, steps, prompts: ids.len(), distinct }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A run of two steps as the stages leave it: step 0 evaluated, step 1 trained with every
    /// advantage 0 (the update copied the policy through), step 2 trained and evaluated.
    fn run_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let verify = |correct: u32, no_boxed: u32| {
            format!(r#"{{"overall":{{"prompts":2,"responses":8,"correct":{correct},"accuracy":{},"pass_at":{{"pass@1":0.5}},"reasons":{{"normalized_match":{correct},"mismatch":{},"no_boxed":{no_boxed}}}}}}}"#, f64::from(correct) / 8.0, 8 - correct - no_boxed)
        };
        write(&d.join("step-000000/eval/test.json"), &verify(2, 4));
        write(&d.join("step-000001/rollout.json"), r#"{"tokens_per_second":120.5,"seconds":10.0}"#);
        write(&d.join("step-000001/verify.json"), &verify(0, 6));
        write(&d.join("step-000001/policy/metrics.json"), r#"{"critic/rewards/mean":0.0,"response_length/mean":50.0,"timing_s/step":2.5,"actor/updated":false,"actor/not_updated":"every advantage 0"}"#);
        write(&d.join("step-000002/rollout.json"), r#"{"tokens_per_second":130.0,"seconds":9.0}"#);
        write(&d.join("step-000002/verify.json"), &verify(4, 0));
        write(&d.join("step-000002/policy/metrics.json"), r#"{"critic/rewards/mean":0.5,"response_length/mean":40.0,"timing_s/step":3.0,"actor/updated":true}"#);
        write(&d.join("step-000002/eval/test.json"), &verify(6, 1));
        dir
    }

    #[test]
    fn the_step_line_shows_a_no_op_update_and_the_boxed_fraction() {
        let dir = run_dir();
        let line = step_line(dir.path(), Some(1)).unwrap();
        // 2 of 8 boxed; 10 s of rollout + 2.5 s of update.
        assert_eq!(line, "step    1  reward 0.000  acc 0.000  boxed 0.25  len 50.0  120 tok/s  12.5 s  no-op update (every advantage 0)");
        assert_eq!(step_line(dir.path(), None).unwrap(), "step    2  reward 0.500  acc 0.500  boxed 1.00  len 40.0  130 tok/s  12.0 s  eval test 0.750 (boxed 0.88)");
        assert_eq!(step_line(dir.path(), Some(0)).unwrap(), "step    0  eval test 0.250 (boxed 0.50)");
        assert_eq!(step_line(dir.path(), Some(7)).unwrap(), "step    7  not run yet");
        // The driver's wall clock wins over rollout + update.
        write(&dir.path().join("step-000002/wall.json"), r#"{"seconds": 14.25}"#);
        assert!(step_line(dir.path(), Some(2)).unwrap().contains("  14.2 s  "), "{}", step_line(dir.path(), Some(2)).unwrap());
    }

    #[test]
    fn the_closing_summary_gives_first_and_last_evaluations_and_counts_no_op_updates() {
        let dir = run_dir();
        collect(dir.path(), "clipo").unwrap();
        let text = closing_summary(dir.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // (10 + 2.5) + (9 + 3) seconds.
        assert_eq!(lines[0], "2 steps in 24 s", "{text}");
        assert_eq!(lines[1], "eval test: accuracy 0.250 -> 0.750 (step 0 -> 2), boxed 0.50 -> 0.88", "{text}");
        assert_eq!(lines[2], "training reward 0.000 (steps 1-1) -> 0.500 (steps 2-2), accuracy 0.000 -> 0.500; 1 of 2 updates were no-ops", "{text}");
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
        assert_eq!((summary["heldout_boxed_start"].as_f64(), summary["heldout_boxed_end"].as_f64()), (Some(0.5), Some(0.875)), "{summary}");
    }

    #[test]
    fn a_scorer_programs_reasons_give_no_boxed_fraction() {
        let v: Value = serde_json::from_str(r#"{"overall":{"responses":4,"reasons":{"exact_match":1,"mismatch":3}}}"#).unwrap();
        assert_eq!(boxed_fraction(&v), None);
        let v: Value = serde_json::from_str(r#"{"overall":{"responses":4,"reasons":{"no_boxed":1,"mismatch":3}}}"#).unwrap();
        assert_eq!(boxed_fraction(&v), Some(0.75));
    }
}
