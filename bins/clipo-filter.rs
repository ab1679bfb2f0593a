//! clipo-filter: DAPO's dynamic sampling (verl's `algorithm.filter_groups`). Reads rounds of one
//! RL step (clipo-rollout --round r, each verified), keeps the groups whose verifier metric
//! varies, in round order, up to --keep, and writes the merged trajectories (with a `round`
//! column) and rewards; prints one JSON line (rounds, groups, informative, kept, enough).
//! scripts/dynamic_sampling.sh runs rounds until `enough` or --max-rounds.
//!
//! Example: `clipo-filter --trajectories r0.t.parquet --rewards r0.r.parquet --trajectories
//!   r1.t.parquet --rewards r1.r.parquet --keep 512 --out-trajectories t.parquet --out-rewards r.parquet`

use std::process::ExitCode;

use anyhow::{ensure, Context};
use clap::Parser;
use clipo::stages::filter::{run, FilterConfig, Metric};

/// DAPO's dynamic sampling: reads one step's sampling rounds (a trajectories and a rewards table
/// per round, in round order); writes the step's merged trajectories and rewards tables, the first
/// --keep groups whose metric varies.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// A round's trajectories table (repeat, round 0 first).
    #[arg(long, required = true)]
    trajectories: Vec<std::path::PathBuf>,
    /// The same round's rewards table (repeat, in the same order).
    #[arg(long, required = true)]
    rewards: Vec<std::path::PathBuf>,
    /// Groups to keep: the step's prompts (verl's train_batch_size).
    #[arg(long)]
    keep: usize,
    /// The metric that must vary within a group: correct (verl's acc) or score.
    #[arg(long, default_value = "correct")]
    metric: Metric,
    /// Merged trajectories (with a `round` column).
    #[arg(long)]
    out_trajectories: std::path::PathBuf,
    /// Merged rewards.
    #[arg(long)]
    out_rewards: std::path::PathBuf,
    /// Recompute even when the outputs are up to date.
    #[arg(long)]
    force: bool,
}

impl TryFrom<Args> for FilterConfig {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> anyhow::Result<Self> {
        ensure!(a.trajectories.len() == a.rewards.len(), "{} --trajectories but {} --rewards: give one of each per round", a.trajectories.len(), a.rewards.len());
        for p in a.trajectories.iter().chain(&a.rewards) {
            ensure!(p.is_file(), "{}: no such file", p.display());
        }
        clipo::args::count("--keep", a.keep)?;
        let inputs: Vec<(&str, &std::path::Path)> = a
            .trajectories
            .iter()
            .map(|p| ("--trajectories", p.as_path()))
            .chain(a.rewards.iter().map(|p| ("--rewards", p.as_path())))
            .collect();
        clipo::paths::refuse_aliases(&inputs, &[("--out-trajectories", &a.out_trajectories), ("--out-rewards", &a.out_rewards)])?;
        Ok(FilterConfig {
            rounds: a.trajectories.into_iter().zip(a.rewards).collect(),
            keep: a.keep,
            metric: a.metric,
            out_trajectories: a.out_trajectories,
            out_rewards: a.out_rewards,
            force: a.force,
        })
    }
}

fn main() -> ExitCode {
    let result = FilterConfig::try_from(Args::parse()).and_then(|cfg| {
        clipo::interrupt::on_interrupt(&clipo::interrupt::rerun_message("clipo-filter", &cfg.out_trajectories));
        run(&cfg).context("clipo-filter")
    });
    match result {
        Ok(s) => {
            eprintln!(
                "clipo-filter: {} rounds, {} groups, {} informative, kept {}{}{}",
                s.rounds,
                s.groups,
                s.informative,
                s.kept,
                if s.enough { "" } else { " (fewer than --keep)" },
                if s.up_to_date { " (outputs up to date, nothing written)" } else { "" }
            );
            println!("{}", serde_json::to_string(&s).expect("summary serialises"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
