//! `worker serve`: the queue consumer. Loads the vision model and the translator once (on the model thread,
//! [`engine`]), consumes its route's quorum queue with a prefetch of `--batch-size` jobs, and for each group of
//! jobs arriving together, concurrently with the other groups in hand: download (streamed, size-limited), hand to
//! the model thread's continuous decode batch (decode, generate, translate: [`crate::pipeline::Scheduler`]),
//! write `results/<batch>/<asset>.json`, then settle each delivery in [`outcome::settle`].
//!
//! - Transient failures (storage or broker unavailable, timeouts) are retried with backoff and never acked; a lost
//!   broker connection is reconnected and the broker redelivers what was in hand (results are idempotent).
//! - Permanent failures (undecodable or missing asset, invalid job) write an error record, then the job is
//!   dead-lettered with its reason. A job redelivered `DELIVERY_LIMIT - 1` times (it crashed or stalled workers)
//!   gets a `poison` error record and is dead-lettered; the quorum queue's delivery limit is the last guard.
//! - A redelivered job is a suspect (the worker that had it may have crashed on it): it runs alone with nothing
//!   else in hand (the consumer is cancelled, the other deliveries in hand are given back by republishing them
//!   with their delivery count in `x-vislingo-deliveries`, since a requeue would count as one more delivery, and
//!   consuming resumes once the suspect is settled), so that a poison job never takes the jobs that happened to
//!   be in hand with it to their delivery limit. First, the record it may have
//!   written before its ack was lost (crash, lost broker, consumer timeout) is looked up by the job id stored in
//!   the record's metadata (`x-amz-meta-vislingo-job`): if there, the job is settled by it without running again.
//! - A pipeline call that runs past `--batch-timeout-s` means a stalled model: the worker exits with an error
//!   (its deliveries go back to the queue, each counted as one delivery) for its supervisor to restart it.
//! - Consumer timeout: a delivery is handled as soon as it arrives (the prefetch bounds what is in hand), so it
//!   waits in the worker only while its own group runs, which `--batch-timeout-s` bounds. The consumer asks for `x-consumer-timeout`
//!   (`--consumer-timeout-s`, above the batch timeout; RabbitMQ 3.11.15 and later honour it, older brokers apply
//!   their global `consumer_timeout`, 30 min by default). Should the broker still close the channel, the job's
//!   record is found on redelivery and the job is not run twice.
//! - SIGTERM: cancel the consumer at once (the broker sends nothing more), finish the jobs in hand (a storage
//!   retry in progress gives up and requeues), settle them, close the channel (anything else still unacked goes
//!   back to the queue) and exit 0.

pub mod engine;
pub mod fault;
pub mod http;
pub mod outcome;
pub mod shutdown;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use tracing::Instrument;
use vislingo_fleet::broker::{self, BrokerArgs};
use vislingo_fleet::storage::{with_retries, StorageError};
use vislingo_fleet::{S3Args, Storage};
use vislingo_proto::keys::RecordKind;
use vislingo_proto::topology::{RouteTopology, DEFAULT_IMAGE_ROUTE, DELIVERIES_HEADER, DELIVERY_LIMIT};
use vislingo_proto::{AssetKind, AssetResult, Job};

use self::engine::{Engine, EngineItem};
use self::fault::FaultPoint;
use self::http::Readiness;
use self::outcome::{settle, Outcome};
use self::shutdown::Shutdown;
use crate::cli::VisionArgs;
use crate::metrics::Metrics;
use crate::pipeline::AssetBytes;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model route to consume: the queue `vislingo.jobs.<route>` (images: mllama).
    #[arg(long, env = "VISLINGO_ROUTE", default_value = DEFAULT_IMAGE_ROUTE)]
    pub route: String,
    /// Jobs in hand at once (the prefetch). The model decodes all of them in one continuous batch: a job joins at
    /// the next decode step and leaves as soon as its answers are done, when the next job takes its place.
    #[arg(long, visible_alias = "max-batch", env = "VISLINGO_BATCH_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch_size: u16,
    /// Milliseconds to wait, once a job has arrived, for others arriving with it: they are downloaded, written and
    /// settled as one group (each still decodes as soon as it is downloaded).
    #[arg(long, env = "VISLINGO_BATCH_WAIT_MS", default_value_t = 20)]
    pub batch_wait_ms: u64,
    /// Largest asset downloaded, in bytes; larger ones get an error record.
    #[arg(long, env = "VISLINGO_MAX_ASSET_BYTES", default_value_t = 512 << 20)]
    pub max_asset_bytes: u64,
    /// Address of /metrics, /healthz and /readyz (port 0: any free port, logged at start).
    #[arg(long, env = "VISLINGO_LISTEN", default_value = "0.0.0.0:9464")]
    pub listen: String,
    /// Load no translator (jobs asking for languages then fail as invalid).
    #[arg(long, env = "VISLINGO_NO_TRANSLATOR")]
    pub no_translator: bool,
    /// Longest pause between two storage retries, in seconds.
    #[arg(long, env = "VISLINGO_RETRY_MAX_DELAY_S", default_value_t = 5.0)]
    pub retry_max_delay_s: f64,
    /// Seconds a group of jobs may spend on the model; past it the model is deemed stalled and the worker exits
    /// (status 1) for its supervisor to restart it. Keep it below the broker's consumer timeout.
    #[arg(long, env = "VISLINGO_BATCH_TIMEOUT_S", default_value_t = 1500.0)]
    pub batch_timeout_s: f64,
    /// The consumer's acknowledgement timeout asked of the broker (`x-consumer-timeout`, RabbitMQ 3.11.15+; older
    /// brokers use their global `consumer_timeout`); must exceed --batch-timeout-s. 0: ask nothing.
    #[arg(long, env = "VISLINGO_CONSUMER_TIMEOUT_S", default_value_t = 3600)]
    pub consumer_timeout_s: u64,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// The model, its decoding and the translator (`--langs` is ignored: languages come with each job).
    #[command(flatten)]
    pub vision: VisionArgs,
}

/// Metadata of a record naming the job that wrote it (`x-amz-meta-vislingo-job`).
pub const JOB_METADATA: &str = "vislingo-job";

/// Why the worker stops on its own: its supervisor is to start it again.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "a batch of {jobs} jobs ran past --batch-timeout-s {seconds} s: the model thread is stalled; exiting so that \
         the worker is restarted (the jobs go back to the queue)"
    )]
    Stalled { jobs: usize, seconds: f64 },
}

/// Runs the service until SIGTERM or Ctrl-C.
pub fn serve(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(args))
}

struct Worker {
    args: ServeArgs,
    topology: RouteTopology,
    engine: Engine,
    storage: Storage,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
}

async fn serve_async(args: ServeArgs) -> Result<()> {
    let topology = RouteTopology::new(&args.route).map_err(anyhow::Error::msg).context("--route")?;
    if args.batch_timeout_s.is_nan() || args.batch_timeout_s <= 0.0 {
        anyhow::bail!("--batch-timeout-s {}: expected a positive number of seconds", args.batch_timeout_s);
    }
    if args.consumer_timeout_s != 0 && args.consumer_timeout_s as f64 <= args.batch_timeout_s {
        anyhow::bail!(
            "--consumer-timeout-s {} must exceed --batch-timeout-s {}: the broker would take jobs back from a batch \
             still running",
            args.consumer_timeout_s,
            args.batch_timeout_s
        );
    }
    if fault::installed() {
        tracing::warn!("fault injection hook installed: this is a test build");
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_info(&topology.route, &args.vision.model);
    let readiness = Arc::new(Readiness::default());
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "http listening");
    tokio::spawn(http::serve(listener, metrics.clone(), readiness.clone(), shutdown.clone()));

    let engine = Engine::start(args.vision.clone(), !args.no_translator, metrics.decode_rows.clone()).await?;
    metrics.model_load_seconds.set(engine.load_seconds);
    metrics.observe_device(&engine.device);
    readiness.models_loaded.store(true, Ordering::SeqCst);
    tracing::info!(model = %engine.names.model, seconds = engine.load_seconds, "models loaded");
    let storage = Storage::connect(&args.s3).await;
    let worker = Worker { args, topology, engine, storage, metrics, readiness, shutdown };

    let mut delay = Duration::from_millis(500);
    let mut connections = 0u64;
    while !worker.shutdown.is_triggered() {
        let started = Instant::now();
        let session = worker.session(&mut connections).await;
        worker.readiness.broker_connected.store(false, Ordering::SeqCst);
        worker.metrics.batches_dropped();
        match session {
            Ok(()) => break,
            Err(error) if error.downcast_ref::<ServeError>().is_some() => return Err(error),
            Err(error) => {
                if started.elapsed() > Duration::from_secs(30) {
                    delay = Duration::from_millis(500);
                }
                tracing::warn!(error = %format!("{error:#}"), delay_ms = delay.as_millis() as u64, "broker session lost");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = worker.shutdown.triggered() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// One delivery in hand and what is known of its job so far.
struct InHand {
    delivery: Delivery,
    taken: Instant,
    job: Option<Job>,
    span: tracing::Span,
    /// Earlier deliveries of this message (0 on the first).
    deliveries: i64,
    /// Settled by the record this job wrote on an earlier delivery (no work done again).
    already_written: bool,
    /// Set once the job's fate is known before the pipeline.
    outcome: Option<Outcome>,
    /// The record to write (error or result).
    record: Option<AssetResult>,
    bytes: Option<Vec<u8>>,
}

impl Worker {
    /// Connects, declares, consumes until shutdown (Ok) or until the connection is lost (Err).
    async fn session(&self, connections: &mut u64) -> Result<()> {
        let connection = broker::connect(&self.args.broker.amqp_url).await?;
        let channel = connection.create_channel().await.map_err(broker::amqp("open channel"))?;
        channel.basic_qos(self.args.batch_size, BasicQosOptions::default()).await.map_err(broker::amqp("basic.qos"))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(broker::amqp("confirm.select"))?;
        broker::declare(&channel, &self.topology).await?;
        let mut consumer = self.consume(&channel).await?;
        *connections += 1;
        if *connections > 1 {
            self.metrics.broker_reconnects.inc();
        }
        self.readiness.broker_connected.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.jobs.name, batch_size = self.args.batch_size, "consuming");

        let wait = Duration::from_millis(self.args.batch_wait_ms);
        let mut tag = consumer.tag();
        // Groups of deliveries being handled; the prefetch bounds the jobs in hand, and the model thread decodes
        // all of them in one continuous batch, so a group never waits for another.
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            let first = tokio::select! {
                biased;
                _ = self.shutdown.triggered() => break,
                Some(done) = running.next(), if !running.is_empty() => {
                    done?;
                    continue;
                }
                next = consumer.next() => next,
            };
            let mut deliveries = match first {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(error)) => return Err(broker::amqp("receive")(error).into()),
                None => anyhow::bail!("the broker ended the consumer"),
            };
            let deadline = tokio::time::Instant::now() + wait;
            let mut lost = None;
            while deliveries.len() < self.args.batch_size as usize {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(Ok(delivery))) => deliveries.push(delivery),
                    Ok(Some(Err(error))) => {
                        lost = Some(error);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // A suspect (a redelivered job: its worker may have crashed on it) runs alone with nothing else in
            // hand, so that a crash counts against it only: the consumer is cancelled, what arrived with it is
            // given back, the jobs already running finish, and consuming starts again once the suspect is settled.
            let Some(position) = deliveries.iter().position(is_suspect) else {
                running.push(Box::pin(self.handle_batch(&channel, deliveries)));
                if let Some(error) = lost {
                    return Err(broker::amqp("receive")(error).into());
                }
                continue;
            };
            if let Some(error) = lost {
                return Err(broker::amqp("receive")(error).into());
            }
            let suspect = deliveries.swap_remove(position);
            channel
                .basic_cancel(tag.clone(), BasicCancelOptions::default())
                .await
                .map_err(broker::amqp("cancel the consumer"))?;
            // What the broker sent before the cancel took effect.
            while let Ok(Some(next)) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                deliveries.push(next.map_err(broker::amqp("receive"))?);
            }
            for delivery in deliveries {
                let outcome = Outcome::GiveBack { deliveries: deliveries_so_far(&delivery) };
                settle(&channel, &self.topology.route, &delivery, &outcome, &self.metrics).await?;
            }
            while let Some(done) = running.next().await {
                done?;
            }
            tracing::info!(job_id = %message_id(&suspect), deliveries = deliveries_so_far(&suspect), "suspect alone");
            self.handle_batch(&channel, vec![suspect]).await?;
            if self.shutdown.is_triggered() {
                break;
            }
            consumer = self.consume(&channel).await?;
            tag = consumer.tag();
        }
        // Shutdown: the broker sends nothing more; the jobs in hand finish and are settled; whatever the broker had
        // sent besides goes back when the channel closes.
        if !running.is_empty() {
            tracing::info!(groups = running.len(), "shutdown: consumer cancelled, finishing the jobs in hand");
        }
        let _ = channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
        while let Some(done) = running.next().await {
            done?;
        }
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = connection.close(200, "shutdown".into()).await;
        Ok(())
    }
    /// Starts consuming the route's queue, asking for the consumer timeout.
    async fn consume(&self, channel: &lapin::Channel) -> Result<lapin::Consumer> {
        let mut arguments = FieldTable::default();
        if self.args.consumer_timeout_s > 0 {
            let milliseconds = self.args.consumer_timeout_s.saturating_mul(1000).min(i64::MAX as u64) as i64;
            arguments.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(milliseconds));
        }
        let queue = self.topology.jobs.name.as_str();
        let consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), arguments)
            .await
            .map_err(broker::amqp(format!("consume {queue}")))?;
        Ok(consumer)
    }

    /// Runs one batch of deliveries to their settlement. Err when the channel is lost or the model stalled.
    async fn handle_batch(&self, channel: &lapin::Channel, deliveries: Vec<Delivery>) -> Result<()> {
        self.metrics.in_flight.add(deliveries.len() as i64);
        self.metrics.batch_size.observe(deliveries.len() as f64);
        let mut batch: Vec<InHand> = deliveries.into_iter().map(|delivery| self.take(delivery)).collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.metrics
            .batch_taken(now.as_secs_f64(), batch.iter().filter_map(|item| Some(item.job.as_ref()?.enqueued_at)));

        // Redelivered jobs: the record this very job wrote before its ack was lost settles it; one delivered
        // DELIVERY_LIMIT - 1 times without such a record is poison.
        let checks = batch.iter().map(|item| async move {
            let job = item.job.as_ref().filter(|_| is_suspect(&item.delivery))?;
            if item.record.is_some() {
                return None;
            }
            Some(self.written_by(job).instrument(item.span.clone()).await)
        });
        let checked = futures_util::future::join_all(checks).await;
        for (item, check) in batch.iter_mut().zip(checked) {
            let Some(check) = check else { continue };
            let job = item.job.as_ref().expect("checks are for jobs");
            match check {
                Ok(Some(outcome)) => {
                    item.outcome = Some(outcome);
                    item.already_written = true;
                }
                Ok(None) if item.deliveries >= DELIVERY_LIMIT - 1 => {
                    let message = format!(
                        "{}: delivered {} times without completing (it crashed or stalled workers)",
                        job.asset,
                        item.deliveries + 1
                    );
                    item.record = Some(self.error_record(job, "poison", message));
                }
                Ok(None) => {}
                Err(error) if error.is_transient() => item.outcome = Some(Outcome::Requeue),
                Err(error) => tracing::warn!(parent: &item.span, %error, "earlier record unreadable, running again"),
            }
        }

        // Download every asset still to do, concurrently.
        let downloads = batch.iter().map(|item| async move {
            let job = item.job.as_ref().filter(|_| item.outcome.is_none() && item.record.is_none())?;
            let started = Instant::now();
            let result = self.download(job).instrument(item.span.clone()).await;
            self.metrics.stage_seconds.with_label_values(&["download"]).observe(started.elapsed().as_secs_f64());
            Some(result)
        });
        let downloaded = futures_util::future::join_all(downloads).await;
        for (item, result) in batch.iter_mut().zip(downloaded) {
            let Some(result) = result else { continue };
            let job = item.job.as_ref().expect("downloads are for jobs");
            match result {
                Ok(bytes) => {
                    self.metrics.downloaded_bytes.inc_by(bytes.len() as u64);
                    item.bytes = Some(bytes);
                }
                Err(error) if error.is_transient() => item.outcome = Some(Outcome::Requeue),
                Err(error) => item.record = Some(self.error_record(job, "read", error.to_string())),
            }
        }

        // The pipeline, on the model thread.
        let mut items = Vec::new();
        let mut positions = Vec::new();
        for (position, item) in batch.iter_mut().enumerate() {
            let (Some(job), Some(bytes)) = (&item.job, item.bytes.take()) else { continue };
            let tasks = job.tasks.iter().map(|name| self.engine.tasks.get(name).cloned()).collect::<Result<_, _>>();
            let tasks = tasks.expect("tasks were checked when the job was taken");
            items.push(EngineItem {
                tasks,
                langs: job.langs.clone(),
                frames: job.frames,
                asset: AssetBytes { key: job.asset.clone(), bytes },
            });
            positions.push(position);
        }
        if !items.is_empty() {
            let jobs = items.len();
            let seconds = self.args.batch_timeout_s;
            let records = tokio::time::timeout(Duration::from_secs_f64(seconds), self.engine.process(items))
                .await
                .map_err(|_| ServeError::Stalled { jobs, seconds })??;
            self.metrics.observe_device(&self.engine.device);
            let (mut tokens, mut generation_s) = (0u64, 0.0);
            for (position, record) in positions.into_iter().zip(records) {
                let t = &record.timings;
                for (stage, seconds) in [
                    ("decode", t.decode_s),
                    ("vision", t.vision_s),
                    ("generate", t.generation_s),
                    ("translate", t.translation_s),
                ] {
                    self.metrics.stage_seconds.with_label_values(&[stage]).observe(seconds);
                }
                for output in &record.outputs {
                    tokens += output.generated_tokens as u64;
                    generation_s += output.generation_s;
                }
                batch[position].record = Some(record);
            }
            self.metrics.generated_tokens.inc_by(tokens);
            if generation_s > 0.0 {
                self.metrics.tokens_per_second.set(tokens as f64 / generation_s);
            }
        }

        // Write the records, concurrently.
        let uploads = batch.iter().map(|item| async move {
            let (Some(job), Some(record)) = (&item.job, &item.record) else { return None };
            if item.outcome.is_some() {
                return None;
            }
            let started = Instant::now();
            let result = self.upload(job, record).instrument(item.span.clone()).await;
            self.metrics.stage_seconds.with_label_values(&["upload"]).observe(started.elapsed().as_secs_f64());
            Some(result)
        });
        let uploaded = futures_util::future::join_all(uploads).await;
        for (item, result) in batch.iter_mut().zip(uploaded) {
            let Some(result) = result else { continue };
            let record = item.record.as_ref().expect("uploads are of records");
            item.outcome = Some(match (result, &record.error) {
                (Err(error), _) => {
                    // Not written: the job goes back to the queue (a permanent refusal ends at the delivery limit).
                    tracing::warn!(parent: &item.span, %error, "result not written");
                    Outcome::Requeue
                }
                (Ok(()), None) => Outcome::Done,
                (Ok(()), Some(error)) => Outcome::Failed { stage: error.stage.clone(), reason: error.message.clone() },
            });
            if let (Some(job), Some(Outcome::Done | Outcome::Failed { .. })) = (&item.job, &item.outcome) {
                fault::at(FaultPoint::AfterWrite, &job.asset);
            }
        }

        // Settle, each in its span.
        let mut lost = None;
        for item in &batch {
            let outcome = item.outcome.clone().unwrap_or(Outcome::Requeue);
            let settled = settle(channel, &self.topology.route, &item.delivery, &outcome, &self.metrics).await;
            let seconds = item.taken.elapsed().as_secs_f64();
            self.metrics.job_seconds.observe(seconds);
            self.metrics.in_flight.dec();
            match (&settled, &outcome) {
                (Err(error), _) => tracing::warn!(parent: &item.span, %error, "not settled; the broker will redeliver"),
                (Ok(()), Outcome::Done) => {
                    tracing::info!(parent: &item.span, seconds, already_written = item.already_written, "job done")
                }
                (Ok(()), Outcome::Requeue | Outcome::GiveBack { .. }) => {
                    tracing::info!(parent: &item.span, "job requeued")
                }
                (Ok(()), Outcome::Failed { stage, reason }) => {
                    tracing::warn!(parent: &item.span, stage, reason, "job failed, dead-lettered")
                }
                (Ok(()), Outcome::Invalid { reason }) => {
                    tracing::warn!(parent: &item.span, reason, "invalid job, dead-lettered")
                }
            }
            if let Err(error) = settled {
                lost.get_or_insert(error);
            }
        }
        self.metrics.batch_settled(now.as_secs_f64());
        match lost {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Parses a delivery and decides what can be decided before any download.
    fn take(&self, delivery: Delivery) -> InHand {
        let taken = Instant::now();
        let job = match Job::from_json(&delivery.data) {
            Ok(job) => job,
            Err(error) => {
                let span = tracing::info_span!("job", job_id = %message_id(&delivery), asset = "?");
                let outcome = Some(Outcome::Invalid { reason: error.to_string() });
                let deliveries = deliveries_so_far(&delivery);
                return InHand {
                    delivery,
                    taken,
                    job: None,
                    span,
                    deliveries,
                    already_written: false,
                    outcome,
                    record: None,
                    bytes: None,
                };
            }
        };
        let span = tracing::info_span!("job", job_id = %job.id, asset = %job.asset);
        let deliveries = deliveries_so_far(&delivery);
        let problem = if job.kind == AssetKind::Video && !self.engine.names.takes_videos {
            Some((
                "invalid",
                format!(
                    "{}: a video job on route `{}`, whose model {} takes images only (videos need a \
                     LLaVA-NeXT-Video worker, route `{}`)",
                    job.asset,
                    self.topology.route,
                    self.engine.names.model,
                    vislingo_proto::topology::DEFAULT_VIDEO_ROUTE
                ),
            ))
        } else if job.frames == Some(0) {
            Some(("invalid", format!("{}: the job asks for 0 video frames", job.asset)))
        } else if let Some(unknown) = job.tasks.iter().find(|name| self.engine.tasks.get(name).is_err()) {
            Some(("invalid", format!("{}: unknown task `{unknown}` for this worker", job.asset)))
        } else if !job.langs.is_empty() && self.engine.names.translator.is_none() {
            Some(("invalid", format!("{}: languages requested but this worker has no translator", job.asset)))
        } else {
            None
        };
        let record = problem.map(|(stage, message)| self.error_record(&job, stage, message));
        InHand {
            delivery,
            taken,
            job: Some(job),
            span,
            deliveries,
            already_written: false,
            outcome: None,
            record,
            bytes: None,
        }
    }

    fn error_record(&self, job: &Job, stage: &str, message: String) -> AssetResult {
        self.engine.error_record(&job.asset, job.kind, &job.tasks, &job.langs, stage, message)
    }

    fn retry_delay(&self) -> Duration {
        Duration::from_secs_f64(self.args.retry_max_delay_s.max(0.1))
    }

    async fn download(&self, job: &Job) -> Result<Vec<u8>, StorageError> {
        let limit = self.args.max_asset_bytes;
        with_retries(
            &job.key,
            self.retry_delay(),
            || self.shutdown.is_triggered(),
            |_| self.metrics.storage_retries.with_label_values(&["get"]).inc(),
            || self.storage.get(&job.bucket, &job.key, limit),
        )
        .await
    }

    /// Writes the job's record (result or error, by its key) naming the job in its metadata, then removes the
    /// asset's record of the other kind, left by an earlier request (a failure there is only logged: readers
    /// prefer the result where both exist).
    async fn upload(&self, job: &Job, record: &AssetResult) -> Result<(), StorageError> {
        let mut bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        bytes.push(b'\n');
        let kind = record.record_kind();
        let key = job.record_key(kind);
        let metadata = [(JOB_METADATA, job.id.as_str())];
        with_retries(
            &key,
            self.retry_delay(),
            || self.shutdown.is_triggered(),
            |_| self.metrics.storage_retries.with_label_values(&["put"]).inc(),
            || self.storage.put_json_with(&job.bucket, &key, bytes.clone(), &metadata),
        )
        .await?;
        let other = job.record_key(kind.other());
        let removed = with_retries(
            &other,
            self.retry_delay(),
            || self.shutdown.is_triggered(),
            |_| self.metrics.storage_retries.with_label_values(&["delete"]).inc(),
            || self.storage.delete(&job.bucket, &other),
        )
        .await;
        if let Err(error) = removed {
            tracing::warn!(%error, "stale record not removed");
        }
        Ok(())
    }

    /// The outcome recorded by this very job on an earlier delivery: a record whose metadata names the job.
    async fn written_by(&self, job: &Job) -> Result<Option<Outcome>, StorageError> {
        for kind in [RecordKind::Result, RecordKind::Error] {
            let key = job.record_key(kind);
            let metadata = with_retries(
                &key,
                self.retry_delay(),
                || self.shutdown.is_triggered(),
                |_| self.metrics.storage_retries.with_label_values(&["head"]).inc(),
                || self.storage.head_metadata(&job.bucket, &key),
            )
            .await?;
            if metadata.as_ref().and_then(|m| m.get(JOB_METADATA)) != Some(&job.id) {
                continue;
            }
            if kind == RecordKind::Result {
                return Ok(Some(Outcome::Done));
            }
            let bytes = with_retries(
                &key,
                self.retry_delay(),
                || self.shutdown.is_triggered(),
                |_| self.metrics.storage_retries.with_label_values(&["get"]).inc(),
                || self.storage.get(&job.bucket, &key, 64 << 20),
            )
            .await?;
            let Ok(AssetResult { error: Some(error), .. }) = serde_json::from_slice::<AssetResult>(&bytes) else {
                return Ok(None);
            };
            return Ok(Some(Outcome::Failed { stage: error.stage, reason: error.message }));
        }
        Ok(None)
    }
}

fn message_id(delivery: &Delivery) -> String {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map_or_else(|| format!("tag-{}", delivery.delivery_tag), |id| id.to_string())
}

/// An integer header of a delivery.
fn int_header(delivery: &Delivery, name: &str) -> i64 {
    let Some(headers) = delivery.properties.headers() else { return 0 };
    match headers.inner().iter().find(|(key, _)| key.as_str() == name).map(|(_, v)| v) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => *n as i64,
        Some(AMQPValue::LongUInt(n)) => *n as i64,
        Some(AMQPValue::ShortInt(n)) => *n as i64,
        Some(AMQPValue::ShortUInt(n)) => *n as i64,
        Some(AMQPValue::ShortShortInt(n)) => *n as i64,
        Some(AMQPValue::ShortShortUInt(n)) => *n as i64,
        _ => 0,
    }
}

/// Earlier deliveries of this job: the quorum queue's `x-delivery-count` (absent or 0 on the first), plus those
/// of the copies it was given back as ([`DELIVERIES_HEADER`]).
fn deliveries_so_far(delivery: &Delivery) -> i64 {
    int_header(delivery, "x-delivery-count") + int_header(delivery, DELIVERIES_HEADER)
}

/// A job delivered before: the worker that had it may have crashed or stalled on it.
fn is_suspect(delivery: &Delivery) -> bool {
    delivery.redelivered || deliveries_so_far(delivery) > 0
}
