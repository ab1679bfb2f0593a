//! clipo-embed: CLIPO's contrastive step (REFERENCE.md §3-4). Projects each response's hidden
//! state with the contrastive head, computes the per-sample contrastive losses and rewards,
//! steps the head once with AdamW, and writes an embeddings table and the new head.
//!
//! Example: `clipo-embed --trajectories t.parquet --rewards r.parquet --head h.safetensors
//!   --out e.parquet --head-out h2.safetensors --step 3`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clipo::args;
use clap::Parser;
use clipo::contrastive::{ContrastiveConfig, HeadKind, Level, LossKind, MaskedLabel, Similarity};
use clipo::stages::embed::{run, EmbedConfig};

/// CLIPO's contrastive step: reads a trajectories table with pooled hidden states, its rewards
/// table and the contrastive head; writes an embeddings table (.parquet: contrastive loss and
/// reward per response) and the head after one AdamW step.
#[derive(Parser, Debug)]
#[command(version, long_about = None, args_override_self = true)]
struct Args {
    /// Trajectories table with a `hidden` column (clipo-rollout --hidden official|mean).
    #[arg(long)]
    trajectories: PathBuf,
    /// Rewards table (clipo-verify).
    #[arg(long)]
    rewards: PathBuf,
    /// The head to start from: a safetensors file with `proj.weight` (D, d) (or `proj.0.weight`
    /// and `proj.2.weight` for the mlp head), with or without AdamW moments. Default: none
    /// (needs --init-head).
    #[arg(long)]
    head: Option<PathBuf>,
    /// Create the head from --seed when --head is not given or does not exist yet.
    #[arg(long)]
    init_head: bool,
    /// Output embeddings table.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the stepped head (and its JSON sidecar, `<file>.json`).
    #[arg(long)]
    head_out: PathBuf,
    /// RL step (seeds the InfoNCE positive draws).
    #[arg(long, default_value_t = 0)]
    step: u64,
    /// Head: linear or mlp.
    #[arg(long, default_value = "linear")]
    head_type: HeadKind,
    /// D, the embedding size (512 on the GSM8K track, 2048 on the MATH track).
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Loss: infonce, supcon_in, supcon_out or soft_nn.
    #[arg(long, default_value = "infonce")]
    loss: LossKind,
    /// Level: group (positives and negatives from the prompt's group), cross (positives from
    /// the group, negatives from the batch) or batch.
    #[arg(long, default_value = "group")]
    level: Level,
    /// Similarity: cosine, -cosine or l2.
    #[arg(long, default_value = "cosine", allow_hyphen_values = true)]
    similarity: Similarity,
    /// Temperature tau of the contrastive loss.
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// Label excluded from the anchors: 0 (only correct responses are anchors), 1 (only
    /// incorrect ones), -1 (every response).
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    masked_label: MaskedLabel,
    /// Keep anchors with no positive or no negative (the reference skips them).
    #[arg(long)]
    no_skip_trivial: bool,
    /// lambda, the reward scale: r_con = max(c - lambda * L * correct, floor).
    #[arg(long, default_value_t = 0.2)]
    lambda: f64,
    /// c, the reward constant.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    constant: f64,
    /// The reward floor.
    #[arg(long, default_value_t = -0.5, allow_hyphen_values = true)]
    floor: f64,
    /// Head AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Head AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Never step the head (the paper's CLIPO-fixed ablation).
    #[arg(long)]
    fixed_head: bool,
    /// Seed of the head init and of the InfoNCE draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute even when the outputs are up to date.
    #[arg(long)]
    force: bool,
}

impl TryFrom<Args> for EmbedConfig {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> anyhow::Result<Self> {
        clipo::args::input_file("--trajectories", &a.trajectories, "a trajectories table (clipo-rollout's .parquet)")?;
        clipo::args::input_file("--rewards", &a.rewards, "a rewards table (clipo-verify's .parquet)")?;
        let mut inputs = vec![("--trajectories", a.trajectories.as_path()), ("--rewards", a.rewards.as_path())];
        if let Some(h) = &a.head {
            inputs.push(("--head", h.as_path()));
        }
        clipo::paths::refuse_aliases(&inputs, &[("--out", &a.out), ("--head-out", &a.head_out)])?;
        args::count("--dim", a.dim)?;
        args::positive("--temperature", a.temperature)?;
        args::non_negative("--lambda", a.lambda)?;
        args::finite("--constant", a.constant)?;
        args::finite("--floor", a.floor)?;
        args::non_negative("--lr", a.lr)?;
        args::non_negative("--weight-decay", a.weight_decay)?;
        let contrastive = ContrastiveConfig {
            head: a.head_type,
            proj_dim: a.dim,
            loss: a.loss,
            level: a.level,
            similarity: a.similarity,
            tau: a.temperature,
            masked_label: a.masked_label,
            skip_trivial: !a.no_skip_trivial,
            lambda: a.lambda,
            constant: a.constant,
            floor: a.floor,
            lr: a.lr,
            weight_decay: a.weight_decay,
            fixed_head: a.fixed_head,
            seed: a.seed,
            ..ContrastiveConfig::default()
        };
        contrastive.validate().map_err(anyhow::Error::msg)?;
        Ok(EmbedConfig {
            trajectories: a.trajectories,
            rewards: a.rewards,
            head: a.head,
            init_head: a.init_head,
            out: a.out,
            head_out: a.head_out,
            step: a.step,
            contrastive,
            force: a.force,
        })
    }
}

fn main() -> ExitCode {
    let result = EmbedConfig::try_from(Args::parse())
        .and_then(|cfg| {
            clipo::interrupt::on_interrupt(&clipo::interrupt::rerun_message("clipo-embed", &cfg.out));
            clipo::threads::on_pool(|| run(&cfg)).context("clipo-embed")
        });
    match result {
        Ok(s) if s.up_to_date => {
            eprintln!("clipo-embed: outputs up to date, nothing written");
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&s.metrics).expect("metrics serialise"));
            ExitCode::SUCCESS
        }
        Ok(s) => {
            eprintln!(
                "clipo-embed: {} rows, {} anchors, head loss {:.4}, head {}",
                s.rows,
                s.anchors,
                s.head_loss,
                if s.stepped { "stepped" } else { "not stepped (no anchor or --fixed-head)" }
            );
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&s.metrics).expect("metrics serialise"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
