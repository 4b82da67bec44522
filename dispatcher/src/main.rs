//! `dispatcher`: points at a folder (and, with the fleet, an S3 bucket), lists the assets to describe, and feeds
//! the job queue. Today it lists assets and the languages vislingo translates into.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use vislingo_proto::Lang;

/// vislingo dispatcher: lists assets and feeds the job queue.
#[derive(Debug, Parser)]
#[command(name = "dispatcher", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
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
    }
    Ok(())
}
