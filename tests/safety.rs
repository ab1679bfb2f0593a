//! No argument destroys data: outputs that alias inputs, numbers out of range, stale inputs and
//! truncated outputs end with a named error (exit 2) and every input byte for byte unchanged, or
//! with a recomputation. Every numeric flag of every binary is tried with the values it must
//! refuse.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::{ok, run, s, stderr};

/// A tiny policy, the arithmetic task and one step's tables (rollout, verify, embed), made once.
struct Fixture {
    _dir: tempfile::TempDir,
    policy: PathBuf,
    train: PathBuf,
    traj: PathBuf,
    rewards: PathBuf,
    emb: PathBuf,
    head: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (policy, train) = common::tiny_and_task(d, 40, 8);
        let (traj, rewards, emb, head) = (d.join("t.parquet"), d.join("r.parquet"), d.join("e.parquet"), d.join("head.safetensors"));
        ok(run("clipo-rollout", &["--policy", s(&policy), "--prompts", s(&train), "--per-step", "4", "--step", "1", "--n", "4", "--max-new-tokens", "8", "--out", s(&traj)]));
        ok(run("clipo-verify", &["--input", s(&traj), "--output", s(&rewards)]));
        ok(run("clipo-embed", &["--trajectories", s(&traj), "--rewards", s(&rewards), "--init-head", "--dim", "8", "--step", "1", "--out", s(&emb), "--head-out", s(&head)]));
        Fixture { _dir: dir, policy, train, traj, rewards, emb, head }
    })
}

/// SHA-256 of every file under `p` (a file or a directory), by relative path.
fn hashes(p: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    if p.is_file() {
        out.push((String::new(), clipo::table::file_sha256(p).unwrap()));
    } else if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            for (rel, h) in hashes(&e) {
                out.push((format!("{}/{rel}", e.file_name().unwrap().to_string_lossy()), h));
            }
        }
    }
    out
}

/// Runs `bin args`, asserting exit 2 with `needle` in the message and every path of `keep`
/// unchanged.
fn refused(bin: &str, args: &[&str], needle: &str, keep: &[&Path]) -> Output {
    let before: Vec<_> = keep.iter().map(|p| hashes(p)).collect();
    let o = run(bin, args);
    assert_eq!(o.status.code(), Some(2), "{bin} {args:?}: exit {:?}\n{}", o.status.code(), stderr(&o));
    assert!(stderr(&o).contains(needle), "{bin} {args:?}: expected `{needle}` in\n{}", stderr(&o));
    let after: Vec<_> = keep.iter().map(|p| hashes(p)).collect();
    assert_eq!(before, after, "{bin} {args:?} changed an input");
    o
}

/// A copy of the fixture's policy, so that a test may point an output at it.
fn policy_copy(dir: &Path) -> PathBuf {
    let p = dir.join("policy");
    std::fs::create_dir(&p).unwrap();
    for e in std::fs::read_dir(&fixture().policy).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), p.join(e.file_name())).unwrap();
    }
    p
}

#[test]
fn outputs_that_alias_inputs_are_refused_and_the_inputs_kept() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // rollout --out = --prompts, spelled another way.
    let prompts = dir.path().join("train.parquet");
    std::fs::copy(&f.train, &prompts).unwrap();
    let alias = dir.path().join("./sub/../train.parquet");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    refused("clipo-rollout", &["--policy", s(&f.policy), "--prompts", s(&prompts), "--n", "2", "--out", s(&alias)], "is the same path as --prompts", &[&prompts]);
    // update --out = --policy (the input and the KL reference).
    let policy = policy_copy(dir.path());
    let args = ["--policy", s(&policy), "--ref", s(&policy), "--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--step", "1", "--allow-off-policy", "--out", s(&policy)];
    refused("clipo-update", &args, "--out", &[&policy]);
    // embed --out = --trajectories; --head-out = --head.
    let traj = dir.path().join("t.parquet");
    std::fs::copy(&f.traj, &traj).unwrap();
    refused("clipo-embed", &["--trajectories", s(&traj), "--rewards", s(&f.rewards), "--init-head", "--out", s(&traj), "--head-out", s(&dir.path().join("h"))], "is the same path as --trajectories", &[&traj]);
    refused("clipo-embed", &["--trajectories", s(&traj), "--rewards", s(&f.rewards), "--head", s(&f.head), "--step", "2", "--out", s(&dir.path().join("e")), "--head-out", s(&f.head)], "--head-out", &[&f.head]);
    // verify through a symlink; data convert; a report over its metrics; an import over the GGUF.
    let link = dir.path().join("link.parquet");
    std::os::unix::fs::symlink(&traj, &link).unwrap();
    refused("clipo-verify", &["--input", s(&traj), "--output", s(&link)], "is the same path as --input", &[&traj]);
    refused("clipo-data", &["convert", s(&prompts), s(&prompts)], "is the same path as INPUT", &[&prompts]);
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(run_dir.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
    refused("clipo-report", &[s(&run_dir), "--out", s(&run_dir.join("metrics.jsonl"))], "is the same path as RUN/metrics.jsonl", &[&run_dir]);
    // clipo-model init over an existing model directory needs --force.
    refused("clipo-model", &["init", "--preset", "tiny", s(&policy)], "pass --force", &[&policy]);
}

#[test]
fn numbers_out_of_range_end_in_a_named_error_and_no_output() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_copy(dir.path());
    let out = dir.path().join("out");
    // Each binary's valid base arguments, then (flag, values it must refuse).
    let rl = ["--policy", s(&policy), "--ref", s(&policy), "--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--step", "1", "--allow-off-policy", "--out", s(&out)];
    let sft = ["--objective", "sft", "--policy", s(&policy), "--prompts", s(&f.train), "--out", s(&out)];
    let rollout = ["--policy", s(&policy), "--prompts", s(&f.train), "--out", s(&out)];
    let head_out = dir.path().join("h");
    let embed = ["--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--init-head", "--out", s(&out), "--head-out", s(&head_out)];
    let verify = ["--input", s(&f.traj), "--output", s(&out)];
    let arith = ["arith", "--out", s(&out)];
    let report = [s(dir.path()), "--samples", "--step", "1"];
    let float = ["nan", "inf", "-inf"];
    let table: Vec<(&str, &[&str], &str, Vec<&str>)> = vec![
        ("clipo-update", &rl, "--lr", [&float[..], &["0", "-1"]].concat()),
        ("clipo-update", &rl, "--weight-decay", [&float[..], &["-1"]].concat()),
        ("clipo-update", &rl, "--max-grad-norm", [&float[..], &["-1"]].concat()),
        ("clipo-update", &rl, "--clip-low", [&float[..], &["0", "-1", "1"]].concat()),
        ("clipo-update", &rl, "--clip-high", [&float[..], &["0", "-1"]].concat()),
        ("clipo-update", &rl, "--dual-clip", [&float[..], &["1", "0", "-1"]].concat()),
        ("clipo-update", &rl, "--kl-coef", [&float[..], &["-1"]].concat()),
        ("clipo-update", &rl, "--entropy-coef", [&float[..], &["-1"]].concat()),
        ("clipo-update", &rl, "--overlong-factor", [&float[..], &["-1"]].concat()),
        ("clipo-update", &rl, "--temperature", [&float[..], &["0", "-1"]].concat()),
        ("clipo-update", &rl, "--lr-warmup-ratio", [&float[..], &["-1", "1.5"]].concat()),
        ("clipo-update", &rl, "--min-lr-ratio", [&float[..], &["-1", "1.5"]].concat()),
        ("clipo-update", &rl, "--kl-target", [&float[..], &["0", "-1"]].concat()),
        ("clipo-update", &rl, "--kl-horizon", [&float[..], &["0", "-1"]].concat()),
        ("clipo-update", &rl, "--rollout-is-threshold", [&float[..], &["0", "-1"]].concat()),
        ("clipo-update", &rl, "--overlong-buffer", vec!["0", "-1", "nan"]),
        ("clipo-update", &rl, "--max-response-len", vec!["0", "-1", "nan"]),
        ("clipo-update", &rl, "--mini-batches", vec!["0", "-1", "nan"]),
        ("clipo-update", &rl, "--micro-batch", vec!["0", "-1", "nan"]),
        ("clipo-update", &rl, "--epochs", vec!["0", "-1", "nan"]),
        ("clipo-update", &rl, "--total-steps", vec!["0", "-1", "nan"]),
        ("clipo-update", &rl, "--lr-warmup-steps", vec!["-1", "nan"]),
        ("clipo-update", &rl, "--actor-warmup", vec!["-1", "nan"]),
        ("clipo-update", &rl, "--step", vec!["-1", "nan"]),
        ("clipo-update", &sft, "--steps", vec!["0", "-1", "nan"]),
        ("clipo-update", &sft, "--batch-size", vec!["0", "-1", "nan"]),
        ("clipo-update", &sft, "--seed", vec!["-1", "nan"]),
        ("clipo-rollout", &rollout, "--n", vec!["0", "-1", "nan"]),
        ("clipo-rollout", &rollout, "--temperature", [&float[..], &["0", "-1"]].concat()),
        ("clipo-rollout", &rollout, "--top-p", [&float[..], &["0", "-1", "1.5"]].concat()),
        ("clipo-rollout", &rollout, "--top-k", vec!["-1", "nan"]),
        ("clipo-rollout", &rollout, "--max-new-tokens", vec!["0", "-1", "nan"]),
        ("clipo-rollout", &rollout, "--max-prompt-tokens", vec!["0", "-1", "nan"]),
        ("clipo-rollout", &rollout, "--batch-size", vec!["0", "-1", "nan"]),
        ("clipo-rollout", &rollout, "--seed", vec!["-1", "nan"]),
        ("clipo-rollout", &rollout, "--step", vec!["-1", "nan"]),
        ("clipo-rollout", &rollout, "--offset", vec!["-1", "nan"]),
        ("clipo-rollout", &rollout, "--limit", vec!["0", "-1", "nan"]),
        ("clipo-rollout", &rollout, "--per-step", vec!["0", "-1", "nan"]),
        ("clipo-embed", &embed, "--dim", vec!["0", "-1", "nan"]),
        ("clipo-embed", &embed, "--temperature", [&float[..], &["0", "-1"]].concat()),
        ("clipo-embed", &embed, "--lambda", [&float[..], &["-1"]].concat()),
        ("clipo-embed", &embed, "--constant", float.to_vec()),
        ("clipo-embed", &embed, "--floor", float.to_vec()),
        ("clipo-embed", &embed, "--lr", [&float[..], &["-1"]].concat()),
        ("clipo-embed", &embed, "--weight-decay", [&float[..], &["-1"]].concat()),
        ("clipo-embed", &embed, "--seed", vec!["-1", "nan"]),
        ("clipo-embed", &embed, "--step", vec!["-1", "nan"]),
        ("clipo-verify", &verify, "--threads", vec!["0", "-1", "nan"]),
        ("clipo-data", &arith, "--train", vec!["0", "-1", "nan"]),
        ("clipo-data", &arith, "--test", vec!["0", "-1", "nan"]),
        ("clipo-data", &arith, "--steps", vec!["0", "-1", "nan"]),
        ("clipo-data", &arith, "--max-number", vec!["0", "-1", "nan"]),
        ("clipo-data", &arith, "--distractor-prob", [&float[..], &["-1", "1.5"]].concat()),
        ("clipo-data", &arith, "--seed", vec!["-1", "nan"]),
        ("clipo-report", &report, "--limit", vec!["0", "-1", "nan"]),
    ];
    let mut tried = 0;
    for (bin, base, flag, values) in &table {
        for v in values {
            let arg = format!("{flag}={v}");
            let mut args = base.to_vec();
            args.push(&arg);
            let o = refused(bin, &args, flag, &[&policy, &f.traj]);
            assert!(o.stdout.is_empty(), "{bin} {arg}: printed a result");
            assert!(!out.exists(), "{bin} {arg}: left an output");
            tried += 1;
        }
    }
    assert!(tried > 150, "{tried}");
}

#[test]
fn stale_inputs_and_truncated_outputs() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Rewards and embeddings of an older rollout (another seed) against the current one.
    let traj2 = d.join("t2.parquet");
    ok(run("clipo-rollout", &["--policy", s(&f.policy), "--prompts", s(&f.train), "--per-step", "4", "--step", "1", "--n", "4", "--max-new-tokens", "8", "--seed", "3", "--out", s(&traj2)]));
    let out = d.join("policy");
    let o = refused(
        "clipo-update",
        &["--policy", s(&f.policy), "--trajectories", s(&traj2), "--rewards", s(&f.rewards), "--kl", "off", "--step", "1", "--out", s(&out)],
        "is stale: it was made from another --trajectories",
        &[&f.rewards, &traj2],
    );
    assert!(stderr(&o).contains("clipo-verify"), "{}", stderr(&o));
    assert!(!out.exists());
    let rewards2 = d.join("r2.parquet");
    ok(run("clipo-verify", &["--input", s(&traj2), "--output", s(&rewards2)]));
    refused(
        "clipo-update",
        &["--policy", s(&f.policy), "--trajectories", s(&traj2), "--rewards", s(&rewards2), "--embeddings", s(&f.emb), "--kl", "off", "--step", "1", "--out", s(&out)],
        "remake it with clipo-embed",
        &[&f.emb],
    );
    // A head of another step than the previous one.
    refused(
        "clipo-embed",
        &["--trajectories", s(&traj2), "--rewards", s(&rewards2), "--head", s(&f.head), "--step", "3", "--out", s(&d.join("e")), "--head-out", s(&d.join("h"))],
        "is the head of step 1, not of step 2",
        &[&f.head],
    );

    // A head truncated after it was written is recomputed, not reported up to date.
    let (e, h) = (d.join("e.parquet"), d.join("head.safetensors"));
    let embed = ["--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--init-head", "--dim", "8", "--step", "1", "--out", s(&e), "--head-out", s(&h)];
    ok(run("clipo-embed", &embed));
    let whole = std::fs::read(&h).unwrap();
    std::fs::write(&h, &whole[..whole.len() / 2]).unwrap();
    let o = ok(run("clipo-embed", &embed));
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&h).unwrap(), whole, "the same head again, whole");
    assert!(stderr(&ok(run("clipo-embed", &embed))).contains("up to date"));

    // The same for a policy directory's files.
    let update = ["--policy", s(&f.policy), "--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--kl", "off", "--step", "1", "--lr", "1e-3", "--out", s(&out)];
    ok(run("clipo-update", &update));
    let weights = out.join("model.safetensors");
    let whole = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &whole[..100]).unwrap();
    let o = ok(run("clipo-update", &update));
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&weights).unwrap(), whole);
    assert!(stderr(&ok(run("clipo-update", &update))).contains("up to date"));
}

#[test]
fn a_step_with_a_non_finite_result_writes_no_policy() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policy");
    // lr 1e300 is a finite f64, but one step moves weights past f32's range: the policy would hold
    // infinities. Nothing is written, and the error names a tensor and the step. (The untrained
    // fixture's rewards are all 0: the entropy bonus gives the loss a gradient, so a step is taken.)
    let o = refused(
        "clipo-update",
        &["--policy", s(&f.policy), "--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--kl", "off", "--entropy-coef", "0.01", "--step", "1", "--lr", "1e300", "--out", s(&out)],
        "after step 1: nothing was written",
        &[&f.policy],
    );
    assert!(stderr(&o).contains("weight `"), "{}", stderr(&o));
    assert!(!out.exists());
    assert!(!dir.path().join("policy.staging").exists());
}

#[test]
fn checkpoints_are_the_same_bytes_run_after_run() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut files = vec![];
    // The untrained fixture's rewards are all 0: the entropy bonus gives the loss a gradient, so
    // that a step is taken and an optimizer state written.
    for k in 0..2 {
        let (e, h, p) = (d.join(format!("e{k}.parquet")), d.join(format!("h{k}.safetensors")), d.join(format!("p{k}")));
        ok(run("clipo-embed", &["--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--init-head", "--dim", "8", "--step", "1", "--out", s(&e), "--head-out", s(&h)]));
        ok(run("clipo-update", &["--policy", s(&f.policy), "--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--embeddings", s(&e), "--kl", "off", "--entropy-coef", "0.01", "--step", "1", "--lr", "1e-3", "--out", s(&p)]));
        files.push((std::fs::read(&h).unwrap(), std::fs::read(p.join("optimizer.safetensors")).unwrap(), std::fs::read(p.join("model.safetensors")).unwrap()));
    }
    assert!(files[0] == files[1], "two runs with the same seed wrote different checkpoint bytes");
}

#[test]
fn a_second_writer_is_told_another_run_is_writing_and_stale_leftovers_are_cleared() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (e, h) = (dir.path().join("e.parquet"), dir.path().join("h.safetensors"));
    let embed = ["--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--init-head", "--dim", "8", "--step", "1", "--out", s(&e), "--head-out", s(&h)];
    {
        // Another process holds the output (this test takes its lock, as a running stage does).
        let _held = clipo::lock::OutputLock::acquire(&h).unwrap();
        refused("clipo-embed", &embed, "another run is writing", &[&f.traj]);
        assert!(!e.exists() && !h.exists());
    }
    ok(run("clipo-embed", &embed));
    assert!(!clipo::lock::lock_path(&e).exists(), "the lock goes with the run");

    // A rollout killed while it removed its parts: the rerun finds the output whole and clears them.
    let t = dir.path().join("t.parquet");
    let args = ["--policy", s(&f.policy), "--prompts", s(&f.train), "--limit", "2", "--n", "2", "--max-new-tokens", "4", "--out", s(&t)];
    ok(run("clipo-rollout", &args));
    let parts = dir.path().join("t.parquet.parts");
    std::fs::create_dir(&parts).unwrap();
    std::fs::write(parts.join("part-000000.parquet"), b"half").unwrap();
    let o = ok(run("clipo-rollout", &args));
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert!(!parts.exists(), "stale parts were left");

    // A policy staged completely by a run killed before its rename is put in place, not redone.
    let p = dir.path().join("policy");
    let update = ["--policy", s(&f.policy), "--trajectories", s(&f.traj), "--rewards", s(&f.rewards), "--kl", "off", "--step", "1", "--lr", "1e-3", "--out", s(&p)];
    ok(run("clipo-update", &update));
    std::fs::rename(&p, dir.path().join("policy.staging")).unwrap();
    let o = ok(run("clipo-update", &update));
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert!(p.join("model.safetensors").is_file() && !dir.path().join("policy.staging").exists());
}

#[test]
fn a_full_disk_gets_its_own_message_and_leaves_no_partial_file() {
    // /dev/full answers every write with ENOSPC: the stage's temporary file is made a link to it.
    if !Path::new("/dev/full").exists() {
        common::skip("no /dev/full on this machine");
        return;
    }
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let tmp = dir.path().join("r.parquet.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let o = refused("clipo-verify", &["--input", s(&f.traj), "--output", s(&out)], "no space left on the device; nothing partial was kept", &[&f.traj]);
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(!out.exists() && !tmp.exists(), "a partial file was left");
}

#[test]
fn every_integer_flag_of_the_other_binaries_is_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    refused("clipo-model", &["init", "--seed=-1", s(&m)], "--seed", &[]);
    refused("clipo-model", &["init", "--seed=nan", s(&m)], "--seed", &[]);
    assert!(!m.exists());
    refused("clipo-report", &[s(dir.path()), "--samples", "--step=-1"], "--step", &[]);
}
