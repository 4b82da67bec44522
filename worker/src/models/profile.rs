//! Optional phase timings for finding where device time goes: with `VISLINGO_PROFILE=1` marked phases synchronize
//! the device and print their wall time to stderr. Synchronizing serializes the GPU, so this is for diagnosis,
//! never for the figures in BENCHMARKS.md.

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Device;

/// Whether `VISLINGO_PROFILE=1` is set (read once).
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("VISLINGO_PROFILE").is_ok_and(|v| v == "1"))
}

/// Seconds since `started` once the device has finished its queued work; 0 when profiling is off.
pub fn lap(device: &Device, started: Instant) -> f64 {
    if !enabled() {
        return 0.0;
    }
    let _ = device.synchronize();
    started.elapsed().as_secs_f64()
}

/// Prints `label` and the milliseconds of each named part, when profiling is on.
pub fn report(label: &str, parts: &[(&str, f64)]) {
    if enabled() {
        let parts: Vec<String> = parts.iter().map(|(name, s)| format!("{name} {:.1} ms", s * 1e3)).collect();
        eprintln!("profile {label}: {}", parts.join(", "));
    }
}
