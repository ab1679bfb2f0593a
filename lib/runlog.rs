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
            }
        }
    }
    Ok(m)
}

/// Rebuild `RUN/metrics.jsonl` and `RUN/summary.json`; returns the summary.
pub fn collect(run: &Path, algo: &str) -> Result<Value> {
    let steps = step_dirs(run)?;
    let mut lines = String::new();
    let mut evals: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let mut lucky: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
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
