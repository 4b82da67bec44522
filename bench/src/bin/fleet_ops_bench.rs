//! `fleet-ops-bench`: what the fleet adds to each job around the pipeline, every operation timed alone with the
//! fleet's own clients against RabbitMQ and an S3-compatible server: publishing with pipelined confirms (the
//! dispatcher), delivery and ack with the worker's prefetch, the asset's download, and the record's upload with
//! its metadata plus the removal of the asset's other record (the worker). Prints one JSON line: ms per job, the
//! median over `--repeats` runs of `--jobs` jobs each.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::json;
use vislingo_fleet::broker::{self, BrokerArgs, Publisher};
use vislingo_fleet::{S3Args, Storage};
use vislingo_proto::topology::RouteTopology;
use vislingo_proto::{keys, AssetKind, Job, JOB_SCHEMA_VERSION};

#[derive(Parser, Debug)]
#[command(about = "Time the fleet's per-job operations (publish, deliver+ack, download, upload); one JSON line")]
struct Args {
    /// An asset to upload once and download `--jobs` times (a fixture image).
    asset: PathBuf,
    /// A result record to upload `--jobs` times (a record `worker run` wrote).
    record: PathBuf,
    /// Bucket to use (created if missing).
    #[arg(long, env = "VISLINGO_BUCKET", default_value = "fleet-ops-bench")]
    bucket: String,
    /// Jobs per run.
    #[arg(long, default_value_t = 500)]
    jobs: usize,
    /// Timed runs; the medians are printed.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The worker's prefetch (its batch size).
    #[arg(long, default_value_t = 4)]
    prefetch: u16,
    /// Unconfirmed publications in flight (the dispatcher's --publish-window).
    #[arg(long, default_value_t = 1024)]
    publish_window: usize,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    s3: S3Args,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn job(n: usize, route: &str, bucket: &str) -> Job {
    Job {
        schema_version: JOB_SCHEMA_VERSION,
        id: format!("{route}-{n}"),
        batch: "bench".into(),
        bucket: bucket.into(),
        key: format!("in/{n:06}.jpg"),
        asset: format!("{n:06}.jpg"),
        kind: AssetKind::Image,
        size_bytes: 1000,
        tasks: vec!["describe".into(), "tags".into()],
        langs: vec![vislingo_proto::Lang::parse("fra_Latn").expect("a FLORES-200 code")],
        frames: None,
        enqueued_at: 0.0,
    }
}

/// Milliseconds per job of each operation in one run.
async fn run_once(args: &Args, storage: &Storage, asset: &[u8], record: &[u8], run: usize) -> Result<[f64; 4]> {
    let jobs = args.jobs;
    let route = format!("bench-ops-{}-{run}", std::process::id());
    let topology = RouteTopology::new(&route).map_err(anyhow::Error::msg)?;
    let connection = broker::connect(&args.broker.amqp_url).await?;

    // Publish: the dispatcher's publisher.
    let mut publisher = Publisher::new(&connection, args.publish_window).await?;
    broker::declare(publisher.channel(), &topology).await?;
    let started = Instant::now();
    for n in 0..jobs {
        publisher.publish(&route, &job(n, &route, &args.bucket)).await?;
    }
    publisher.flush().await?;
    let publish = started.elapsed().as_secs_f64();

    // Deliver and ack: the worker's prefetch, one ack per job.
    let channel = connection.create_channel().await?;
    channel.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(
            topology.jobs.name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..jobs {
        let delivery = consumer.next().await.context("consumer ended")??;
        Job::from_json(&delivery.data)?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    let deliver = started.elapsed().as_secs_f64();
    for queue in [&topology.jobs.name, &topology.dead.name] {
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    let _ = connection.close(200, "bench".into()).await;

    // Download: one GET of the asset per job, streamed as the worker does.
    let key = format!("in/asset-{run}");
    storage.put(&args.bucket, &key, asset.to_vec()).await?;
    let started = Instant::now();
    for _ in 0..jobs {
        let bytes = storage.get(&args.bucket, &key, 512 << 20).await?;
        ensure!(bytes.len() == asset.len(), "short download");
    }
    let download = started.elapsed().as_secs_f64();

    // Upload: the record with the job id as metadata, then the removal of the asset's error record.
    let started = Instant::now();
    for n in 0..jobs {
        let asset = format!("{run}/{n:06}.jpg");
        let job_id = format!("{route}-{n}");
        let key = keys::result_key("bench", &asset);
        storage.put_json_with(&args.bucket, &key, record.to_vec(), &[("vislingo-job", job_id.as_str())]).await?;
        storage.delete(&args.bucket, &keys::error_key("bench", &asset)).await?;
    }
    let upload = started.elapsed().as_secs_f64();
    let per_job = |seconds: f64| 1000.0 * seconds / jobs as f64;
    Ok([per_job(publish), per_job(deliver), per_job(download), per_job(upload)])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let asset = std::fs::read(&args.asset).with_context(|| format!("cannot read {}", args.asset.display()))?;
    let record = std::fs::read(&args.record).with_context(|| format!("cannot read {}", args.record.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let storage = Storage::connect(&args.s3).await;
        storage.create_bucket(&args.bucket).await?;
        let mut runs = Vec::new();
        for run in 0..args.repeats {
            runs.push(run_once(&args, &storage, &asset, &record, run).await?);
        }
        let column = |i: usize| median(runs.iter().map(|r| r[i]).collect());
        let (publish, deliver, download, upload) = (column(0), column(1), column(2), column(3));
        let line = json!({
            "jobs": args.jobs, "repeats": args.repeats, "asset_bytes": asset.len(), "record_bytes": record.len(),
            "publish_ms": publish, "deliver_ack_ms": deliver, "download_ms": download, "upload_ms": upload,
            "total_ms": publish + deliver + download + upload,
            "runs": runs,
        });
        println!("{line}");
        Ok(())
    })
}
