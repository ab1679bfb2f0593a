//! `/proc/self/status` fields for the benches' memory figures (shared by `#[path]`).

/// A `kB` field of `/proc/self/status` (`VmRSS:`, `VmHWM:`), in KiB; NaN where absent.
pub fn status_kib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}
