//! clipo-model: model directories. Imports a llama.cpp GGUF as a Hugging Face directory and
//! describes a directory (architecture, sizes, parameters, vocabulary, stop tokens); builds the
//! embedded tiny policy (`init --preset tiny`).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clipo::model::gguf::import_gguf;
use clipo::model::hf::{ModelInfo, SaveDtype};

/// Model directories: reads GGUF files (`import-gguf`) and Hugging Face model directories (`info`,
/// `compare`); writes Hugging Face model directories (`import-gguf`, `init`: a tiny policy with no
/// download).
#[derive(Parser)]
#[command(name = "clipo-model", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a GGUF (llama, qwen2 or qwen3 architecture, e.g. SmolLM2-135M-Instruct.Q4_1.gguf;
    /// byte-level BPE or SentencePiece vocabulary) as a Hugging Face directory: config.json,
    /// model.safetensors, tokenizer.json, tokenizer_config.json (with the chat template),
    /// special_tokens_map.json, generation_config.json.
    ImportGguf {
        /// The .gguf file.
        gguf: PathBuf,
        /// Output directory (written to OUT_DIR.tmp, then renamed; an existing one is replaced
        /// only with --force).
        out_dir: PathBuf,
        /// Weight dtype in model.safetensors: f32 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: SaveDtype,
        /// Replace OUT_DIR when it already exists (refused otherwise).
        #[arg(long)]
        force: bool,
    },
    /// Print a model directory's architecture, sizes, parameter count, vocabulary, stop
    /// tokens, whether it has a chat template, and whether clipo loads it (or what of its
    /// config.json is unsupported).
    Info {
        /// The model directory.
        dir: PathBuf,
    },
    /// Compare two trainings of one model: for each weight of BASE, how far A and B moved from
    /// it and whether in the same direction. Prints one JSON object: weights, moved_a, moved_b
    /// (fractions of weights that changed), same_direction (fraction of all weights that both
    /// moved the same way), max_abs_diff (|A - B|, largest over all weights).
    Compare {
        /// The model both started from.
        base: PathBuf,
        /// One trained copy.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
    /// Build a policy from a preset with no download: `tiny` is a ~0.9M-parameter Llama with
    /// its own byte-level BPE tokenizer (trained on the embedded task) and a ChatML template,
    /// randomly initialised from --seed.
    Init {
        /// Output directory (an existing one is replaced only with --force).
        out_dir: PathBuf,
        /// The preset (only `tiny`).
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// Seed of the weights and of the tokenizer's training text.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace OUT_DIR when it already exists (refused otherwise).
        #[arg(long)]
        force: bool,
    },
}

/// No command replaces a directory it did not make without --force.
fn refuse_existing(out_dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let non_empty = out_dir.is_file() || std::fs::read_dir(out_dir).is_ok_and(|mut d| d.next().is_some());
    anyhow::ensure!(
        force || !non_empty,
        "{} already exists and is not empty: pass --force to replace it (everything inside is removed), or choose another directory",
        out_dir.display()
    );
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::ImportGguf {
            gguf,
            out_dir,
            dtype,
            force,
        } => {
            refuse_existing(&out_dir, force)?;
            clipo::paths::refuse_aliases(&[("GGUF", &gguf)], &[("OUT_DIR", &out_dir)])?;
            let s = import_gguf(&gguf, &out_dir, dtype).with_context(|| {
                format!("importing {} into {}", gguf.display(), out_dir.display())
            })?;
            eprintln!(
                "clipo-model: imported {} ({} layers, {} tensors, {} parameters, vocabulary {}) as {dtype} into {} \
                 in {:.1} s (read {:.1} s, write {:.1} s)",
                s.architecture, s.layers, s.tensors, s.params, s.vocab_size, out_dir.display(),
                s.read_s + s.write_s, s.read_s, s.write_s
            );
        }
        Command::Init { out_dir, preset, seed, force } => {
            refuse_existing(&out_dir, force)?;
            anyhow::ensure!(preset == "tiny", "--preset {preset}: the only preset is `tiny`");
            let p = clipo::tiny::TinyPreset::tiny();
            clipo::tiny::init_tiny(&out_dir, &p, seed).with_context(|| format!("initialising {}", out_dir.display()))?;
            eprintln!("clipo-model: wrote the tiny preset (seed {seed}) to {}", out_dir.display());
        }
        Command::Compare { base, a, b } => {
            let load = |d: &PathBuf| -> anyhow::Result<Vec<(String, Vec<f32>)>> {
                let m = clipo::model::Model::load(d, &candle_core::Device::Cpu, candle_core::DType::F32).with_context(|| format!("reading {}", d.display()))?;
                m.vars().into_iter().map(|(n, v)| Ok((n, v.as_tensor().flatten_all()?.to_vec1::<f32>()?))).collect()
            };
            let (w0, wa, wb) = (load(&base)?, load(&a)?, load(&b)?);
            let (mut n, mut ma, mut mb, mut same, mut worst) = (0usize, 0usize, 0usize, 0usize, 0f32);
            for (((name, x0), (na, xa)), (nb, xb)) in w0.iter().zip(&wa).zip(&wb) {
                anyhow::ensure!(name == na && name == nb && x0.len() == xa.len() && x0.len() == xb.len(), "{name}: the three models differ in shape");
                for k in 0..x0.len() {
                    let (da, db) = (xa[k] - x0[k], xb[k] - x0[k]);
                    n += 1;
                    ma += usize::from(da != 0.0);
                    mb += usize::from(db != 0.0);
                    same += usize::from(da != 0.0 && db != 0.0 && da.signum() == db.signum());
                    worst = worst.max((xa[k] - xb[k]).abs());
                }
            }
            let f = |k: usize| k as f64 / n.max(1) as f64;
            println!(
                "{}",
                serde_json::json!({ "weights": n, "moved_a": f(ma), "moved_b": f(mb), "same_direction": f(same), "max_abs_diff": worst })
            );
        }
        Command::Info { dir } => {
            let info =
                ModelInfo::read(&dir).with_context(|| format!("reading {}", dir.display()))?;
            println!("{info}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match clipo::threads::on_pool(|| run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clipo-model: {e:#}");
            ExitCode::from(2)
        }
    }
}
