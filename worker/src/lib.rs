//! vislingo worker library: model ports (candle), decoding, media and the job pipeline.
//! The `worker` binary (src/main.rs) is a thin CLI over this crate: [`main`] parses flags, sets up logging and runs.

pub mod cli;
pub mod device_memory;
pub mod frames;
pub mod html;
pub mod media;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod run;
pub mod serve;
pub mod tasks;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, LogFormat};

/// The `worker` binary's entry point (also run by the fleet tests' wrapper binary).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(crate::run::exit_code(&error))
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vislingo_worker=info,vislingo_fleet=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(crate::run::StderrBelowProgress);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The error and its causes on one line. A cause already quoted in its parent's message is not repeated, and
/// anything after a message's first line (candle appends a backtrace when RUST_BACKTRACE is set) is dropped.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.lines().next().unwrap_or_default().trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}
