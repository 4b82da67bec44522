//! The `worker` binary, built inside the fleet tests' package so that its tests can start it as a process. It
//! alone can inject faults: `VISLINGO_TEST_FAULTS=crash:MARKER,stall:MARKER,crash-after-write:MARKER` makes a
//! `worker serve` abort (or hang) on the jobs whose asset key contains MARKER, before the pipeline runs them
//! (or, for `crash-after-write`, once their record is written and before the ack).

use std::sync::OnceLock;

use vislingo_worker::serve::fault::{self, FaultPoint};

/// (point, action, marker) rules from `VISLINGO_TEST_FAULTS`.
static RULES: OnceLock<Vec<(FaultPoint, &'static str, String)>> = OnceLock::new();

fn hook(point: FaultPoint, asset: &str) {
    for (at, action, marker) in RULES.get().into_iter().flatten() {
        if *at != point || !asset.contains(marker.as_str()) {
            continue;
        }
        eprintln!("fault injected: {action} on {asset}");
        match *action {
            "stall" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            _ => std::process::abort(),
        }
    }
}

fn main() -> std::process::ExitCode {
    if let Ok(spec) = std::env::var("VISLINGO_TEST_FAULTS") {
        let rules = spec
            .split(',')
            .filter(|rule| !rule.is_empty())
            .map(|rule| {
                let (action, marker) = rule.split_once(':').expect("VISLINGO_TEST_FAULTS: ACTION:MARKER,...");
                let (point, action) = match action {
                    "crash" => (FaultPoint::BeforePipeline, "crash"),
                    "stall" => (FaultPoint::BeforePipeline, "stall"),
                    "crash-after-write" => (FaultPoint::AfterWrite, "crash"),
                    other => panic!("VISLINGO_TEST_FAULTS: unknown action `{other}`"),
                };
                (point, action, marker.to_string())
            })
            .collect();
        RULES.set(rules).expect("set once");
        fault::install(hook);
    }
    vislingo_worker::main()
}
