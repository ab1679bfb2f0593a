//! clipo-embed: trajectories (with hidden states) + rewards -> embeddings, and one step of the
//! contrastive head (REFERENCE.md §3-4, via [`crate::contrastive::embed_step`]).
//!
//! Joins the two tables on (prompt_id, sample_idx) and refuses rows missing from either side,
//! duplicates, a null `hidden`, a width other than the head's input, and non-finite values. The
//! per-sample losses and rewards come from the forward pass before the head's AdamW step; the
//! stepped head is written to `--head-out` with a JSON sidecar (config, steps, seed, input
//! hashes), so the next RL step continues exactly where this one stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array};

use crate::contrastive::{embed_step, Batch, ContrastiveConfig, ContrastiveHead, HeadSidecar, Hidden};
use crate::error::{Error, Result};
use crate::schema::{embeddings as emb, rewards as rw, trajectories as tr};
use crate::table::{check_lineage, file_sha256, read_table, up_to_date, Provenance, TableWriter};
use crate::trajectories::vectors;

const STAGE: &str = "clipo-embed";

/// The checked configuration of one clipo-embed run.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    pub trajectories: PathBuf,
    pub rewards: PathBuf,
    /// The head to start from; None with `init_head`.
    pub head: Option<PathBuf>,
    /// Create the head from `contrastive.seed` when `head` is absent or does not exist.
    pub init_head: bool,
    pub out: PathBuf,
    pub head_out: PathBuf,
    /// RL step (seeds the InfoNCE draws).
    pub step: u64,
    pub contrastive: ContrastiveConfig,
    pub force: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct EmbedSummary {
    pub rows: usize,
    pub anchors: usize,
    pub stepped: bool,
    pub head_loss: f64,
    pub up_to_date: bool,
    pub metrics: BTreeMap<String, f64>,
}

/// `<head>.json`, the sidecar of a head checkpoint.
pub fn sidecar_path(head: &Path) -> PathBuf {
    let mut n = head.as_os_str().to_owned();
    n.push(".json");
    PathBuf::from(n)
}

pub fn run(cfg: &EmbedConfig) -> Result<EmbedSummary> {
    let traj = read_table(&cfg.trajectories, &[tr::PROMPT_ID, tr::SAMPLE_IDX, tr::HIDDEN], &[])?;
    let rewards = read_table(&cfg.rewards, &[rw::PROMPT_ID, rw::SAMPLE_IDX, rw::CORRECT], &[])?;
    check_lineage(&cfg.rewards, &rewards.metadata, "--trajectories", &cfg.trajectories, &file_sha256(&cfg.trajectories)?, "clipo-verify")?;
    let _locks = (crate::lock::OutputLock::acquire(&cfg.out)?, crate::lock::OutputLock::acquire(&cfg.head_out)?);
    let existing_head = cfg.head.as_ref().filter(|h| h.exists());
    if let Some(h) = existing_head {
        // The head given must be the one the previous RL step left.
        let stamped: Option<u64> = std::fs::read(sidecar_path(h))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("rl_step").and_then(|s| s.as_u64()));
        if let Some(prev) = stamped.filter(|&p| cfg.step > 0 && p + 1 != cfg.step) {
            return Err(Error::Config(format!(
                "--head {} is the head of step {prev}, not of step {} (the step before --step {}): pass the previous step's head.safetensors",
                h.display(),
                cfg.step - 1,
                cfg.step
            )));
        }
    }
    if existing_head.is_none() && !cfg.init_head {
        return Err(Error::Config(match &cfg.head {
            Some(h) => format!("--head {}: no such file (pass --init-head to create a head from --seed)", h.display()),
            None => "no --head given: pass --head FILE or --init-head".into(),
        }));
    }
    let mut inputs: Vec<&Path> = vec![&cfg.trajectories, &cfg.rewards];
    if let Some(h) = existing_head {
        inputs.push(h);
    }
    let config_json = serde_json::json!({ "contrastive": cfg.contrastive, "step": cfg.step });
    let prov = Provenance::new(emb::TABLE, STAGE, config_json, &inputs)?;
    let sidecar_fp = |p: &Path| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(sidecar_path(p)).ok()?).ok()?;
        v.get("fingerprint")?.as_str().map(str::to_string)
    };
    // Up to date means whole too: the head's bytes must be the ones the sidecar recorded.
    let head_whole = |p: &Path| -> bool {
        let v: Option<serde_json::Value> = std::fs::read(sidecar_path(p)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let recorded = v.as_ref().and_then(|v| v.get("head_sha256")).and_then(|s| s.as_str()).map(str::to_string);
        recorded.is_some() && recorded == file_sha256(p).ok()
    };
    if !cfg.force && up_to_date(&cfg.out, &prov) && sidecar_fp(&cfg.head_out).as_deref() == Some(prov.fingerprint().as_str()) && head_whole(&cfg.head_out) {
        // The step's metrics again, from the sidecar (a loop reprints its step line from them).
        let side: Option<serde_json::Value> = std::fs::read(sidecar_path(&cfg.head_out)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let metrics: BTreeMap<String, f64> =
            side.as_ref().and_then(|v| v.get("metrics")).and_then(|m| serde_json::from_value(m.clone()).ok()).unwrap_or_default();
        return Ok(EmbedSummary { rows: 0, anchors: 0, stepped: false, head_loss: 0.0, up_to_date: true, metrics });
    }

    // Join on (prompt_id, sample_idx).
    let n = traj.num_rows();
    if n == 0 {
        return Err(Error::Empty { path: cfg.trajectories.clone(), detail: "no trajectories".into() });
    }
    let (tp, ts) = (traj.utf8(&tr::PROMPT_ID), traj.u32(&tr::SAMPLE_IDX));
    let rc = rewards.bool(&rw::CORRECT);
    let keys = traj.row_keys(&tr::PROMPT_ID, &tr::SAMPLE_IDX);
    traj.index_keys(&keys)?;
    let r_index = rewards.index_keys(&rewards.row_keys(&rw::PROMPT_ID, &rw::SAMPLE_IDX))?;
    if r_index.len() != n {
        return Err(Error::Join { detail: format!("{} has {} rows but {} has {n}", cfg.rewards.display(), r_index.len(), cfg.trajectories.display()) });
    }
    let hidden_col = traj.vectors(&tr::HIDDEN);
    let d = hidden_col.value_length() as usize;
    if d == 0 || hidden_col.null_count() > 0 {
        let row = (0..n).find(|&i| hidden_col.is_null(i)).unwrap_or(0);
        return Err(Error::bad_value(&cfg.trajectories, row, "hidden", "no hidden state: sample with clipo-rollout --hidden official (or mean)"));
    }
    let hidden_values = hidden_col.values().as_any().downcast_ref::<Float32Array>().expect("normalised to f32").values();
    let mut correct = Vec::with_capacity(n);
    let mut group = Vec::with_capacity(n);
    let mut group_of: HashMap<&str, u32> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let ri = *r_index.get(key).ok_or_else(|| Error::Join {
            detail: format!("{}: row {i} ({}, {}) has no row in {}", cfg.trajectories.display(), key.0, key.1, cfg.rewards.display()),
        })?;
        correct.push(rc.value(ri));
        let next = group_of.len() as u32;
        group.push(*group_of.entry(tp.value(i)).or_insert(next));
    }
    let prompt_ids: Vec<&str> = (0..n).map(|i| tp.value(i)).collect();
    let sample_idx: Vec<u32> = ts.values().to_vec();

    let c = &cfg.contrastive;
    let mut head = match existing_head {
        Some(h) => ContrastiveHead::load(h).map_err(|e| Error::Other(format!("{}: {e}", h.display())))?,
        None => ContrastiveHead::init(c.head, d, c.proj_dim, c.seed).map_err(|e| Error::Other(e.to_string()))?,
    };
    if head.in_dim() != d {
        return Err(Error::Config(format!(
            "the head reads hidden states of width {} but {} has width {d}",
            head.in_dim(),
            cfg.trajectories.display()
        )));
    }
    let hidden = Hidden::new(hidden_values, n, d).map_err(|e| Error::Other(e.to_string()))?;
    let batch = Batch { correct: &correct, group: &group, prompt_id: &prompt_ids, sample_idx: &sample_idx };
    let out = embed_step(&mut head, c, hidden, &batch, cfg.step).map_err(|e| match e {
        crate::contrastive::ContrastiveError::NonFinite { row } => Error::bad_value(&cfg.trajectories, row, "hidden", "NaN or infinite value"),
        e => Error::Other(e.to_string()),
    })?;

    // Embeddings table.
    let dim = head.out_dim();
    let rows_z: Vec<Option<&[f32]>> = out.embeddings.chunks(dim).map(Some).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(prompt_ids.iter().map(|p| Some(*p)).collect::<StringArray>()),
        Arc::new(UInt32Array::from(sample_idx.clone())),
        Arc::new(vectors(&rows_z, dim)?),
        Arc::new(out.loss.iter().map(|&l| l as f32).collect::<Float32Array>()),
        Arc::new(out.reward.iter().map(|&r| r as f32).collect::<Float32Array>()),
        Arc::new(out.is_anchor.iter().map(|&a| Some(a)).collect::<BooleanArray>()),
        Arc::new(out.positive.iter().map(|p| p.map(|j| sample_idx[j])).collect::<UInt32Array>()),
    ];
    let batch_rb = RecordBatch::try_new(emb::schema(dim), columns).map_err(|e| Error::Other(format!("building embeddings: {e}")))?;

    // Head first (tmp + rename inside save), then the sidecar, then the table.
    head.save(&cfg.head_out).map_err(|e| Error::Other(format!("{}: {e}", cfg.head_out.display())))?;
    let mut hashes = BTreeMap::new();
    for (p, s) in &prov.inputs {
        hashes.insert(p.clone(), s.clone());
    }
    let sidecar = HeadSidecar { rl_step: cfg.step, head_step: head.step(), hidden_dim: d, config: c.clone(), input_hashes: hashes };
    let mut side = serde_json::to_value(&sidecar).map_err(|e| Error::Other(e.to_string()))?;
    side["fingerprint"] = serde_json::json!(prov.fingerprint());
    side["head_sha256"] = serde_json::json!(file_sha256(&cfg.head_out)?);
    side["metrics"] = serde_json::to_value(out.metrics.to_map()).map_err(|e| Error::Other(e.to_string()))?;
    let sp = sidecar_path(&cfg.head_out);
    let tmp = crate::table::tmp_path(&sp);
    std::fs::write(&tmp, serde_json::to_string_pretty(&side).expect("json") + "\n").map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &sp).map_err(|e| Error::io(&sp, e))?;
    let mut w = TableWriter::create(&cfg.out, emb::schema(dim), &prov)?;
    w.write(&batch_rb)?;
    let rows = w.finish()?;
    Ok(EmbedSummary {
        rows,
        anchors: out.num_anchors,
        stepped: out.stepped,
        head_loss: out.head_loss,
        up_to_date: false,
        metrics: out.metrics.to_map(),
    })
}
