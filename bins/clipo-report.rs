//! clipo-report: what a run did. Writes a self-contained HTML report of a run directory and
//! prints its per-step table, or audits one step's responses.
//!
//! Examples: `clipo-report runs/demo` (writes runs/demo/report.html);
//! `clipo-report runs/demo --step 40 --samples --limit 3`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clipo::report::{self, audit::DEFAULT_LIMIT};

/// Report on a run directory (metrics.jsonl, summary.json, step-NNNNNN/ tables): write an HTML
/// page with plots and print the per-step table, or with --step N --samples list one step's
/// responses and flag correct ones with an unusually low contrastive reward.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The run directory (holds metrics.jsonl; written by the loop driver).
    run_dir: PathBuf,
    /// Where to write the HTML report (default: RUN_DIR/report.html; written atomically via
    /// <out>.tmp). Not used with --samples.
    #[arg(long, conflicts_with = "samples")]
    out: Option<PathBuf>,
    /// The step to audit (its directory is RUN_DIR/step-NNNNNN); needs --samples.
    #[arg(long, requires = "samples")]
    step: Option<u64>,
    /// Audit the responses of --step instead of writing the report: every response of the
    /// chosen prompts with score, contrastive reward, advantage, extracted answer and excerpt.
    #[arg(long, requires = "step")]
    samples: bool,
    /// A prompt_id to audit (repeat for several; default: the first --limit groups with at
    /// least 2 correct responses).
    #[arg(long = "prompt", value_name = "ID", requires = "samples")]
    prompts: Vec<String>,
    /// How many groups to audit when no --prompt is given (default 5; at least 1).
    #[arg(long, default_value_t = DEFAULT_LIMIT, requires = "samples")]
    limit: usize,
}

/// What to do, checked.
enum Mode {
    Report { run_dir: PathBuf, out: PathBuf },
    Audit { run_dir: PathBuf, step: u64, prompts: Option<Vec<String>>, limit: usize },
}

impl TryFrom<Args> for Mode {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> anyhow::Result<Self> {
        anyhow::ensure!(a.run_dir.is_dir(), "{}: no such run directory", a.run_dir.display());
        if a.samples {
            anyhow::ensure!(a.limit >= 1, "--limit must be at least 1");
            let step = a.step.expect("clap requires --step with --samples");
            let prompts = (!a.prompts.is_empty()).then_some(a.prompts);
            return Ok(Mode::Audit { run_dir: a.run_dir, step, prompts, limit: a.limit });
        }
        let out = a.out.unwrap_or_else(|| a.run_dir.join(report::REPORT_FILE));
        Ok(Mode::Report { run_dir: a.run_dir, out })
    }
}

fn run(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Report { run_dir, out } => {
            let run = report::load_run(&run_dir).with_context(|| format!("clipo-report {}", run_dir.display()))?;
            report::write_atomic(&out, &report::render_html(&run)).context("writing the report")?;
            print!("{}", report::terminal_table(&run));
            eprintln!("clipo-report: {} steps, report written to {}", run.steps.len(), out.display());
        }
        Mode::Audit { run_dir, step, prompts, limit } => {
            let text = report::audit_samples(&run_dir, step, prompts.as_deref(), limit)
                .with_context(|| format!("clipo-report {} --step {step} --samples", run_dir.display()))?;
            print!("{text}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match Mode::try_from(Args::parse()).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
