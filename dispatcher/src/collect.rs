//! `dispatcher collect BATCH --out FILE`: every result record of a batch in one JSON file shaped like the
//! article's output (`{"descriptions": [...], "stats": {...}}`, the records in asset order, failures listed in
//! the stats), and the same records as JSON Lines next to it (`FILE` with `.jsonl`); `--html DIR` writes them as
//! a static HTML gallery ([`crate::html`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vislingo_fleet::{S3Args, Storage};
use vislingo_proto::AssetResult;

use crate::html::{write_html, HtmlOptions, Thumbnails};
use crate::manifest::{read_results, BatchManifest};

#[derive(Debug, Clone, Args)]
pub struct CollectArgs {
    /// The batch name given to `enqueue`.
    pub batch: String,
    /// Bucket of the batch.
    #[arg(long, env = "VISLINGO_BUCKET")]
    pub bucket: String,
    /// The combined JSON file; the JSON Lines file is written next to it with the extension `.jsonl`.
    #[arg(long, env = "VISLINGO_OUT", required_unless_present = "html")]
    pub out: Option<PathBuf>,
    /// Also write a static HTML gallery of the batch into this folder (open its index.html in a browser).
    #[arg(long, env = "VISLINGO_HTML")]
    pub html: Option<PathBuf>,
    /// The gallery's pictures: `fetch` downloads each image asset for its thumbnail, `none` downloads nothing.
    /// (Videos get a placeholder: the dispatcher does not decode video.)
    #[arg(long, env = "VISLINGO_THUMBNAILS", value_enum, default_value_t = Thumbnails::Fetch)]
    pub thumbnails: Thumbnails,
    /// Image assets larger than this many bytes get no thumbnail.
    #[arg(long, env = "VISLINGO_THUMBNAIL_MAX_ASSET_BYTES", default_value_t = 100 << 20)]
    pub thumbnail_max_asset_bytes: u64,
    /// Storage requests in flight at once.
    #[arg(long, env = "VISLINGO_STORAGE_CONCURRENCY", default_value_t = 32)]
    pub storage_concurrency: usize,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Serialize)]
pub struct Collected<'a> {
    pub descriptions: Vec<&'a AssetResult>,
    pub stats: BatchStats,
}

#[derive(Debug, Default, Serialize)]
pub struct BatchStats {
    pub batch: String,
    /// Models that wrote the records (several when workers differed).
    pub models: Vec<String>,
    pub tasks: Vec<String>,
    pub langs: Vec<vislingo_proto::Lang>,
    /// Assets of the batch per its manifest, and records found.
    pub total_assets: u64,
    pub records: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Assets without a record yet.
    pub missing: u64,
    /// Sum of the records' processing seconds (worker time, not wall time).
    pub total_batch_time_sec: f64,
    pub average_time_per_asset_sec: f64,
    pub generated_tokens: u64,
    pub generation_time_sec: f64,
    pub tokens_per_sec: f64,
    pub failed_assets: Vec<FailedAsset>,
}

#[derive(Debug, Serialize)]
pub struct FailedAsset {
    pub asset: String,
    pub stage: String,
    pub message: String,
}

pub fn stats(batch: &str, manifest: Option<&BatchManifest>, records: &[&AssetResult]) -> BatchStats {
    let mut stats = BatchStats { batch: batch.to_string(), ..BatchStats::default() };
    if let Some(manifest) = manifest {
        stats.tasks = manifest.tasks.clone();
        stats.langs = manifest.langs.clone();
        stats.total_assets = manifest.assets;
    }
    for record in records {
        if !stats.models.contains(&record.model) {
            stats.models.push(record.model.clone());
        }
        stats.total_batch_time_sec += record.timings.total_s;
        for output in &record.outputs {
            stats.generated_tokens += output.generated_tokens as u64;
            stats.generation_time_sec += output.generation_s;
        }
        match &record.error {
            Some(error) => stats.failed_assets.push(FailedAsset {
                asset: record.asset.clone(),
                stage: error.stage.clone(),
                message: error.message.clone(),
            }),
            None => stats.succeeded += 1,
        }
    }
    stats.records = records.len() as u64;
    stats.failed = stats.failed_assets.len() as u64;
    stats.missing = stats.total_assets.saturating_sub(stats.records);
    if stats.records > 0 {
        stats.average_time_per_asset_sec = stats.total_batch_time_sec / stats.records as f64;
    }
    if stats.generation_time_sec > 0.0 {
        stats.tokens_per_sec = stats.generated_tokens as f64 / stats.generation_time_sec;
    }
    stats
}

pub async fn collect(args: CollectArgs) -> Result<ExitCode> {
    let storage = Storage::connect(&args.s3).await;
    let manifest = BatchManifest::read(&storage, &args.bucket, &args.batch).await?;
    let owned: Vec<AssetResult> =
        read_results(&storage, &args.bucket, &args.batch, args.storage_concurrency).await?.into_values().collect();
    let records: Vec<&AssetResult> = owned.iter().collect();
    let stats = stats(&args.batch, manifest.as_ref(), &records);
    let summary = format!(
        "batch {}: {} records ({} succeeded, {} failed), {} missing",
        args.batch, stats.records, stats.succeeded, stats.failed, stats.missing
    );
    if let Some(out) = &args.out {
        write_collected(out, &records, stats)?;
    }
    if let Some(dir) = &args.html {
        let options = HtmlOptions {
            thumbnails: args.thumbnails,
            max_asset_bytes: args.thumbnail_max_asset_bytes,
            concurrency: args.storage_concurrency,
        };
        let report = write_html(&storage, &args.bucket, &args.batch, manifest.as_ref(), &owned, dir, &options).await?;
        eprintln!(
            "gallery of {} records ({} with a picture): {}",
            report.records,
            report.pictures,
            report.index.display()
        );
    }
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// `out` (the article-shaped JSON) and the JSON Lines file next to it.
fn write_collected(out: &Path, records: &[&AssetResult], stats: BatchStats) -> Result<()> {
    let collected = Collected { descriptions: records.to_vec(), stats };
    let json = serde_json::to_vec_pretty(&collected)?;
    std::fs::write(out, json).with_context(|| format!("cannot write {}", out.display()))?;
    let lines_path = out.with_extension("jsonl");
    let mut lines = std::io::BufWriter::new(
        std::fs::File::create(&lines_path).with_context(|| format!("cannot write {}", lines_path.display()))?,
    );
    for record in records {
        serde_json::to_writer(&mut lines, record)?;
        lines.write_all(b"\n")?;
    }
    lines.flush()?;
    eprintln!("wrote {} and {}", out.display(), lines_path.display());
    Ok(())
}
