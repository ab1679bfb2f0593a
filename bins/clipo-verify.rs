//! clipo-verify: score each response of a trajectories table with the reference verifier
//! (last `\boxed{}` answer against the ground truth, REFERENCE.md §5) and write a rewards table.
//!
//! Example: `clipo-verify --input trajectories.parquet --output rewards.parquet --summary`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clipo::stages::verify::{run, VerifyConfig};

/// Score responses with the reference verifier: trajectories.parquet -> rewards.parquet.
#[derive(Parser, Debug)]
#[command(version, long_about = None, args_override_self = true)]
struct Args {
    /// Input table; needs the columns prompt_id, sample_idx, data_source, ground_truth and
    /// response_text (a trajectories table has them).
    #[arg(long, short)]
    input: PathBuf,
    /// Output rewards table (written atomically; unchanged inputs make a re-run a no-op).
    #[arg(long, short)]
    output: PathBuf,
    /// Print accuracy (mean@n) and pass@k per data source as a table on stderr and as one JSON
    /// line on stdout.
    #[arg(long)]
    summary: bool,
    /// Scoring threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Recompute even when the output is up to date.
    #[arg(long)]
    force: bool,
}

impl TryFrom<Args> for VerifyConfig {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> anyhow::Result<Self> {
        anyhow::ensure!(a.input.is_file(), "--input {}: no such file", a.input.display());
        clipo::paths::refuse_aliases(&[("--input", &a.input)], &[("--output", &a.output)])?;
        let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        Ok(VerifyConfig { input: a.input, output: a.output, threads, force: a.force })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let summary = args.summary;
    let result = VerifyConfig::try_from(args).and_then(|cfg| {
        run(&cfg).with_context(|| format!("clipo-verify {}", cfg.input.display()))
    });
    match result {
        Ok(out) => {
            let s = &out.summary.overall;
            eprintln!(
                "clipo-verify: {} responses{}, {} correct ({:.2}%), {:.2}s ({:.0} responses/s)",
                out.rows,
                if out.skipped { " (output up to date, nothing written)" } else { "" },
                s.correct,
                100.0 * s.accuracy,
                out.seconds,
                out.rows as f64 / out.seconds.max(1e-9)
            );
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
