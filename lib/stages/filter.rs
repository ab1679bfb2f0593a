//! clipo-filter: DAPO's dynamic sampling (verl `algorithm.filter_groups`) between verify and
//! the update: keep the groups whose verifier metric varies, refill from further rounds of
//! sampling, merge.
//!
//! Rounds 0, 1, ... of one RL step (`clipo-rollout --round r`, each verified) are read in order;
//! a group (the G responses of one prompt) is informative when its metric (`correct`, verl's
//! `acc`, or `score`) is not the same for every member; informative groups are kept in round
//! order until `keep` of them (the step's prompts, verl's `train_batch_size`) are kept, the
//! rest dropped, as verl truncates the batch. The merged trajectories carry a `round` column
//! (which round each row came from); the merged rewards are stamped with the merged
//! trajectories' SHA-256, so embed and update check that they belong together.
//! `enough` says whether `keep` groups were found: scripts/dynamic_sampling.sh samples another
//! round while it is false and rounds remain (verl's `max_num_gen_batches`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, Result};
use crate::schema::{rewards as rw, trajectories as tr};
use crate::table::{check_lineage, file_sha256, read_table, up_to_date, Provenance, Table, TableWriter};

const STAGE: &str = "clipo-filter";

/// The metric whose spread makes a group informative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// The verifier's label (verl's `acc`, the default).
    Correct,
    /// The verifier's score.
    Score,
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "correct" | "acc" => Ok(Self::Correct),
            "score" => Ok(Self::Score),
            _ => Err(format!("unknown metric `{s}` (correct, score)")),
        }
    }
}

/// The checked configuration of one clipo-filter run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilterConfig {
    /// (trajectories, rewards) of rounds 0, 1, ...
    pub rounds: Vec<(PathBuf, PathBuf)>,
    /// Groups to keep (the step's prompts).
    pub keep: usize,
    pub metric: Metric,
    pub out_trajectories: PathBuf,
    pub out_rewards: PathBuf,
    pub force: bool,
}

/// What a run found (printed as one JSON line; the loop collects it into the step's metrics).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FilterSummary {
    pub rounds: usize,
    /// Groups sampled over all rounds.
    pub groups: usize,
    /// Groups whose metric varies.
    pub informative: usize,
    /// Groups kept (at most `keep`).
    pub kept: usize,
    /// Kept groups per round.
    pub kept_by_round: Vec<usize>,
    pub enough: bool,
    #[serde(skip_deserializing)]
    pub up_to_date: bool,
}

/// Key of the summary in the merged trajectories' metadata (an up-to-date rerun reprints it).
const SUMMARY_KEY: &str = "clipo.filter_summary";

/// One round: its tables and, for each of its groups in order, (informative, trajectory rows,
/// reward rows).
struct Round {
    traj: Table,
    rewards: Table,
    groups: Vec<(bool, Vec<u32>, Vec<u32>)>,
}

fn read_round(traj_path: &Path, rewards_path: &Path, metric: Metric) -> Result<Round> {
    let traj = read_table(traj_path, &tr::COLUMNS, &[])?;
    // Every rewards column, in the schema's order (`extra` as nulls in older tables).
    let rewards = crate::stages::verify::read_rewards(rewards_path)?;
    check_lineage(rewards_path, &rewards.metadata, "--trajectories", traj_path, &file_sha256(traj_path)?, "clipo-verify")?;
    let keys = traj.row_keys(&tr::PROMPT_ID, &tr::SAMPLE_IDX);
    traj.index_keys(&keys)?;
    let r_index = rewards.index_keys(&rewards.row_keys(&rw::PROMPT_ID, &rw::SAMPLE_IDX))?;
    if r_index.len() != keys.len() {
        return Err(Error::Join { detail: format!("{} has {} rows, {} has {}", rewards_path.display(), r_index.len(), traj_path.display(), keys.len()) });
    }
    let (correct, score) = (rewards.bool(&rw::CORRECT), rewards.f32(&rw::SCORE));
    // Groups in the order their prompts first appear.
    let mut order: Vec<String> = Vec::new();
    let mut members: std::collections::HashMap<String, (Vec<u32>, Vec<u32>)> = Default::default();
    for (i, key) in keys.iter().enumerate() {
        let ri = *r_index.get(key).ok_or_else(|| Error::Join {
            detail: format!("{}: row {i} ({}, {}) has no row in {}", traj_path.display(), key.0, key.1, rewards_path.display()),
        })?;
        let m = members.entry(key.0.clone()).or_insert_with(|| {
            order.push(key.0.clone());
            Default::default()
        });
        m.0.push(i as u32);
        m.1.push(ri as u32);
    }
    let value = |ri: u32| -> f32 {
        match metric {
            Metric::Correct => f32::from(u8::from(correct.value(ri as usize))),
            Metric::Score => score.value(ri as usize),
        }
    };
    let groups = order
        .into_iter()
        .map(|p| {
            let (t, r) = members.remove(&p).expect("listed");
            let informative = r.iter().any(|&ri| value(ri) != value(r[0]));
            (informative, t, r)
        })
        .collect();
    Ok(Round { traj, rewards, groups })
}

fn take_rows(batch: &RecordBatch, rows: &[u32], path: &Path) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.to_vec());
    let cols: Vec<ArrayRef> = batch.columns().iter().map(|c| take(c.as_ref(), &idx, None)).collect::<std::result::Result<_, _>>().map_err(|e| Error::parquet(path, e))?;
    RecordBatch::try_new(batch.schema(), cols).map_err(|e| Error::parquet(path, e))
}

pub fn run(cfg: &FilterConfig) -> Result<FilterSummary> {
    let inputs: Vec<&Path> = cfg.rounds.iter().flat_map(|(t, r)| [t.as_path(), r.as_path()]).collect();
    // The rollout's settings (temperature, max_new_tokens) travel with the merged file: the
    // update reads them from there.
    let rollout_cfg: serde_json::Value = crate::table::file_metadata(&cfg.rounds[0].0)?
        .get(crate::schema::meta::CONFIG)
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    let config = serde_json::json!({ "keep": cfg.keep, "metric": cfg.metric, "rounds": cfg.rounds.len(), "rollout": rollout_cfg });
    let prov = Provenance::new(tr::TABLE, STAGE, config.clone(), &inputs)?;
    let _locks = (crate::lock::OutputLock::acquire(&cfg.out_trajectories)?, crate::lock::OutputLock::acquire(&cfg.out_rewards)?);
    if !cfg.force && up_to_date(&cfg.out_trajectories, &prov) && cfg.out_rewards.is_file() {
        let rprov = Provenance::new(rw::TABLE, STAGE, config.clone(), &[cfg.out_trajectories.as_path()])?;
        if up_to_date(&cfg.out_rewards, &rprov) {
            let meta = crate::table::file_metadata(&cfg.out_trajectories)?;
            if let Some(s) = meta.get(SUMMARY_KEY).and_then(|s| serde_json::from_str::<FilterSummary>(s).ok()) {
                return Ok(FilterSummary { up_to_date: true, ..s });
            }
        }
    }

    let rounds: Vec<Round> = cfg.rounds.iter().map(|(t, r)| read_round(t, r, cfg.metric)).collect::<Result<_>>()?;
    let mut summary = FilterSummary { rounds: rounds.len(), ..Default::default() };
    let (mut traj_parts, mut reward_parts, mut round_of_row) = (vec![], vec![], vec![]);
    for (k, round) in rounds.iter().enumerate() {
        summary.groups += round.groups.len();
        summary.informative += round.groups.iter().filter(|g| g.0).count();
        let mut kept_here = 0;
        let (mut t_rows, mut r_rows) = (vec![], vec![]);
        for (informative, t, r) in &round.groups {
            if *informative && summary.kept < cfg.keep {
                summary.kept += 1;
                kept_here += 1;
                t_rows.extend_from_slice(t);
                r_rows.extend_from_slice(r);
            }
        }
        summary.kept_by_round.push(kept_here);
        round_of_row.extend(std::iter::repeat_n(k as u32, t_rows.len()));
        traj_parts.push(take_rows(&round.traj.batch, &t_rows, &round.traj.path)?);
        reward_parts.push(take_rows(&round.rewards.batch, &r_rows, &round.rewards.path)?);
    }
    summary.enough = summary.kept >= cfg.keep;

    // The merged trajectories: every round's kept rows, then the `round` column.
    let hidden_dim = rounds[0].traj.vectors(&tr::HIDDEN).value_length() as usize;
    let base = tr::schema(hidden_dim);
    let traj_parts: Vec<RecordBatch> = traj_parts
        .into_iter()
        .zip(&rounds)
        .map(|(b, r)| b.with_schema(base.clone()).map_err(|e| Error::parquet(&r.traj.path, format!("{e} (rounds must share the hidden width)"))))
        .collect::<Result<_>>()?;
    let merged = concat_batches(&base, &traj_parts).map_err(|e| Error::Other(format!("merging rounds: {e}")))?;
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("round", DataType::UInt32, false));
    let schema = Arc::new(Schema::new(fields));
    let mut cols = merged.columns().to_vec();
    cols.push(Arc::new(UInt32Array::from(round_of_row)));
    let merged = RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::Other(format!("merging rounds: {e}")))?;
    let extra = [(SUMMARY_KEY.to_string(), serde_json::to_string(&summary).expect("json"))];
    let mut w = TableWriter::create_with(&cfg.out_trajectories, schema, &prov, &extra)?;
    w.write(&merged)?;
    w.finish()?;

    // The merged rewards, stamped with the merged trajectories.
    let rschema = rw::schema();
    let reward_parts: Vec<RecordBatch> = reward_parts.into_iter().map(|b| b.with_schema(rschema.clone()).map_err(|e| Error::Other(e.to_string()))).collect::<Result<_>>()?;
    let rmerged = concat_batches(&rschema, &reward_parts).map_err(|e| Error::Other(format!("merging rounds: {e}")))?;
    let rprov = Provenance::new(rw::TABLE, STAGE, config, &[cfg.out_trajectories.as_path()])?;
    let mut w = TableWriter::create(&cfg.out_rewards, rschema, &rprov)?;
    w.write(&rmerged)?;
    w.finish()?;
    Ok(summary)
}
