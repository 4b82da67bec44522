//! `dispatcher enqueue s3://bucket/prefix`: checks the request, lists the source page by page, keeps images and
//! videos (by extension, or by content type with `--sniff`), drops those that already have a record in the batch
//! (a result, or an error record unless `--retry-failed`; nothing is dropped with `--force`), writes the batch
//! manifest, then publishes one persistent job per asset to its model's queue with pipelined publisher confirms.
//! Prints one JSON line of counts on standard output.
//!
//! A batch answers one request: enqueueing an existing batch with other tasks or languages is refused (its
//! records would answer two requests, and `status` counts records by their keys alone). Records are found by
//! listing `results/<batch>/`, never by reading them. An asset that failed (error record) is not sent again
//! unless `--retry-failed`, as `worker run` skips it unless `--retry-failed`.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::StreamExt;
use vislingo_fleet::broker::{self, BrokerArgs, Publisher};
use vislingo_fleet::storage::ObjectInfo;
use vislingo_fleet::{S3Args, S3Url, Storage};
use vislingo_proto::topology::{self, RouteTopology};
use vislingo_proto::{keys, lang, AssetKind, Job, Lang, BUILTIN_TASKS, JOB_SCHEMA_VERSION};

use crate::manifest::{list_records, BatchManifest, MANIFEST_SCHEMA_VERSION};
use crate::unix_now;

#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Where the assets are: s3://bucket/prefix (results go to the same bucket under results/<batch>/).
    #[arg(env = "VISLINGO_SOURCE")]
    pub source: String,
    /// Tasks to run on every asset, comma-separated (built-in: describe, tags, sentiment, ad).
    #[arg(long, env = "VISLINGO_TASKS", default_value = "describe")]
    pub tasks: String,
    /// Languages to translate into (FLORES-200 codes or aliases, comma-separated); empty: English only.
    #[arg(long, env = "VISLINGO_LANGS", default_value = "")]
    pub langs: String,
    /// Queue route of an asset kind, `image=ROUTE` or `video=ROUTE`; repeatable
    /// (default image=mllama, video=llava-next-video).
    #[arg(long = "model-route", env = "VISLINGO_MODEL_ROUTES", value_delimiter = ',')]
    pub model_routes: Vec<String>,
    /// Frames sampled from each video.
    #[arg(long, env = "VISLINGO_FRAMES", default_value_t = 8)]
    pub frames: u32,
    /// Batch name (results under results/<batch>/); default: `batch-<unix seconds>`.
    #[arg(long, env = "VISLINGO_BATCH")]
    pub batch: Option<String>,
    /// Enqueue every asset, even those whose result already answers the request.
    #[arg(long, env = "VISLINGO_FORCE")]
    pub force: bool,
    /// Enqueue again the assets whose record is an error (by default an error record settles the asset too).
    #[arg(long, env = "VISLINGO_RETRY_FAILED")]
    pub retry_failed: bool,
    /// List and check, print the counts, publish nothing and write no manifest.
    #[arg(long, env = "VISLINGO_DRY_RUN")]
    pub dry_run: bool,
    /// Task names the workers know beyond the built-ins (from their --task-file), comma-separated.
    #[arg(long, env = "VISLINGO_EXTRA_TASKS", default_value = "")]
    pub extra_tasks: String,
    /// Ask the content type of objects without a known extension and keep image/* and video/* ones.
    #[arg(long, env = "VISLINGO_SNIFF")]
    pub sniff: bool,
    /// Unconfirmed publications in flight at once.
    #[arg(long, env = "VISLINGO_PUBLISH_WINDOW", default_value_t = 1024)]
    pub publish_window: usize,
    /// Storage requests in flight at once when checking existing results.
    #[arg(long, env = "VISLINGO_STORAGE_CONCURRENCY", default_value_t = 32)]
    pub storage_concurrency: usize,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// The request, checked before anything is listed or sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub source: S3Url,
    pub batch: String,
    pub tasks: Vec<String>,
    pub langs: Vec<Lang>,
    pub routes: HashMap<AssetKind, String>,
}

/// Checks tasks, languages, routes and the batch name; an unknown task or language is refused here.
pub fn check_request(args: &EnqueueArgs) -> Result<Request> {
    let source = S3Url::parse(&args.source).map_err(anyhow::Error::msg)?;
    let known: Vec<String> = BUILTIN_TASKS
        .iter()
        .map(|t| t.to_string())
        .chain(args.extra_tasks.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from))
        .collect();
    let mut tasks: Vec<String> = Vec::new();
    for task in args.tasks.split(',').map(str::trim) {
        if task.is_empty() {
            bail!("--tasks `{}`: empty task name (doubled or trailing comma?)", args.tasks);
        }
        if !known.iter().any(|k| k == task) {
            let distance =
                |k: &String| lang::edit_distance(&k.chars().collect::<Vec<_>>(), &task.chars().collect::<Vec<_>>());
            let suggestion = known.iter().min_by_key(|k| distance(k)).filter(|k| distance(k) <= 2);
            let hint = suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            bail!(
                "unknown task `{task}`{hint}; known tasks: {} (workers' extra tasks: --extra-tasks)",
                known.join(", ")
            );
        }
        if tasks.iter().any(|t| t == task) {
            bail!("task `{task}` is named twice in --tasks");
        }
        tasks.push(task.to_string());
    }
    let langs = match args.langs.trim() {
        "" => Vec::new(),
        list => lang::parse_list(list).context("--langs")?,
    };
    let mut routes: HashMap<AssetKind, String> =
        [AssetKind::Image, AssetKind::Video].into_iter().map(|k| (k, topology::default_route(k).to_string())).collect();
    for spec in &args.model_routes {
        let (kind, route) = spec
            .split_once('=')
            .with_context(|| format!("--model-route `{spec}`: expected image=ROUTE or video=ROUTE"))?;
        let kind = match kind.trim() {
            "image" => AssetKind::Image,
            "video" => AssetKind::Video,
            other => bail!("--model-route `{spec}`: unknown asset kind `{other}` (image or video)"),
        };
        topology::check_route(route.trim()).map_err(anyhow::Error::msg)?;
        routes.insert(kind, route.trim().to_string());
    }
    let batch = args.batch.clone().unwrap_or_else(|| format!("batch-{}", unix_now() as u64));
    keys::check_batch_name(&batch).map_err(anyhow::Error::msg)?;
    if args.frames == 0 {
        bail!("--frames 0: expected at least 1");
    }
    Ok(Request { source, batch, tasks, langs, routes })
}

/// One asset to publish.
#[derive(Debug, Clone)]
struct Found {
    key: String,
    asset: String,
    kind: AssetKind,
    size: u64,
}

/// Counts printed at the end.
#[derive(Debug, Default, serde::Serialize)]
pub struct EnqueueReport {
    pub batch: String,
    pub listed_objects: u64,
    pub assets: u64,
    pub images: u64,
    pub videos: u64,
    /// Assets whose record (result, or error without --retry-failed) already settles the request.
    pub skipped_done: u64,
    /// Of those, the assets skipped for their error record (sent again with --retry-failed).
    pub skipped_failed: u64,
    /// Sniffed objects refused for a key ending with `.error` (it would shadow another asset's error record).
    pub refused_keys: u64,
    pub enqueued: u64,
    pub dry_run: bool,
    pub list_seconds: f64,
    pub check_seconds: f64,
    pub publish_seconds: f64,
    pub publish_per_second: f64,
}

pub async fn enqueue(args: EnqueueArgs) -> Result<ExitCode> {
    let request = check_request(&args)?;
    let storage = Storage::connect(&args.s3).await;
    let mut report = EnqueueReport { batch: request.batch.clone(), dry_run: args.dry_run, ..Default::default() };
    let bucket = request.source.bucket.clone();
    let previous = BatchManifest::read(&storage, &bucket, &request.batch).await?;
    if let Some(previous) = &previous {
        if previous.tasks != request.tasks || previous.langs != request.langs {
            let codes = |langs: &[Lang]| langs.iter().map(|l| l.code()).collect::<Vec<_>>().join(",");
            bail!(
                "batch `{}` was enqueued for --tasks {} --langs {:?} and its records answer that request; \
                 give another request another --batch name",
                request.batch,
                previous.tasks.join(","),
                codes(&previous.langs)
            );
        }
    }

    // List: page by page, keeping assets only.
    let started = Instant::now();
    let prefix = request.source.prefix.clone();
    let mut found: Vec<Found> = Vec::new();
    let mut unknown: Vec<ObjectInfo> = Vec::new();
    report.listed_objects = storage
        .list(&bucket, &prefix, |page| {
            for object in page {
                let asset = object.key.strip_prefix(&prefix).unwrap_or(&object.key).trim_start_matches('/');
                if asset.is_empty() || asset.starts_with("results/") || asset.starts_with("batches/") {
                    continue;
                }
                match AssetKind::from_key(asset) {
                    Some(kind) => {
                        found.push(Found { asset: asset.to_string(), key: object.key, kind, size: object.size })
                    }
                    None => unknown.push(object),
                }
            }
        })
        .await
        .with_context(|| format!("cannot list {}", request.source))?;
    if args.sniff {
        let sniffed = sniff(&storage, &bucket, &prefix, unknown, args.storage_concurrency).await?;
        for asset in sniffed {
            match keys::check_asset_key(&asset.asset) {
                Ok(()) => found.push(asset),
                Err(problem) => {
                    tracing::warn!(key = %asset.key, problem, "asset refused");
                    report.refused_keys += 1;
                }
            }
        }
    }
    report.list_seconds = started.elapsed().as_secs_f64();
    report.assets = found.len() as u64;
    report.videos = found.iter().filter(|f| f.kind == AssetKind::Video).count() as u64;
    report.images = report.assets - report.videos;
    tracing::info!(source = %request.source, objects = report.listed_objects, assets = report.assets, "listed");

    // Skip what is already done.
    let started = Instant::now();
    if !args.force {
        let records = list_records(&storage, &bucket, &request.batch).await?;
        let before = found.len();
        found.retain(|f| {
            let failed = records.failed.contains(&f.asset);
            report.skipped_failed += (failed && !args.retry_failed) as u64;
            !records.done.contains(&f.asset) && (args.retry_failed || !failed)
        });
        report.skipped_done = (before - found.len()) as u64;
    }
    report.check_seconds = started.elapsed().as_secs_f64();

    if args.dry_run {
        report.enqueued = found.len() as u64;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }

    // The manifest first: status and collect know the batch even while jobs are still being published.
    let now = unix_now();
    let mut manifest = BatchManifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        batch: request.batch.clone(),
        source: request.source.to_string(),
        bucket: bucket.clone(),
        prefix: prefix.clone(),
        tasks: request.tasks.clone(),
        langs: request.langs.clone(),
        routes: request.routes.iter().map(|(k, r)| (k.to_string(), r.clone())).collect(),
        assets: report.assets,
        images: report.images,
        videos: report.videos,
        created_at: previous.as_ref().map_or(now, |p| p.created_at),
        updated_at: now,
        published: previous.as_ref().map_or(0, |p| p.published),
    };
    manifest.write(&storage).await.context("cannot write the batch manifest")?;

    // Publish.
    let started = Instant::now();
    if !found.is_empty() {
        let connection = broker::connect(&args.broker.amqp_url).await?;
        let mut publisher = Publisher::new(&connection, args.publish_window).await?;
        let used: HashSet<&String> = found.iter().map(|f| &request.routes[&f.kind]).collect();
        for route in used {
            let topology = RouteTopology::new(route).map_err(anyhow::Error::msg)?;
            broker::declare(publisher.channel(), &topology).await?;
        }
        let id_base = format!("{}-{:x}", request.batch, (now * 1000.0) as u64);
        for (n, f) in found.iter().enumerate() {
            let job = Job {
                schema_version: JOB_SCHEMA_VERSION,
                id: format!("{id_base}-{n}"),
                batch: request.batch.clone(),
                bucket: bucket.clone(),
                key: f.key.clone(),
                asset: f.asset.clone(),
                kind: f.kind,
                size_bytes: f.size,
                tasks: request.tasks.clone(),
                langs: request.langs.clone(),
                frames: (f.kind == AssetKind::Video).then_some(args.frames),
                enqueued_at: unix_now(),
            };
            publisher.publish(&request.routes[&f.kind], &job).await?;
        }
        publisher.flush().await?;
        report.enqueued = publisher.confirmed;
        let _ = connection.close(200, "enqueued".into()).await;
        manifest.published += report.enqueued;
        manifest.updated_at = unix_now();
        manifest.write(&storage).await.context("cannot update the batch manifest")?;
    }
    report.publish_seconds = started.elapsed().as_secs_f64();
    report.publish_per_second =
        if report.publish_seconds > 0.0 { report.enqueued as f64 / report.publish_seconds } else { 0.0 };
    tracing::info!(
        batch = %request.batch,
        enqueued = report.enqueued,
        skipped = report.skipped_done,
        seconds = report.publish_seconds,
        "enqueued"
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Objects without a known extension whose content type is image/* or video/*.
async fn sniff(
    storage: &Storage,
    bucket: &str,
    prefix: &str,
    objects: Vec<ObjectInfo>,
    concurrency: usize,
) -> Result<Vec<Found>> {
    let heads = futures_util::stream::iter(objects.into_iter().map(|object| async move {
        let content_type = storage.content_type(bucket, &object.key).await;
        (object, content_type)
    }))
    .buffer_unordered(concurrency.max(1));
    let results: Vec<_> = heads.collect().await;
    let mut found = Vec::new();
    for (object, content_type) in results {
        let kind = match content_type?.as_deref().map(|t| t.split('/').next().unwrap_or_default().to_string()) {
            Some(t) if t == "image" => AssetKind::Image,
            Some(t) if t == "video" => AssetKind::Video,
            _ => continue,
        };
        let asset = object.key.strip_prefix(prefix).unwrap_or(&object.key).trim_start_matches('/').to_string();
        found.push(Found { asset, key: object.key, kind, size: object.size });
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> EnqueueArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            enqueue: EnqueueArgs,
        }
        Wrapper::parse_from(std::iter::once("dispatcher").chain(flags.iter().copied())).enqueue
    }

    #[test]
    fn unknown_tasks_and_languages_are_refused_before_anything_is_sent() {
        let error = check_request(&args(&["s3://b/p", "--tasks", "describe,tgas"])).unwrap_err();
        assert!(error.to_string().contains("unknown task `tgas` (did you mean `tags`?)"), "{error}");
        let error = check_request(&args(&["s3://b/p", "--langs", "fra_Latn,xx_Yyyy"])).unwrap_err();
        assert!(format!("{error:#}").contains("xx_Yyyy"), "{error:#}");
        assert!(check_request(&args(&["s3://b/p", "--tasks", "describe,,tags"])).is_err());
        assert!(check_request(&args(&["s3://b/p", "--tasks", "mine", "--extra-tasks", "mine"])).is_ok());
    }

    #[test]
    fn routes_default_per_kind_and_can_be_overridden() {
        let request = check_request(&args(&["s3://b/p", "--model-route", "video=clips", "--batch", "b1"])).unwrap();
        assert_eq!(request.routes[&AssetKind::Image], topology::DEFAULT_IMAGE_ROUTE);
        assert_eq!(request.routes[&AssetKind::Video], "clips");
        assert_eq!(request.batch, "b1");
        assert!(check_request(&args(&["s3://b/p", "--model-route", "audio=x"])).is_err());
        assert!(check_request(&args(&["s3://b/p", "--batch", "a/b"])).is_err());
    }
}
