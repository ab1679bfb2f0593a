//! One writer per output: a stage holds an exclusive `flock` on `<out>.lock` while it writes
//! `<out>`. A second run of the same stage on the same output fails at once with an error that
//! says another run is writing it; a killed run's lock goes with its process (the kernel drops
//! flocks on exit), so no stale lock ever blocks a rerun.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; released (and its file removed) when dropped.
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

/// `<out>.lock`, beside `out`.
pub fn lock_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    out.with_file_name(name)
}

impl OutputLock {
    pub fn acquire(out: &Path) -> Result<OutputLock> {
        let path = lock_path(out);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Config(format!(
                    "another run is writing {} (it holds {}): wait for it to finish, or stop it, then rerun",
                    out.display(),
                    path.display()
                )));
            }
            return Err(Error::io(&path, e));
        }
        Ok(OutputLock { path, _file: file })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.parquet");
        let first = OutputLock::acquire(&out).unwrap();
        let e = OutputLock::acquire(&out).err().unwrap().to_string();
        assert!(e.contains("another run is writing") && e.contains("t.parquet"), "{e}");
        drop(first);
        assert!(!lock_path(&out).exists());
        OutputLock::acquire(&out).unwrap();
    }
}
