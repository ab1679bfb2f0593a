//! Numeric flags, checked once in each binary's `TryFrom<Args>`: a value outside its range is a
//! named error that says what is allowed (exit 2), never a panic later or a NaN in a checkpoint.
//! Integer flags below zero or not numbers are refused by clap itself (also exit 2).

use crate::error::{Error, Result};

fn refuse(flag: &str, v: impl std::fmt::Display, allowed: &str) -> Error {
    Error::Config(format!("{flag} {v}: expected {allowed}"))
}

/// Any finite number.
pub fn finite(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a finite number"))
    }
}

/// A finite number > 0.
pub fn positive(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a finite number > 0"))
    }
}

/// A finite number >= 0.
pub fn non_negative(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a finite number >= 0"))
    }
}

/// A number in [0, 1].
pub fn unit(flag: &str, v: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a number in [0, 1]"))
    }
}

/// A number in (lo, hi).
pub fn open(flag: &str, v: f64, lo: f64, hi: f64) -> Result<f64> {
    if v > lo && v < hi {
        Ok(v)
    } else {
        Err(refuse(flag, v, &format!("a number in ({lo}, {hi})")))
    }
}

/// A count >= 1.
pub fn count<T: Copy + PartialOrd + From<u8> + std::fmt::Display>(flag: &str, v: T) -> Result<T> {
    if v >= T::from(1) {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a whole number >= 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_messages() {
        assert_eq!(positive("--lr", 1e-6).unwrap(), 1e-6);
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(positive("--lr", v).is_err());
        }
        assert_eq!(positive("--lr", f64::NAN).unwrap_err().to_string(), "--lr NaN: expected a finite number > 0");
        assert!(non_negative("--weight-decay", 0.0).is_ok() && non_negative("--weight-decay", f64::NAN).is_err());
        assert!(unit("--top-p", 1.0).is_ok() && unit("--top-p", 1.01).is_err() && unit("--top-p", f64::NAN).is_err());
        assert!(open("--clip-low", 0.2, 0.0, 1.0).is_ok() && open("--clip-low", 1.0, 0.0, 1.0).is_err());
        assert!(count("--n", 0usize).is_err() && count("--n", 1usize).is_ok());
        assert!(finite("--constant", -3.0).is_ok() && finite("--constant", f64::NEG_INFINITY).is_err());
    }
}

/// What a model-directory flag expects, for its errors.
const MODEL_DIR: &str = "a Hugging Face model directory (config.json, model.safetensors or shards, tokenizer.json)";

/// A model directory: one message per way it can be wrong, each saying what was expected.
pub fn model_dir(flag: &str, p: &std::path::Path) -> Result<()> {
    model_config_dir(flag, p)?;
    let shown = p.display();
    if !p.join("model.safetensors").is_file() && !p.join("model.safetensors.index.json").is_file() {
        return Err(Error::Config(format!("{flag} {shown} has no model.safetensors (nor model.safetensors.index.json): expected {MODEL_DIR}")));
    }
    if !p.join("tokenizer.json").is_file() {
        return Err(Error::Config(format!("{flag} {shown} has no tokenizer.json: expected {MODEL_DIR}")));
    }
    Ok(())
}

/// A directory with a model's config.json, all that `clipo-update --plan` reads.
pub fn model_config_dir(flag: &str, p: &std::path::Path) -> Result<()> {
    let shown = p.display();
    if p.is_file() {
        return Err(Error::Config(format!("{flag} {shown} is a file: expected {MODEL_DIR}")));
    }
    if !p.is_dir() {
        return Err(Error::Config(format!("{flag} {shown}: no such directory (expected {MODEL_DIR})")));
    }
    if !p.join("config.json").is_file() {
        return Err(Error::Config(format!(
            "{flag} {shown} has no config.json: expected {MODEL_DIR}; `clipo-model import-gguf` makes one from a GGUF file"
        )));
    }
    Ok(())
}

/// An input table (`what`: e.g. "a prompts table (.parquet or .jsonl)").
pub fn input_file(flag: &str, p: &std::path::Path, what: &str) -> Result<()> {
    let shown = p.display();
    if p.is_dir() {
        return Err(Error::Config(format!("{flag} {shown} is a directory: expected {what}")));
    }
    if !p.is_file() {
        return Err(Error::Config(format!("{flag} {shown}: no such file (expected {what})")));
    }
    Ok(())
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn model_directories_and_input_files_are_named_with_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), "{}").unwrap();
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(model_config_dir("--policy", d).is_ok());
        assert!(msg(model_dir("--policy", d)).contains("has no model.safetensors (nor model.safetensors.index.json): expected a Hugging Face"));
        std::fs::write(d.join("model.safetensors.index.json"), "{}").unwrap();
        assert!(msg(model_dir("--policy", d)).contains("has no tokenizer.json: expected a Hugging Face"));
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
        assert!(model_dir("--policy", d).is_ok());
        assert!(msg(model_dir("--policy", &d.join("config.json"))).contains("is a file: expected a Hugging Face model directory"));
        assert!(msg(model_dir("--policy", &d.join("nope"))).contains("no such directory (expected a Hugging Face"));
        std::fs::create_dir(d.join("empty")).unwrap();
        assert!(msg(model_dir("--policy", &d.join("empty"))).contains("has no config.json"));
        assert!(msg(input_file("--prompts", d, "a prompts table (.parquet or .jsonl)")).contains("is a directory: expected a prompts table"));
        assert!(msg(input_file("--prompts", &d.join("x.parquet"), "a prompts table")).contains("no such file (expected a prompts table)"));
    }
}
