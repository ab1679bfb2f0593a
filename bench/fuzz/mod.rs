//! A mutation fuzzer for the readers that take users' files: the Parquet table reader (through
//! the verl prompts reader), the JSONL prompts reader and the contrastive head loader. Valid
//! seed files are mutated (bit flips, byte overwrites, truncation, insertions, splices of random
//! bytes) and read; every read must return `Ok` or an error, never panic. Shared by
//! `cargo bench --bench fuzz_readers` (a fixed time) and `tests/fuzz.rs` (a fixed count).

use std::path::{Path, PathBuf};

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    pub ok: u64,
    pub errors: u64,
    /// (reader, the input that panicked, the panic message)
    pub panics: Vec<(&'static str, PathBuf, String)>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(rng.below(b.len() + 1)),
            3 => {
                let i = rng.below(b.len() + 1);
                let n = 1 + rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(i..i, junk);
            }
            4 if b.len() > 8 => {
                // Overwrite a little-endian length-like word with an extreme value.
                let i = rng.below(b.len() - 8);
                let v: u64 = [0, 1, u32::MAX as u64, u64::MAX, 1 << 40][rng.below(5)];
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let i = rng.below(b.len() + 1);
                b.truncate(i);
                b.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            }
        }
    }
    b
}

/// Valid seed files in `dir`: (reader name, file name, bytes).
fn seeds(dir: &Path) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let job = clipo::stages::data::ArithJob { out_dir: dir.join("seed"), n_train: 3, n_test: 1, task: Default::default() };
    clipo::stages::data::run_arith(&job).expect("seed prompts");
    let parquet = std::fs::read(dir.join("seed/train.parquet")).unwrap();
    let jsonl = concat!(
        r#"{"data_source": "mine", "messages": [{"role": "user", "content": "1 + 1?"}], "ground_truth": "2"}"#,
        "\n",
        r#"{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2 + 3?"}], "reward_model": {"ground_truth": "5"}, "extra_info": {"index": 3, "split": "train", "answer": "5"}}"#,
        "\n"
    )
    .as_bytes()
    .to_vec();
    let head_path = dir.join("seed/head.safetensors");
    let head = clipo::contrastive::ContrastiveHead::init(clipo::contrastive::HeadKind::Mlp, 6, 4, 0).unwrap();
    head.save(&head_path).unwrap();
    let head = std::fs::read(&head_path).unwrap();
    vec![("verl parquet prompts", "x.parquet", parquet), ("jsonl prompts", "x.jsonl", jsonl), ("contrastive head", "x.safetensors", head)]
}

fn read(reader: &str, path: &Path) -> bool {
    match reader {
        "contrastive head" => clipo::contrastive::ContrastiveHead::load(path).is_ok(),
        _ => clipo::prompts::read_prompts(path).is_ok(),
    }
}

/// Runs until `budget` says stop (called with the executions so far), starting from `seed`.
pub fn run(dir: &Path, seed: u64, mut budget: impl FnMut(u64) -> bool) -> Report {
    let seeds = seeds(dir);
    let mut rng = Rng(seed | 1);
    let mut report = Report::default();
    // Panics are caught and counted; the default hook would print each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while budget(report.executions) {
        let (reader, name, bytes) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, bytes);
        let path = dir.join(name);
        std::fs::write(&path, &input).unwrap();
        match std::panic::catch_unwind(|| read(reader, &path)) {
            Ok(true) => report.ok += 1,
            Ok(false) => report.errors += 1,
            Err(p) => {
                let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                let keep = dir.join(format!("panic-{}-{name}", report.panics.len()));
                std::fs::write(&keep, &input).unwrap();
                report.panics.push((reader, keep, msg));
            }
        }
        report.executions += 1;
    }
    std::panic::set_hook(hook);
    report
}
