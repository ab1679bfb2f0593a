//! clipo-verify: trajectories -> rewards, with the reference verifier (REFERENCE.md §5).
//!
//! Reads only `prompt_id`, `sample_idx`, `data_source`, `ground_truth` and `response_text`, so
//! any table with those columns can be scored; writes one rewards row per input row, in input
//! order. The summary (accuracy = mean@n per data set, unbiased pass@k, and the count of each
//! reason) is computed from the rewards table alone, so it is the same whether the rewards were
//! just computed or were already up to date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schema::{rewards, trajectories as tr};
use crate::table::{read_table, up_to_date, Provenance, Table, TableWriter};
use crate::verify::{compute_score, Verdict};

/// The checked configuration of one clipo-verify run.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Worker threads for scoring (at least 1).
    pub threads: usize,
    /// Recompute even when the output is up to date.
    pub force: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct VerifyOutcome {
    pub rows: usize,
    /// True when the output was already up to date and nothing was written.
    pub skipped: bool,
    pub summary: Summary,
    pub seconds: f64,
}

const STAGE: &str = "clipo-verify";
/// The verifier's identity in the provenance: bump it when scoring changes.
const VERIFIER: &str = "conrl_reward/1";

pub fn run(cfg: &VerifyConfig) -> Result<VerifyOutcome> {
    let start = std::time::Instant::now();
    let required = [tr::PROMPT_ID, tr::SAMPLE_IDX, tr::DATA_SOURCE, tr::GROUND_TRUTH, tr::RESPONSE_TEXT];
    // Check the input's schema (and read it) before anything is created.
    let input = read_table(&cfg.input, &required, &[])?;
    let _lock = crate::lock::OutputLock::acquire(&cfg.output)?;
    let provenance = Provenance::new(
        rewards::TABLE,
        STAGE,
        serde_json::json!({ "verifier": VERIFIER }),
        &[cfg.input.as_path()],
    )?;
    if !cfg.force && up_to_date(&cfg.output, &provenance) {
        let rewards = read_rewards(&cfg.output)?;
        return Ok(VerifyOutcome {
            rows: rewards.num_rows(),
            skipped: true,
            summary: Summary::from_rewards(&rewards),
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    let verdicts = score_all(&input, cfg.threads);
    let batch = rewards_batch(&input, &verdicts)?;
    let mut w = TableWriter::create(&cfg.output, rewards::schema(), &provenance)?;
    w.write(&batch)?;
    let rows = w.finish()?;
    let table = Table { path: cfg.output.clone(), batch, metadata: Default::default() };
    Ok(VerifyOutcome {
        rows,
        skipped: false,
        summary: Summary::from_rewards(&table),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Read a rewards table with every column checked.
pub fn read_rewards(path: &Path) -> Result<Table> {
    use rewards::*;
    read_table(path, &[PROMPT_ID, SAMPLE_IDX, DATA_SOURCE, EXTRACTED, CORRECT, SCORE, REASON], &[])
}

/// Score every row, splitting the rows over `threads` workers; results stay in input order.
fn score_all(input: &Table, threads: usize) -> Vec<Verdict> {
    let ds = input.utf8(&tr::DATA_SOURCE);
    let gt = input.utf8(&tr::GROUND_TRUTH);
    let resp = input.utf8(&tr::RESPONSE_TEXT);
    let n = input.num_rows();
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let mut out: Vec<Verdict> = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|lo| {
                let hi = (lo + chunk).min(n);
                s.spawn(move || {
                    (lo..hi).map(|i| compute_score(ds.value(i), resp.value(i), gt.value(i))).collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("the verifier does not panic"));
        }
    });
    out
}

fn rewards_batch(input: &Table, verdicts: &[Verdict]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        input.column(tr::PROMPT_ID.name).clone(),
        input.column(tr::SAMPLE_IDX.name).clone(),
        input.column(tr::DATA_SOURCE.name).clone(),
        Arc::new(verdicts.iter().map(|v| v.extracted.as_deref()).collect::<StringArray>()),
        Arc::new(verdicts.iter().map(|v| Some(v.correct)).collect::<BooleanArray>()),
        Arc::new(verdicts.iter().map(|v| v.score).collect::<Float32Array>()),
        Arc::new(verdicts.iter().map(|v| Some(v.reason.as_str())).collect::<StringArray>()),
    ];
    RecordBatch::try_new(rewards::schema(), columns).map_err(|e| Error::Other(format!("building rewards: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Summary: mean@n and pass@k per data set

/// Accuracy figures of one data set (or of all of them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceSummary {
    pub prompts: usize,
    pub responses: usize,
    pub correct: usize,
    /// Mean over all responses of `correct` (mean@n; pass@1 with greedy decoding).
    pub accuracy: f64,
    /// Unbiased pass@k (Chen et al. 2021) for k = 1, 2, 4, ... up to the smallest group size.
    pub pass_at: BTreeMap<String, f64>,
    /// How many responses got each reason.
    pub reasons: BTreeMap<String, usize>,
}

/// The summary of a rewards table: per data source and overall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub overall: SourceSummary,
    pub data_sources: BTreeMap<String, SourceSummary>,
}

/// pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i), for n >= k.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || c == 0 {
        return if c > 0 { 1.0 } else { 0.0 };
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

impl Summary {
    pub fn from_rewards(t: &Table) -> Summary {
        let pid = t.utf8(&rewards::PROMPT_ID);
        let ds = t.utf8(&rewards::DATA_SOURCE);
        let correct = t.bool(&rewards::CORRECT);
        let reason = t.utf8(&rewards::REASON);
        // data source -> prompt -> (n, c); data source -> reason -> count
        let mut groups: BTreeMap<&str, BTreeMap<&str, (usize, usize)>> = BTreeMap::new();
        let mut reasons: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
        for i in 0..t.num_rows() {
            let g = groups.entry(ds.value(i)).or_default().entry(pid.value(i)).or_default();
            g.0 += 1;
            g.1 += correct.value(i) as usize;
            *reasons.entry(ds.value(i)).or_default().entry(reason.value(i).to_string()).or_default() += 1;
        }
        let summarise = |prompts: Vec<(usize, usize)>, reasons: BTreeMap<String, usize>| {
            let responses: usize = prompts.iter().map(|p| p.0).sum();
            let n_correct: usize = prompts.iter().map(|p| p.1).sum();
            let min_n = prompts.iter().map(|p| p.0).min().unwrap_or(0);
            let mut pass_at = BTreeMap::new();
            let mut k = 1;
            while k <= min_n && !prompts.is_empty() {
                let v = prompts.iter().map(|&(n, c)| pass_at_k(n, c, k)).sum::<f64>() / prompts.len() as f64;
                pass_at.insert(format!("pass@{k}"), v);
                k *= 2;
            }
            SourceSummary {
                prompts: prompts.len(),
                responses,
                correct: n_correct,
                accuracy: if responses > 0 { n_correct as f64 / responses as f64 } else { 0.0 },
                pass_at,
                reasons,
            }
        };
        let mut all_prompts = Vec::new();
        let mut all_reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut data_sources = BTreeMap::new();
        for (source, prompts) in groups {
            let prompts: Vec<(usize, usize)> = prompts.into_values().collect();
            all_prompts.extend(prompts.iter().copied());
            let r = reasons.remove(source).unwrap_or_default();
            for (k, v) in &r {
                *all_reasons.entry(k.clone()).or_default() += v;
            }
            data_sources.insert(source.to_string(), summarise(prompts, r));
        }
        Summary { overall: summarise(all_prompts, all_reasons), data_sources }
    }

    /// A small aligned table: one line per data source, then the overall line.
    pub fn table(&self) -> String {
        let ks: Vec<String> = self.overall.pass_at.keys().cloned().collect();
        let mut ks_sorted = ks.clone();
        ks_sorted.sort_by_key(|k| k.trim_start_matches("pass@").parse::<usize>().unwrap_or(0));
        let width = self.data_sources.keys().map(|k| k.len()).max().unwrap_or(7).max(7);
        let mut s = format!("{:<width$} {:>8} {:>9} {:>8}", "data_source", "prompts", "responses", "accuracy");
        for k in &ks_sorted {
            s += &format!(" {k:>8}");
        }
        s.push('\n');
        let line = |name: &str, v: &SourceSummary| {
            let mut l = format!("{name:<width$} {:>8} {:>9} {:>7.2}%", v.prompts, v.responses, 100.0 * v.accuracy);
            for k in &ks_sorted {
                match v.pass_at.get(k) {
                    Some(p) => l += &format!(" {:>7.2}%", 100.0 * p),
                    None => l += &format!(" {:>8}", "-"),
                }
            }
            l.push('\n');
            l
        };
        for (name, v) in &self.data_sources {
            s += &line(name, v);
        }
        s += &line("overall", &self.overall);
        s
    }
}
