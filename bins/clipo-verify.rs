//! clipo-verify: score each response of a trajectories table and write a rewards table, with
//! the reference verifier (last `\boxed{}` answer against the ground truth, REFERENCE.md §5) by
//! default, verl's GSM8K scorer, or the user's own scorer program (schemas/scorer.md), chosen per
//! data source.
//!
//! Examples:
//! `clipo-verify --input trajectories.parquet --output rewards.parquet --summary`
//! `clipo-verify -i t.parquet -o r.parquet --scorer 'python3 scripts/verl_scorer.py my_reward.py'`
//! `clipo-verify -i t.parquet -o r.parquet --scorer-for 'openai/gsm8k=gsm8k' --scorer-for 'code/*=./run_tests'`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clipo::stages::verify::{run, VerifyConfig};
use clipo::verify::dispatch::{Dispatch, Rule, Scorer};

/// Score each response: reads a trajectories table (clipo-rollout's .parquet); writes a rewards
/// table (.parquet: score, correct, extracted answer, reason), by the paper's verifier, verl's
/// GSM8K scorer or your own program, per data source.
#[derive(Parser, Debug)]
#[command(version, long_about = None, args_override_self = true)]
struct Args {
    /// Input table; needs the columns prompt_id, sample_idx, data_source, ground_truth and
    /// response_text (a trajectories table has them); an extra_info column, if any, is passed
    /// to scorer programs.
    #[arg(long, short)]
    input: PathBuf,
    /// Output rewards table (written atomically; unchanged inputs make a re-run a no-op).
    #[arg(long, short)]
    output: PathBuf,
    /// Print accuracy (mean@n), pass@k, the score distribution and the count of each reason per
    /// data source as a table on stderr and as one JSON line on stdout.
    #[arg(long)]
    summary: bool,
    /// The scorer of every data source that no --scorer-for rule takes: a command line run as
    /// `sh -c 'CMD'`, one JSON line per response in and out (schemas/scorer.md), e.g.
    /// 'python3 scripts/verl_scorer.py my_reward.py' for a verl reward file; or a built-in:
    /// builtin or conrl (the paper's verifier, the default), conrl-format (the same, and 0.1
    /// for a wrong answer in a non-empty \boxed{}), gsm8k (verl's, strict `#### 72`),
    /// gsm8k-flexible (verl's, the last number).
    #[arg(long, value_name = "CMD")]
    scorer: Option<String>,
    /// PATTERN=SCORER: score the data sources that match the glob PATTERN (`*` any characters,
    /// `?` one) with SCORER (a built-in's name or a command line, as for --scorer). Repeatable;
    /// the first matching rule wins. Default: none (--scorer scores every data source).
    #[arg(long = "scorer-for", value_name = "PATTERN=SCORER")]
    scorer_for: Vec<String>,
    /// Processes of each scorer program run side by side (at least 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    scorer_workers: usize,
    /// Seconds a scorer program may take over one response (its first includes the program's
    /// start); past it the program is killed and restarted and the response scores 0 with
    /// reason `timeout`.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    scorer_timeout: f64,
    /// Threads for the built-in scorers (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Recompute even when the output is up to date.
    #[arg(long)]
    force: bool,
}

impl TryFrom<Args> for VerifyConfig {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> anyhow::Result<Self> {
        clipo::args::input_file("--input", &a.input, "a trajectories table (clipo-rollout's .parquet)")?;
        clipo::paths::refuse_aliases(&[("--input", &a.input)], &[("--output", &a.output)])?;
        let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        let rules = a.scorer_for.iter().map(|r| Rule::parse(r)).collect::<clipo::error::Result<Vec<_>>>()?;
        let default = match &a.scorer {
            Some(s) => Scorer::parse(s).context("--scorer")?,
            None => Scorer::Conrl,
        };
        let scorer_workers = clipo::args::count("--scorer-workers", a.scorer_workers)?;
        let timeout = clipo::args::positive("--scorer-timeout", a.scorer_timeout)?;
        Ok(VerifyConfig {
            input: a.input,
            output: a.output,
            threads,
            dispatch: Dispatch { rules, default },
            scorer_workers,
            scorer_timeout: std::time::Duration::from_secs_f64(timeout),
            force: a.force,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let summary = args.summary;
    let result = VerifyConfig::try_from(args).and_then(|cfg| {
        clipo::interrupt::on_interrupt(&clipo::interrupt::rerun_message("clipo-verify", &cfg.output));
        run(&cfg).context("clipo-verify")
    });
    match result {
        Ok(out) => {
            let s = &out.summary.overall;
            eprintln!(
                "clipo-verify: {} responses{}, {} correct ({:.2}%), mean score {:.3}, {:.2}s ({:.0} responses/s)",
                out.rows,
                if out.skipped { " (output up to date, nothing written)" } else { "" },
                s.correct,
                100.0 * s.accuracy,
                s.score.mean,
                out.seconds,
                out.rows as f64 / out.seconds.max(1e-9)
            );
            for p in &out.unmatched_patterns {
                eprintln!("clipo-verify: warning: --scorer-for pattern `{p}` matches no data source of the input");
            }
            for (source, reasons) in out.summary.all_zero() {
                eprintln!("clipo-verify: warning: every response of {source} scored 0 (reasons: {reasons})");
            }
            if summary {
                eprint!("{}", out.summary.table());
                println!("{}", serde_json::to_string(&out.summary).expect("summary serialises"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
