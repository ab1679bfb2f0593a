//! clipo-verify: trajectories -> rewards, with the reference verifier (REFERENCE.md §5), verl's
//! GSM8K scorer or a user's scorer program, chosen per data source ([`crate::verify::dispatch`]).
//!
//! Reads only `prompt_id`, `sample_idx`, `data_source`, `ground_truth` and `response_text` (and
//! `extra_info` when the table has one, for scorer programs, and `prompt_text` when it has one,
//! for the step checker), so any table with those columns can be scored; writes one rewards row
//! per input row, in input order. Phases: read, score (the built-ins on threads, each program
//! through its own processes), check the steps of the embedded task's responses
//! ([`crate::stepcheck`]: `process` and `process_detail`), write. Any scorer failure fails the
//! run before the output is created. The summary (accuracy = mean@n per data set, unbiased
//! pass@k, the score distribution, the count of each reason and, for the embedded task, the
//! step checker's counts) is computed from the rewards table alone, so it is the same whether
//! the rewards were just computed or were already up to date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schema::{rewards, trajectories as tr, Column};
use crate::table::{file_sha256, read_table, up_to_date, Provenance, Table, TableWriter};
use crate::verify::dispatch::{Dispatch, Scorer, CONRL};
use crate::verify::scorer::{Job, Program, Request};
use crate::verify::{compute_score, gsm8k, Scored};

/// The checked configuration of one clipo-verify run.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Worker threads for the built-in scorers (at least 1).
    pub threads: usize,
    /// Which scorer scores which data source.
    pub dispatch: Dispatch,
    /// Processes per scorer program (at least 1).
    pub scorer_workers: usize,
    /// Longest wait for a program's answer to one response.
    pub scorer_timeout: Duration,
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
    /// `--scorer-for` patterns that matched no data source of the input (a misspelt pattern
    /// leaves its rows to the default scorer).
    pub unmatched_patterns: Vec<String>,
    pub seconds: f64,
}

const STAGE: &str = "clipo-verify";
/// The input column handed to scorer programs as `extra_info`, when present.
pub const EXTRA_INFO: &str = "extra_info";
/// The input column the step checker reads the embedded task's question from, when present.
pub const PROMPT_TEXT: &str = "prompt_text";

pub fn run(cfg: &VerifyConfig) -> Result<VerifyOutcome> {
    let start = std::time::Instant::now();
    let required = [tr::PROMPT_ID, tr::SAMPLE_IDX, tr::DATA_SOURCE, tr::GROUND_TRUTH, tr::RESPONSE_TEXT];
    // Check the input's schema (and read it) before anything is created.
    let input = read_table(&cfg.input, &required, &[EXTRA_INFO, PROMPT_TEXT])?;
    let unmatched_patterns = unmatched_patterns(&input, &cfg.dispatch);
    let _lock = crate::lock::OutputLock::acquire(&cfg.output)?;
    let provenance = Provenance::new(rewards::TABLE, STAGE, provenance_config(cfg, checks_steps(&input))?, &[cfg.input.as_path()])?;
    if !cfg.force && up_to_date(&cfg.output, &provenance) {
        let rewards = read_rewards(&cfg.output)?;
        return Ok(VerifyOutcome {
            rows: rewards.num_rows(),
            skipped: true,
            summary: Summary::from_rewards(&rewards),
            unmatched_patterns,
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    let scored = score_all(&input, cfg)?;
    let process = check_steps(&input, &scored);
    let batch = rewards_batch(&input, &scored, &process)?;
    let mut w = TableWriter::create(&cfg.output, rewards::schema(), &provenance)?;
    w.write(&batch)?;
    let rows = w.finish()?;
    let table = Table { path: cfg.output.clone(), batch, metadata: Default::default() };
    Ok(VerifyOutcome {
        rows,
        skipped: false,
        summary: Summary::from_rewards(&table),
        unmatched_patterns,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What decides the rewards: the paper's verifier alone keeps the identity it always had (so
/// rewards written before scorer programs stay up to date); otherwise every rule, the default,
/// the timeout (a timeout changes a score) and, for each program, the SHA-256 of every file its
/// command line names (`scripts/verl_scorer.py`, `my_reward.py`, also as `my_reward.py:fn`).
/// Files a program reads by itself are not seen: `--force` rescores after changing them. The
/// number of workers is left out, as `--threads` is: it does not change a score. Where the
/// step checker runs (`steps`), the version of its rules is added.
fn provenance_config(cfg: &VerifyConfig, steps: bool) -> Result<serde_json::Value> {
    let mut config = scorer_config(cfg)?;
    if steps {
        config["steps"] = serde_json::json!(crate::stepcheck::RULES);
    }
    Ok(config)
}

fn scorer_config(cfg: &VerifyConfig) -> Result<serde_json::Value> {
    if cfg.dispatch.is_default() {
        return Ok(serde_json::json!({ "verifier": CONRL }));
    }
    let describe = |s: &Scorer| -> Result<serde_json::Value> {
        Ok(match s {
            Scorer::Program(cmd) => serde_json::json!({ "program": cmd, "files": command_files(cmd)? }),
            other => serde_json::json!(other.identity()),
        })
    };
    let rules = cfg
        .dispatch
        .rules
        .iter()
        .map(|r| Ok(serde_json::json!({ "pattern": r.pattern, "scorer": describe(&r.scorer)? })))
        .collect::<Result<Vec<_>>>()?;
    let programs = cfg.dispatch.scorers().iter().any(|s| matches!(s, Scorer::Program(_)));
    Ok(serde_json::json!({
        "verifier": "dispatch/1",
        "rules": rules,
        "default": describe(&cfg.dispatch.default)?,
        "scorer_timeout_s": if programs { Some(cfg.scorer_timeout.as_secs_f64()) } else { None },
    }))
}

/// The files a command line names, with their SHA-256: each word (quotes stripped) that is a
/// file, or that is one once a `:NAME` suffix is cut off.
fn command_files(cmd: &str) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for word in cmd.split_whitespace() {
        let word = word.trim_matches(|c| c == '\'' || c == '"');
        let bare = word.rsplit_once(':').map_or(word, |(file, _)| file);
        for candidate in [word, bare] {
            if !candidate.is_empty() && Path::new(candidate).is_file() {
                files.insert(candidate.to_string(), file_sha256(Path::new(candidate))?);
                break;
            }
        }
    }
    Ok(files)
}

/// The rule patterns no data source of the input matches.
fn unmatched_patterns(input: &Table, dispatch: &Dispatch) -> Vec<String> {
    let ds = input.utf8(&tr::DATA_SOURCE);
    let sources: std::collections::BTreeSet<&str> = ds.iter().flatten().collect();
    dispatch
        .rules
        .iter()
        .filter(|r| !sources.iter().any(|s| crate::verify::dispatch::glob_match(&r.pattern, s)))
        .map(|r| r.pattern.clone())
        .collect()
}

/// Read a rewards table with every column checked, in the schema's order; `extra` (absent from
/// tables written before scorer programs) and `process`, `process_detail` (absent from tables
/// written before the step checker) are read as nulls when missing.
pub fn read_rewards(path: &Path) -> Result<Table> {
    use rewards::*;
    let optional = [EXTRA, PROCESS, PROCESS_DETAIL];
    let t = read_table(path, &[PROMPT_ID, SAMPLE_IDX, DATA_SOURCE, EXTRACTED, CORRECT, SCORE, REASON], &optional.map(|c| c.name))?;
    let text_or_nulls = |col: Column| -> Result<ArrayRef> {
        Ok(match t.batch.column_by_name(col.name) {
            None => arrow::array::new_null_array(&DataType::Utf8, t.num_rows()),
            Some(c) if c.data_type() == &DataType::Utf8 => c.clone(),
            Some(c) if col.kind.accepts(c.data_type()) => arrow::compute::cast(c, &DataType::Utf8).map_err(|e| Error::parquet(path, e))?,
            Some(c) => {
                return Err(Error::ColumnType {
                    path: path.into(),
                    column: col.name.into(),
                    expected: col.kind.describe().into(),
                    found: c.data_type().to_string(),
                })
            }
        })
    };
    let optional = optional.map(text_or_nulls);
    let columns: Vec<ArrayRef> = [PROMPT_ID, SAMPLE_IDX, DATA_SOURCE, EXTRACTED, CORRECT, SCORE, REASON]
        .iter()
        .map(|c| Ok(t.column(c.name).clone()))
        .chain(optional)
        .collect::<Result<_>>()?;
    let batch = RecordBatch::try_new(schema(), columns).map_err(|e| Error::parquet(path, e))?;
    Ok(Table { batch, ..t })
}

/// Score every row with its data source's scorer; results in input order.
fn score_all(input: &Table, cfg: &VerifyConfig) -> Result<Vec<Scored>> {
    let ds = input.utf8(&tr::DATA_SOURCE);
    let n = input.num_rows();
    // Rows of each scorer, in input order.
    let scorers = cfg.dispatch.scorers();
    let mut rows_of: Vec<Vec<usize>> = vec![vec![]; scorers.len()];
    for i in 0..n {
        let s = cfg.dispatch.pick(ds.value(i));
        rows_of[scorers.iter().position(|x| *x == s).expect("listed")].push(i);
    }
    let mut out: Vec<Option<Scored>> = vec![None; n];
    for (scorer, rows) in scorers.iter().zip(&rows_of) {
        if rows.is_empty() {
            continue;
        }
        let scored = match scorer {
            Scorer::Program(cmd) => {
                let program = Program { command: cmd.clone(), workers: cfg.scorer_workers, timeout: cfg.scorer_timeout };
                crate::verify::scorer::score(&program, &jobs(input, rows))?
            }
            builtin => score_builtin(input, rows, builtin, cfg.threads),
        };
        for (&i, s) in rows.iter().zip(scored) {
            out[i] = Some(s);
        }
    }
    Ok(out.into_iter().map(|s| s.expect("every row has a scorer")).collect())
}

/// A built-in scorer over `rows`, split over `threads` workers; results in `rows`' order.
fn score_builtin(input: &Table, rows: &[usize], scorer: &Scorer, threads: usize) -> Vec<Scored> {
    let ds = input.utf8(&tr::DATA_SOURCE);
    let gt = input.utf8(&tr::GROUND_TRUTH);
    let resp = input.utf8(&tr::RESPONSE_TEXT);
    let one = |i: usize| -> Scored {
        match scorer {
            Scorer::Conrl => compute_score(ds.value(i), resp.value(i), gt.value(i)).into(),
            Scorer::ConrlFormat => crate::verify::with_format_reward(compute_score(ds.value(i), resp.value(i), gt.value(i))).into(),
            Scorer::Gsm8k(method) => gsm8k::compute_score(resp.value(i), gt.value(i), *method),
            Scorer::Program(_) => unreachable!("programs are scored by their processes"),
        }
    };
    let chunk = rows.len().div_ceil(threads.max(1)).max(1);
    let mut out: Vec<Scored> = Vec::with_capacity(rows.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = rows.chunks(chunk).map(|part| s.spawn(move || part.iter().map(|&i| one(i)).collect::<Vec<_>>())).collect();
        for h in handles {
            out.extend(h.join().expect("the built-in scorers do not panic"));
        }
    });
    out
}

/// Whether the step checker has rows to check: the input has `prompt_text` and a data source of
/// the embedded task.
fn checks_steps(input: &Table) -> bool {
    input.batch.column_by_name(PROMPT_TEXT).is_some()
        && input.utf8(&tr::DATA_SOURCE).iter().flatten().any(|d| d.starts_with(crate::task::DATA_SOURCE_PREFIX))
}

/// The step checker's verdict on each row (None: another data source, no `prompt_text`, or a
/// question that does not parse), from the scorer's `correct`.
fn check_steps(input: &Table, scored: &[Scored]) -> Vec<Option<crate::stepcheck::Verdict>> {
    let prompt_text = input
        .batch
        .column_by_name(PROMPT_TEXT)
        .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
        .filter(|_| checks_steps(input));
    let Some(prompt_text) = prompt_text else { return vec![None; scored.len()] };
    let prompt_text = prompt_text.as_string::<i32>();
    let (ds, resp) = (input.utf8(&tr::DATA_SOURCE), input.utf8(&tr::RESPONSE_TEXT));
    // The question is parsed once per prompt, not once per response.
    let mut steps: std::collections::HashMap<&str, Option<crate::task::Steps>> = Default::default();
    scored
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if !ds.value(i).starts_with(crate::task::DATA_SOURCE_PREFIX) || prompt_text.is_null(i) {
                return None;
            }
            let q = prompt_text.value(i);
            let st = steps.entry(q).or_insert_with(|| crate::task::parse_question(q)).as_ref()?;
            Some(crate::stepcheck::check(st, resp.value(i), s.correct))
        })
        .collect()
}

/// The requests of `rows` for a scorer program.
fn jobs(input: &Table, rows: &[usize]) -> Vec<Job> {
    let (pid, idx, ds) = (input.utf8(&tr::PROMPT_ID), input.u32(&tr::SAMPLE_IDX), input.utf8(&tr::DATA_SOURCE));
    let (gt, resp) = (input.utf8(&tr::GROUND_TRUTH), input.utf8(&tr::RESPONSE_TEXT));
    let extra_info = input.batch.column_by_name(EXTRA_INFO);
    rows.iter()
        .map(|&i| {
            let info = extra_info.map_or(serde_json::Value::Null, |a| json_value(a.as_ref(), i));
            let request = Request {
                data_source: ds.value(i),
                prompt_id: pid.value(i),
                sample_idx: idx.value(i),
                response_text: resp.value(i),
                ground_truth: gt.value(i),
                extra_info: &info,
            };
            Job::new(i, &request)
        })
        .collect()
}

/// One cell as JSON: structs as objects, lists as arrays, numbers, booleans and null as they
/// are; text holding a JSON object or array is parsed (a table may keep `extra_info` as JSON
/// text), other text stays text; any other type is its display text.
pub fn json_value(a: &dyn Array, i: usize) -> serde_json::Value {
    use serde_json::Value as V;
    if a.is_null(i) {
        return V::Null;
    }
    let text = |s: &str| {
        let t = s.trim_start();
        if t.starts_with('{') || t.starts_with('[') {
            if let Ok(v) = serde_json::from_str(s) {
                return v;
            }
        }
        V::String(s.to_string())
    };
    match a.data_type() {
        DataType::Utf8 => text(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => text(a.as_string::<i64>().value(i)),
        DataType::Utf8View => text(a.as_string_view().value(i)),
        DataType::Boolean => V::Bool(a.as_boolean().value(i)),
        DataType::Struct(fields) => {
            let s = a.as_struct();
            V::Object(fields.iter().zip(s.columns()).map(|(f, c)| (f.name().clone(), json_value(c.as_ref(), i))).collect())
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(i);
            V::Array((0..l.len()).map(|j| json_value(l.as_ref(), j)).collect())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>().value(i);
            V::Array((0..l.len()).map(|j| json_value(l.as_ref(), j)).collect())
        }
        dt if dt.is_integer() => match arrow::compute::cast(&a.slice(i, 1), &DataType::Int64) {
            Ok(c) if c.is_valid(0) => V::from(c.as_primitive::<arrow::datatypes::Int64Type>().value(0)),
            _ => V::from(arrow::compute::cast(&a.slice(i, 1), &DataType::UInt64).map_or(0, |c| c.as_primitive::<arrow::datatypes::UInt64Type>().value(0))),
        },
        dt if dt.is_floating() => match arrow::compute::cast(&a.slice(i, 1), &DataType::Float64) {
            Ok(c) => serde_json::Number::from_f64(c.as_primitive::<arrow::datatypes::Float64Type>().value(0)).map_or(V::Null, V::Number),
            Err(_) => V::Null,
        },
        _ => {
            let opts = arrow::util::display::FormatOptions::default();
            arrow::util::display::ArrayFormatter::try_new(a, &opts).map_or(V::Null, |f| V::String(f.value(i).to_string()))
        }
    }
}

fn rewards_batch(input: &Table, scored: &[Scored], process: &[Option<crate::stepcheck::Verdict>]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        input.column(tr::PROMPT_ID.name).clone(),
        input.column(tr::SAMPLE_IDX.name).clone(),
        input.column(tr::DATA_SOURCE.name).clone(),
        Arc::new(scored.iter().map(|v| v.extracted.as_deref()).collect::<StringArray>()),
        Arc::new(scored.iter().map(|v| Some(v.correct)).collect::<BooleanArray>()),
        Arc::new(scored.iter().map(|v| v.score).collect::<Float32Array>()),
        Arc::new(scored.iter().map(|v| Some(v.reason.as_str())).collect::<StringArray>()),
        Arc::new(scored.iter().map(|v| v.extra.as_deref()).collect::<StringArray>()),
        Arc::new(process.iter().map(|v| v.as_ref().map(|v| v.process.as_str())).collect::<StringArray>()),
        Arc::new(process.iter().map(|v| v.as_ref().map(|v| v.detail.as_str())).collect::<StringArray>()),
    ];
    RecordBatch::try_new(rewards::schema(), columns).map_err(|e| Error::Other(format!("building rewards: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Summary: mean@n, pass@k and the scores per data set

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
    /// The distribution of `score` (what GRPO is given).
    pub score: ScoreSummary,
    /// The step checker's counts, for the embedded task's data sources (absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSummary>,
}

/// How the checked responses of a data set reached their answers ([`crate::stepcheck`]).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ProcessSummary {
    /// Responses the step checker sorted.
    pub checked: usize,
    pub process_correct: usize,
    pub lucky: usize,
    pub wrong: usize,
    /// lucky / (process_correct + lucky): the fraction of correct answers reached by a wrong
    /// or missing step; null without a correct answer.
    pub lucky_fraction: Option<f64>,
}

impl ProcessSummary {
    fn add(&mut self, p: crate::stepcheck::Process) {
        use crate::stepcheck::Process as P;
        self.checked += 1;
        match p {
            P::ProcessCorrect => self.process_correct += 1,
            P::Lucky => self.lucky += 1,
            P::Wrong => self.wrong += 1,
        }
        let correct = self.process_correct + self.lucky;
        self.lucky_fraction = (correct > 0).then(|| self.lucky as f64 / correct as f64);
    }
}

/// How the scores of a data set are spread.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ScoreSummary {
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// How many scores are exactly 0.
    pub zero: usize,
    /// How many responses got each score, when there are at most [`SCORE_VALUES`] distinct
    /// scores (0/1, -1/0/1, partial credits); empty otherwise.
    pub values: BTreeMap<String, usize>,
}

/// The most distinct scores listed one by one in the summary.
pub const SCORE_VALUES: usize = 10;

impl ScoreSummary {
    fn of(scores: &[f32]) -> ScoreSummary {
        if scores.is_empty() {
            return ScoreSummary::default();
        }
        let n = scores.len() as f64;
        let mean = scores.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = scores.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        let mut counts: BTreeMap<u32, (f32, usize)> = BTreeMap::new();
        for &v in scores {
            // keyed by the bits of the value (-0.0 counted as 0.0)
            counts.entry((v + 0.0).to_bits()).or_insert((v + 0.0, 0)).1 += 1;
        }
        let mut values: Vec<(f32, usize)> = counts.into_values().collect();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        ScoreSummary {
            mean,
            std: var.sqrt(),
            min: scores.iter().fold(f64::INFINITY, |m, &v| m.min(f64::from(v))),
            max: scores.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v))),
            zero: scores.iter().filter(|&&v| v == 0.0).count(),
            values: if values.len() <= SCORE_VALUES { values.into_iter().map(|(v, c)| (v.to_string(), c)).collect() } else { BTreeMap::new() },
        }
    }
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
        let score = t.f32(&rewards::SCORE);
        let process = t.batch.column_by_name(rewards::PROCESS.name).and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok());
        let process = process.as_ref().map(|c| c.as_string::<i32>());
        // data source -> prompt -> (n, c); data source -> reason -> count; data source -> scores
        let mut groups: BTreeMap<&str, BTreeMap<&str, (usize, usize)>> = BTreeMap::new();
        let mut reasons: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
        let mut scores: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        let mut processes: BTreeMap<&str, ProcessSummary> = BTreeMap::new();
        let mut all_processes: Option<ProcessSummary> = None;
        for i in 0..t.num_rows() {
            if let Some(p) = process.filter(|c| c.is_valid(i)).and_then(|c| crate::stepcheck::Process::parse(c.value(i))) {
                processes.entry(ds.value(i)).or_default().add(p);
                all_processes.get_or_insert_with(Default::default).add(p);
            }
            let g = groups.entry(ds.value(i)).or_default().entry(pid.value(i)).or_default();
            g.0 += 1;
            g.1 += correct.value(i) as usize;
            *reasons.entry(ds.value(i)).or_default().entry(reason.value(i).to_string()).or_default() += 1;
            scores.entry(ds.value(i)).or_default().push(score.value(i));
        }
        let summarise = |prompts: Vec<(usize, usize)>, reasons: BTreeMap<String, usize>, scores: &[f32]| {
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
                score: ScoreSummary::of(scores),
                process: None,
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
            let summary = SourceSummary { process: processes.remove(source), ..summarise(prompts, r, &scores[source]) };
            data_sources.insert(source.to_string(), summary);
        }
        let all_scores = score.values().to_vec();
        let overall = SourceSummary { process: all_processes, ..summarise(all_prompts, all_reasons, &all_scores) };
        Summary { overall, data_sources }
    }

    /// The data sources whose every response scored 0 ("the reward stays at 0"), each with its
    /// reasons, most frequent first.
    pub fn all_zero(&self) -> Vec<(String, String)> {
        self.data_sources
            .iter()
            .filter(|(_, v)| v.responses > 0 && v.score.zero == v.responses)
            .map(|(k, v)| (k.clone(), reasons_line(&v.reasons)))
            .collect()
    }

    /// A small aligned table: one line per data source, then the overall line; the scores'
    /// mean, minimum and maximum; then the reasons of each data source.
    pub fn table(&self) -> String {
        let ks: Vec<String> = self.overall.pass_at.keys().cloned().collect();
        let mut ks_sorted = ks.clone();
        ks_sorted.sort_by_key(|k| k.trim_start_matches("pass@").parse::<usize>().unwrap_or(0));
        let width = self.data_sources.keys().map(|k| k.len()).max().unwrap_or(7).max(7);
        let mut s = format!("{:<width$} {:>8} {:>9} {:>8}", "data_source", "prompts", "responses", "accuracy");
        for k in &ks_sorted {
            s += &format!(" {k:>8}");
        }
        s += &format!(" {:>10} {:>9} {:>9}\n", "score_mean", "score_min", "score_max");
        let line = |name: &str, v: &SourceSummary| {
            let mut l = format!("{name:<width$} {:>8} {:>9} {:>7.2}%", v.prompts, v.responses, 100.0 * v.accuracy);
            for k in &ks_sorted {
                match v.pass_at.get(k) {
                    Some(p) => l += &format!(" {:>7.2}%", 100.0 * p),
                    None => l += &format!(" {:>8}", "-"),
                }
            }
            l += &format!(" {:>10.3} {:>9.3} {:>9.3}\n", v.score.mean, v.score.min, v.score.max);
            l
        };
        for (name, v) in &self.data_sources {
            s += &line(name, v);
        }
        s += &line("overall", &self.overall);
        for (name, v) in &self.data_sources {
            s += &format!("reasons {name:<width$} {}\n", reasons_line(&v.reasons));
        }
        for (name, v) in &self.data_sources {
            if let Some(p) = &v.process {
                s += &format!(
                    "steps   {name:<width$} {} process-correct, {} lucky ({} of the correct answers), {} wrong\n",
                    p.process_correct,
                    p.lucky,
                    p.lucky_fraction.map_or("-".into(), |f| format!("{:.1}%", 100.0 * f)),
                    p.wrong
                );
            }
        }
        s
    }
}

/// `mismatch 12, no_boxed 3`: most frequent first.
fn reasons_line(reasons: &BTreeMap<String, usize>) -> String {
    let mut r: Vec<(&String, &usize)> = reasons.iter().collect();
    r.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    r.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}
