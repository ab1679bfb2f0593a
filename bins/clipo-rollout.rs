//! clipo-rollout: sample G responses for each prompt with a policy and write a trajectories
//! table (REFERENCE.md §1 step 1). Also the first half of evaluation: `--greedy`, then
//! `clipo-verify --summary`.
//!
//! Example: `clipo-rollout --policy models/tiny --prompts data/train.parquet --out t.parquet --n 8`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use clap::Parser;
use clipo::args;
use clipo::engine::EngineConfig;
use clipo::stages::rollout::{parts_dir, run, HiddenMode, RolloutConfig, Selection, SystemPrompt};

/// Sample G responses per prompt with a policy: reads a policy directory and a prompts table (verl
/// .parquet or .jsonl); writes a trajectories table (.parquet: token ids, log-probs, pooled hidden
/// states).
#[derive(Parser, Debug)]
#[command(version, long_about = None, args_override_self = true)]
struct Args {
    /// Policy: a Hugging Face model directory (config.json, model.safetensors, tokenizer.json,
    /// chat template).
    #[arg(long)]
    policy: PathBuf,
    /// Prompts: verl parquet (data_source, prompt, reward_model.ground_truth, ...) or JSONL.
    #[arg(long)]
    prompts: PathBuf,
    /// Output trajectories table. Each batch of --batch-size prompts is saved in <OUT>.parts/ as
    /// it finishes; a run stopped midway resumes from those parts when rerun with the same
    /// arguments, and <OUT> is written (the same bytes as an uninterrupted run's) when all are
    /// done. Rerunning when <OUT> is up to date does nothing.
    #[arg(long)]
    out: PathBuf,
    /// Responses per prompt, the GRPO group size G (at least 1). Default: 16 as in the paper
    /// (verl's rollout.n is 1 unless set), or 1 with --greedy.
    #[arg(long)]
    n: Option<usize>,
    /// Sampling temperature (> 0; 1.0 in training, 0.6 for the MATH track's evaluation).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 = off (0.95 for the MATH track's evaluation).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep the k most likely tokens; 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Drop tokens less likely than min-p times the most likely one (after temperature, as vLLM's
    /// and transformers' min_p); 0 = off.
    #[arg(long, default_value_t = 0.0)]
    min_p: f64,
    /// Most tokens per response, the stop token included (2048 is the paper's GSM8K track; the
    /// MATH track takes 4096; verl's max_response_length is 512 unless set).
    #[arg(long, default_value_t = 2048)]
    max_new_tokens: usize,
    /// Prompts longer than this many tokens after the chat template are skipped and counted.
    #[arg(long, default_value_t = 512)]
    max_prompt_tokens: usize,
    /// Decode width in prompts: B x G rows share each decode step, and when a row finishes the
    /// next waiting sample takes its slot (continuous batching; every prompt prefilled on its
    /// own, decode rows through a row-by-row kernel, so a row's bytes do not depend on its
    /// neighbours or on B). B prompts are also the unit of resumption (one part each). Larger
    /// B: fewer passes over the weights per token (16 rows a pass on the CPU).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Run seed: each sample's stream derives from (seed, step, prompt_id, sample_idx).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// RL step (part of every sample's seed; with --per-step also picks the step's prompts).
    #[arg(long, default_value_t = 0)]
    step: u64,
    /// Skip this many prompts of the file (file order).
    #[arg(long, default_value_t = 0, conflicts_with = "per_step")]
    offset: usize,
    /// Take at most this many prompts (file order). Default: every prompt after --offset.
    #[arg(long, conflicts_with = "per_step")]
    limit: Option<usize>,
    /// Take the N prompts of RL step --step (numbered from 1) from a per-epoch shuffle of the
    /// file (seeded by --seed), as verl's dataloader with drop_last: an epoch is
    /// floor(prompts / N) steps, a step never straddles two epochs, the prompts of one epoch are
    /// distinct, and the n % N prompts left at the end of each shuffle sit that epoch out.
    /// Default: off (the prompts of --offset and --limit, in file order).
    #[arg(long)]
    per_step: Option<usize>,
    /// Dynamic sampling's refill round of --step: 0 is the step's own prompts; round r > 0
    /// takes --per-step further prompts (another order of the file, without the step's
    /// own and without those of earlier rounds), for scripts/dynamic_sampling.sh.
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Shard K/N: this process takes every N-th selected prompt starting at the K-th
    /// (0-based), so N machines can split a step and concatenate their files.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Pooled hidden state to store: official (the reference's), mean (teacher-forced) or none.
    #[arg(long, default_value = "official")]
    hidden: HiddenMode,
    /// Replace the prompts' system message with this text (default: keep the prompts' own).
    #[arg(long, conflicts_with = "no_system_prompt")]
    system_prompt: Option<String>,
    /// Remove the prompts' system messages (the template may still add its default).
    #[arg(long)]
    no_system_prompt: bool,
    /// A stop string (repeat for several): a response ends at the token that completes one, as
    /// vLLM's and verl's `stop`; the string stays in the stored tokens and text, and the
    /// finish_reason is `stop:TEXT` (`eos` for a stop token, `length` at --max-new-tokens).
    /// Default: none (only the model's stop tokens end a response).
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    /// Greedy decoding (evaluation, the GSM8K track's protocol); log-probs at temperature 1.
    #[arg(long)]
    greedy: bool,
    /// cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, bf16 or f16 (default: f32 on the CPU, bf16 on CUDA).
    #[arg(long)]
    dtype: Option<String>,
    /// Sample through an inference server at this base URL (http://HOST:PORT) instead of the
    /// built-in sampler; repeat for several servers (requests are spread over them). The prompt
    /// goes as the token ids rendered here, each sample with its own derived seed; the response's
    /// token ids and log-probs come back (the behaviour log-probs). The server must serve
    /// --policy (see --engine-reload); hidden states come from a teacher-forced pass of --policy.
    /// Default: none (the built-in sampler).
    #[arg(long = "engine", value_name = "URL")]
    engines: Vec<String>,
    /// The servers' API: sglang (/generate), vllm (/v1/completions with return_token_ids), or
    /// llamacpp (llama.cpp's llama-server /completion). Default: detected from the first server.
    #[arg(long)]
    engine_kind: Option<String>,
    /// Requests in flight at once, over all servers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds one request may take before it counts as failed (and is retried).
    #[arg(long, default_value_t = 600.0)]
    engine_timeout: f64,
    /// Retries of a request on connection errors and 5xx answers, with back-off (0.5 s, 1 s,
    /// 2 s, ... at most 8 s apart). Any other failure stops the run at once.
    #[arg(long, default_value_t = 5)]
    engine_retries: usize,
    /// The `model` field of vLLM requests (default: the server's first model).
    #[arg(long)]
    engine_model: Option<String>,
    /// Ask the servers to load --policy before sampling and check they serve it (SGLang's
    /// update_weights_from_disk; vLLM and llama.cpp need a restart on the new policy).
    #[arg(long)]
    engine_reload: bool,
    /// Recompute even when the output is up to date.
    #[arg(long)]
    force: bool,
}

impl TryFrom<Args> for RolloutConfig {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> anyhow::Result<Self> {
        args::input_file("--prompts", &a.prompts, "a prompts table (verl .parquet or .jsonl)")?;
        args::model_dir("--policy", &a.policy)?;
        clipo::paths::refuse_aliases(&[("--policy", &a.policy), ("--prompts", &a.prompts)], &[("--out", &a.out)])?;
        let n = args::count("--n", a.n.unwrap_or(if a.greedy { 1 } else { 16 }))?;
        args::positive("--temperature", a.temperature)?;
        clipo::policy::parse_dtype(a.dtype.as_deref(), &candle_core::Device::Cpu)?;
        ensure!(a.top_p > 0.0 && a.top_p <= 1.0, "--top-p {}: expected a number in (0, 1]", a.top_p);
        ensure!((0.0..1.0).contains(&a.min_p), "--min-p {}: expected a number in [0, 1)", a.min_p);
        args::count("--max-new-tokens", a.max_new_tokens)?;
        ensure!(a.stop.iter().all(|s| !s.is_empty()), "--stop: a stop string must not be empty");
        args::count("--max-prompt-tokens", a.max_prompt_tokens)?;
        args::count("--batch-size", a.batch_size)?;
        if let Some(l) = a.limit {
            args::count("--limit", l)?;
        }
        let shard = match a.shard.split_once('/').map(|(k, n)| (k.parse::<usize>(), n.parse::<usize>())) {
            Some((Ok(k), Ok(n))) if n >= 1 && k < n => (k, n),
            _ => bail!("--shard {}: expected K/N with 0 <= K < N", a.shard),
        };
        ensure!(a.round == 0 || a.per_step.is_some(), "--round needs --per-step (a refill round of an RL step)");
        let selection = match a.per_step {
            Some(p) => {
                args::count("--per-step", p)?;
                Selection::Step { per_step: p, round: a.round }
            }
            None => Selection::Range { offset: a.offset, limit: a.limit },
        };
        let system_prompt = match (a.system_prompt, a.no_system_prompt) {
            (Some(s), _) => SystemPrompt::Set(s),
            (None, true) => SystemPrompt::Drop,
            (None, false) => SystemPrompt::Keep,
        };
        ensure!(a.engine_kind.is_none() || !a.engines.is_empty(), "--engine-kind needs --engine URL");
        ensure!(!a.engine_reload || !a.engines.is_empty(), "--engine-reload needs --engine URL");
        let engine = if a.engines.is_empty() {
            None
        } else {
            for u in &a.engines {
                ensure!(u.starts_with("http://"), "--engine {u}: expected http://HOST:PORT (plain HTTP)");
            }
            args::count("--concurrency", a.concurrency)?;
            args::positive("--engine-timeout", a.engine_timeout)?;
            Some(EngineConfig {
                urls: a.engines,
                kind: a.engine_kind.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?,
                concurrency: a.concurrency,
                timeout_s: a.engine_timeout,
                retries: a.engine_retries,
                model: a.engine_model,
            })
        };
        Ok(RolloutConfig {
            engine,
            engine_reload: a.engine_reload,
            policy: a.policy,
            prompts: a.prompts,
            out: a.out,
            n,
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            min_p: a.min_p,
            max_new_tokens: a.max_new_tokens,
            max_prompt_tokens: a.max_prompt_tokens,
            batch_prompts: a.batch_size,
            seed: a.seed,
            step: a.step,
            selection,
            shard,
            hidden: a.hidden,
            system_prompt,
            greedy: a.greedy,
            stop: a.stop,
            device: a.device,
            dtype: a.dtype,
            force: a.force,
        })
    }
}

fn main() -> ExitCode {
    let result = RolloutConfig::try_from(Args::parse())
        .and_then(|cfg| {
            clipo::interrupt::on_interrupt(&format!(
                "clipo-rollout: interrupted; the batches of prompts sampled so far are kept in {}: run the same command again to resume from them (`make` continues a loop the same way)",
                parts_dir(&cfg.out).display()
            ));
            clipo::threads::on_pool(|| run(&cfg)).context("clipo-rollout")
        });
    match result {
        Ok(s) if s.up_to_date => {
            eprintln!("clipo-rollout: output up to date, nothing written");
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&s).expect("summary serialises"));
            ExitCode::SUCCESS
        }
        Ok(s) => {
            if let Some(e) = s.epoch {
                eprintln!("clipo-rollout: epoch {} step {}/{} of the epoch", e.epoch, e.step_in_epoch + 1, e.steps_per_epoch);
            }
            // A resumed run's speed counts only what this process sampled.
            let speed = match s.tokens_per_second {
                Some(tps) if s.resumed_batches > 0 => format!("{} sampled now at {tps:.1} tok/s", s.sampled_tokens),
                Some(tps) => format!("{tps:.1} tok/s"),
                None => "nothing sampled now".into(),
            };
            eprintln!(
                "clipo-rollout: {} prompts ({} skipped as too long), {} responses, {} tokens, {:.1}% truncated, {speed}, {:.1}s{}",
                s.prompts,
                s.skipped_prompts,
                s.responses,
                s.generated_tokens,
                100.0 * s.truncated_fraction,
                s.seconds,
                if s.resumed_batches > 0 { format!(" (resumed after {} of {} batches)", s.resumed_batches, s.batches) } else { String::new() }
            );
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&s).expect("summary serialises"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
