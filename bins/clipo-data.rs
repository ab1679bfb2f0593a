//! clipo-data: make prompts tables for the other stages.
//!
//! `clipo-data arith --out data/arith` writes the embedded arithmetic task (train, test and two
//! perturbed test splits); `clipo-data convert mine.jsonl mine.parquet` converts JSONL prompts
//! (`messages` or `prompt`, and `ground_truth`) to the verl parquet schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clipo::stages::data::{run_arith, run_convert, ArithJob};
use clipo::task::ArithConfig;

#[derive(Parser, Debug)]
#[command(version, about = "Make prompts tables (verl schema) for clipo's stages")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate the embedded arithmetic word-problem task: OUT/{train,test,test_p1,test_p2}.parquet.
    Arith {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Training problems.
        #[arg(long, default_value_t = 20_000)]
        train: usize,
        /// Held-out problems (each also in test_p1 and test_p2). 400 or more keeps the noise of
        /// an accuracy estimate near 2.5 points.
        #[arg(long, default_value_t = 500)]
        test: usize,
        /// Additions or subtractions per problem.
        #[arg(long, default_value_t = 2)]
        steps: usize,
        /// Largest starting quantity and operand.
        #[arg(long, default_value_t = 9)]
        max_number: u32,
        /// Probability that a training problem carries a distractor sentence (0..1).
        #[arg(long, default_value_t = 0.25)]
        distractor_prob: f64,
        /// Seed of the generator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Convert prompts (JSONL or verl parquet) to a verl parquet with `prompt_id`.
    Convert { input: PathBuf, output: PathBuf },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Cmd::Arith { out, train, test, steps, max_number, distractor_prob, seed } => {
            if !(0.0..=1.0).contains(&distractor_prob) {
                eprintln!("error: --distractor-prob {distractor_prob}: expected a number in [0, 1]");
                return ExitCode::from(2);
            }
            if train == 0 || test == 0 {
                eprintln!("error: --train and --test must be at least 1");
                return ExitCode::from(2);
            }
            let job = ArithJob { out_dir: out, n_train: train, n_test: test, task: ArithConfig { steps, max_number, distractor_prob, seed } };
            run_arith(&job).map(|files| {
                for (path, rows) in files {
                    if rows == 0 {
                        eprintln!("clipo-data: {} is up to date", path.display());
                    } else {
                        eprintln!("clipo-data: wrote {rows} prompts to {}", path.display());
                    }
                }
            })
        }
        Cmd::Convert { input, output } => clipo::paths::refuse_aliases(&[("INPUT", &input)], &[("OUTPUT", &output)]).and_then(|()| run_convert(&input, &output)).map(|n| {
            if n == 0 {
                eprintln!("clipo-data: {} is up to date", output.display());
            } else {
                eprintln!("clipo-data: wrote {n} prompts to {}", output.display());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
