//! No stage writes over what it reads: every binary checks its outputs against its inputs (and
//! against each other) once, in its argument check, before it opens anything.
//!
//! Paths are compared canonically: symlinks, `./` and `..` spellings resolve to the same path.
//! An output that does not exist yet is its nearest existing ancestor, canonicalised, plus the
//! rest of its components. Two paths clash when they are equal or one contains the other: an
//! output directory over an input file would delete it, an output file inside an input
//! directory (a policy) would change it.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// `p` made absolute with symlinks resolved as far as it exists.
pub fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
    // Normalise `.` and `..` lexically in the part that does not exist yet.
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let mut head = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(head) {
            let mut out = c;
            for part in rest.iter().rev() {
                if part == ".." {
                    out.pop();
                } else if part != "." {
                    out.push(part);
                }
            }
            return out;
        }
        match (head.parent(), head.components().next_back()) {
            (Some(parent), Some(Component::Normal(name))) => {
                rest.push(name.to_os_string());
                head = parent;
            }
            (Some(parent), Some(Component::ParentDir)) => {
                rest.push("..".into());
                head = parent;
            }
            (Some(parent), Some(_)) => head = parent,
            _ => return abs,
        }
    }
}

/// How two canonical paths relate, if they clash.
fn clash(a: &Path, b: &Path) -> Option<&'static str> {
    if a == b {
        Some("is the same path as")
    } else if b.starts_with(a) {
        Some("contains")
    } else if a.starts_with(b) {
        Some("is inside")
    } else {
        None
    }
}

/// Refuses an output that is, contains or is inside one of the inputs or another output. Each
/// entry is (flag, path); the error names both flags and both paths.
pub fn refuse_aliases(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<()> {
    let outs: Vec<(&str, &Path, PathBuf)> = outputs.iter().map(|(f, p)| (*f, *p, canonical(p))).collect();
    for (flag, path, c) in &outs {
        for (iflag, ipath) in inputs {
            if let Some(how) = clash(c, &canonical(ipath)) {
                return Err(Error::Config(format!(
                    "{flag} {} {how} {iflag} {}: a stage never writes over its inputs; choose another {flag}",
                    path.display(),
                    ipath.display()
                )));
            }
        }
    }
    for (i, (flag, path, c)) in outs.iter().enumerate() {
        for (oflag, opath, oc) in &outs[i + 1..] {
            if let Some(how) = clash(c, oc) {
                return Err(Error::Config(format!("{flag} {} {how} {oflag} {}: give the outputs distinct paths", path.display(), opath.display())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_symlinks_of_one_path_clash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("data")).unwrap();
        std::fs::write(d.join("data/train.parquet"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("data"), d.join("link")).unwrap();
        let input = d.join("data/train.parquet");
        for out in [d.join("data/train.parquet"), d.join("data/./train.parquet"), d.join("data/../data/train.parquet"), d.join("link/train.parquet")] {
            let e = refuse_aliases(&[("--prompts", &input)], &[("--out", &out)]).unwrap_err().to_string();
            assert!(e.contains("--out") && e.contains("is the same path as --prompts"), "{e}");
        }
        // A directory output over an input file, and a file output inside an input directory.
        let e = refuse_aliases(&[("--prompts", &input)], &[("--out", &d.join("data"))]).unwrap_err().to_string();
        assert!(e.contains("contains --prompts"), "{e}");
        let e = refuse_aliases(&[("--policy", &d.join("data"))], &[("--out", &d.join("data/new/x.parquet"))]).unwrap_err().to_string();
        assert!(e.contains("is inside --policy"), "{e}");
        // Two outputs on one path.
        let e = refuse_aliases(&[], &[("--out", &d.join("a")), ("--head-out", &d.join("./a"))]).unwrap_err().to_string();
        assert!(e.contains("--out") && e.contains("--head-out"), "{e}");
        // Siblings are fine, existing or not.
        refuse_aliases(&[("--prompts", &input)], &[("--out", &d.join("data/out.parquet")), ("--x", &d.join("new/dir/y"))]).unwrap();
    }
}
