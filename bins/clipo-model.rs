//! clipo-model: model directories. Imports a llama.cpp GGUF as a Hugging Face directory and
//! describes a directory (architecture, sizes, parameters, vocabulary, stop tokens).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clipo::model::gguf::import_gguf;
use clipo::model::hf::{ModelInfo, SaveDtype};

/// Model directories: GGUF import and inspection.
#[derive(Parser)]
#[command(name = "clipo-model", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a GGUF (llama architecture, e.g. SmolLM2-135M-Instruct.Q4_1.gguf) as a Hugging
    /// Face directory: config.json, model.safetensors, tokenizer.json, tokenizer_config.json
    /// (with the chat template), special_tokens_map.json, generation_config.json.
    ImportGguf {
        /// The .gguf file.
        gguf: PathBuf,
        /// Output directory; replaced if it exists (written to OUT_DIR.tmp, then renamed).
        out_dir: PathBuf,
        /// Weight dtype in model.safetensors: f32 (default) or bf16.
        #[arg(long, default_value = "f32")]
        dtype: SaveDtype,
    },
    /// Print a model directory's architecture, sizes, parameter count, vocabulary, stop
    /// tokens and whether it has a chat template.
    Info {
        /// The model directory.
        dir: PathBuf,
    },
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::ImportGguf { gguf, out_dir, dtype } => {
            let s = import_gguf(&gguf, &out_dir, dtype)
                .with_context(|| format!("importing {} into {}", gguf.display(), out_dir.display()))?;
            eprintln!(
                "clipo-model: imported {} ({} layers, {} tensors, {} parameters, vocabulary {}) as {dtype} into {} \
                 in {:.1} s (read {:.1} s, write {:.1} s)",
                s.architecture, s.layers, s.tensors, s.params, s.vocab_size, out_dir.display(),
                s.read_s + s.write_s, s.read_s, s.write_s
            );
        }
        Command::Info { dir } => {
            let info = ModelInfo::read(&dir).with_context(|| format!("reading {}", dir.display()))?;
            println!("{info}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clipo-model: {e:#}");
            ExitCode::from(2)
        }
    }
}
