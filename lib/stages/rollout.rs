//! clipo-rollout: prompts -> trajectories (REFERENCE.md §1 step 1).
//!
//! Each prompt is rendered with the policy's chat template (generation prompt on), tokenised,
//! and sampled G times. Every sample's random stream is seeded from
//! (seed, step, prompt_id, sample_idx) alone ([`crate::seed`]); `--batch-size` prompts with
//! their G samples decode together, each prompt prefilled on its own and every decode row
//! through a row-by-row kernel, so a file does not depend on how prompts were batched or
//! sharded, byte for byte.
//!
//! Resumable: each batch of prompts is written as a complete Parquet part under
//! `<out>.parts/` (atomically, stamped with the run's fingerprint). Killed and run again with
//! the same arguments, the stage skips the parts it has; parts of a run with other arguments
//! are cleared, never mixed in. When every part exists they are concatenated
//! into `<out>` in prompt order and the parts are removed, so the final file is the same bytes
//! as an uninterrupted run's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::engine::{Engine, EngineConfig, Sampler};
use crate::model::sample::{Sample, SampleParams, SampleRequest};
use crate::model::score::Sequence;
use crate::policy::{parse_device, parse_dtype, Policy};
use crate::prompts::{read_prompts, Message, Prompt};
use crate::schema::meta;
use crate::schema::trajectories as tr;
use crate::seed::{derive_seed, EPOCH_SHUFFLE, REFILL, SAMPLING};
use crate::table::{file_metadata, read_table, up_to_date, Provenance, TableWriter};
use crate::trajectories::{trajectories_batch, FinishReason, Trajectory};

const STAGE: &str = "clipo-rollout";

/// Which prompts of the file a run takes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Selection {
    /// Prompts `offset..offset + limit` in file order (`limit` None: to the end).
    Range { offset: usize, limit: Option<usize> },
    /// The prompts of RL step `step`: `per_step` prompts taken in order from a per-epoch shuffle
    /// of the file (seeded by the run seed and the epoch), without replacement within an epoch.
    /// Round r > 0 (dynamic sampling's refill, see [`refill_order`]) takes `per_step` further
    /// prompts for the same step.
    Step {
        per_step: usize,
        #[serde(skip_serializing_if = "is_zero")]
        round: u32,
    },
}

/// Which pooled hidden state the `hidden` column holds (REFERENCE.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenMode {
    /// Sum of the decode steps' input states over the response, divided by L (the reference).
    Official,
    /// True mean over all L response tokens, by a teacher-forced pass.
    Mean,
    /// Not captured (the column is null).
    None,
}

impl std::str::FromStr for HiddenMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "official" => Ok(Self::Official),
            "mean" => Ok(Self::Mean),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown hidden mode `{s}` (official, mean, none)")),
        }
    }
}

/// What to do with the prompts' system messages.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum SystemPrompt {
    /// Leave the messages as the data set has them.
    Keep,
    /// Replace (or add) the system message.
    Set(String),
    /// Remove system messages (the template may still add its own default).
    Drop,
}

/// The checked configuration of one clipo-rollout run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutConfig {
    pub policy: PathBuf,
    pub prompts: PathBuf,
    pub out: PathBuf,
    /// Responses per prompt (G).
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f64,
    pub max_new_tokens: usize,
    /// Longer prompts (after the template) are skipped and counted.
    pub max_prompt_tokens: usize,
    /// Prompts decoded together (B x G rows a decode step).
    pub batch_prompts: usize,
    pub seed: u64,
    pub step: u64,
    pub selection: Selection,
    /// (k, n): take every n-th selected prompt starting at the k-th.
    pub shard: (usize, usize),
    pub hidden: HiddenMode,
    pub system_prompt: SystemPrompt,
    pub greedy: bool,
    /// Stop strings (`--stop`): a response ends at the token that completes one of them, as
    /// vLLM's and verl's `stop`; the string stays in the tokens and the text.
    pub stop: Vec<String>,
    pub device: String,
    /// Compute dtype (`--dtype`); None: f32 on the CPU, bf16 on CUDA.
    pub dtype: Option<String>,
    /// Sample through inference servers instead of the built-in sampler.
    pub engine: Option<EngineConfig>,
    /// Ask the servers to load --policy before sampling (SGLang).
    pub engine_reload: bool,
    pub force: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RolloutSummary {
    pub prompts: usize,
    pub skipped_prompts: usize,
    pub responses: usize,
    /// Response tokens in the output (those of resumed batches included).
    pub generated_tokens: usize,
    /// Response tokens this process sampled (fewer than `generated_tokens` when resumed).
    pub sampled_tokens: usize,
    pub truncated_fraction: f64,
    /// Sampling speed of this process: `sampled_tokens` over its sampling time (None when
    /// nothing was sampled: the output was up to date, or every batch was resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Seconds of the teacher-forced passes (pooled hidden states the sampler did not give,
    /// log-probs an engine did not report), inside `seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_forced_seconds: Option<f64>,
    pub seconds: f64,
    /// True when the output was already up to date.
    pub up_to_date: bool,
    /// Batches found complete from an earlier, interrupted run.
    pub resumed_batches: usize,
    /// Batches of `--batch-size` prompts in the run.
    pub batches: usize,
    /// With --per-step: the epoch and the step within it.
    pub epoch: Option<EpochPos>,
}

/// Where RL step `step` falls in the epochs of a file of `n` prompts taken `per_step` at a time.
///
/// As verl's training dataloader (`drop_last=True`, reshuffled each epoch): an epoch is
/// `floor(n / per_step)` steps, the last `n % per_step` prompts of each epoch's shuffle are not
/// used in that epoch, and a step never straddles two epochs. Steps are numbered from 1
/// (verl's `global_steps`): step s is batch `s - 1` of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EpochPos {
    /// 0-based epoch.
    pub epoch: u64,
    /// 0-based step within the epoch.
    pub step_in_epoch: u64,
    pub steps_per_epoch: u64,
}

impl EpochPos {
    pub fn of(step: u64, per_step: usize, n: usize) -> Result<EpochPos> {
        if step == 0 {
            return Err(Error::Config("--step 0 with --per-step: RL steps are numbered from 1 (verl's global_steps)".into()));
        }
        if per_step > n {
            return Err(Error::Config(format!("--per-step {per_step} is larger than the file's {n} prompts: an epoch would have no step")));
        }
        let steps_per_epoch = (n / per_step) as u64;
        let b = step - 1;
        Ok(EpochPos { epoch: b / steps_per_epoch, step_in_epoch: b % steps_per_epoch, steps_per_epoch })
    }
}

fn is_zero(r: &u32) -> bool {
    *r == 0
}

/// The refill prompts of a step, in the order rounds 1, 2, ... take them (`per_step` a round):
/// every prompt of the file but the step's own, shuffled by (seed, step). DAPO and verl's
/// `filter_groups` draw the next batches of the data loader instead; a stateless stage cannot
/// consume the stream, so a refill prompt may also appear in another step of the epoch.
pub fn refill_order(n: usize, seed: u64, step: u64, own: &[usize]) -> Vec<usize> {
    let own: std::collections::HashSet<usize> = own.iter().copied().collect();
    shuffled((0..n).filter(|i| !own.contains(i)).collect(), derive_seed(REFILL, seed, step, "", 0))
}

fn shuffled(mut p: Vec<usize>, seed: u64) -> Vec<usize> {
    p.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    p
}

/// The shuffle of epoch `epoch`: a permutation of 0..n seeded by the run seed and the epoch.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    shuffled((0..n).collect(), derive_seed(EPOCH_SHUFFLE, seed, epoch, "", 0))
}

/// The prompts this run takes, in order, after selection and sharding.
pub fn select(prompts: Vec<Prompt>, cfg: &RolloutConfig) -> Result<Vec<Prompt>> {
    let n = prompts.len();
    let chosen: Vec<usize> = match cfg.selection {
        Selection::Range { offset, limit } => {
            let end = limit.map_or(n, |l| (offset + l).min(n));
            (offset.min(n)..end).collect()
        }
        Selection::Step { per_step, round } => {
            // Positions [j * P, (j + 1) * P) of epoch e's shuffle, j the step within the epoch:
            // distinct prompts by construction.
            let pos = EpochPos::of(cfg.step, per_step, n)?;
            let start = pos.step_in_epoch as usize * per_step;
            let own = epoch_order(n, cfg.seed, pos.epoch)[start..start + per_step].to_vec();
            if round == 0 {
                own
            } else {
                let refill = refill_order(n, cfg.seed, cfg.step, &own);
                let from = ((round as usize - 1) * per_step).min(refill.len());
                refill[from..(from + per_step).min(refill.len())].to_vec()
            }
        }
    };
    let (k, of) = cfg.shard;
    let mut prompts: Vec<Option<Prompt>> = prompts.into_iter().map(Some).collect();
    let out: Vec<Prompt> = chosen
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % of == k)
        .map(|(_, idx)| prompts[idx].take().ok_or_else(|| Error::Config(format!("prompt {idx} selected twice"))))
        .collect::<Result<_>>()?;
    if out.is_empty() {
        return Err(Error::Empty { path: cfg.prompts.clone(), detail: "the selection (offset/limit/step/shard) takes no prompt".into() });
    }
    Ok(out)
}

fn apply_system_prompt(messages: &[Message], sp: &SystemPrompt) -> Vec<Message> {
    let rest = messages.iter().filter(|m| m.role != "system").cloned();
    match sp {
        SystemPrompt::Keep => messages.to_vec(),
        SystemPrompt::Drop => rest.collect(),
        SystemPrompt::Set(text) => std::iter::once(Message { role: "system".into(), content: text.clone() }).chain(rest).collect(),
    }
}

/// The run's configuration as stored in the output (paths of outputs excluded).
fn config_json(cfg: &RolloutConfig, policy_id: &str) -> serde_json::Value {
    serde_json::json!({
        "policy": policy_id,
        "n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k, "min_p": cfg.min_p,
        "max_new_tokens": cfg.max_new_tokens, "max_prompt_tokens": cfg.max_prompt_tokens,
        "seed": cfg.seed, "step": cfg.step, "selection": cfg.selection, "shard": [cfg.shard.0, cfg.shard.1],
        "hidden": cfg.hidden, "system_prompt": cfg.system_prompt, "greedy": cfg.greedy, "dtype": cfg.dtype, "stop": cfg.stop,
        // Which sampler, not where it runs: a resumed run may reach the servers at other addresses.
        "engine": cfg.engine.as_ref().map(|e| e.kind.map_or("auto".to_string(), |k| format!("{k:?}").to_lowercase())),
    })
}

/// The sampler's stop-string test: decodes the newest tokens of a row (a window long enough for
/// the longest string) and reports the first stop string the text now holds. The sampler asks
/// after every token, so a string is found at the token that completes it.
fn stop_check(policy: &Policy, stops: &[String]) -> Option<crate::model::StopCheck> {
    if stops.is_empty() {
        return None;
    }
    let tokenizer = policy.tokenizer.clone();
    let stops = stops.to_vec();
    let window = 8 + stops.iter().map(|s| s.len()).max().unwrap_or(0);
    Some(crate::model::StopCheck(std::sync::Arc::new(move |tokens: &[u32]| {
        let tail = &tokens[tokens.len().saturating_sub(window)..];
        let text = crate::model::tokenizer::decode(&tokenizer, tail, true).ok()?;
        stops.iter().position(|s| text.contains(s.as_str()))
    })))
}

/// `<out>.parts/`: the finished batches of a run that has not yet written `<out>`.
pub fn parts_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".parts");
    out.with_file_name(name)
}

/// One prompt ready to sample.
struct Ready {
    prompt: Prompt,
    text: String,
    ids: Vec<u32>,
}

pub fn run(cfg: &RolloutConfig) -> Result<RolloutSummary> {
    let start = Instant::now();
    let device = parse_device(&cfg.device)?;
    let all_prompts = read_prompts(&cfg.prompts)?;
    let epoch = match cfg.selection {
        Selection::Step { per_step, .. } => Some(EpochPos::of(cfg.step, per_step, all_prompts.len())?),
        Selection::Range { .. } => None,
    };
    let prompts = select(all_prompts, cfg)?;
    let policy = Policy::load(&cfg.policy, &device, parse_dtype(cfg.dtype.as_deref(), &device)?)?;
    let prov = Provenance::new(tr::TABLE, STAGE, config_json(cfg, &policy.id), &[cfg.prompts.as_path()])?;
    let _lock = crate::lock::OutputLock::acquire(&cfg.out)?;
    let parts = parts_dir(&cfg.out);
    if !cfg.force && up_to_date(&cfg.out, &prov) {
        // Parts left by a run killed while it removed them are stale: the output is whole.
        if parts.exists() {
            std::fs::remove_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
        }
        // The summary again, from the output (a loop reprints its step line from it).
        let t = read_table(&cfg.out, &[tr::PROMPT_ID, tr::RESPONSE_TOKEN_IDS, tr::FINISH_REASON], &[])?;
        let responses = t.num_rows();
        let prompts = t.utf8(&tr::PROMPT_ID).iter().collect::<std::collections::BTreeSet<_>>().len();
        let truncated = t.utf8(&tr::FINISH_REASON).iter().filter(|f| *f == Some("length")).count();
        return Ok(RolloutSummary {
            prompts,
            responses,
            generated_tokens: t.list(&tr::RESPONSE_TOKEN_IDS).values().len(),
            truncated_fraction: truncated as f64 / responses.max(1) as f64,
            up_to_date: true,
            seconds: start.elapsed().as_secs_f64(),
            epoch,
            ..Default::default()
        });
    }

    // Render and tokenise everything first: a template error stops the run before any output.
    let mut ready = Vec::with_capacity(prompts.len());
    let mut skipped = 0;
    for p in prompts {
        let text = policy.render(&apply_system_prompt(&p.messages, &cfg.system_prompt))?;
        let ids = policy.encode(&text)?;
        if ids.is_empty() {
            return Err(Error::Config(format!("prompt {} renders to no tokens", p.prompt_id)));
        }
        if ids.len() > cfg.max_prompt_tokens {
            skipped += 1;
            continue;
        }
        ready.push(Ready { prompt: p, text, ids });
    }
    if ready.is_empty() {
        return Err(Error::Empty {
            path: cfg.prompts.clone(),
            detail: format!("every selected prompt is longer than --max-prompt-tokens {}", cfg.max_prompt_tokens),
        });
    }

    // Parts of an earlier run must carry this run's fingerprint (batch size included, since it
    // sets the part boundaries).
    let parts_prov = Provenance {
        config: serde_json::json!({ "run": prov.fingerprint(), "batch_prompts": cfg.batch_prompts }),
        ..prov.clone()
    };
    let batches: Vec<&[Ready]> = ready.chunks(cfg.batch_prompts).collect();
    let part_path = |b: usize| parts.join(format!("part-{b:06}.parquet"));
    let mut resumed = 0;
    if parts.is_dir() {
        for b in 0..batches.len() {
            let p = part_path(b);
            if !p.exists() {
                break;
            }
            // A part that does not read (a full disk, a foreign file) ends the resumption there.
            if file_metadata(&p).ok().and_then(|m| m.get(meta::FINGERPRINT).cloned()) != Some(parts_prov.fingerprint()) {
                break;
            }
            resumed += 1;
        }
        if resumed == 0 && std::fs::read_dir(&parts).map_err(|e| Error::io(&parts, e))?.next().is_some() {
            // Parts of an interrupted run with other arguments (no other run is writing: this
            // one holds the lock): they cannot be resumed by this run, so they are cleared.
            eprintln!("clipo-rollout: {} held parts of an interrupted run with other arguments: removed, starting over", parts.display());
            std::fs::remove_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
        }
    }
    std::fs::create_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;

    let params = if cfg.greedy {
        SampleParams::greedy(cfg.max_new_tokens, policy.stop_tokens.clone())
    } else {
        SampleParams {
            max_new_tokens: cfg.max_new_tokens,
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            top_k: cfg.top_k,
            min_p: cfg.min_p,
            stop_tokens: policy.stop_tokens.clone(),
            greedy: false,
            stop_check: None,
        }
    };
    let params = SampleParams { stop_check: stop_check(&policy, &cfg.stop), ..params };
    let hidden_dim = if cfg.hidden == HiddenMode::None { 0 } else { policy.model.config().hidden_size };
    // The sampler: the built-in one, or the inference servers (reloaded with this policy when
    // asked); either way the rest of the stage is the same.
    let engine = cfg.engine.as_ref().map(Engine::connect).transpose()?;
    if let (Some(e), true) = (&engine, cfg.engine_reload) {
        e.reload(&cfg.policy)?;
    }
    let sampler: &dyn Sampler = match &engine {
        Some(e) => e,
        None => &policy,
    };
    let model_err = |e: crate::model::Error| Error::Model { dir: cfg.policy.clone(), detail: e.to_string() };

    let (mut missing_logprobs, mut forced_secs) = (0usize, 0f64);
    let bar = crate::progress::bar(ready.len() as u64, "prompts");
    bar.inc((batches[..resumed].iter().map(|b| b.len()).sum::<usize>()) as u64);
    let mut generated = 0usize;
    let sample_start = Instant::now();
    // Every sample still to draw, batch by batch, prompt by prompt: request i is sample
    // i % n of prompt i / n of the remaining prompts. The sampler decodes B x G rows at a
    // time and a finished row's slot goes to the next waiting sample (continuous batching);
    // batch b's part is written once all its samples are in, in order. A row's tokens,
    // log-probs and hidden state do not depend on its neighbours (tests/stages.rs compares
    // --batch-size 1 and 16 byte for byte).
    let todo: Vec<&Ready> = batches[resumed..].iter().flat_map(|b| b.iter()).collect();
    let seeds: Vec<u64> = todo
        .iter()
        .flat_map(|r| (0..cfg.n).map(|s| derive_seed(SAMPLING, cfg.seed, cfg.step, &r.prompt.prompt_id, s as u64)))
        .collect();
    let reqs: Vec<SampleRequest> =
        seeds.iter().enumerate().map(|(i, &seed)| SampleRequest { prompt: &todo[i / cfg.n].ids, seed }).collect();
    // The first request of each remaining batch (and the end).
    let mut starts = vec![0usize];
    for batch in &batches[resumed..] {
        starts.push(starts.last().unwrap() + batch.len() * cfg.n);
    }
    let mut got: Vec<Option<Sample>> = vec![None; reqs.len()];
    let mut part = 0usize; // the next part to write, counted from `resumed`
    let official = cfg.hidden == HiddenMode::Official && !sampler.has_hidden();
    let mut write_part = |k: usize, samples: Vec<Sample>| -> Result<()> {
        let b = resumed + k;
        let batch = batches[b];
        let reqs = &reqs[starts[k]..starts[k + 1]];
        let mut samples = samples;
        let t_forced = Instant::now();
        let filled = crate::engine::missing_logprobs(&policy.model, reqs, &mut samples, if cfg.greedy { 1.0 } else { cfg.temperature })?;
        if filled > 0 {
            missing_logprobs += filled;
            forced_secs += t_forced.elapsed().as_secs_f64();
        }
        let mut rows = Vec::with_capacity(batch.len() * cfg.n);
        let mut samples = samples.into_iter();
        for (r, reqs) in batch.iter().zip(reqs.chunks(cfg.n)) {
            let samples: Vec<_> = samples.by_ref().take(cfg.n).collect();
            // Pooled states the sampler did not give: a teacher-forced pass of the policy over
            // prompt + response (`mean` always; `official` for responses sampled by a server).
            let pooled = if cfg.hidden == HiddenMode::Mean || official {
                let t = Instant::now();
                let seqs: Vec<Sequence> = samples.iter().map(|s| Sequence { prompt: &r.ids, response: &s.tokens }).collect();
                let m = policy.model.pooled_hidden(&seqs, cfg.n, official).map_err(model_err)?;
                forced_secs += t.elapsed().as_secs_f64();
                Some(m.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
            } else {
                None
            };
            for (s, (sample, req)) in samples.into_iter().zip(reqs).enumerate() {
                generated += sample.tokens.len();
                let hidden = match (&pooled, cfg.hidden) {
                    (_, HiddenMode::None) => None,
                    (Some(m), _) => Some(m[s].clone()),
                    (None, _) => Some(sample.hidden_official),
                };
                rows.push(Trajectory {
                    prompt_id: r.prompt.prompt_id.clone(),
                    sample_idx: s as u32,
                    data_source: r.prompt.data_source.clone(),
                    ground_truth: r.prompt.ground_truth.clone(),
                    prompt_text: r.text.clone(),
                    response_text: policy.decode(&sample.tokens)?,
                    prompt_token_ids: r.ids.clone(),
                    response_token_ids: sample.tokens,
                    response_logprobs: sample.logprobs,
                    behavior_logprobs: sample.behavior_logprobs,
                    finish_reason: match sample.finish {
                        crate::model::FinishReason::Eos => FinishReason::Eos,
                        crate::model::FinishReason::Length => FinishReason::Length,
                        crate::model::FinishReason::Stop(i) => FinishReason::Stop(cfg.stop[i].clone()),
                    },
                    seed: req.seed,
                    policy: policy.id.clone(),
                    hidden,
                });
            }
            bar.inc(1);
        }
        let secs = sample_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{:.1} tok/s", generated as f64 / secs));
        let batch_rb = trajectories_batch(&rows, hidden_dim)?;
        let mut w = TableWriter::create(&part_path(b), batch_rb.schema(), &parts_prov)?;
        w.write(&batch_rb)?;
        w.finish()?;
        Ok(())
    };
    sampler.sample_stream(&reqs, &params, cfg.batch_prompts * cfg.n, &mut |i, sample| {
        got[i] = Some(sample);
        while part + 1 < starts.len() && got[starts[part]..starts[part + 1]].iter().all(Option::is_some) {
            let samples = got[starts[part]..starts[part + 1]].iter_mut().map(|s| s.take().expect("complete")).collect();
            write_part(part, samples)?;
            part += 1;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if missing_logprobs > 0 {
        eprintln!("clipo-rollout: the engine reported no log-prob for {missing_logprobs} tokens (llama.cpp leaves out tokens that end inside a UTF-8 character): the policy's own, recomputed, stand in for them");
    }
    let sample_secs = sample_start.elapsed().as_secs_f64();

    // Concatenate the parts in order into the final file, then drop them.
    let mut w = TableWriter::create(&cfg.out, tr::schema(hidden_dim), &prov)?;
    let mut total = 0;
    let (mut all_generated, mut all_truncated) = (0usize, 0usize);
    for b in 0..batches.len() {
        let t = read_table(&part_path(b), &tr::COLUMNS, &[])?;
        all_generated += t.list(&tr::RESPONSE_TOKEN_IDS).values().len();
        all_truncated += t.utf8(&tr::FINISH_REASON).iter().filter(|f| *f == Some("length")).count();
        let batch = t.batch.with_schema(tr::schema(hidden_dim)).map_err(|e| Error::parquet(part_path(b), e))?;
        total += batch.num_rows();
        w.write(&batch)?;
    }
    w.finish()?;
    std::fs::remove_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
    Ok(RolloutSummary {
        prompts: ready.len(),
        skipped_prompts: skipped,
        responses: total,
        generated_tokens: all_generated,
        sampled_tokens: generated,
        truncated_fraction: all_truncated as f64 / total.max(1) as f64,
        tokens_per_second: (generated > 0).then(|| generated as f64 / sample_secs.max(1e-9)),
        teacher_forced_seconds: Some(forced_secs),
        seconds: start.elapsed().as_secs_f64(),
        up_to_date: false,
        resumed_batches: resumed,
        batches: batches.len(),
        epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompts(n: usize) -> Vec<Prompt> {
        (0..n)
            .map(|i| Prompt {
                prompt_id: format!("p{i}"),
                data_source: "t".into(),
                messages: vec![],
                ability: None,
                ground_truth: "0".into(),
                style: None,
                index: Some(i as i64),
                split: None,
                solution: None,
            })
            .collect()
    }

    fn cfg(seed: u64, step: u64, per_step: usize, shard: (usize, usize)) -> RolloutConfig {
        RolloutConfig {
            policy: PathBuf::new(),
            prompts: PathBuf::from("prompts.parquet"),
            out: PathBuf::new(),
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 1,
            max_prompt_tokens: 1,
            batch_prompts: 1,
            seed,
            step,
            selection: Selection::Step { per_step, round: 0 },
            shard,
            hidden: HiddenMode::None,
            system_prompt: SystemPrompt::Keep,
            greedy: false,
            stop: vec![],
            device: "cpu".into(),
            dtype: None,
            engine: None,
            engine_reload: false,
            force: false,
        }
    }

    fn ids(step: u64, seed: u64, per_step: usize, n: usize, shard: (usize, usize)) -> Vec<String> {
        select(prompts(n), &cfg(seed, step, per_step, shard)).unwrap().into_iter().map(|p| p.prompt_id).collect()
    }

    #[test]
    fn steps_never_straddle_an_epoch_with_any_seed() {
        // 10 prompts, 4 a step: an epoch is floor(10 / 4) = 2 steps; 2 prompts sit each epoch out.
        for seed in 0..200 {
            for epoch in 0..5u64 {
                let a = ids(2 * epoch + 1, seed, 4, 10, (0, 1));
                let b = ids(2 * epoch + 2, seed, 4, 10, (0, 1));
                let all: std::collections::HashSet<&String> = a.iter().chain(&b).collect();
                assert_eq!((a.len(), b.len(), all.len()), (4, 4, 8), "seed {seed} epoch {epoch}: {a:?} {b:?}");
                assert_eq!(EpochPos::of(2 * epoch + 2, 4, 10).unwrap(), EpochPos { epoch, step_in_epoch: 1, steps_per_epoch: 2 });
            }
        }
        // Each epoch reshuffles: the first steps of epochs 0 and 1 differ for some seed.
        assert!((0..10).any(|seed| ids(1, seed, 4, 10, (0, 1)) != ids(3, seed, 4, 10, (0, 1))));
    }

    #[test]
    fn shards_split_a_step_without_overlap() {
        let whole = ids(5, 3, 7, 20, (0, 1));
        let mut parts: Vec<String> = (0..3).flat_map(|k| ids(5, 3, 7, 20, (k, 3))).collect();
        parts.sort();
        let mut whole_sorted = whole.clone();
        whole_sorted.sort();
        assert_eq!(parts, whole_sorted);
        // Shard 0 takes the step's prompts 0, 3, 6 in the step's order.
        assert_eq!(ids(5, 3, 7, 20, (0, 3)), vec![whole[0].clone(), whole[3].clone(), whole[6].clone()]);
    }

    #[test]
    fn refill_rounds_take_other_prompts_than_the_step_and_each_other() {
        let with_round = |round: u32| {
            let mut c = cfg(4, 3, 5, (0, 1));
            c.selection = Selection::Step { per_step: 5, round };
            select(prompts(23), &c).map(|v| v.into_iter().map(|p| p.prompt_id).collect::<Vec<_>>())
        };
        let rounds: Vec<Vec<String>> = (0..4).map(|r| with_round(r).unwrap()).collect();
        let all: std::collections::HashSet<&String> = rounds.iter().flatten().collect();
        // 5 + 5 + 5 + 5 distinct prompts out of 23: the step's own and 18 refill prompts.
        assert_eq!(all.len(), 20, "{rounds:?}");
        assert_eq!(rounds[0], ids(3, 4, 5, 23, (0, 1)), "round 0 is the step itself");
        // Round 4 takes the 3 refill prompts left; round 5 none.
        assert_eq!(with_round(4).unwrap().len(), 3);
        assert!(with_round(5).is_err());
    }

    #[test]
    fn step_zero_and_oversized_steps_are_refused() {
        assert!(select(prompts(10), &cfg(0, 0, 4, (0, 1))).is_err());
        let e = select(prompts(3), &cfg(0, 1, 4, (0, 1))).unwrap_err().to_string();
        assert!(e.contains("--per-step 4 is larger than the file's 3 prompts"), "{e}");
    }
}
