//! Auditing one step's rollouts offline: every response of chosen prompts with its verifier
//! score, contrastive reward, advantage, the scorer's extracted answer and reason and an excerpt, and a flag on correct
//! responses whose contrastive reward is far below their group's.
//!
//! Why: CLIPO's contrastive reward is lower for a correct response whose representation sits
//! away from the group's other correct responses (REFERENCE.md §4). A correct answer reached by
//! a different, unsupported path (a lucky guess, an answer copied from the prompt, a wrong
//! derivation that lands on the right number) is the case it targets, so these are the
//! responses worth reading.
//!
//! **The flag rule** (leave one out): a correct response `i` of a group with at least two
//! correct responses that have a contrastive reward is flagged when
//! `r_i < mean(others) - max(FLAG_MIN_GAP, FLAG_STD_MULT x sd(others))`, where `others` are the
//! contrastive rewards of the group's *other* correct responses and `sd` is their population
//! standard deviation. Leaving `i` out keeps an outlier from widening its own threshold: with
//! the response included, a group of n correct responses can never show one more than
//! sqrt(n - 1) standard deviations below the mean, so with two or three correct responses
//! nothing could be flagged at 1.5 sd.
//!
//! **Against the step checker.** On the embedded task the truth is known: the step checker
//! ([`crate::stepcheck`]) sorts each correct response into process-correct or lucky (a wrong or
//! missing step), so the flag's precision (flagged responses that are lucky) and recall (lucky
//! responses that are flagged) are measured ([`FlagCheck`]), per step here and over a whole run
//! in the report.
//!
//! Inputs in `RUN_DIR/step-NNNNNN/`: `trajectories.parquet` and `rewards.parquet` (required),
//! `embeddings.parquet` (contrastive reward; absent for plain GRPO, then the contrastive reward
//! is taken from the advantages table if it has one, and nothing is flagged without either),
//! `policy/advantages.parquet` or `advantages.parquet` (advantage; optional).

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use arrow::array::Array;

use crate::error::{Error, Result};
use crate::schema::{embeddings as emb, rewards as rw, trajectories as tr, Column, Kind};
use crate::stepcheck::{Process, Verdict};
use crate::table::read_table;

use super::step_dir;

/// A correct response is flagged only if at least this far below the others' mean.
pub const FLAG_MIN_GAP: f64 = 0.05;
/// ... and further below it than this many of the others' standard deviations. Three, not
/// the 1.5 an inclusive rule would use: with one response left out, the others' spread in a
/// small group is an underestimate, and at 1.5 (or 2) the lowest of evenly spread rewards
/// 0.1, 0.2, 0.3, 0.4 would be flagged.
pub const FLAG_STD_MULT: f64 = 3.0;
/// Groups listed when no prompt is named and `limit` is not given.
pub const DEFAULT_LIMIT: usize = 5;

const ADVANTAGE: Column = Column { name: "advantage", kind: Kind::Float32, nullable: false };
const ADV_CONTRASTIVE: Column = Column { name: "contrastive_reward", kind: Kind::Float32, nullable: true };

/// One response as the audit shows it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub prompt_id: String,
    pub sample_idx: u32,
    pub data_source: String,
    pub score: f32,
    pub correct: bool,
    pub extracted: Option<String>,
    /// Why the scorer gave its score (absent from tables written by other tools).
    pub reason: Option<String>,
    pub contrastive_reward: Option<f32>,
    pub advantage: Option<f32>,
    pub response_text: String,
    pub flagged: bool,
    /// The step checker's verdict (embedded task only).
    pub steps: Option<Verdict>,
}

/// A prompt's group of responses, in `sample_idx` order.
#[derive(Debug, Clone)]
pub struct Group {
    pub prompt_id: String,
    pub rows: Vec<AuditRow>,
}

impl Group {
    pub fn correct(&self) -> usize {
        self.rows.iter().filter(|r| r.correct).count()
    }
}

/// The leave-one-out flag against the step checker, over the correct responses that have both a
/// contrastive reward and a verdict (the ones the flag could mark and the checker could sort).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagCheck {
    /// Steps that contributed (a contrastive reward and checked responses).
    pub steps: usize,
    pub correct: usize,
    /// Of those, lucky by the step checker.
    pub lucky: usize,
    /// Of those, flagged.
    pub flagged: usize,
    /// Flagged and lucky.
    pub flagged_lucky: usize,
}

impl FlagCheck {
    /// Flagged responses that are lucky; None with nothing flagged.
    pub fn precision(&self) -> Option<f64> {
        (self.flagged > 0).then(|| self.flagged_lucky as f64 / self.flagged as f64)
    }

    /// Lucky responses that are flagged; None without a lucky one.
    pub fn recall(&self) -> Option<f64> {
        (self.lucky > 0).then(|| self.flagged_lucky as f64 / self.lucky as f64)
    }

    /// The fraction of lucky responses: the precision of flags drawn at random.
    pub fn base_rate(&self) -> Option<f64> {
        (self.correct > 0).then(|| self.lucky as f64 / self.correct as f64)
    }

    /// Add one step's groups (nothing when the step has no contrastive reward, or only zeros:
    /// a plain GRPO run's advantages table holds 0 for every response, and the flag cannot fire).
    pub fn add(&mut self, a: &StepAudit) {
        let rows = || a.groups.iter().flat_map(|g| &g.rows);
        if !rows().any(|r| r.contrastive_reward.is_some_and(|c| c != 0.0)) {
            return;
        }
        let mut counted = false;
        for r in rows() {
            let Some(v) = r.steps.as_ref().filter(|_| r.correct && r.contrastive_reward.is_some()) else { continue };
            counted = true;
            let lucky = v.process == Process::Lucky;
            self.correct += 1;
            self.lucky += usize::from(lucky);
            self.flagged += usize::from(r.flagged);
            self.flagged_lucky += usize::from(r.flagged && lucky);
        }
        self.steps += usize::from(counted);
    }

    /// `precision 0.40 (2 of 5 flagged are lucky; 30.0% of the 20 correct responses are), recall 0.33 (2 of 6 lucky flagged)`.
    pub fn describe(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        format!(
            "precision {} ({} of {} flagged are lucky; {} of the {} correct responses are), recall {} ({} of {} lucky flagged)",
            f(self.precision()),
            self.flagged_lucky,
            self.flagged,
            self.base_rate().map_or("-".into(), |b| format!("{:.1}%", 100.0 * b)),
            self.correct,
            f(self.recall()),
            self.flagged_lucky,
            self.lucky
        )
    }
}

/// The indices (into `rewards`) of the flagged responses, by the rule in the module docs.
/// `rewards[i]` is `(correct, contrastive reward)`.
pub fn flag_low_contrastive(rewards: &[(bool, Option<f32>)]) -> Vec<usize> {
    let correct: Vec<(usize, f64)> =
        rewards.iter().enumerate().filter_map(|(i, &(c, r))| Some((i, f64::from(r?))).filter(|_| c)).collect();
    if correct.len() < 2 {
        return vec![];
    }
    correct
        .iter()
        .filter(|&&(i, r)| {
            let others: Vec<f64> = correct.iter().filter(|(j, _)| *j != i).map(|(_, r)| *r).collect();
            let (mean, sd) = mean_sd(&others);
            r < mean - FLAG_MIN_GAP.max(FLAG_STD_MULT * sd)
        })
        .map(|&(i, _)| i)
        .collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Where a step's files are, which optional ones exist, and every group.
pub struct StepAudit {
    pub dir: PathBuf,
    pub groups: Vec<Group>,
    /// The file the contrastive rewards came from, if any.
    pub contrastive_from: Option<PathBuf>,
    /// The file the advantages came from, if any.
    pub advantages_from: Option<PathBuf>,
}

/// Read and join one step's tables into groups, with flags set.
pub fn load_step(run_dir: &Path, step: u64) -> Result<StepAudit> {
    // The step's directory by its number, so `step-3/` is found as well as `step-000003/`.
    let dirs = super::step_dirs(run_dir)?;
    let Some((_, dir)) = dirs.iter().find(|(s, _)| *s == step) else {
        let have: Vec<u64> = dirs.iter().map(|(s, _)| *s).collect();
        return Err(Error::Config(format!(
            "--step {step}: {} has no {} (steps present: {})",
            run_dir.display(),
            step_dir(Path::new(""), step).display(),
            super::step_ranges(&have)
        )));
    };
    let dir = dir.clone();
    let rewards_path = dir.join("rewards.parquet");
    let r = read_table(&rewards_path, &[rw::PROMPT_ID, rw::SAMPLE_IDX, rw::DATA_SOURCE, rw::EXTRACTED, rw::CORRECT, rw::SCORE], &[rw::REASON.name])?;
    let reason = r.batch.column_by_name(rw::REASON.name).and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok());
    let reason = reason.as_ref().map(|c| c.as_any().downcast_ref::<arrow::array::StringArray>().expect("cast to utf8"));
    let traj_path = dir.join("trajectories.parquet");
    let t = read_table(&traj_path, &[tr::PROMPT_ID, tr::SAMPLE_IDX, tr::RESPONSE_TEXT], &[tr::PROMPT_TEXT.name])?;
    // (response, prompt text when the table has one), by (prompt_id, sample_idx).
    let mut text: HashMap<(&str, u32), (&str, Option<&str>)> = HashMap::new();
    let (tp, ts, tt) = (t.utf8(&tr::PROMPT_ID), t.u32(&tr::SAMPLE_IDX), t.utf8(&tr::RESPONSE_TEXT));
    let prompt_text = t.batch.column_by_name(tr::PROMPT_TEXT.name).and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok());
    let prompt_text = prompt_text.as_ref().map(|c| c.as_any().downcast_ref::<arrow::array::StringArray>().expect("cast to utf8"));
    for i in 0..t.num_rows() {
        let q = prompt_text.filter(|c| c.is_valid(i)).map(|c| c.value(i));
        text.insert((tp.value(i), ts.value(i)), (tt.value(i), q));
    }

    // Contrastive reward: embeddings first, else the advantages table's copy.
    let mut contrastive: HashMap<(String, u32), f32> = HashMap::new();
    let mut contrastive_from = None;
    let emb_path = dir.join("embeddings.parquet");
    if emb_path.is_file() {
        let e = read_table(&emb_path, &[emb::PROMPT_ID, emb::SAMPLE_IDX, emb::CONTRASTIVE_REWARD], &[])?;
        let (ep, es, er) = (e.utf8(&emb::PROMPT_ID), e.u32(&emb::SAMPLE_IDX), e.f32(&emb::CONTRASTIVE_REWARD));
        for i in 0..e.num_rows() {
            contrastive.insert((ep.value(i).to_string(), es.value(i)), er.value(i));
        }
        contrastive_from = Some(emb_path);
    }
    let mut advantage: HashMap<(String, u32), f32> = HashMap::new();
    let mut advantages_from = None;
    let adv_path = [dir.join("policy").join("advantages.parquet"), dir.join("advantages.parquet")].into_iter().find(|p| p.is_file());
    if let Some(adv_path) = adv_path {
        let a = read_table(&adv_path, &[rw::PROMPT_ID, rw::SAMPLE_IDX, ADVANTAGE], &[ADV_CONTRASTIVE.name])?;
        let (ap, asx, aa) = (a.utf8(&rw::PROMPT_ID), a.u32(&rw::SAMPLE_IDX), a.f32(&ADVANTAGE));
        let acr = a.batch.column_by_name(ADV_CONTRASTIVE.name).and_then(|c| {
            arrow::compute::cast(c, &arrow::datatypes::DataType::Float32).ok()
        });
        let take_cr = contrastive_from.is_none() && acr.is_some();
        for i in 0..a.num_rows() {
            let key = (ap.value(i).to_string(), asx.value(i));
            if take_cr {
                let c = acr.as_ref().expect("checked").as_any().downcast_ref::<arrow::array::Float32Array>().expect("cast to f32");
                if c.is_valid(i) {
                    contrastive.insert(key.clone(), c.value(i));
                }
            }
            advantage.insert(key, aa.value(i));
        }
        if take_cr {
            contrastive_from = Some(adv_path.clone());
        }
        advantages_from = Some(adv_path);
    }

    let (rp, rs, rd, re, rc, rsc) = (
        r.utf8(&rw::PROMPT_ID),
        r.u32(&rw::SAMPLE_IDX),
        r.utf8(&rw::DATA_SOURCE),
        r.utf8(&rw::EXTRACTED),
        r.bool(&rw::CORRECT),
        r.f32(&rw::SCORE),
    );
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for i in 0..r.num_rows() {
        let (pid, idx) = (rp.value(i), rs.value(i));
        let Some(&(response, question)) = text.get(&(pid, idx)) else {
            return Err(Error::Join {
                detail: format!(
                    "{}: row {i} (prompt_id {pid}, sample_idx {idx}) has no matching row in {}",
                    rewards_path.display(),
                    traj_path.display()
                ),
            });
        };
        let key = (pid.to_string(), idx);
        let steps = question.and_then(|q| crate::stepcheck::check_prompt(rd.value(i), q, response, rc.value(i)));
        let row = AuditRow {
            prompt_id: pid.to_string(),
            sample_idx: idx,
            data_source: rd.value(i).to_string(),
            score: rsc.value(i),
            correct: rc.value(i),
            extracted: re.is_valid(i).then(|| re.value(i).to_string()),
            reason: reason.filter(|c| c.is_valid(i)).map(|c| c.value(i).to_string()),
            contrastive_reward: contrastive.get(&key).copied(),
            advantage: advantage.get(&key).copied(),
            response_text: response.to_string(),
            flagged: false,
            steps,
        };
        let g = *index.entry(pid.to_string()).or_insert_with(|| {
            groups.push(Group { prompt_id: pid.to_string(), rows: vec![] });
            groups.len() - 1
        });
        groups[g].rows.push(row);
    }
    for g in &mut groups {
        g.rows.sort_by_key(|r| r.sample_idx);
        let rewards: Vec<(bool, Option<f32>)> = g.rows.iter().map(|r| (r.correct, r.contrastive_reward)).collect();
        for i in flag_low_contrastive(&rewards) {
            g.rows[i].flagged = true;
        }
    }
    Ok(StepAudit { dir, groups, contrastive_from, advantages_from })
}

/// The response on one line: whitespace collapsed; when longer than 80 characters, its start
/// and its end (where the boxed answer usually is) around an ellipsis.
pub fn excerpt(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = one.chars().collect();
    if chars.len() <= 80 {
        return one;
    }
    let head: String = chars[..52].iter().collect();
    let tail: String = chars[chars.len() - 25..].iter().collect();
    format!("{} … {}", head.trim_end(), tail.trim_start())
}

fn short(s: &str, n: usize) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() <= n {
        s
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// The step checker's verdict in the audit's `steps` column.
fn steps_cell(p: Process) -> &'static str {
    match p {
        Process::ProcessCorrect => "ok",
        Process::Lucky => "lucky",
        Process::Wrong => "wrong",
    }
}

fn opt(v: Option<f32>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The audit of `step` as text: a header (counts, the sources, the flag rule and every flagged
/// response of the step), then one block per chosen prompt listing all its responses.
///
/// `prompts`: the prompt ids to list (an unknown id is an error); `None` lists the first `limit`
/// groups (file order) with at least two correct responses, or the first `limit` groups when
/// no group has two.
pub fn audit_samples(dir: &Path, step: u64, prompts: Option<&[String]>, limit: usize) -> Result<String> {
    let a = load_step(dir, step)?;
    let responses: usize = a.groups.iter().map(|g| g.rows.len()).sum();
    let correct: usize = a.groups.iter().map(Group::correct).sum();
    let flagged: Vec<&AuditRow> = a.groups.iter().flat_map(|g| g.rows.iter().filter(|r| r.flagged)).collect();
    let rel = |p: &Option<PathBuf>| {
        p.as_ref().map(|p| p.strip_prefix(&a.dir).unwrap_or(p).display().to_string())
    };

    let mut o = String::new();
    let _ = writeln!(
        o,
        "step {step} ({}): {} groups, {responses} responses, {correct} correct",
        a.dir.display(),
        a.groups.len()
    );
    let _ = writeln!(
        o,
        "contrastive reward: {}; advantage: {}",
        rel(&a.contrastive_from).unwrap_or_else(|| "none (no embeddings.parquet: plain GRPO?)".into()),
        rel(&a.advantages_from).unwrap_or_else(|| "none (no advantages.parquet)".into())
    );
    let _ = writeln!(
        o,
        "flag LOW: a correct response whose contrastive reward is more than max({FLAG_MIN_GAP}, {FLAG_STD_MULT} x sd) below \
         the mean of the other correct responses of its group (candidates for lucky or copied answers)"
    );
    let shown: Vec<String> = flagged.iter().take(20).map(|r| format!("{} #{}", r.prompt_id, r.sample_idx)).collect();
    let _ = writeln!(
        o,
        "flagged in this step: {} of {correct} correct responses{}{}",
        flagged.len(),
        if shown.is_empty() { String::new() } else { format!(": {}", shown.join(", ")) },
        if flagged.len() > shown.len() { format!(" and {} more", flagged.len() - shown.len()) } else { String::new() }
    );
    let checked = a.groups.iter().flat_map(|g| &g.rows).filter(|r| r.correct && r.steps.is_some()).count();
    if checked > 0 {
        let lucky = a.groups.iter().flat_map(|g| &g.rows).filter(|r| r.steps.as_ref().is_some_and(|v| v.process == Process::Lucky)).count();
        let _ = writeln!(o, "step checker: {lucky} of {checked} checked correct responses are lucky (a wrong or missing step)");
        let mut check = FlagCheck::default();
        check.add(&a);
        if check.correct > 0 {
            let _ = writeln!(o, "flag LOW against the step checker: {}", check.describe());
        }
    }

    let chosen: Vec<&Group> = match prompts {
        Some(ids) => ids
            .iter()
            .map(|id| {
                a.groups.iter().find(|g| &g.prompt_id == id).ok_or_else(|| {
                    Error::Config(format!("prompt `{id}` has no responses at step {step} ({})", a.dir.join("rewards.parquet").display()))
                })
            })
            .collect::<Result<_>>()?,
        None => {
            let two: Vec<&Group> = a.groups.iter().filter(|g| g.correct() >= 2).take(limit).collect();
            if two.is_empty() {
                let _ = writeln!(o, "no group has 2 or more correct responses; listing the first {limit}");
                a.groups.iter().take(limit).collect()
            } else {
                two
            }
        }
    };

    for g in chosen {
        let crs: Vec<f64> = g.rows.iter().filter(|r| r.correct).filter_map(|r| r.contrastive_reward.map(f64::from)).collect();
        let (m, sd) = mean_sd(&crs);
        let _ = writeln!(
            o,
            "\nprompt {} ({}): {} of {} correct{}",
            g.prompt_id,
            g.rows.first().map_or("", |r| r.data_source.as_str()),
            g.correct(),
            g.rows.len(),
            if crs.is_empty() { String::new() } else { format!("; contrastive reward of correct responses: mean {m:.3}, sd {sd:.3}") }
        );
        let cells: Vec<[String; 8]> = g
            .rows
            .iter()
            .map(|r| {
                [
                    r.sample_idx.to_string(),
                    format!("{:.2}", r.score),
                    opt(r.contrastive_reward, 3),
                    opt(r.advantage, 3),
                    r.extracted.as_deref().map_or("-".into(), |e| short(e, 24)),
                    r.reason.as_deref().map_or("-".into(), |e| short(e, 24)),
                    r.steps.as_ref().map_or("-".into(), |v| steps_cell(v.process).into()),
                    if r.flagged { "LOW".into() } else { String::new() },
                ]
            })
            .collect();
        let headers = ["idx", "score", "c_reward", "advantage", "extracted", "reason", "steps", "flag"];
        let widths: Vec<usize> = (0..8)
            .map(|c| cells.iter().map(|r| r[c].chars().count()).chain([headers[c].len()]).max().unwrap_or(0))
            .collect();
        let line = |items: [&str; 8], tail: &str| -> String {
            let mut s = String::from("  ");
            for (c, item) in items.iter().enumerate() {
                let w = widths[c];
                // Numbers right-aligned, text left-aligned.
                if c < 4 {
                    let _ = write!(s, "{item:>w$}  ");
                } else {
                    let _ = write!(s, "{item:<w$}  ");
                }
            }
            s.push_str(tail);
            s.trim_end().to_string() + "\n"
        };
        o += &line(headers, "response");
        for (r, c) in g.rows.iter().zip(&cells) {
            let mut tail = excerpt(&r.response_text);
            if let Some(v) = r.steps.as_ref().filter(|v| v.process == Process::Lucky) {
                tail += &format!("  [{}]", v.detail);
            }
            o += &line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7]], &tail);
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_outlier_only() {
        let r = |c, v| (c, Some(v));
        // Four correct at 0.30-0.32 and one at 0.05; incorrect rows are never flagged.
        let rows = [r(true, 0.30), r(true, 0.32), r(false, 0.0), r(true, 0.05), r(true, 0.31), r(false, -1.0)];
        assert_eq!(flag_low_contrastive(&rows), vec![3]);
        // Two correct: the lower is flagged when more than 0.05 below the other.
        assert_eq!(flag_low_contrastive(&[r(true, 0.5), r(true, 0.44)]), vec![1]);
        assert_eq!(flag_low_contrastive(&[r(true, 0.5), r(true, 0.46)]), Vec::<usize>::new());
        // Evenly spread rewards: nothing stands out.
        assert_eq!(flag_low_contrastive(&[r(true, 0.1), r(true, 0.2), r(true, 0.3), r(true, 0.4)]), Vec::<usize>::new());
        assert_eq!(flag_low_contrastive(&[r(true, 0.0), r(true, 0.4), r(true, 0.8), r(true, 0.2)]), Vec::<usize>::new());
        // One correct, or no contrastive reward: nothing to compare.
        assert!(flag_low_contrastive(&[r(true, 0.5), r(false, 0.0)]).is_empty());
        assert!(flag_low_contrastive(&[(true, None), (true, None)]).is_empty());
    }

    #[test]
    fn excerpt_keeps_start_and_end_on_one_line() {
        assert_eq!(excerpt("a\n  b\tc"), "a b c");
        let long = format!("start {} the answer is \\boxed{{42}}", "x ".repeat(60));
        let e = excerpt(&long);
        assert!(e.starts_with("start x") && e.ends_with("\\boxed{42}") && e.contains(" … "), "{e}");
        assert!(e.chars().count() <= 81);
    }
}
