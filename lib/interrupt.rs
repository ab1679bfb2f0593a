//! What a stage says when it is interrupted (Ctrl-C's SIGINT, or SIGTERM): one prepared line
//! saying what was kept and how to go on, then exit 128 + the signal's number, the status a
//! shell reports for a process the signal killed (130 for Ctrl-C).
//!
//! The handler only writes the prepared bytes and calls `_exit`, both async-signal-safe; it
//! cleans up nothing, as a kill would not: outputs are written as `<out>.tmp` and renamed
//! when complete, clipo-rollout's finished batches sit in `<out>.parts/`, and the output locks
//! are flocks the kernel drops with the process.

use std::sync::atomic::{AtomicPtr, Ordering};

/// The line to print, leaked once per process (null: none set yet).
static MESSAGE: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    let msg = MESSAGE.load(Ordering::SeqCst);
    if !msg.is_null() {
        // SAFETY: `msg` points to a leaked Vec that is never freed or changed after it is stored.
        let bytes = unsafe { &*msg };
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, bytes.as_ptr().cast(), bytes.len());
        }
    }
    unsafe { libc::_exit(128 + sig) }
}

/// From now on SIGINT and SIGTERM print `message` (on a line of its own, after any progress
/// bar) and exit with 128 + the signal. A later call replaces the message.
pub fn on_interrupt(message: &str) {
    let bytes: &'static mut Vec<u8> = Box::leak(Box::new(format!("\n{message}\n").into_bytes()));
    MESSAGE.store(bytes, Ordering::SeqCst);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The line of a stage that writes its output whole or not at all.
pub fn rerun_message(stage: &str, out: &std::path::Path) -> String {
    format!(
        "{stage}: interrupted; nothing was written to {}: run the same command again to redo this stage (its inputs are kept; `make` continues a loop from its first missing file)",
        out.display()
    )
}
