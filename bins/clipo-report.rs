//! clipo-report: what a run did. Writes a self-contained HTML report of a run directory and
//! prints its per-step table, or audits one step's responses.
//!
//! Examples: `clipo-report runs/demo` (writes runs/demo/report.html);
//! `clipo-report runs/demo --step 40 --samples --limit 3`;
//! `clipo-report runs/compare --compare` (after `make compare`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clipo::report::{self, audit::DEFAULT_LIMIT};

/// What a run did: reads a run directory (metrics.jsonl, summary.json, step-NNNNNN/ tables); writes
/// report.html (every curve, self-contained) and prints the per-step table, or with --step N
/// --samples prints one step's responses, flagging correct ones with an unusually low contrastive
/// reward, or with --compare summarises the runs of `make compare`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The run directory (holds metrics.jsonl; written by the loop driver).
    run_dir: PathBuf,
    /// Where to write the report, atomically via <out>.tmp (default: RUN_DIR/report.html, or
    /// RUN_DIR/report.md, the Markdown report, with --compare). Not used with --samples.
    #[arg(long, conflicts_with = "samples")]
    out: Option<PathBuf>,
    /// The step to audit (its directory is RUN_DIR/step-NNNNNN) with --samples (required
    /// there), or to print with --line (default: the last step).
    #[arg(long)]
    step: Option<u64>,
    /// Audit the responses of --step instead of writing the report: every response of the
    /// chosen prompts with score, contrastive reward, advantage, extracted answer and excerpt.
    #[arg(long, requires = "step")]
    samples: bool,
    /// A prompt_id to audit (repeat for several). Default: the first --limit groups with at
    /// least 2 correct responses.
    #[arg(long = "prompt", value_name = "ID", requires = "samples")]
    prompts: Vec<String>,
    /// How many groups to audit when no --prompt is given (at least 1).
    #[arg(long, default_value_t = DEFAULT_LIMIT, requires = "samples")]
    limit: usize,
    /// First rebuild RUN_DIR/metrics.jsonl and RUN_DIR/summary.json from the step directories
    /// (what the loop driver does after each step).
    #[arg(long)]
    collect: bool,
    /// With --collect: the algorithm name written into summary.json.
    #[arg(long, default_value = "clipo", requires = "collect")]
    algo: String,
    /// Print one line for --step (default: the last step): reward, accuracy, boxed fraction,
    /// response length, tokens/s, seconds, a no-op update, evaluations; write no report.
    #[arg(long, conflicts_with_all = ["samples", "out"])]
    line: bool,
    /// Print, per epoch, the steps and the prompts their rollouts took (total and distinct: with
    /// --per-step's drop_last epochs each prompt is seen at most once an epoch) and write no
    /// report.
    #[arg(long, conflicts_with_all = ["samples", "out"])]
    epochs: bool,
    /// RUN_DIR is a comparison (`make compare`: RUN_DIR/<algo>/seed-<n>/ run directories):
    /// print, per evaluation split, the accuracy and the step checker's lucky fraction (mean
    /// and standard deviation over seeds, paired differences between algorithms with a 95%
    /// bootstrap interval) at the end and at every evaluation; write RUN_DIR/summary.json and
    /// the Markdown report.
    #[arg(long, conflicts_with_all = ["samples", "collect", "epochs", "step"])]
    compare: bool,
}

/// What to do, checked.
enum Mode {
    Report { run_dir: PathBuf, out: PathBuf },
    Audit { run_dir: PathBuf, step: u64, prompts: Option<Vec<String>>, limit: usize },
    Compare { dir: PathBuf, out: PathBuf },
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
        if a.compare {
            let out = a.out.unwrap_or_else(|| a.run_dir.join("report.md"));
            anyhow::ensure!(!out.is_dir(), "--out {} is a directory: give a file name (default RUN_DIR/report.md)", out.display());
            anyhow::ensure!(
                clipo::paths::canonical(&out) != clipo::paths::canonical(&a.run_dir.join(report::SUMMARY_FILE)),
                "--out {} is the comparison's summary.json: give another file",
                out.display()
            );
            return Ok(Mode::Compare { dir: a.run_dir, out });
        }
        let out = a.out.unwrap_or_else(|| a.run_dir.join(report::REPORT_FILE));
        // The report goes beside the run's files, never over them: not over its metrics, not
        // over a step directory, not over the run itself.
        let metrics = a.run_dir.join(report::METRICS_FILE);
        anyhow::ensure!(!out.is_dir(), "--out {} is a directory: give a file name (default RUN/{})", out.display(), report::REPORT_FILE);
        clipo::paths::refuse_aliases(&[("RUN/metrics.jsonl", &metrics)], &[("--out", &out)])?;
        let (o, r) = (clipo::paths::canonical(&out), clipo::paths::canonical(&a.run_dir));
        anyhow::ensure!(
            !r.starts_with(&o) && o.parent().is_none_or(|p| p == r || !p.starts_with(&r)),
            "--out {} would write over the run directory's files: put the report in RUN itself or outside it",
            out.display()
        );
        Ok(Mode::Report { run_dir: a.run_dir, out })
    }
}

fn run(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Report { run_dir, out } => {
            let run = report::load_run(&run_dir).context("clipo-report")?;
            report::write_atomic(&out, &report::render_html(&run)).context("writing the report")?;
            print!("{}", report::terminal_table(&run));
            eprintln!("clipo-report: {} steps, report written to {}", run.steps.len(), out.display());
            eprint!("{}", clipo::runlog::closing_summary(&run_dir).with_context(|| format!("clipo-report {}", run_dir.display()))?);
        }
        Mode::Compare { dir, out } => {
            let c = report::compare::load(&dir).context("clipo-report --compare")?;
            let summary = serde_json::to_string_pretty(&report::compare::summary_json(&c)).expect("json") + "\n";
            let summary_path = dir.join(report::SUMMARY_FILE);
            report::write_atomic(&summary_path, &summary).context("writing the summary")?;
            report::write_atomic(&out, &report::compare::markdown_report(&c)).context("writing the report")?;
            print!("{}", report::compare::text(&c));
            eprintln!("clipo-report: wrote {} and {}", summary_path.display(), out.display());
        }
        Mode::Audit { run_dir, step, prompts, limit } => {
            let text = report::audit_samples(&run_dir, step, prompts.as_deref(), limit)
                .context("clipo-report --samples")?;
            print!("{text}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.epochs {
        return match clipo::runlog::epoch_audit(&args.run_dir) {
            Ok(epochs) => {
                for e in &epochs {
                    let (first, last) = (e.steps.first().copied().unwrap_or(0), e.steps.last().copied().unwrap_or(0));
                    println!(
                        "epoch {}: steps {first}-{last} ({} steps), {} prompts, {} distinct{}",
                        e.epoch,
                        e.steps.len(),
                        e.prompts,
                        e.distinct,
                        if e.prompts == e.distinct { "" } else { "  REPEATS" }
                    );
                }
                if epochs.iter().all(|e| e.prompts == e.distinct) { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if args.step.is_some() && !args.samples && !args.line {
        eprintln!("error: --step needs --samples (audit the step's responses) or --line (print its line)");
        return ExitCode::from(2);
    }
    if args.collect || args.line {
        let collected = if args.collect {
            clipo::runlog::collect(&args.run_dir, &args.algo).map(|_| ()).with_context(|| format!("clipo-report {} --collect", args.run_dir.display()))
        } else {
            Ok(())
        };
        let done = collected.and_then(|_| {
            if args.line {
                let line = clipo::runlog::step_line(&args.run_dir, args.step).with_context(|| format!("clipo-report {} --line", args.run_dir.display()))?;
                println!("{line}");
            }
            Ok(args.line)
        });
        match done {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => {}
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    match Mode::try_from(args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
