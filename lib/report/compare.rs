//! `make compare`: several seeds of each algorithm on one warm start, summarised
//! (`clipo-report DIR --compare`).
//!
//! `DIR/<algo>/seed-<n>/` are run directories of `scripts/demo.sh` (`scripts/compare.sh` makes
//! them: GRPO, GRPO + CLIPO and CLIPO with a fixed head, the same warm start, the seed's prompts
//! and sampling seeds shared by the algorithms). From each run's evaluations
//! (`step-NNNNNN/eval/<split>.json`, the clipo-verify summaries) this reads, per split, the
//! accuracy and the step checker's lucky fraction (lucky / correct answers,
//! [`crate::stepcheck`]), and computes at every evaluated step:
//!
//! - per algorithm, the mean and the sample standard deviation (n - 1) over seeds;
//! - per pair of algorithms (CLIPO - GRPO, CLIPO-fixed - GRPO, CLIPO - CLIPO-fixed), the mean of
//!   the per-seed differences (paired: the same seed's runs share prompts and sampling seeds)
//!   and its 95% percentile bootstrap interval: [`BOOTSTRAP_RESAMPLES`] resamples of the seeds
//!   with replacement from a fixed seed, the interval between the 2.5th and 97.5th percentiles
//!   of the resampled means. With 5 seeds it is rough: it can only be as wide as the seeds'
//!   spread allows and is narrower than a t interval; read it as "did every seed agree".
//!
//! "The end" is the last step that every run has evaluated. The summary goes to
//! `DIR/summary.json`, a Markdown report to `DIR/report.md`, the table to stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The algorithms `scripts/compare.sh` runs, in the order they are shown; other directories
/// that hold `seed-<n>/` runs are shown after them.
pub const ALGOS: [&str; 3] = ["grpo", "clipo", "clipo-fixed"];
/// The paired differences reported, (a, b) for a - b, when both are present.
pub const PAIRS: [(&str, &str); 3] = [("clipo", "grpo"), ("clipo-fixed", "grpo"), ("clipo", "clipo-fixed")];
/// Bootstrap resamples of the seeds.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// The bootstrap's random seed (the interval is the same on every run of the summary).
pub const BOOTSTRAP_SEED: u64 = 0;
/// The metrics read from each evaluation, as `<split>/<metric>`.
const METRICS: [&str; 2] = ["accuracy", "lucky_fraction"];

/// Every run's evaluations: metric (`test/accuracy`) -> algorithm -> seed -> step -> value.
pub type Values = BTreeMap<String, BTreeMap<String, BTreeMap<u64, BTreeMap<u64, f64>>>>;

/// The runs of a comparison directory.
#[derive(Debug, Clone)]
pub struct Compare {
    pub dir: PathBuf,
    /// In display order.
    pub algos: Vec<String>,
    pub seeds: Vec<u64>,
    pub values: Values,
    /// Wall time of each run (`summary.json`'s `seconds`) and its last step, by algorithm and seed.
    pub runs: BTreeMap<String, BTreeMap<u64, (Option<f64>, u64)>>,
}

/// Mean and sample standard deviation (n - 1; None below two values).
pub fn mean_sd(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let sd = (v.len() >= 2).then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// The 95% percentile bootstrap interval of the mean of `v`: `resamples` means of `v.len()`
/// values drawn with replacement (ChaCha8 from `seed`), sorted; the interval runs from the one
/// at index floor(0.025 x resamples) to the one at ceil(0.975 x resamples) - 1 (the 251st
/// and the 9,750th of 10,000). None for an empty `v`.
pub fn bootstrap_ci(v: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if v.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = v.len();
    let mut means: Vec<f64> = (0..resamples).map(|_| (0..n).map(|_| v[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let lo = (0.025 * resamples as f64).floor() as usize;
    let hi = ((0.975 * resamples as f64).ceil() as usize).max(1) - 1;
    Some((means[lo.min(resamples - 1)], means[hi]))
}

/// Read `dir/<algo>/seed-<n>/`: every run's evaluations.
pub fn load(dir: &Path) -> Result<Compare> {
    if !dir.is_dir() {
        return Err(Error::Config(format!("{}: not a directory (expected a comparison directory written by `make compare`)", dir.display())));
    }
    let mut values: Values = BTreeMap::new();
    let mut runs: BTreeMap<String, BTreeMap<u64, (Option<f64>, u64)>> = BTreeMap::new();
    for algo_dir in sorted_dirs(dir)? {
        let algo = algo_dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        for run in sorted_dirs(&algo_dir)? {
            let name = run.file_name().unwrap_or_default().to_string_lossy().to_string();
            let Some(seed) = name.strip_prefix("seed-").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let mut last = 0;
            for (step, step_dir) in crate::runlog::step_dirs(&run)? {
                last = last.max(step);
                for (k, v) in crate::runlog::step_metrics(step, &step_dir)? {
                    let Some(rest) = k.strip_prefix("eval/") else { continue };
                    let Some((split, metric)) = rest.rsplit_once('/') else { continue };
                    if let (true, Some(v)) = (METRICS.contains(&metric), v.as_f64()) {
                        let per_seed = values.entry(format!("{split}/{metric}")).or_default().entry(algo.clone()).or_default();
                        per_seed.entry(seed).or_default().insert(step, v);
                    }
                }
            }
            let seconds = std::fs::read_to_string(run.join(super::SUMMARY_FILE))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v.get("seconds").and_then(Value::as_f64));
            runs.entry(algo.clone()).or_default().insert(seed, (seconds, last));
        }
    }
    if runs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no <algo>/seed-<n>/ run directories (written by `make compare`, e.g. {}/grpo/seed-0)",
            dir.display(),
            dir.display()
        )));
    }
    let mut algos: Vec<String> = ALGOS.iter().map(|a| a.to_string()).filter(|a| runs.contains_key(a)).collect();
    algos.extend(runs.keys().filter(|a| !ALGOS.contains(&a.as_str())).cloned());
    let seeds: BTreeSet<u64> = runs.values().flat_map(|s| s.keys().copied()).collect();
    Ok(Compare { dir: dir.into(), algos, seeds: seeds.into_iter().collect(), values, runs })
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// One algorithm at one step: the seeds' values, their mean and standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub values: BTreeMap<u64, f64>,
    pub mean: f64,
    pub sd: Option<f64>,
}

/// One pair at one step: the per-seed differences a - b (seeds that have both), their mean and
/// its bootstrap interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub values: BTreeMap<u64, f64>,
    pub mean: f64,
    pub ci: (f64, f64),
}

/// One metric, summarised at every step some run evaluated.
#[derive(Debug, Clone)]
pub struct MetricSummary {
    pub metric: String,
    pub steps: Vec<u64>,
    /// The last step every run evaluated (None when the runs share no step).
    pub end: Option<u64>,
    /// algorithm -> step -> cell.
    pub cells: BTreeMap<String, BTreeMap<u64, Cell>>,
    /// `a - b` -> step -> difference.
    pub diffs: BTreeMap<String, BTreeMap<u64, Diff>>,
}

impl Compare {
    /// The pairs whose two algorithms both ran, as `a - b`.
    pub fn pairs(&self) -> Vec<(&'static str, &'static str)> {
        PAIRS.iter().copied().filter(|(a, b)| self.runs.contains_key(*a) && self.runs.contains_key(*b)).collect()
    }

    /// The metrics in display order: per split (test, test_p1, test_p2, then others), accuracy
    /// then lucky fraction.
    pub fn metrics(&self) -> Vec<String> {
        let mut m: Vec<String> = self.values.keys().cloned().collect();
        let split_rank = |s: &str| ["test", "test_p1", "test_p2"].iter().position(|x| *x == s).unwrap_or(3);
        m.sort_by_key(|k| {
            let (split, metric) = k.rsplit_once('/').unwrap_or((k, ""));
            (split_rank(split), split.to_string(), METRICS.iter().position(|x| *x == metric))
        });
        m
    }

    pub fn summarise(&self, metric: &str) -> MetricSummary {
        let by_algo = self.values.get(metric).cloned().unwrap_or_default();
        let steps: BTreeSet<u64> = by_algo.values().flat_map(|s| s.values().flat_map(|v| v.keys().copied())).collect();
        // The end: the last step of each run's evaluations of this metric, the earliest of those
        // over every run that has the metric.
        let end = by_algo.values().flat_map(|s| s.values().filter_map(|v| v.keys().next_back().copied())).min();
        let end = end.filter(|e| by_algo.values().all(|s| s.values().all(|v| v.contains_key(e))));
        let mut cells: BTreeMap<String, BTreeMap<u64, Cell>> = BTreeMap::new();
        for (algo, seeds) in &by_algo {
            for &step in &steps {
                let values: BTreeMap<u64, f64> = seeds.iter().filter_map(|(s, v)| Some((*s, *v.get(&step)?))).collect();
                if values.is_empty() {
                    continue;
                }
                let (mean, sd) = mean_sd(&values.values().copied().collect::<Vec<_>>());
                cells.entry(algo.clone()).or_default().insert(step, Cell { values, mean, sd });
            }
        }
        let mut diffs: BTreeMap<String, BTreeMap<u64, Diff>> = BTreeMap::new();
        for (a, b) in self.pairs() {
            let (Some(ca), Some(cb)) = (cells.get(a), cells.get(b)) else { continue };
            for &step in &steps {
                let (Some(xa), Some(xb)) = (ca.get(&step), cb.get(&step)) else { continue };
                let values: BTreeMap<u64, f64> = xa.values.iter().filter_map(|(s, va)| Some((*s, va - xb.values.get(s)?))).collect();
                let v: Vec<f64> = values.values().copied().collect();
                let Some(ci) = bootstrap_ci(&v, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED) else { continue };
                diffs.entry(format!("{a} - {b}")).or_default().insert(step, Diff { mean: mean_sd(&v).0, values, ci });
            }
        }
        MetricSummary { metric: metric.into(), steps: steps.into_iter().collect(), end, cells, diffs }
    }
}

/// `test/accuracy` -> `held-out accuracy`; `test_p2/lucky_fraction` -> `distractors lucky`.
pub fn metric_label(metric: &str) -> String {
    let (split, m) = metric.rsplit_once('/').unwrap_or((metric, ""));
    let split = match split {
        "test" => "held-out",
        "test_p1" => "renamed",
        "test_p2" => "distractors",
        other => other,
    };
    let m = if m == "lucky_fraction" { "lucky" } else { m };
    format!("{split} {m}")
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

fn cell_text(c: Option<&Cell>) -> String {
    match c {
        None => "-".into(),
        Some(c) => match c.sd {
            Some(sd) => format!("{} ± {}", pct(c.mean), pct(sd)),
            None => format!("{} (n=1)", pct(c.mean)),
        },
    }
}

fn diff_text(d: Option<&Diff>) -> String {
    d.map_or("-".into(), |d| format!("{:+.1} [{:+.1}, {:+.1}]", 100.0 * d.mean, 100.0 * d.ci.0, 100.0 * d.ci.1))
}

/// Rows of text cells: a header, then one row per `(label, step)`.
fn rows(c: &Compare, summaries: &[(MetricSummary, Vec<u64>)]) -> Vec<Vec<String>> {
    let pairs: Vec<String> = c.pairs().iter().map(|(a, b)| format!("{a} - {b}")).collect();
    let mut out = vec![["metric".to_string(), "step".into()].into_iter().chain(c.algos.iter().cloned()).chain(pairs.iter().cloned()).collect::<Vec<_>>()];
    for (s, steps) in summaries {
        for step in steps {
            let mut row = vec![metric_label(&s.metric), step.to_string()];
            row.extend(c.algos.iter().map(|a| cell_text(s.cells.get(a).and_then(|m| m.get(step)))));
            row.extend(pairs.iter().map(|p| diff_text(s.diffs.get(p).and_then(|m| m.get(step)))));
            out.push(row);
        }
    }
    out
}

fn aligned(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut o = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| if i == 0 { format!("{s:<w$}") } else { format!("{s:>w$}") })
            .collect();
        o += cells.join("  ").trim_end();
        o.push('\n');
    }
    o
}

fn markdown(rows: &[Vec<String>]) -> String {
    let mut o = format!("| {} |\n", rows[0].join(" | "));
    o += &format!("|{}\n", rows[0].iter().enumerate().map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" }).collect::<String>());
    for r in &rows[1..] {
        o += &format!("| {} |\n", r.join(" | "));
    }
    o
}

fn header(c: &Compare) -> String {
    let seeds: Vec<String> = c.seeds.iter().map(u64::to_string).collect();
    let mut o = format!("comparison {}: {}; seeds {} ({})\n", c.dir.display(), c.algos.join(", "), seeds.join(" "), seeds.len());
    for a in &c.algos {
        let runs = &c.runs[a];
        let secs: Vec<f64> = runs.values().filter_map(|r| r.0).collect();
        let lasts: BTreeSet<u64> = runs.values().map(|r| r.1).collect();
        let missing: Vec<String> = c.seeds.iter().filter(|s| !runs.contains_key(s)).map(u64::to_string).collect();
        let _ = writeln!(
            o,
            "  {a}: {} run{} to step {}{}{}",
            runs.len(),
            if runs.len() == 1 { "" } else { "s" },
            lasts.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
            if secs.is_empty() { String::new() } else { format!(", mean wall time {}", super::duration(secs.iter().sum::<f64>() / secs.len() as f64)) },
            if missing.is_empty() { String::new() } else { format!(", no run for seed {}", missing.join(" ")) }
        );
    }
    o
}

const EXPLAIN: &str = "Accuracy: greedy, mean over the split's problems. Lucky: the step checker's fraction of the correct answers reached by a wrong or missing step. Cells: mean ± standard deviation over seeds, in percent (points for differences). a - b: mean of the per-seed differences [95% percentile bootstrap interval over seeds, 10,000 resamples].";

/// The table printed by `clipo-report DIR --compare`: every metric at the end, then at every
/// evaluated step.
pub fn text(c: &Compare) -> String {
    let summaries: Vec<MetricSummary> = c.metrics().iter().map(|m| c.summarise(m)).collect();
    let mut o = header(c);
    o += EXPLAIN;
    o.push('\n');
    let at_end: Vec<(MetricSummary, Vec<u64>)> = summaries.iter().filter_map(|s| Some((s.clone(), vec![s.end?]))).collect();
    if !at_end.is_empty() {
        o += "\nat the end:\n";
        o += &aligned(&rows(c, &at_end));
    }
    let every: Vec<(MetricSummary, Vec<u64>)> = summaries.iter().map(|s| (s.clone(), s.steps.clone())).collect();
    o += "\nat every evaluation:\n";
    o += &aligned(&rows(c, &every));
    o
}

/// The Markdown report (`DIR/report.md`).
pub fn markdown_report(c: &Compare) -> String {
    let summaries: Vec<MetricSummary> = c.metrics().iter().map(|m| c.summarise(m)).collect();
    let mut o = String::from("# clipo comparison\n\n```text\n");
    o += &header(c);
    o += "```\n\n";
    o += EXPLAIN;
    o += "\n\n## At the end\n\n";
    let at_end: Vec<(MetricSummary, Vec<u64>)> = summaries.iter().filter_map(|s| Some((s.clone(), vec![s.end?]))).collect();
    if at_end.is_empty() {
        o += "The runs share no evaluated step.\n";
    } else {
        o += &markdown(&rows(c, &at_end));
    }
    o += "\n## At every evaluation\n";
    for s in &summaries {
        let _ = write!(o, "\n### {}\n\n", metric_label(&s.metric));
        o += &markdown(&rows(c, &[(s.clone(), s.steps.clone())]));
    }
    o += "\n## Per seed at the end\n\n";
    for s in &summaries {
        let Some(end) = s.end else { continue };
        let _ = write!(o, "- {} (step {end}):", metric_label(&s.metric));
        for a in &c.algos {
            if let Some(cell) = s.cells.get(a).and_then(|m| m.get(&end)) {
                let v: Vec<String> = cell.values.iter().map(|(seed, v)| format!("{seed}: {}", pct(*v))).collect();
                let _ = write!(o, " {a} [{}];", v.join(", "));
            }
        }
        o.push('\n');
    }
    o
}

fn cell_json(c: &Cell) -> Value {
    json!({
        "n": c.values.len(),
        "mean": c.mean,
        "sd": c.sd,
        "seeds": c.values.iter().map(|(s, v)| (s.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

fn diff_json(d: &Diff) -> Value {
    json!({
        "n": d.values.len(),
        "mean": d.mean,
        "ci95": [d.ci.0, d.ci.1],
        "seeds": d.values.iter().map(|(s, v)| (s.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// `DIR/summary.json`: per metric, every step's cells and differences, and the end's again.
pub fn summary_json(c: &Compare) -> Value {
    let mut metrics = serde_json::Map::new();
    for m in c.metrics() {
        let s = c.summarise(&m);
        let per_step = |f: &dyn Fn(u64) -> Option<Value>| -> Value {
            s.steps.iter().filter_map(|&st| Some((st.to_string(), f(st)?))).collect::<serde_json::Map<_, _>>().into()
        };
        let algos: serde_json::Map<String, Value> =
            s.cells.iter().map(|(a, cells)| (a.clone(), per_step(&|st| cells.get(&st).map(cell_json)))).collect();
        let diffs: serde_json::Map<String, Value> =
            s.diffs.iter().map(|(p, d)| (p.clone(), per_step(&|st| d.get(&st).map(diff_json)))).collect();
        let end = s.end.map(|e| {
            json!({
                "step": e,
                "algos": s.cells.iter().filter_map(|(a, cells)| Some((a.clone(), cell_json(cells.get(&e)?)))).collect::<serde_json::Map<_, _>>(),
                "diffs": s.diffs.iter().filter_map(|(p, d)| Some((p.clone(), diff_json(d.get(&e)?)))).collect::<serde_json::Map<_, _>>(),
            })
        });
        metrics.insert(m.clone(), json!({ "label": metric_label(&m), "steps": s.steps, "end": end, "algos": algos, "diffs": diffs }));
    }
    let runs: serde_json::Map<String, Value> = c
        .runs
        .iter()
        .map(|(a, r)| (a.clone(), r.iter().map(|(s, (secs, last))| (s.to_string(), json!({ "seconds": secs, "last_step": last }))).collect::<serde_json::Map<_, _>>().into()))
        .collect();
    json!({
        "dir": c.dir.display().to_string(),
        "algos": c.algos,
        "seeds": c.seeds,
        "bootstrap": { "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "95% percentile, seeds resampled with replacement" },
        "runs": runs,
        "metrics": metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, sd) = mean_sd(&[0.5, 0.7]);
        assert!((m - 0.6).abs() < 1e-15 && (sd.unwrap() - 0.02f64.sqrt()).abs() < 1e-15, "{m} {sd:?}");
        assert_eq!(mean_sd(&[0.25]), (0.25, None));
        // 1, 2, 3, 4: squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3.
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((m, sd.unwrap()), (2.5, (5.0f64 / 3.0).sqrt()));
    }

    #[test]
    fn bootstrap_interval_on_fixed_numbers() {
        // Every seed agrees: the interval is the point.
        assert_eq!(bootstrap_ci(&[0.02; 5], BOOTSTRAP_RESAMPLES, 0), Some((0.02, 0.02)));
        // One seed of five at 1: a resampled mean is k/5 with k ~ Binomial(5, 0.2);
        // P(k = 0) = 0.328 > 0.025 and P(k <= 2) = 0.942 < 0.975 <= P(k <= 3) = 0.993, so the
        // interval is [0, 0.6] for any seed of the resampling.
        for seed in [0, 1, 2] {
            assert_eq!(bootstrap_ci(&[0.0, 0.0, 0.0, 0.0, 1.0], BOOTSTRAP_RESAMPLES, seed), Some((0.0, 0.6)));
        }
        // The same seed gives the same interval; the ends are resampled means of the values.
        let v = [0.031, -0.012, 0.047, 0.005, 0.022];
        let a = bootstrap_ci(&v, BOOTSTRAP_RESAMPLES, 0).unwrap();
        assert_eq!(bootstrap_ci(&v, BOOTSTRAP_RESAMPLES, 0).unwrap(), a);
        assert!(a.0 < 0.0186 && 0.0186 < a.1 && a.0 >= -0.012 && a.1 <= 0.047, "{a:?}");
        assert_eq!(bootstrap_ci(&[], 10, 0), None);
        // A single seed: its difference, no spread.
        assert_eq!(bootstrap_ci(&[0.5], 100, 0), Some((0.5, 0.5)));
    }

    #[test]
    fn labels_name_the_demo_splits() {
        assert_eq!(metric_label("test/accuracy"), "held-out accuracy");
        assert_eq!(metric_label("test_p2/lucky_fraction"), "distractors lucky");
        assert_eq!(metric_label("mine/accuracy"), "mine accuracy");
    }
}
