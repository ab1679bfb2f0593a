//! `clipo-report`: what a run did, without reading logs.
//!
//! A run directory (written by the loop driver) holds `metrics.jsonl` (one JSON object per RL
//! step, verl's metric names), an optional `summary.json` and one `step-NNNNNN/` directory per
//! step with the stages' Parquet tables. This module reads it ([`load_run`]) and shows it three
//! ways:
//!
//! - [`render_html`]: one self-contained page (inline CSS and SVG, no scripts, no external
//!   URLs) with a line chart per metric family, the summary and the per-step table;
//! - [`terminal_table`]: the same per-step figures as a compact text table;
//! - [`audit_samples`] (in [`audit`]): one step's responses for chosen prompts, flagging correct
//!   responses whose contrastive reward is far below their group's (lucky or copied answers);
//! - [`compare`]: several runs of each algorithm over seeds (`make compare`), with means,
//!   standard deviations and paired bootstrap intervals.
//!
//! The metric key set is open: every numeric value of every line is kept, grouped for plotting
//! by prefix and family (see [`html`]); unknown keys are plotted, never rejected. Non-numeric
//! values (strings, booleans, null) are ignored, nested objects are flattened with `/`, and the
//! bare `NaN` / `Infinity` tokens Python's `json` writes are read as missing values.

pub mod audit;
pub mod compare;
pub mod html;
pub mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::schema::rewards as rw;
use crate::table::read_table;

pub use audit::audit_samples;
pub use html::render_html;

/// The per-step metrics file of a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The optional end-of-run summary.
pub const SUMMARY_FILE: &str = "summary.json";
/// The default report file name inside the run directory.
pub const REPORT_FILE: &str = "report.html";

/// One RL step's numeric metrics, keyed by their verl names.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub values: BTreeMap<String, f64>,
}

/// Training accuracy of one step for one data source, from the step's `rewards.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceAccuracy {
    pub step: u64,
    pub data_source: String,
    pub responses: usize,
    pub correct: usize,
}

impl SourceAccuracy {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.responses.max(1) as f64
    }
}

/// Everything the report shows about one run.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    /// The directory's last component (`runs/demo` -> `demo`).
    pub name: String,
    /// One entry per step, ascending; a step logged twice (a resumed loop) keeps the later
    /// line's values merged over the earlier's.
    pub steps: Vec<StepMetrics>,
    /// `summary.json` when present.
    pub summary: Option<serde_json::Value>,
    /// Per step and data source, from the step directories' `rewards.parquet` (empty when the
    /// run kept no step directories).
    pub train_accuracy: Vec<SourceAccuracy>,
    /// The leave-one-out flag against the step checker over every step of the run, when a step
    /// has contrastive rewards and responses to the embedded task ([`audit::FlagCheck`]).
    pub flag_check: Option<audit::FlagCheck>,
}

impl Run {
    /// Every metric key that has at least one value, sorted.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.steps.iter().flat_map(|s| s.values.keys().map(String::as_str)).collect()
    }

    /// `(step, value)` for every step that has `key`.
    pub fn series(&self, key: &str) -> Vec<(u64, f64)> {
        self.steps.iter().filter_map(|s| s.values.get(key).map(|&v| (s.step, v))).collect()
    }

    /// The data sources seen in the rewards tables, sorted.
    pub fn data_sources(&self) -> BTreeSet<&str> {
        self.train_accuracy.iter().map(|a| a.data_source.as_str()).collect()
    }

    /// Fraction of correct responses at `step` over all data sources, when the step's rewards
    /// table was read.
    pub fn train_accuracy_at(&self, step: u64) -> Option<f64> {
        let (n, c) = self
            .train_accuracy
            .iter()
            .filter(|a| a.step == step)
            .fold((0, 0), |(n, c), a| (n + a.responses, c + a.correct));
        (n > 0).then(|| c as f64 / n as f64)
    }

    /// The split names of `eval/<split>/accuracy` keys, sorted.
    pub fn eval_splits(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter_map(|k| k.strip_prefix("eval/")?.strip_suffix("/accuracy"))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Read a run directory: `metrics.jsonl` (required, at least one step), `summary.json` (when
/// present) and every `step-NNNNNN/rewards.parquet` (for accuracy per data source). A corrupt
/// line or table is an error naming the file (and line); a step directory without a rewards
/// table (not written yet, or cleaned up) is skipped.
pub fn load_run(dir: &Path) -> Result<Run> {
    if !dir.is_dir() {
        return Err(Error::Config(format!("{}: not a directory (expected a run directory holding {METRICS_FILE})", dir.display())));
    }
    let metrics_path = dir.join(METRICS_FILE);
    if !metrics_path.exists() {
        let steps: Vec<u64> = step_dirs(dir)?.iter().map(|(s, _)| *s).collect();
        return Err(Error::Config(if steps.is_empty() {
            format!("{}: no {METRICS_FILE} and no step-NNNNNN/ directories: expected a run directory (written by scripts/loop.mk or scripts/demo.sh)", dir.display())
        } else {
            format!(
                "{}: no {METRICS_FILE} yet (steps present: {}): run `clipo-report {} --collect` to build it from the step directories",
                dir.display(),
                step_ranges(&steps),
                dir.display()
            )
        }));
    }
    let text = std::fs::read_to_string(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    let mut steps = parse_metrics(&metrics_path, &text)?;
    if steps.is_empty() {
        return Err(Error::Empty { path: metrics_path, detail: "no steps recorded yet".into() });
    }
    // Step 0, the evaluation of the initial policy, has a directory but no metrics line
    // (`--collect` writes one per RL step): its evaluations start every evaluation curve.
    if steps[0].step > 0 {
        if let Some((_, d)) = step_dirs(dir)?.into_iter().find(|(s, _)| *s == 0) {
            let m = crate::runlog::step_metrics(0, &d)?;
            let values: BTreeMap<String, f64> =
                m.iter().filter(|(k, _)| k.starts_with("eval/")).filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
            if !values.is_empty() {
                steps.insert(0, StepMetrics { step: 0, values });
            }
        }
    }

    let summary_path = dir.join(SUMMARY_FILE);
    let summary = if summary_path.is_file() {
        let text = std::fs::read_to_string(&summary_path).map_err(|e| Error::io(&summary_path, e))?;
        let value = parse_json_lenient(&text)
            .map_err(|e| Error::Other(format!("{}: not valid JSON ({e})", summary_path.display())))?;
        Some(value)
    } else {
        None
    };

    let mut train_accuracy = Vec::new();
    let mut flag_check = audit::FlagCheck::default();
    for (step, step_dir) in step_dirs(dir)? {
        let path = step_dir.join("rewards.parquet");
        if path.is_file() {
            train_accuracy.extend(source_accuracy(step, &path)?);
            if step_dir.join("trajectories.parquet").is_file() {
                flag_check.add(&audit::load_step(dir, step)?);
            }
        }
    }
    let flag_check = (flag_check.steps > 0).then_some(flag_check);

    let name = dir
        .canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Run { dir: dir.into(), name, steps, summary, train_accuracy, flag_check })
}

/// Parse `metrics.jsonl`: one JSON object a line with a numeric `step`; blank lines are
/// skipped. Errors name the file and the 1-based line.
pub fn parse_metrics(path: &Path, text: &str) -> Result<Vec<StepMetrics>> {
    let mut by_step: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: String| Error::Other(format!("{}: line {line_no}: {detail}", path.display()));
        let value = parse_json_lenient(line).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        let serde_json::Value::Object(obj) = value else {
            return Err(bad("expected a JSON object like {\"step\": 3, ...}".into()));
        };
        let step = match obj.get("step") {
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
                .ok_or_else(|| bad(format!("\"step\" must be a non-negative integer, found {v}")))?,
            None => return Err(bad("no \"step\" key".into())),
        };
        let values = by_step.entry(step).or_default();
        for (k, v) in &obj {
            if k != "step" {
                flatten(k, v, values);
            }
        }
    }
    Ok(by_step.into_iter().map(|(step, values)| StepMetrics { step, values }).collect())
}

/// Keep finite numbers; recurse into objects joining keys with `/`; ignore everything else.
fn flatten(key: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                out.insert(key.to_string(), f);
            }
        }
        serde_json::Value::Object(obj) => {
            for (k, v) in obj {
                flatten(&format!("{key}/{k}"), v, out);
            }
        }
        _ => {}
    }
}

/// `serde_json::from_str`, retried with Python's bare `NaN`, `Infinity` and `-Infinity`
/// (outside strings) read as `null`.
fn parse_json_lenient(text: &str) -> std::result::Result<serde_json::Value, serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            let fixed = replace_python_non_finite(text);
            if fixed == text {
                Err(e)
            } else {
                serde_json::from_str(&fixed).map_err(|_| e)
            }
        }
    }
}

fn replace_python_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        if let Some(token) = ["-Infinity", "Infinity", "NaN"].iter().find(|t| rest.starts_with(**t)) {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The `step-NNNNNN` directories of a run, by step.
pub fn step_dirs(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(|n| n.strip_prefix("step-")).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if entry.path().is_dir() {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The directory of `step` (`step-000003`).
pub fn step_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:06}"))
}

/// Sorted steps as ranges, `0-300` or `1-5, 7, 9-12`; past eight ranges the middle ones are
/// left out (`..., `), so a message never lists hundreds of numbers.
pub fn step_ranges(steps: &[u64]) -> String {
    if steps.is_empty() {
        return "none".into();
    }
    let mut ranges: Vec<(u64, u64)> = vec![];
    for &s in steps {
        match ranges.last_mut() {
            Some((_, hi)) if s == *hi + 1 => *hi = s,
            Some((_, hi)) if s == *hi => {}
            _ => ranges.push((s, s)),
        }
    }
    let shown = |&(lo, hi): &(u64, u64)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
    if ranges.len() <= 8 {
        return ranges.iter().map(shown).collect::<Vec<_>>().join(", ");
    }
    let head: Vec<String> = ranges[..4].iter().map(shown).collect();
    let tail: Vec<String> = ranges[ranges.len() - 3..].iter().map(shown).collect();
    format!("{}, ..., {} ({} steps)", head.join(", "), tail.join(", "), steps.len())
}

fn source_accuracy(step: u64, path: &Path) -> Result<Vec<SourceAccuracy>> {
    let t = read_table(path, &[rw::DATA_SOURCE, rw::CORRECT], &[])?;
    let (ds, correct) = (t.utf8(&rw::DATA_SOURCE), t.bool(&rw::CORRECT));
    let mut by: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for i in 0..t.num_rows() {
        let e = by.entry(ds.value(i)).or_default();
        e.0 += 1;
        e.1 += usize::from(correct.value(i));
    }
    Ok(by
        .into_iter()
        .map(|(d, (n, c))| SourceAccuracy { step, data_source: d.to_string(), responses: n, correct: c })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The per-step table

/// One column of the per-step table: header and a value per step.
pub(crate) struct TableColumn {
    pub header: String,
    /// Decimal places; [`SCIENTIFIC`] for 3 significant digits in exponent form.
    pub decimals: usize,
    pub values: Vec<Option<f64>>,
}

/// `decimals` value of a column shown in exponent form (KL values span 1e-6 to 1e-1).
pub(crate) const SCIENTIFIC: usize = usize::MAX;

/// The per-step table's columns: step, reward, train accuracy, one column per evaluated split,
/// KL, contrastive loss, mean response length, seconds. Columns with no value at any step are
/// left out (a plain GRPO run has no contrastive loss).
pub(crate) fn table_columns(run: &Run) -> Vec<TableColumn> {
    let steps = &run.steps;
    let key = |k: &str| -> Vec<Option<f64>> { steps.iter().map(|s| s.values.get(k).copied()).collect() };
    let mut cols = vec![TableColumn {
        header: "step".into(),
        decimals: 0,
        values: steps.iter().map(|s| Some(s.step as f64)).collect(),
    }];
    cols.push(TableColumn { header: "reward".into(), decimals: 3, values: key("critic/rewards/mean") });
    // Train accuracy: fraction correct in the step's rewards table; else the mean verifier
    // score (1 or 0 per response, so the same number).
    let train: Vec<Option<f64>> = steps
        .iter()
        .map(|s| run.train_accuracy_at(s.step).or_else(|| s.values.get("critic/score/mean").copied()))
        .collect();
    cols.push(TableColumn { header: "train_acc".into(), decimals: 3, values: train });
    for split in run.eval_splits() {
        cols.push(TableColumn { header: format!("eval:{split}"), decimals: 3, values: key(&format!("eval/{split}/accuracy")) });
    }
    // KL to the reference when one was used (kl_loss nonzero somewhere), else the
    // old-to-new policy KL of the PPO update.
    let kl_ref = key("actor/kl_loss");
    if kl_ref.iter().flatten().any(|v| *v != 0.0) {
        cols.push(TableColumn { header: "kl_ref".into(), decimals: SCIENTIFIC, values: kl_ref });
    } else {
        cols.push(TableColumn { header: "ppo_kl".into(), decimals: SCIENTIFIC, values: key("actor/ppo_kl") });
    }
    cols.push(TableColumn { header: "con_loss".into(), decimals: 3, values: key("con_lm_head/loss") });
    cols.push(TableColumn { header: "resp_len".into(), decimals: 1, values: key("response_length/mean") });
    // Seconds: the step's total when logged, else the sum of the stage timings.
    let secs: Vec<Option<f64>> = steps
        .iter()
        .map(|s| {
            s.values.get("timing_s/step").copied().or_else(|| {
                let parts: Vec<f64> =
                    s.values.iter().filter(|(k, _)| k.starts_with("timing_s/")).map(|(_, v)| *v).collect();
                (!parts.is_empty()).then(|| parts.iter().sum())
            })
        })
        .collect();
    cols.push(TableColumn { header: "seconds".into(), decimals: 2, values: secs });
    cols.retain(|c| c.header == "step" || c.values.iter().any(Option::is_some));
    cols
}

/// A table cell: `decimals` places ([`SCIENTIFIC`]: exponent form), or 3 significant digits in
/// exponent form for a value too small to show with them (a KL of 3.2e-5 is not "0.0000");
/// `-` when missing.
pub(crate) fn fmt_cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if decimals == SCIENTIFIC => format!("{v:.2e}"),
        Some(v) if v != 0.0 && decimals > 0 && v.abs() < 0.5 * 10f64.powi(-(decimals as i32)) => format!("{v:.2e}"),
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

/// The per-step table as aligned text: a header, one row per step, then the summary's start
/// and end accuracies when `summary.json` has them.
pub fn terminal_table(run: &Run) -> String {
    let cols = table_columns(run);
    let cells: Vec<Vec<String>> =
        cols.iter().map(|c| c.values.iter().map(|v| fmt_cell(*v, c.decimals)).collect()).collect();
    let widths: Vec<usize> = cols
        .iter()
        .zip(&cells)
        .map(|(c, cs)| cs.iter().map(|s| s.chars().count()).chain([c.header.len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |items: Vec<&str>| -> String {
        let padded: Vec<String> = items.iter().zip(&widths).map(|(s, w)| format!("{s:>w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    out += &line(cols.iter().map(|c| c.header.as_str()).collect());
    for row in 0..run.steps.len() {
        out += &line(cells.iter().map(|cs| cs[row].as_str()).collect());
    }
    for l in summary_lines(run) {
        out += &l;
        out.push('\n');
    }
    out
}

/// A number in few characters: `0`, `0.0001`, `602.8`, `2.5e-8` (4 significant digits at
/// most, exponent form below 1e-4 and from 1e6).
pub(crate) fn compact(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() < 1e-4 || v.abs() >= 1e6 {
        let s = format!("{v:.3e}");
        let (m, e) = s.split_once('e').expect("exponent form");
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        return format!("{m}e{e}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Seconds as `10 min 3 s (602.8 s)`, or `41.2 s` under a minute.
pub(crate) fn duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let whole = secs.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    let hms = if h > 0 { format!("{h} h {m} min {s} s") } else { format!("{m} min {s} s") };
    format!("{hms} ({secs:.1} s)")
}

/// The evaluations of a run: one row per evaluated split, one column per evaluated step.
pub(crate) struct EvalTable {
    pub steps: Vec<u64>,
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

impl EvalTable {
    /// The last value minus the first, in percentage points (`+21.00 points`).
    pub fn change(&self, values: &[Option<f64>]) -> String {
        match (values.iter().flatten().next(), values.iter().flatten().last()) {
            (Some(a), Some(b)) => format!("{:+.2} points", 100.0 * (b - a)),
            _ => "-".into(),
        }
    }
}

/// `eval/<split>/accuracy` at every step that has one (step 0 included), then, for the embedded
/// task, `eval/<split>/lucky_fraction` (rows `<split> lucky`: the step checker's fraction of
/// the correct answers reached by a wrong or missing step), or None without evaluations.
pub(crate) fn eval_table(run: &Run) -> Option<EvalTable> {
    let splits = run.eval_splits();
    let keys: Vec<String> = splits.iter().map(|s| format!("eval/{s}/accuracy")).collect();
    let steps: Vec<u64> = run.steps.iter().filter(|s| keys.iter().any(|k| s.values.contains_key(k))).map(|s| s.step).collect();
    if steps.is_empty() {
        return None;
    }
    let all_keys = run.keys();
    let lucky = splits
        .iter()
        .map(|s| (format!("{s} lucky"), format!("eval/{s}/lucky_fraction")))
        .filter(|(_, k)| all_keys.contains(k.as_str()));
    let rows = splits
        .iter()
        .cloned()
        .zip(keys.iter().cloned())
        .chain(lucky)
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(split, k)| {
            let values = steps.iter().map(|&st| run.steps.iter().find(|s| s.step == st).and_then(|s| s.values.get(&k).copied())).collect();
            (split, values)
        })
        .collect();
    Some(EvalTable { steps, rows })
}

/// The summary as `(what, value with its unit)` rows: from `summary.json` the algorithm, the
/// steps and the wall time; from the metrics the training reward and accuracy, the response
/// length over the first and the last tenth of the RL steps, and the median sampling speed and
/// step time. Keys of `summary.json` this does not know are shown as they are; the accuracy
/// curves and their start and end are the evaluation table's ([`eval_table`]).
pub(crate) fn summary_rows(run: &Run) -> Vec<(String, String)> {
    let mut rows = vec![];
    let obj = match &run.summary {
        Some(serde_json::Value::Object(o)) => o.clone(),
        _ => Default::default(),
    };
    let rl: Vec<&StepMetrics> = run.steps.iter().filter(|s| s.step > 0).collect();
    if let Some(a) = obj.get("algo").and_then(|v| v.as_str()) {
        rows.push(("algorithm".into(), a.to_string()));
    }
    let steps = obj.get("steps").and_then(|v| v.as_u64()).unwrap_or(rl.len() as u64);
    rows.push(("RL steps".into(), steps.to_string()));
    if let Some(s) = obj.get("seconds").and_then(|v| v.as_f64()) {
        rows.push(("wall time".into(), duration(s)));
    }
    // The first and the last tenth of the RL steps that have `key` (at least one step each).
    let ends = |key: &str, fmt: &dyn Fn(f64) -> String| -> Option<String> {
        let pts: Vec<(u64, f64)> = rl.iter().filter_map(|s| Some((s.step, *s.values.get(key)?))).collect();
        if pts.len() < 2 {
            return None;
        }
        let k = (pts.len() / 10).max(1);
        let mean = |p: &[(u64, f64)]| p.iter().map(|x| x.1).sum::<f64>() / p.len() as f64;
        let (a, b) = (&pts[..k], &pts[pts.len() - k..]);
        let span = |p: &[(u64, f64)]| if p.len() == 1 { format!("step {}", p[0].0) } else { format!("steps {}-{}", p[0].0, p[p.len() - 1].0) };
        Some(format!("{} ({}) → {} ({})", fmt(mean(a)), span(a), fmt(mean(b)), span(b)))
    };
    let plain = |v: f64| format!("{v:.3}");
    let percent = |v: f64| format!("{:.1}%", 100.0 * v);
    let tokens = |v: f64| format!("{v:.1} tokens");
    for (what, key, fmt) in [
        ("training reward (batch mean)", "critic/rewards/mean", &plain as &dyn Fn(f64) -> String),
        ("training accuracy (verifier)", "critic/score/mean", &percent),
        ("response length (mean)", "response_length/mean", &tokens),
    ] {
        if let Some(v) = ends(key, fmt) {
            rows.push((what.into(), v));
        }
    }
    let median = |key: &str| -> Option<f64> {
        let mut v: Vec<f64> = rl.iter().filter_map(|s| s.values.get(key).copied()).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    if let Some(t) = median("rollout/tokens_per_s") {
        rows.push(("sampling speed (median step)".into(), format!("{t:.0} tokens/s")));
    }
    if let Some(t) = median("timing_s/step_wall").or_else(|| median("timing_s/step")) {
        rows.push(("step time (median)".into(), format!("{t:.2} s")));
    }
    if let Some(c) = &run.flag_check {
        rows.push((format!("flag LOW vs step checker ({} steps)", c.steps), c.describe()));
    }
    for (k, v) in &obj {
        let known = ["algo", "steps", "seconds"].contains(&k.as_str())
            || k.ends_with("_curve")
            || k.ends_with("_accuracy_start")
            || k.ends_with("_accuracy_end")
            || k.ends_with("_lucky_start")
            || k.ends_with("_lucky_end");
        if known {
            continue;
        }
        let shown = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.as_f64().map_or(n.to_string(), compact),
            other => other.to_string(),
        };
        rows.push((k.clone(), shown));
    }
    rows
}

/// The summary as the lines that end the terminal table.
fn summary_lines(run: &Run) -> Vec<String> {
    let rows = summary_rows(run);
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = vec!["summary:".to_string()];
    out.extend(rows.iter().map(|(k, v)| format!("  {k:<width$}  {v}")));
    if let Some(t) = eval_table(run) {
        let name_w = t.rows.iter().map(|(s, _)| s.len()).max().unwrap_or(0).max("accuracy".len());
        let mut head = format!("  {:<name_w$}", "accuracy");
        for s in &t.steps {
            head += &format!("  {:>8}", format!("step {s}"));
        }
        out.push(head + "  change");
        for (split, values) in &t.rows {
            let mut line = format!("  {split:<name_w$}");
            for v in values {
                line += &format!("  {:>8}", v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)));
            }
            out.push(line + "  " + &t.change(values));
        }
    }
    out
}

/// Write `contents` to `path` through `<path>.tmp` and a rename, so a reader never sees half a
/// report; its directory is made when missing.
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = crate::table::tmp_path(path);
    std::fs::write(&tmp, contents).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_merge_by_step_and_skip_non_numeric() {
        let text = "{\"step\": 2, \"a/b\": 1.5, \"s\": \"x\", \"t\": true}\n\n{\"step\": 1, \"a/b\": NaN, \"n\": {\"c\": 3}}\n{\"step\": 2, \"c\": -Infinity, \"d\": 4}\n";
        let steps = parse_metrics(Path::new("m.jsonl"), text).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].step, 1);
        assert_eq!(steps[0].values.get("n/c"), Some(&3.0));
        assert!(!steps[0].values.contains_key("a/b"));
        assert_eq!(steps[1].values.len(), 2);
        assert_eq!(steps[1].values["a/b"], 1.5);
        assert_eq!(steps[1].values["d"], 4.0);
    }

    #[test]
    fn metrics_errors_name_file_and_line() {
        let e = parse_metrics(Path::new("m.jsonl"), "{\"step\": 1}\n{\"step\": 2, \"a\": \n").unwrap_err().to_string();
        assert!(e.starts_with("m.jsonl: line 2: not valid JSON"), "{e}");
        let e = parse_metrics(Path::new("m.jsonl"), "{\"a\": 1}\n").unwrap_err().to_string();
        assert_eq!(e, "m.jsonl: line 1: no \"step\" key");
        let e = parse_metrics(Path::new("m.jsonl"), "[1]\n").unwrap_err().to_string();
        assert!(e.contains("line 1: expected a JSON object"), "{e}");
    }

    #[test]
    fn cells_keep_small_values_visible() {
        assert_eq!(fmt_cell(Some(0.0012), 4), "0.0012");
        assert_eq!(fmt_cell(Some(3.2e-5), 4), "3.20e-5");
        assert_eq!(fmt_cell(Some(0.0), 4), "0.0000");
        assert_eq!(fmt_cell(Some(12.0), 0), "12");
        assert_eq!(fmt_cell(None, 3), "-");
        assert_eq!(fmt_cell(Some(0.00123), SCIENTIFIC), "1.23e-3");
        assert_eq!(fmt_cell(Some(0.0), SCIENTIFIC), "0.00e0");
    }

    #[test]
    fn numbers_and_durations_read_as_text() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(1e-4), "0.0001");
        assert_eq!(compact(0.001), "0.001");
        assert_eq!(compact(602.8), "602.8");
        assert_eq!(compact(12.0), "12");
        assert_eq!(compact(2.5e-8), "2.5e-8");
        assert_eq!(compact(-0.5), "-0.5");
        assert_eq!(compact(0.123456), "0.1235");
        assert_eq!(duration(41.23), "41.2 s");
        assert_eq!(duration(602.8), "10 min 3 s (602.8 s)");
        assert_eq!(duration(3725.0), "1 h 2 min 5 s (3725.0 s)");
    }

    #[test]
    fn steps_are_shown_as_ranges() {
        assert_eq!(step_ranges(&[]), "none");
        assert_eq!(step_ranges(&(0..=300).collect::<Vec<_>>()), "0-300");
        assert_eq!(step_ranges(&[1, 2]), "1-2");
        assert_eq!(step_ranges(&[1, 2, 3, 4, 5, 7, 9, 10, 11, 12]), "1-5, 7, 9-12");
        let gappy: Vec<u64> = (0..40).map(|i| i * 2).collect();
        assert_eq!(step_ranges(&gappy), "0, 2, 4, 6, ..., 74, 76, 78 (40 steps)");
    }

    #[test]
    fn nan_inside_strings_is_left_alone() {
        assert_eq!(replace_python_non_finite(r#"{"a": "NaN \" Infinity", "b": NaN}"#), r#"{"a": "NaN \" Infinity", "b": null}"#);
    }
}
