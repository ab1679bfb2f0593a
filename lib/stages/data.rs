//! clipo-data: make prompts tables. `arith` writes the embedded task's splits
//! ([`crate::task`]); `convert` turns JSONL (or any verl parquet) into a verl prompts parquet
//! with `prompt_id`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::prompts::{read_prompts, write_prompts, Prompt};
use crate::schema::prompts::TABLE;
use crate::table::{up_to_date, Provenance};
use crate::task::{generate, ArithConfig};

const STAGE: &str = "clipo-data";

/// `clipo-data arith`: the four splits of the embedded task, as `DIR/{train,test,test_p1,test_p2}.parquet`.
#[derive(Debug, Clone)]
pub struct ArithJob {
    pub out_dir: PathBuf,
    pub n_train: usize,
    pub n_test: usize,
    pub task: ArithConfig,
}

/// Returns (file, rows) for each split written (nothing is rewritten when up to date).
pub fn run_arith(job: &ArithJob) -> Result<Vec<(PathBuf, usize)>> {
    if job.task.steps == 0 || job.task.max_number == 0 {
        return Err(Error::Config("--steps and --max-number must be at least 1".into()));
    }
    let config = serde_json::json!({ "task": job.task, "n_train": job.n_train, "n_test": job.n_test });
    let prov = Provenance::new(TABLE, STAGE, config, &[])?;
    let names = ["train", "test", "test_p1", "test_p2"];
    let paths: Vec<PathBuf> = names.iter().map(|n| job.out_dir.join(format!("{n}.parquet"))).collect();
    if paths.iter().all(|p| up_to_date(p, &prov)) {
        return Ok(paths.into_iter().map(|p| (p, 0)).collect());
    }
    let task = generate(&job.task, job.n_train, job.n_test);
    let splits: [&[Prompt]; 4] = [&task.train, &task.test, &task.test_p1, &task.test_p2];
    let mut out = Vec::new();
    for (path, rows) in paths.into_iter().zip(splits) {
        let n = write_prompts(&path, rows, &prov)?;
        out.push((path, n));
    }
    Ok(out)
}

/// `clipo-data convert`: read prompts (JSONL or verl parquet), write verl parquet with ids.
pub fn run_convert(input: &Path, output: &Path) -> Result<usize> {
    let prov = Provenance::new(TABLE, STAGE, serde_json::json!({ "convert": true }), &[input])?;
    if up_to_date(output, &prov) {
        return Ok(0);
    }
    let prompts = read_prompts(input)?;
    write_prompts(output, &prompts, &prov)
}
