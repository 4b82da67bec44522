//! Fault injection for the fleet tests only: a hook that the tests' wrapper binary (`tests/src/bin/fleet_worker.rs`)
//! installs to crash or stall `worker serve` on chosen assets, so that poison jobs, stalls and lost acks can be
//! tested against the real broker. The `worker` binary never installs one: production has no way to trigger it,
//! and without a hook each call below is one empty check.

use std::sync::OnceLock;

/// Where the hook is called, with the asset key of each job there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// On the model thread, before the pipeline runs a batch holding the asset.
    BeforePipeline,
    /// After the asset's record is written, before its delivery is settled.
    AfterWrite,
}

/// A fault hook: may abort the process, sleep, or return to let the job go on.
pub type FaultHook = fn(FaultPoint, &str);

static HOOK: OnceLock<FaultHook> = OnceLock::new();

/// Installs the process's fault hook (once; false if one is already installed). For tests only.
pub fn install(hook: FaultHook) -> bool {
    HOOK.set(hook).is_ok()
}

/// Whether a fault hook is installed (logged at start, so that a test build is never mistaken for production).
pub fn installed() -> bool {
    HOOK.get().is_some()
}

/// Calls the hook, if any, for `asset` at `point`.
pub(crate) fn at(point: FaultPoint, asset: &str) {
    if let Some(hook) = HOOK.get() {
        hook(point, asset);
    }
}
