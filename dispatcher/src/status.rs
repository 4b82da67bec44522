//! `dispatcher status BATCH`: the batch's progress from its manifest, its records and its queues: done, failed,
//! pending (no record yet) and in flight (pending and no longer waiting in a queue), rate and ETA.
//! `--watch` redraws a progress bar until the batch is finished.
//!
//! Records are counted from a listing of their keys (result or error record, `vislingo_proto::keys`): one LIST
//! request per 1000 assets and no GET, so a batch of millions is counted in minutes and in the memory of its
//! failures only. Every record of a batch answers the batch's request: `enqueue` refuses another request for it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use vislingo_fleet::broker::{self, BrokerArgs};
use vislingo_fleet::{S3Args, Storage};
use vislingo_proto::topology;

use crate::manifest::{count_records, BatchManifest};
use crate::unix_now;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The batch name given to `enqueue`.
    pub batch: String,
    /// Bucket of the batch (its source bucket).
    #[arg(long, env = "VISLINGO_BUCKET")]
    pub bucket: String,
    /// Redraw a progress bar until every asset has a record.
    #[arg(long, env = "VISLINGO_WATCH")]
    pub watch: bool,
    /// Seconds between two looks with --watch.
    #[arg(long, env = "VISLINGO_WATCH_INTERVAL_S", default_value_t = 5.0)]
    pub interval_s: f64,
    /// Print JSON instead of text.
    #[arg(long, env = "VISLINGO_JSON")]
    pub json: bool,
    /// Storage requests in flight at once (the HEAD checks of a storage that lists out of key order).
    #[arg(long, env = "VISLINGO_STORAGE_CONCURRENCY", default_value_t = 32)]
    pub storage_concurrency: usize,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// One look at a batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    pub batch: String,
    /// Assets of the batch (images and videos listed at the last enqueue).
    pub assets: u64,
    /// Assets with a result record.
    pub done: u64,
    /// Assets with an error record and no result record.
    pub failed: u64,
    /// Assets without a record.
    pub pending: u64,
    /// Messages waiting in the batch's queues (all batches on those routes).
    pub queued: u64,
    /// Pending assets not waiting in a queue: being processed (approximate when routes are shared).
    pub in_flight: u64,
    /// Workers consuming the batch's queues.
    pub consumers: u64,
    /// Messages in the routes' dead-letter queues (all batches).
    pub dead_lettered: u64,
    /// Records per second since the batch was first enqueued (or between two looks with --watch).
    pub rate_per_s: f64,
    pub eta_s: Option<f64>,
}

pub async fn look(args: &StatusArgs, storage: &Storage) -> Result<(BatchStatus, BatchManifest)> {
    let manifest = BatchManifest::read(storage, &args.bucket, &args.batch)
        .await?
        .with_context(|| format!("no batch `{}` in s3://{} (no manifest)", args.batch, args.bucket))?;
    let counts = count_records(storage, &args.bucket, &args.batch, args.storage_concurrency).await?;
    let (done, failed) = (counts.done, counts.failed);
    let pending = manifest.assets.saturating_sub(done + failed);
    let (mut queued, mut consumers, mut dead_lettered) = (0u64, 0u64, 0u64);
    match broker::connect(&args.broker.amqp_url).await {
        Ok(connection) => {
            let channel = connection.create_channel().await.map_err(broker::amqp("open channel"))?;
            let mut routes: Vec<&String> = manifest.routes.values().collect();
            routes.sort();
            routes.dedup();
            for route in routes {
                if let Ok((ready, workers)) = broker::queue_depth(&channel, &topology::queue_name(route)).await {
                    queued += ready as u64;
                    consumers += workers as u64;
                }
                let dead = topology::dead_letter_queue_name(route);
                if let Ok((ready, _)) = broker::queue_depth(&channel, &dead).await {
                    dead_lettered += ready as u64;
                }
            }
            let _ = connection.close(200, "status".into()).await;
        }
        Err(error) => tracing::warn!(%error, "queue counts unavailable"),
    }
    let elapsed = (unix_now() - manifest.created_at).max(1e-3);
    let rate = (done + failed) as f64 / elapsed;
    let status = BatchStatus {
        batch: args.batch.clone(),
        assets: manifest.assets,
        done,
        failed,
        pending,
        queued,
        in_flight: pending.saturating_sub(queued),
        consumers,
        dead_lettered,
        rate_per_s: rate,
        eta_s: (rate > 0.0).then(|| pending as f64 / rate),
    };
    Ok((status, manifest))
}

fn text(status: &BatchStatus) -> String {
    let eta = status.eta_s.map_or("-".to_string(), |s| format!("{s:.0} s"));
    format!(
        "batch {}: {} assets, {} done, {} failed, {} pending ({} queued, {} in flight), {} workers, {} dead-lettered, \
         {:.2}/s, ETA {eta}",
        status.batch,
        status.assets,
        status.done,
        status.failed,
        status.pending,
        status.queued,
        status.in_flight,
        status.consumers,
        status.dead_lettered,
        status.rate_per_s
    )
}

pub async fn status(args: StatusArgs) -> Result<ExitCode> {
    let storage = Storage::connect(&args.s3).await;
    if !args.watch {
        let (status, _) = look(&args, &storage).await?;
        match args.json {
            true => println!("{}", serde_json::to_string(&status)?),
            false => println!("{}", text(&status)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid progress template"),
    );
    let mut previous: Option<(Instant, u64)> = None;
    loop {
        let (mut status, _) = look(&args, &storage).await?;
        let finished = status.done + status.failed;
        if let Some((at, count)) = previous {
            let seconds = at.elapsed().as_secs_f64();
            if seconds > 0.0 && finished >= count {
                status.rate_per_s = (finished - count) as f64 / seconds;
                status.eta_s = (status.rate_per_s > 0.0).then(|| status.pending as f64 / status.rate_per_s);
            }
        }
        previous = Some((Instant::now(), finished));
        bar.set_length(status.assets);
        bar.set_position(finished);
        let eta = status.eta_s.map_or("-".to_string(), |s| format!("{s:.0} s"));
        bar.set_message(format!(
            "{} failed, {} queued, {} in flight, {:.2}/s, ETA {eta}",
            status.failed, status.queued, status.in_flight, status.rate_per_s
        ));
        if args.json {
            bar.suspend(|| println!("{}", serde_json::to_string(&status).unwrap_or_default()));
        }
        if status.pending == 0 {
            bar.finish();
            println!("{}", text(&status));
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs_f64(args.interval_s.max(0.1))).await;
    }
}
