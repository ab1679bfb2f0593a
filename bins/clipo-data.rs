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

/// Make prompts tables: reads your prompts (JSONL or verl .parquet; `convert`) or nothing (`arith`
/// generates the embedded task); writes prompts tables (verl .parquet with a `prompt_id` column),
/// the input of clipo-rollout.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate the embedded arithmetic word-problem task: OUT/{train,test,test_p1,test_p2}.parquet.
    Arith {
        /// Output directory (train.parquet, test.parquet, test_p1.parquet: names and numbers
        /// changed, test_p2.parquet: a distractor sentence added).
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
        /// Probability that a training problem carries a distractor sentence, in [0, 1].
        #[arg(long, default_value_t = 0.25)]
        distractor_prob: f64,
        /// Seed of the generator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Convert prompts (JSONL or verl parquet) to a verl parquet with `prompt_id`.
    ///
    /// The JSONL holds one JSON object a line:
    ///
    /// {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "ground_truth": "5"}
    ///
    /// - `messages`: the chat, a list of {role, content} (or `prompt`: the same list, or a
    ///   string taken as one user message); required.
    /// - `ground_truth`: the answer the verifier checks, a string or a number (or
    ///   `reward_model.ground_truth`); required.
    /// - `data_source`: picks the scorer (clipo-verify --scorer-for); default: the file's name
    ///   without its extension.
    /// - `prompt_id` (or `id`): default: a hash of data_source, split, index and the messages.
    /// - optional: `ability`, `reward_model.style`, `extra_info.split` (or `split`),
    ///   `extra_info.index` (or `index`), `extra_info.answer` (or `solution`: a reference solution
    ///   for clipo-update --objective sft).
    ///
    /// A verl parquet (data_source, prompt, reward_model, extra_info, ...) is read as it is and
    /// gets its `prompt_id` column.
    #[command(verbatim_doc_comment)]
    Convert {
        /// The prompts: a .jsonl (or .json) file of JSON lines as above, or a verl .parquet.
        input: PathBuf,
        /// The prompts table to write (.parquet; atomically, a no-op when up to date).
        output: PathBuf,
    },
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
