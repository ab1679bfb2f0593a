//! clipo-update: one policy update from trajectories, rewards and (optionally) contrastive
//! rewards (REFERENCE.md §6), or a supervised warm start on reference solutions
//! (`--objective sft`). Writes a new Hugging Face model directory with the optimizer state, the
//! audit table advantages.parquet and the step's metrics (also printed as one JSON line).
//!
//! Example: `clipo-update --policy step-2/policy --ref init --trajectories t.parquet
//!   --rewards r.parquet --embeddings e.parquet --step 3 --out step-3/policy`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use clap::{Parser, ValueEnum};
use clipo::model::hf::SaveDtype;
use clipo::model::Memory;
use clipo::optim::AdamWConfig;
use clipo::args;
use clipo::schedule::{KlControl, LrSchedule, LrStyle};
use clipo::rl::{Aggregation, AdvantageEstimator, KlEstimator, PolicyLoss, PolicyLossConfig};
use clipo::stages::update::{run, run_sft, OldLogprobs, Overlong, RolloutIs, SftConfig, UpdateConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Objective {
    /// GRPO-family policy gradient on trajectories and rewards.
    Rl,
    /// Next-token cross-entropy on the prompts' reference solutions (warm start).
    Sft,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dtype {
    F32,
    Bf16,
}

/// One policy-gradient step (or SFT steps): reads a policy directory, its trajectories, rewards and
/// (for CLIPO) embeddings tables; writes the updated policy directory (transformers loads it), its
/// optimizer state, advantages.parquet and metrics.json.
#[derive(Parser, Debug)]
#[command(version, long_about = None, args_override_self = true)]
struct Args {
    /// The policy to update (a Hugging Face directory; its optimizer.safetensors, when present,
    /// continues the optimizer).
    #[arg(long)]
    policy: PathBuf,
    /// Output directory (staged and renamed into place; an unchanged re-run is a no-op).
    /// Required, except with --plan.
    #[arg(long, required_unless_present = "plan")]
    out: Option<PathBuf>,
    /// What to train: rl or sft.
    #[arg(long, value_enum, default_value = "rl")]
    objective: Objective,
    /// The frozen reference policy for the KL penalty (usually the initial policy). Required
    /// unless --kl off.
    #[arg(long = "ref")]
    reference: Option<PathBuf>,
    /// Trajectories table (clipo-rollout's); required with --objective rl.
    #[arg(long)]
    trajectories: Option<PathBuf>,
    /// Rewards table (clipo-verify's); required with --objective rl.
    #[arg(long)]
    rewards: Option<PathBuf>,
    /// Embeddings table (clipo-embed's); its contrastive_reward is added to the score. Default:
    /// none, plain RLVR (GRPO without the contrastive reward).
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// RL step (recorded; compared with --actor-warmup).
    #[arg(long, default_value_t = 0)]
    step: u64,
    /// Advantage estimator: grpo (group mean and unbiased std, eps 1e-6), grpo-no-std
    /// (Dr.GRPO), rloo.
    #[arg(long, default_value = "grpo")]
    adv: AdvantageEstimator,
    /// Same as --adv grpo-no-std.
    #[arg(long)]
    no_std: bool,
    /// Policy loss: ppo (token-level clip), gspo (sequence ratio), gmpo (geometric mean).
    #[arg(long, default_value = "ppo")]
    loss: PolicyLoss,
    /// eps_low of the clip. Default: 0.2, or 0.4 with --loss gmpo (its clip is in log space).
    #[arg(long)]
    clip_low: Option<f64>,
    /// eps_high of the clip (DAPO's clip-higher takes 0.28). Default: 0.2, or 0.4 with --loss
    /// gmpo.
    #[arg(long)]
    clip_high: Option<f64>,
    /// Dual-clip bound c for negative advantages (> 1).
    #[arg(long, default_value_t = 3.0)]
    dual_clip: f64,
    /// Turn the dual clip off.
    #[arg(long)]
    no_dual_clip: bool,
    /// Loss aggregation: token-mean, seq-mean-token-sum, seq-mean-token-mean or
    /// seq-mean-token-sum-norm. Default: token-mean, or seq-mean-token-mean with --loss gspo
    /// (as in verl).
    #[arg(long)]
    agg: Option<Aggregation>,
    /// KL estimator to the reference: k1, k2, low_var_kl (k3) or off.
    #[arg(long, default_value = "low_var_kl")]
    kl: String,
    /// KL coefficient beta.
    #[arg(long, default_value_t = 0.001)]
    kl_coef: f64,
    /// Put the KL in the reward (R -= beta * sum_t KL) instead of the loss.
    #[arg(long)]
    kl_in_reward: bool,
    /// DAPO dynamic sampling without refill: leave out groups whose verifier scores are all equal
    /// (verl filter_groups on the score; count in dynamic_sampling/dropped_groups). For the refill
    /// of further prompts use clipo-filter (loop.mk DYNAMIC_SAMPLING=1).
    #[arg(long)]
    dynamic_sampling: bool,
    /// DAPO: leave truncated responses (finish_reason = length) out of the loss.
    #[arg(long)]
    mask_truncated: bool,
    /// DAPO soft overlong penalty: buffer length in tokens. Default: no penalty.
    #[arg(long)]
    overlong_buffer: Option<usize>,
    /// DAPO soft overlong penalty factor (with --overlong-buffer).
    #[arg(long, default_value_t = 1.0)]
    overlong_factor: f64,
    /// Response-length budget (default: the rollout's --max-new-tokens from its metadata).
    #[arg(long)]
    max_response_len: Option<usize>,
    /// Entropy bonus coefficient: the loss is pg_loss - coef x entropy, the entropy of the
    /// temperature-scaled distribution aggregated like the policy loss (verl's entropy_coeff).
    #[arg(long, default_value_t = 0.0)]
    entropy_coef: f64,
    /// AdamW learning rate (1e-6 for RL as in the paper; ~2e-3 for a tiny model's SFT).
    #[arg(long, default_value_t = 1e-6)]
    lr: f64,
    /// Learning-rate warm-up in actor updates (verl's lr_warmup_steps): the rate rises
    /// linearly from 0 (constant) or from --min-lr-ratio (cosine). Default: --lr-warmup-ratio.
    #[arg(long)]
    lr_warmup_steps: Option<u64>,
    /// Warm-up as a fraction of --total-steps (verl's lr_warmup_steps_ratio).
    #[arg(long, default_value_t = 0.0)]
    lr_warmup_ratio: f64,
    /// Learning-rate schedule after the warm-up (verl's warmup_style): constant or cosine.
    #[arg(long, default_value = "constant")]
    lr_style: LrStyle,
    /// The cosine's floor as a fraction of --lr (verl's min_lr_ratio).
    #[arg(long, default_value_t = 0.0)]
    min_lr_ratio: f64,
    /// The run's total RL steps (the cosine's length and the base of --lr-warmup-ratio). The
    /// schedule is a function of --step, so a resumed run continues it. Required with --lr-style
    /// cosine or --lr-warmup-ratio; default: none.
    #[arg(long)]
    total_steps: Option<u64>,
    /// KL coefficient control: fixed, or adaptive (verl's AdaptiveKLController; needs
    /// --kl-in-reward, as in verl). The adaptive value is carried in the policy directory.
    #[arg(long, default_value = "fixed")]
    kl_ctrl: String,
    /// Adaptive KL: target KL per token (verl's target_kl).
    #[arg(long, default_value_t = 0.1)]
    kl_target: f64,
    /// Adaptive KL: horizon in responses (verl's horizon).
    #[arg(long, default_value_t = 10000.0)]
    kl_horizon: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Gradient-norm clip; 0 turns clipping off.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Optimiser steps per RL step: the step's groups, in the trajectories' order, are cut into
    /// this many consecutive mini-batches of whole groups (as verl splits its batch in the
    /// dataloader's order). verl's ppo_trainer.yaml makes 4 (train_batch_size 1024 /
    /// ppo_mini_batch_size 256); the paper's tracks take 2 (GSM8K) and 1 (MATH).
    #[arg(long, default_value_t = 1)]
    mini_batches: usize,
    /// Rollout importance-sampling correction (verl's algorithm.rollout_correction.rollout_is):
    /// token or sequence weights pi_old / pi_behaviour from the trajectories' behaviour
    /// log-probs, truncated at --rollout-is-threshold and multiplied into the token losses;
    /// token-mask / sequence-mask drop the tokens (sequences) whose weight exceeds the threshold
    /// instead (TRL's masked IS). Off by default; the rollout_corr/* mismatch metrics are logged
    /// whenever the trajectories carry behaviour log-probs.
    #[arg(long)]
    rollout_is: Option<String>,
    /// The truncation C of the rollout IS weights (verl's rollout_is_threshold).
    #[arg(long, default_value_t = 2.0)]
    rollout_is_threshold: f64,
    /// Token budget of a micro-batch (verl's use_dynamic_bsz / ppo_max_token_len_per_gpu):
    /// each mini-batch's sequences are packed in order into micro-batches of at most this many
    /// prompt + response tokens (a longer sequence goes alone). Replaces --micro-batch; the loss
    /// and the gradient do not depend on the packing. Default: off (--micro-batch sequences).
    #[arg(long)]
    max_tokens_per_micro_batch: Option<usize>,
    /// Sequences per forward/backward pass (memory); the result does not depend on it.
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// Activation checkpointing: keep each decoder layer's input only and recompute the layer
    /// in the backward (one more forward per layer; verl's enable_gradient_checkpointing).
    /// Implies chunked log-probs. The gradient equals the plain backward's up to rounding.
    #[arg(long)]
    grad_checkpoint: bool,
    /// Chunked log-probs: lm_head, log-softmax, the sampled token's log-prob and the entropy
    /// this many response tokens at a time, forward and backward, so no (tokens x vocabulary)
    /// logits of a whole micro-batch exist. Default: off, or with --grad-checkpoint 2^25 /
    /// vocabulary tokens (128 MiB of f32 logits).
    #[arg(long)]
    logit_chunk: Option<usize>,
    /// Print the memory plan of a step with these settings as one JSON object and exit: peak
    /// bytes and their parts (weights, f32 masters, AdamW moments, gradients, activations,
    /// logits, workspace), device and host apart. Reads only --policy's config.json; opens no
    /// device and trains nothing. Sizes: --plan-seq-len tokens per sequence, --micro-batch
    /// sequences (or --max-tokens-per-micro-batch tokens) per pass.
    #[arg(long)]
    plan: bool,
    /// --plan: prompt + response tokens of each sequence.
    #[arg(long, default_value_t = 2048)]
    plan_seq_len: usize,
    /// --plan: the device the plan is for: cpu or cuda (default: --device's kind).
    #[arg(long)]
    plan_device: Option<String>,
    /// Passes over the batch.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Skip the policy update while --step < W (the reference trains only the head for the
    /// first W - 1 steps); the policy is copied through unchanged.
    #[arg(long, default_value_t = 0)]
    actor_warmup: u64,
    /// Old log-probs for the ratio: recompute (as verl) or rollout (the sampler's).
    #[arg(long, default_value = "recompute")]
    old_logprobs: String,
    /// Train on trajectories sampled by another policy than --policy.
    #[arg(long)]
    allow_off_policy: bool,
    /// Temperature of the log-probs (default: the rollout's, from its metadata).
    #[arg(long)]
    temperature: Option<f64>,
    /// SFT: prompts with reference solutions (extra_info.answer); required with --objective sft.
    #[arg(long, required_if_eq("objective", "sft"))]
    prompts: Option<PathBuf>,
    /// SFT: optimiser steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// SFT: examples per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// SFT: seed of the example order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute dtype of the forward and backward passes: f32, bf16 or f16 (default: f32 on
    /// the CPU, bf16 on CUDA). Master weights and AdamW moments are f32 whatever this is: with
    /// bf16 or f16 the optimiser keeps an f32 master copy of every weight in host memory, read
    /// from the checkpoint, and rounds it into the model after each step.
    #[arg(long)]
    dtype: Option<String>,
    /// Keep the f32 masters and the AdamW moments in host memory and step them on the host's
    /// cores, uploading the new weights (DeepSpeed's ZeRO-Offload: how a 7B model trains on one
    /// 80 GB card). Default: on a GPU they live with the weights and AdamW runs there as tensor
    /// ops; on the CPU the two are the same.
    #[arg(long)]
    offload_optimizer: bool,
    /// Weights dtype of the saved model. f32 writes the master copy (a resumed run continues
    /// bit for bit); bf16 rounds it, and the next step's masters start from the rounded weights.
    #[arg(long, value_enum, default_value = "f32")]
    save_dtype: Dtype,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Recompute even when the output is up to date.
    #[arg(long)]
    force: bool,
}

/// `--plan`: the memory plan of a step with these settings, from config.json alone.
fn memory_plan(a: &Args, memory: Memory) -> anyhow::Result<clipo::model::plan::Plan> {
    let config = a.policy.join("config.json");
    let cfg = clipo::model::Config::from_file(&config)?;
    let kind = a.plan_device.as_deref().unwrap_or(&a.device);
    let cuda = match kind.split(':').next() {
        Some("cpu") => false,
        Some("cuda") => true,
        _ => bail!("--plan-device {kind}: expected cpu or cuda"),
    };
    let dtype = match a.dtype.as_deref() {
        None if cuda => candle_core::DType::BF16,
        d => clipo::policy::parse_dtype(d, &candle_core::Device::Cpu)?,
    };
    args::count("--plan-seq-len", a.plan_seq_len)?;
    let seqs = match a.max_tokens_per_micro_batch {
        Some(budget) => (budget / a.plan_seq_len).max(1),
        None => a.micro_batch,
    };
    let fused = !cuda && matches!(dtype, candle_core::DType::F32 | candle_core::DType::F64) && !clipo::model::composed();
    Ok(clipo::model::plan::plan(&cfg, &clipo::model::plan::PlanRequest {
        dtype,
        fused,
        memory,
        seq_len: a.plan_seq_len,
        response_len: a.plan_seq_len,
        seqs,
        offload: a.offload_optimizer,
    }))
}

fn checked(a: Args) -> anyhow::Result<Result<UpdateConfig, SftConfig>> {
    if a.plan {
        args::model_config_dir("--policy", &a.policy)?;
    } else {
        args::model_dir("--policy", &a.policy)?;
    }
    if let Some(c) = a.logit_chunk {
        args::count("--logit-chunk", c)?;
    }
    let memory = Memory { grad_checkpoint: a.grad_checkpoint, logit_chunk: a.logit_chunk, host_grads: a.offload_optimizer };
    args::count("--micro-batch", a.micro_batch)?;
    if let Some(t) = a.max_tokens_per_micro_batch {
        args::count("--max-tokens-per-micro-batch", t)?;
    }
    if a.plan {
        let plan = memory_plan(&a, memory)?;
        println!("{}", serde_json::to_string(&plan)?);
        std::process::exit(0);
    }
    let out = a.out.clone().context("--out is required")?;
    {
        let mut inputs = vec![("--policy", a.policy.as_path())];
        for (flag, p) in [("--ref", &a.reference), ("--trajectories", &a.trajectories), ("--rewards", &a.rewards), ("--embeddings", &a.embeddings), ("--prompts", &a.prompts)] {
            if let Some(p) = p {
                inputs.push((flag, p.as_path()));
            }
        }
        clipo::paths::refuse_aliases(&inputs, &[("--out", &out)])?;
    }
    if let Some(r) = &a.reference {
        args::model_dir("--ref", r)?;
    }
    for (flag, p, what) in [
        ("--trajectories", &a.trajectories, "a trajectories table (clipo-rollout's .parquet)"),
        ("--rewards", &a.rewards, "a rewards table (clipo-verify's .parquet)"),
        ("--embeddings", &a.embeddings, "an embeddings table (clipo-embed's .parquet)"),
        ("--prompts", &a.prompts, "a prompts table with reference solutions (verl .parquet or .jsonl)"),
    ] {
        if let Some(p) = p {
            args::input_file(flag, p, what)?;
        }
    }
    clipo::policy::parse_dtype(a.dtype.as_deref(), &candle_core::Device::Cpu)?;
    args::positive("--lr", a.lr)?;
    args::non_negative("--weight-decay", a.weight_decay)?;
    args::non_negative("--max-grad-norm", a.max_grad_norm)?;
    args::count("--mini-batches", a.mini_batches)?;
    args::count("--epochs", a.epochs)?;
    args::non_negative("--entropy-coef", a.entropy_coef)?;
    args::non_negative("--kl-coef", a.kl_coef)?;
    args::non_negative("--overlong-factor", a.overlong_factor)?;
    if let Some(b) = a.overlong_buffer {
        args::count("--overlong-buffer", b)?;
    }
    if let Some(m) = a.max_response_len {
        args::count("--max-response-len", m)?;
    }
    if let Some(t) = a.temperature {
        args::positive("--temperature", t)?;
    }
    args::positive("--kl-target", a.kl_target)?;
    let lr_schedule = LrSchedule::new(a.lr_style, a.lr_warmup_steps, a.lr_warmup_ratio, a.total_steps, a.min_lr_ratio)?;
    args::positive("--kl-horizon", a.kl_horizon)?;
    let optim = AdamWConfig::new(a.lr, a.weight_decay);
    let max_grad_norm = (a.max_grad_norm > 0.0).then_some(a.max_grad_norm);
    let save_dtype = match a.save_dtype {
        Dtype::F32 => SaveDtype::F32,
        Dtype::Bf16 => SaveDtype::Bf16,
    };
    if let Objective::Sft = a.objective {
        let prompts = a.prompts.context("--prompts is required with --objective sft")?;
        args::count("--steps", a.steps)?;
        args::count("--batch-size", a.batch_size)?;
        return Ok(Err(SftConfig {
            policy: a.policy,
            prompts,
            out,
            steps: a.steps,
            batch_size: a.batch_size,
            micro_batch: a.micro_batch,
            memory,
            optim,
            max_grad_norm,
            seed: a.seed,
            device: a.device,
            dtype: a.dtype,
            offload_optimizer: a.offload_optimizer,
            save_dtype,
        }));
    }
    let kl = match a.kl.as_str() {
        "off" | "none" => None,
        s => Some(s.parse::<KlEstimator>().map_err(anyhow::Error::msg)?),
    };
    ensure!(kl.is_none() || a.reference.is_some(), "--kl {} needs --ref (or pass --kl off)", a.kl);
    let gmpo = matches!(a.loss, PolicyLoss::Gmpo);
    let loss = PolicyLossConfig {
        loss: a.loss,
        clip_low: a.clip_low.unwrap_or(if gmpo { 0.4 } else { 0.2 }),
        clip_high: a.clip_high.unwrap_or(if gmpo { 0.4 } else { 0.2 }),
        dual_clip: (!a.no_dual_clip).then_some(a.dual_clip),
        agg: a.agg.unwrap_or(if matches!(a.loss, PolicyLoss::Gspo) { Aggregation::SeqMeanTokenMean } else { Aggregation::TokenMean }),
    };
    // 1 - eps_low must stay a ratio > 0 (PPO, GSPO); GMPO clips in log space.
    if gmpo {
        args::positive("--clip-low", loss.clip_low)?;
    } else {
        args::open("--clip-low", loss.clip_low, 0.0, 1.0)?;
    }
    args::positive("--clip-high", loss.clip_high)?;
    ensure!(a.dual_clip.is_finite() && a.dual_clip > 1.0, "--dual-clip {}: expected a finite number > 1", a.dual_clip);
    let old_logprobs = match a.old_logprobs.as_str() {
        "recompute" => OldLogprobs::Recompute,
        "rollout" => OldLogprobs::Rollout,
        s => bail!("--old-logprobs {s}: expected recompute or rollout"),
    };
    let estimator = if a.no_std { AdvantageEstimator::GrpoNoStd } else { a.adv };
    args::positive("--rollout-is-threshold", a.rollout_is_threshold)?;
    let rollout_is = match a.rollout_is.as_deref() {
        None | Some("off") => None,
        Some(mode @ ("token" | "sequence" | "token-mask" | "sequence-mask")) => {
            ensure!(!gmpo, "--rollout-is applies to token losses (ppo, gspo), not to --loss gmpo");
            Some(RolloutIs { sequence: mode.starts_with("sequence"), threshold: a.rollout_is_threshold, mask: mode.ends_with("mask") })
        }
        Some(s) => bail!("--rollout-is {s}: expected token, sequence, token-mask, sequence-mask or off"),
    };
    let kl_ctrl = match a.kl_ctrl.as_str() {
        "fixed" => KlControl::Fixed,
        "adaptive" => {
            ensure!(a.kl_in_reward, "--kl-ctrl adaptive needs --kl-in-reward (verl adapts the coefficient of the KL in the reward only)");
            KlControl::Adaptive { target: a.kl_target, horizon: a.kl_horizon }
        }
        s => bail!("--kl-ctrl {s}: expected fixed or adaptive"),
    };
    Ok(Ok(UpdateConfig {
        policy: a.policy,
        reference: a.reference,
        trajectories: a.trajectories.context("--trajectories is required")?,
        rewards: a.rewards.context("--rewards is required")?,
        embeddings: a.embeddings,
        step: a.step,
        out,
        estimator,
        loss,
        kl,
        kl_coef: a.kl_coef,
        entropy_coef: a.entropy_coef,
        kl_in_reward: a.kl_in_reward,
        dynamic_sampling: a.dynamic_sampling,
        mask_truncated: a.mask_truncated,
        overlong: a.overlong_buffer.map(|buffer| Overlong { buffer, factor: a.overlong_factor }),
        max_response_len: a.max_response_len,
        optim,
        rollout_is,
        lr_schedule,
        kl_ctrl,
        max_grad_norm,
        mini_batches: a.mini_batches,
        micro_batch: a.micro_batch,
        max_tokens_per_micro_batch: a.max_tokens_per_micro_batch,
        memory,
        epochs: a.epochs,
        actor_warmup: a.actor_warmup,
        old_logprobs,
        allow_off_policy: a.allow_off_policy,
        temperature: a.temperature,
        device: a.device,
        dtype: a.dtype,
        offload_optimizer: a.offload_optimizer,
        save_dtype,
        force: a.force,
    }))
}

fn main() -> ExitCode {
    let result = checked(Args::parse()).and_then(|cfg| match cfg {
        Ok(cfg) => {
            clipo::interrupt::on_interrupt(&clipo::interrupt::rerun_message("clipo-update", &cfg.out));
            let out = clipo::threads::on_pool(|| run(&cfg)).context("clipo-update")?;
            if out.up_to_date {
                eprintln!("clipo-update: {} is up to date, nothing written", cfg.out.display());
                println!("{}", serde_json::Value::Object(out.metrics));
            } else {
                if let Some(note) = &out.note {
                    eprintln!("clipo-update: {note}");
                }
                println!("{}", serde_json::Value::Object(out.metrics));
            }
            Ok(())
        }
        Err(cfg) => {
            let mut log = |step: usize, loss: f64| {
                if step % 10 == 0 || step + 1 == cfg.steps {
                    eprintln!("clipo-update sft: step {step:>5} loss {loss:.4}");
                }
            };
            let loss = clipo::threads::on_pool(|| run_sft(&cfg, &mut log)).context("clipo-update --objective sft")?;
            eprintln!("clipo-update sft: {} steps, final loss {loss:.4}, wrote {}", cfg.steps, cfg.out.display());
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
