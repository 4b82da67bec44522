//! `dispatcher`: points at a folder or an S3 prefix, lists the assets to describe, feeds the job queue
//! (`enqueue`), follows a batch (`status`) and gathers its results (`collect`).

pub mod collect;
pub mod enqueue;
pub mod html;
pub mod manifest;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use vislingo_proto::Lang;

/// vislingo dispatcher: lists assets and feeds the job queue.
#[derive(Debug, Parser)]
#[command(name = "dispatcher", version, about)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log shippers.
    #[arg(long, env = "VISLINGO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the images and videos under a local folder (key, kind, size), one per line.
    List {
        /// Folder to list.
        #[arg(env = "VISLINGO_SOURCE")]
        source: PathBuf,
        /// Print JSON Lines instead of a table.
        #[arg(long, env = "VISLINGO_JSON")]
        json: bool,
    },
    /// Print the FLORES-200 language codes vislingo translates into, with their names.
    Languages,
    /// List the assets under s3://bucket/prefix and publish one job per asset not already done.
    Enqueue(enqueue::EnqueueArgs),
    /// Done, failed, pending and in-flight counts of a batch, its rate and ETA.
    Status(status::StatusArgs),
    /// Gather every result of a batch into one JSON file (and JSON Lines) with batch statistics.
    Collect(collect::CollectArgs),
}

/// The dispatcher's entry point: parses flags, sets up logging, runs the command; exit 1 on error, 2 on bad input.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vislingo_dispatcher=info,vislingo_fleet=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List { source, json } => {
            let assets = vislingo_proto::asset::list_folder(&source)?;
            for asset in &assets {
                if json {
                    let line =
                        serde_json::json!({"key": asset.key, "kind": asset.kind, "size_bytes": asset.size_bytes});
                    println!("{line}");
                } else {
                    println!("{}\t{}\t{}", asset.kind, asset.size_bytes, asset.key);
                }
            }
            if !json {
                let videos = assets.iter().filter(|a| a.kind == vislingo_proto::AssetKind::Video).count();
                eprintln!("{} assets: {} images, {videos} videos", assets.len(), assets.len() - videos);
            }
        }
        Command::Languages => {
            for lang in Lang::all() {
                let direction = if lang.is_rtl() { "rtl" } else { "ltr" };
                println!("{}\t{}\t{}", lang.code(), direction, lang.name());
            }
        }
        Command::Enqueue(args) => return runtime()?.block_on(enqueue::enqueue(args)),
        Command::Status(args) => return runtime()?.block_on(status::status(args)),
        Command::Collect(args) => return runtime()?.block_on(collect::collect(args)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
