//! `worker run FOLDER`: every image and video of a local folder through the [`Pipeline`] in batches, one JSON record per
//! asset written atomically under `--out`, resumable, with `summary.json` and optionally the article's layout.
//!
//! # Output
//!
//! - `<out>/<asset key>.json`: the asset's [`AssetResult`]; sub-folders mirror the source folder. An asset that
//!   failed gets `<out>/<asset key>.error.json` instead (the same record, with its `error`), as the fleet writes
//!   `results/<batch>/...` (`vislingo_proto::keys`): writing one removes the other. Every file is
//!   written as `<name>.tmp-<pid>` in its folder, fsynced and renamed, so no reader ever sees half a file; a
//!   `.tmp-<pid>` file left by a killed run is removed by the next run once that process is gone.
//! - `<out>/summary.json`: a [`Summary`] of the run, written at the end, also after Ctrl-C.
//! - `<out>/results_article.json` with `--layout article`: the single file of the article's scripts (below).
//! - With `--html DIR`: a static HTML gallery of every record under `<out>` of the folder's assets
//!   ([`crate::html`]), written at the end, also after failures or Ctrl-C.
//!
//! Videos are sampled (`--frames`, default 8) and described when the model takes videos (LLaVA-NeXT-Video).
//! With a model that takes none (Llama 3.2 Vision, the default) every video gets an error record (stage
//! `unsupported`) that says to run it with a LLaVA-NeXT-Video model, written without loading the model, and the
//! run exits with status 1: a folder is never reported complete while some of its assets have no description.
//!
//! # Resume
//!
//! An asset whose record parses and [`AssetResult::satisfies`] this run's model and request (tasks, languages,
//! translator) is skipped unless `--force`. An asset whose error record [`AssetResult::settles_run`] (it failed
//! with this model and request) is skipped too unless `--retry-failed`, as `dispatcher enqueue` does: a corrupt
//! file is not decoded again on every run, and the run still exits with status 1 for it. Sampling and
//! `--max-new-tokens` are not part of the request: changing only those reprocesses nothing. The models are
//! loaded only when something is left to process.
//!
//! # Exit status
//!
//! 0: every asset succeeded or was already done; 1: some failed, in this run or before (everything else is still
//! written); 2: setup
//! error (bad flags, folder, model); 130: interrupted by Ctrl-C. See [`exit_code`].
//!
//! # Article layout
//!
//! `results_article.json` is `{"descriptions": [...], "stats": {...}}`, as the article's
//! `image_batch_translate.py` writes it (indented by 4), with one entry per image that has a complete record
//! after this run (processed now or skipped as already done; failed assets are only in `summary.json` and
//! their records), in key order. Each image entry's fields, in this order:
//!
//! | field | from |
//! | --- | --- |
//! | `image_file` | the asset key (`beach.jpg`, `trips/beach.jpg`) |
//! | `description_english` | the `describe` task's text |
//! | `translation_<language>` | its translation into each language (see below) |
//! | `generated_tokens` | the tokens `describe` generated |
//! | `description_generation_time_sec` | its generation seconds, 3 decimals |
//! | `<task>_english`, `<task>_translation_<language>`, `<task>_generated_tokens`, `<task>_generation_time_sec` | the same for any other task, in task order (`tags_english`, `sentiment_translation_hindi`) |
//! | `tags_processed` | for the `tags` task, its sorted tags (`<task>_tags_processed` for another tag task) |
//! | `total_processing_time_sec` | the image's share of its batch's time, 3 decimals |
//!
//! A video's entry starts as the article's `video_batch_translate.py` writes it: `video_file` (the key),
//! `video_size_mb` (MiB, 3 decimals), `video_duration_sec` (rounded to whole seconds), `video_fps` (rounded),
//! `video_frames` (N), `video_width` and `video_height` (the stream's stored size, as PyAV reports it); then
//! the same task fields as an image, and `total_processing_time_sec`.
//!
//! `<language>` is the language's lower-case English name with each run of other characters than letters and
//! digits as one `_`, accents dropped: `translation_french`, `translation_chinese_simplified`,
//! `translation_norwegian_bokmal`, `translation_modern_standard_arabic`.
//!
//! `stats` holds `model`, `temperature` (0 for greedy decoding), `total_batch_time_sec` (the sum of the
//! entries' processing times, so that a resumed run still describes the whole folder), `total_images` (the
//! image entries) and `average_time_per_image_sec`; when the folder holds videos, `total_videos` and
//! `average_time_per_video_sec` as in the video script (and the image fields only if there are images too).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use vislingo_proto::asset::{list_folder, Asset};
use vislingo_proto::keys::{self, RecordKind};
use vislingo_proto::result::{AssetError, ResultRequest, Timings, RESULT_SCHEMA_VERSION};
use vislingo_proto::{lang, AssetKind, AssetResult, Lang};

use crate::cli::{parse_device, VisionArgs};
use crate::models::hub::{read_json, ModelRepo, ModelSource};
use crate::models::nllb::{TranslateOptions, Translator};
use crate::models::vision_chat::{DecodeSettings, ModelFamily, VisionChat};
use crate::models::vlm::GenerationConfig;
use crate::pipeline::{video_unsupported_message, AssetBytes, Pipeline, PipelineSettings, Scheduler};
use crate::tasks::Task;

/// The non-gated copy of meta-llama/Llama-3.2-11B-Vision-Instruct.
pub const DEFAULT_MODEL: &str = "unsloth/Llama-3.2-11B-Vision-Instruct";
pub const DEFAULT_TRANSLATOR: &str = "facebook/nllb-200-distilled-600M";
pub const SUMMARY_FILE: &str = "summary.json";
pub const ARTICLE_FILE: &str = "results_article.json";
/// The language the vision model writes in.
const SOURCE_LANG: &str = "eng_Latn";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Folder of images and videos to describe; sub-folders included, hidden files skipped.
    pub folder: PathBuf,
    /// Tasks to run on every asset, comma-separated (built-in: describe, tags, sentiment, ad).
    #[arg(long, env = "VISLINGO_TASKS", default_value = "describe")]
    pub tasks: String,
    /// Folder of the results: one `<asset>.json` per asset, `summary.json`.
    #[arg(long, env = "VISLINGO_OUT", default_value = "results")]
    pub out: PathBuf,
    /// Assets in flight at once: their tasks decode together in one continuous batch, and a finished asset's
    /// place goes to the next one at once.
    #[arg(long, visible_alias = "max-batch", env = "VISLINGO_BATCH_SIZE", default_value_t = 4, value_parser = parse_batch_size)]
    pub batch_size: usize,
    /// Process assets again even when their record answers this request.
    #[arg(long, env = "VISLINGO_FORCE")]
    pub force: bool,
    /// Process again the assets that failed with this model and request (by default their error record stands).
    #[arg(long, env = "VISLINGO_RETRY_FAILED")]
    pub retry_failed: bool,
    /// `records`: one file per asset and summary.json; `article`: also results_article.json.
    #[arg(long, env = "VISLINGO_LAYOUT", value_enum, default_value_t = Layout::Records)]
    pub layout: Layout,
    /// Also write a static HTML gallery of the folder's records into this folder (open its index.html): image
    /// thumbnails, video frames, texts, tags, translations, statistics, search.
    #[arg(long, env = "VISLINGO_HTML")]
    pub html: Option<PathBuf>,
    /// No progress bar (it is drawn only when standard error is a terminal).
    #[arg(long, env = "VISLINGO_NO_PROGRESS")]
    pub no_progress: bool,
    #[command(flatten)]
    pub vision: VisionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    Records,
    Article,
}

fn parse_batch_size(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(size) if size >= 1 => Ok(size),
        _ => Err(format!("`{value}` is not a batch size: expected a whole number of at least 1")),
    }
}

/// What `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    /// `null` when no languages were requested.
    pub translator: Option<String>,
    pub tasks: Vec<String>,
    pub langs: Vec<Lang>,
    /// The sampling temperature, `"greedy"`, or `null` when the checkpoint was not read (nothing to process).
    pub temperature: serde_json::Value,
    /// With sampling only.
    pub top_p: Option<f64>,
    pub seed: u64,
    pub max_new_tokens: Option<usize>,
    pub batch_size: usize,
    /// Unix seconds.
    pub started: f64,
    pub finished: f64,
    /// Seconds loading the models (0 when nothing was left to process).
    pub model_load_time_sec: f64,
    /// Seconds spent on this run's batches: reading, decoding, generating, translating, writing.
    pub total_batch_time_sec: f64,
    pub assets: AssetCounts,
    /// `total_batch_time_sec` / `assets.processed`.
    pub average_time_per_asset_sec: f64,
    /// Tokens the vision model generated in this run, all tasks.
    pub generated_tokens: u64,
    /// Seconds of generation (prefill included, batch rows together) behind `generated_tokens`.
    pub generation_time_sec: f64,
    pub tokens_per_sec: f64,
    /// Bytes of the assets read in this run.
    pub bytes_processed: u64,
    /// Whether Ctrl-C stopped the run before every asset was processed.
    pub interrupted: bool,
    /// Assets of this run that failed, in key order.
    pub failed_assets: Vec<FailedAsset>,
    /// Assets skipped for their error record from an earlier run, in key order.
    #[serde(default)]
    pub previously_failed_assets: Vec<FailedAsset>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AssetCounts {
    /// Images and videos found in the folder.
    pub listed: usize,
    pub images: usize,
    pub videos: usize,
    /// Processed in this run, failures included.
    pub processed: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Skipped because their record already answers this request.
    pub skipped_done: usize,
    /// Skipped because they failed before with this model and request (their error record stands; --retry-failed
    /// processes them again).
    #[serde(default)]
    pub skipped_failed: usize,
    /// Left unprocessed by an interruption.
    pub remaining: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAsset {
    pub asset: String,
    pub stage: String,
    pub message: String,
}

/// An error that carries the process exit status `worker` ends with.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    error: anyhow::Error,
}

impl Exit {
    fn error(code: u8, error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Exit { code, error })
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for Exit {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The exit status for an error of any subcommand: `Exit`'s code, 1 for anything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.downcast_ref::<Exit>().map_or(1, |exit| exit.code)
}

/// Ctrl-C presses so far: the first stops after the current batch, the second exits at once.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

fn install_interrupt_handler() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            tracing::warn!("interrupted: stopping after the current batch; Ctrl-C again quits at once");
        } else {
            // Written files are complete (atomic renames); a half-written one is only a `.tmp-<pid>` file.
            std::process::exit(130);
        }
    });
    if let Err(error) = installed {
        tracing::debug!(%error, "no Ctrl-C handler");
    }
}

fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// The progress bar being drawn, for [`StderrBelowProgress`].
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Standard error for log lines that keeps a running progress bar intact: each line is written with the bar
/// cleared and drawn again below it. For `tracing_subscriber::fmt().with_writer(...)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrBelowProgress;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrBelowProgress {
    type Writer = StderrBelowProgress;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for StderrBelowProgress {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|bar| bar.clone());
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf)),
            None => io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Runs `worker run`; see the module docs.
pub fn run(args: RunArgs) -> Result<()> {
    let started = SystemTime::now();
    let plan = Plan::new(&args).map_err(|error| Exit::error(2, error))?;
    install_interrupt_handler();
    remove_stale_temporaries(&args.out);

    let mut counts = AssetCounts { listed: plan.assets.len(), ..AssetCounts::default() };
    // Complete records of this run's assets, for the article layout.
    let mut done: BTreeMap<String, AssetResult> = BTreeMap::new();
    let mut pending: Vec<&Asset> = Vec::new();
    let mut previously_failed: Vec<FailedAsset> = Vec::new();
    for asset in &plan.assets {
        match asset.kind {
            AssetKind::Image => counts.images += 1,
            AssetKind::Video => counts.videos += 1,
        }
        match (!args.force).then(|| plan.existing_record(&asset.key)).flatten() {
            Some(Existing::Done(record)) => {
                counts.skipped_done += 1;
                if args.layout == Layout::Article {
                    done.insert(asset.key.clone(), record);
                }
            }
            Some(Existing::Failed(error)) if !args.retry_failed => {
                counts.skipped_failed += 1;
                previously_failed.push(error);
            }
            Some(Existing::Failed(_)) | None => pending.push(asset),
        }
    }
    tracing::info!(
        folder = %args.folder.display(),
        images = counts.images,
        videos = counts.videos,
        done = counts.skipped_done,
        failed_before = counts.skipped_failed,
        pending = pending.len(),
        "run planned"
    );

    let checkpoint = match checkpoint_defaults(&plan.model_repo) {
        Ok(defaults) => Some(defaults),
        Err(error) if pending.is_empty() => {
            tracing::debug!(%error, "checkpoint defaults unread");
            None
        }
        Err(error) => return Err(Exit::error(2, error)),
    };
    let decode = checkpoint.map(|defaults| plan.decode_settings(defaults));

    let mut tally = Tally::default();
    // Videos for a model that takes none: their error records need no model.
    if !plan.family.takes_videos() {
        let (videos, rest): (Vec<&Asset>, Vec<&Asset>) =
            std::mem::take(&mut pending).into_iter().partition(|a| a.kind == AssetKind::Video);
        if let Some(first) = videos.first() {
            tracing::warn!(videos = videos.len(), first = %first.key, model = %plan.model_name, "videos need a video model");
        }
        for asset in videos {
            let message = video_unsupported_message(&asset.key, &plan.model_name, plan.family);
            let record = plan.write_record(plan.error_record(&asset.key, "unsupported", message));
            tally.count(&record);
        }
        pending = rest;
    }
    let mut load_s = 0.0;
    if let Some(decode) = decode.as_ref().filter(|_| !pending.is_empty()) {
        let load_started = Instant::now();
        let models = plan.load_models().map_err(|error| Exit::error(2, error))?;
        load_s = load_started.elapsed().as_secs_f64();
        let pipeline = Pipeline {
            chat: &models.chat,
            translator: models.translator.as_ref(),
            settings: PipelineSettings {
                tasks: plan.tasks.clone(),
                langs: plan.langs.clone(),
                source_lang: Lang::parse(SOURCE_LANG).expect("English is a FLORES-200 language"),
                decode: args.vision.decode_options(),
                video: args.vision.video_options(),
                generation: decode.clone(),
                max_new_tokens: args.vision.max_new_tokens,
                translation: TranslateOptions::default(),
            },
        };
        debug_assert_eq!(pipeline.request(), plan.request, "the request resumed from is the one recorded");
        debug_assert_eq!(models.chat.name(), plan.model_name);
        let bar = progress_bar(pending.len() as u64, !args.no_progress);
        *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        // Up to --batch-size assets in flight: each joins the decode batch as soon as it is read and decoded, and
        // leaves it when its answers are done, when the next asset takes its place.
        let mut scheduler = Scheduler::new(&pipeline);
        let mut next = pending.iter().enumerate();
        let decoding_started = Instant::now();
        loop {
            let mut records = Vec::new();
            // The free places, read now and decoded together (in parallel) by submit_all.
            let mut read = Vec::new();
            while scheduler.in_flight() + read.len() < args.batch_size && !interrupted() {
                let Some((tag, asset)) = next.next() else { break };
                match fs::read(plan.folder.join(&asset.key)) {
                    Ok(bytes) => {
                        tally.bytes += bytes.len() as u64;
                        read.push((
                            tag as u64,
                            AssetBytes { key: asset.key.clone(), bytes },
                            pipeline.default_request(),
                        ));
                    }
                    Err(error) => {
                        let message = format!("{}: cannot read the file: {error}", asset.key);
                        tracing::warn!(asset = %asset.key, stage = "read", error = %message, "asset failed");
                        records.push(plan.error_record(&asset.key, "read", message));
                    }
                }
            }
            scheduler.submit_all(read);
            let idle = scheduler.is_idle();
            if !idle {
                records.extend(scheduler.step().into_iter().map(|(_, processed)| processed.result));
            }
            for record in records {
                let record = plan.write_record(record);
                tally.count(&record);
                if record.error.is_none() && args.layout == Layout::Article {
                    done.insert(record.asset.clone(), record);
                }
                bar.inc(1);
            }
            if !tally.failed.is_empty() {
                bar.set_message(format!("{} failed", tally.failed.len()));
            }
            if idle {
                break;
            }
        }
        tally.batch_s += decoding_started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    counts.processed = tally.processed;
    counts.failed = tally.failed.len();
    counts.succeeded = tally.processed - tally.failed.len();
    counts.remaining = (counts.images + counts.videos) - counts.skipped_done - counts.skipped_failed - tally.processed;
    let mut summary = plan.summary(&args, decode.as_ref(), started, load_s, counts, tally);
    summary.previously_failed_assets = previously_failed;
    write_json_atomic(&args.out.join(SUMMARY_FILE), &summary, b"  ")
        .with_context(|| format!("cannot write {}", args.out.join(SUMMARY_FILE).display()))?;
    if args.layout == Layout::Article {
        let article = article_file(&plan.model_name, decode.as_ref(), done.values());
        write_json_atomic(&args.out.join(ARTICLE_FILE), &article, b"    ")
            .with_context(|| format!("cannot write {}", args.out.join(ARTICLE_FILE).display()))?;
    }
    if let Some(dir) = &args.html {
        let report = crate::html::write_folder_gallery(&args.folder, &args.out, &plan.assets, dir)
            .with_context(|| format!("--html {}", dir.display()))?;
        tracing::info!(records = report.records, pictures = report.pictures, index = %report.index.display(), "gallery written");
    }
    tracing::info!(
        processed = counts.processed,
        failed = counts.failed,
        skipped = counts.skipped_done,
        seconds = round3(summary.total_batch_time_sec),
        "run finished"
    );

    if summary.interrupted {
        let error = anyhow::anyhow!(
            "interrupted: {} of {} assets left unprocessed; run again to resume",
            counts.remaining,
            counts.images + counts.videos
        );
        return Err(Exit::error(130, error));
    }
    if counts.failed > 0 {
        let summary_path = args.out.join(SUMMARY_FILE);
        let error = anyhow::anyhow!(
            "{} of {} assets failed; their errors are in {}",
            counts.failed,
            counts.processed,
            summary_path.display()
        );
        return Err(Exit::error(1, error));
    }
    if counts.skipped_failed > 0 {
        let summary_path = args.out.join(SUMMARY_FILE);
        let error = anyhow::anyhow!(
            "{} assets failed in an earlier run and were skipped (--retry-failed runs them again); their errors \
             are in {}",
            counts.skipped_failed,
            summary_path.display()
        );
        return Err(Exit::error(1, error));
    }
    Ok(())
}

/// What `run` was asked for, checked and resolved before any model loads.
struct Plan {
    folder: PathBuf,
    out: PathBuf,
    assets: Vec<Asset>,
    tasks: Vec<Task>,
    langs: Vec<Lang>,
    model_repo: ModelRepo,
    model_name: String,
    /// The model's family, from its config.json: whether it takes videos.
    family: ModelFamily,
    translator_repo: Option<ModelRepo>,
    request: ResultRequest,
    device: Device,
    /// Model, decoding and runtime flags.
    vision: VisionArgs,
}

struct Models {
    chat: VisionChat,
    translator: Option<Translator>,
}

impl Plan {
    fn new(args: &RunArgs) -> Result<Plan> {
        let vision = &args.vision;
        let task_set = vision.tasks()?;
        let tasks: Vec<Task> = task_set.parse_list(&args.tasks).context("--tasks")?.into_iter().cloned().collect();
        let langs = match vision.langs.trim() {
            "" => Vec::new(),
            list => lang::parse_list(list).context("--langs")?,
        };
        if let Some(temperature) = vision.temperature {
            if !(temperature.is_finite() && temperature >= 0.0) {
                bail!("--temperature {temperature}: expected a number of at least 0");
            }
        }
        if let Some(top_p) = vision.top_p {
            if !(top_p > 0.0 && top_p <= 1.0) {
                bail!("--top-p {top_p}: expected a number above 0 and at most 1");
            }
        }
        if vision.max_new_tokens == Some(0) {
            bail!("--max-new-tokens 0: expected at least 1");
        }
        if !args.folder.is_dir() {
            bail!("{}: not a folder", args.folder.display());
        }
        if let Some(html) = &args.html {
            // list_folder skips hidden files and folders: a gallery under one is never listed.
            let (html_path, folder) = (std::path::absolute(html)?, std::path::absolute(&args.folder)?);
            let listed = html_path
                .strip_prefix(&folder)
                .is_ok_and(|inner| !inner.components().any(|part| part.as_os_str().to_string_lossy().starts_with('.')));
            if listed {
                bail!(
                    "--html {} is inside the folder being described: its thumbnails would be described as images by                      the next run; write it elsewhere or into a hidden folder (.gallery)",
                    html.display()
                );
            }
        }
        let assets = list_folder(&args.folder).with_context(|| format!("cannot list {}", args.folder.display()))?;

        let revision = vision.runtime.revision.as_deref();
        let model_source = ModelSource::parse(&vision.model, revision);
        let model_name = model_source.to_string();
        let model_repo = ModelRepo::open(model_source).with_context(|| format!("model {}", vision.model))?;
        let family = ModelFamily::detect(&model_repo).with_context(|| format!("model {}", vision.model))?;
        let translator_repo = match langs.is_empty() {
            true => None,
            false => Some(
                // --revision names a commit or tag of the vision model's repo, not the translator's.
                ModelRepo::open(ModelSource::parse(&vision.translator, None))
                    .with_context(|| format!("translator {}", vision.translator))?,
            ),
        };
        let request = ResultRequest {
            tasks: tasks.iter().map(|task| task.name.clone()).collect(),
            langs: langs.clone(),
            translator: translator_repo.as_ref().map(|repo| repo.source().to_string()),
        };
        let device = parse_device(&vision.runtime.device)?;
        fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
        Ok(Plan {
            folder: args.folder.clone(),
            out: args.out.clone(),
            assets,
            tasks,
            langs,
            model_repo,
            model_name,
            family,
            translator_repo,
            request,
            device,
            vision: vision.clone(),
        })
    }

    fn record_path(&self, key: &str, kind: RecordKind) -> PathBuf {
        self.out.join(keys::record_file(key, kind))
    }

    fn read_record(&self, key: &str, kind: RecordKind) -> Option<AssetResult> {
        let path = self.record_path(key, kind);
        let bytes = fs::read(&path).ok()?;
        serde_json::from_slice::<AssetResult>(&bytes)
            .map_err(|error| tracing::debug!(path = %path.display(), %error, "unreadable record, processing again"))
            .ok()
    }

    /// The asset's existing record when it settles this run's model and request: its result, or else its error.
    fn existing_record(&self, key: &str) -> Option<Existing> {
        let result = self.read_record(key, RecordKind::Result);
        if let Some(record) = result.filter(|r| r.settles_run(&self.model_name, &self.request)) {
            // A record of the layout before error records had their own file may hold an error.
            return Some(match record.error.is_some() {
                false => Existing::Done(record),
                true => Existing::Failed(failed_asset(&record)),
            });
        }
        let error = self.read_record(key, RecordKind::Error)?;
        (error.error.is_some() && error.settles_run(&self.model_name, &self.request))
            .then(|| Existing::Failed(failed_asset(&error)))
    }

    /// The checkpoint's decoding with the command's flags applied.
    fn decode_settings(&self, checkpoint: DecodeSettings) -> DecodeSettings {
        self.vision.decode_settings(checkpoint)
    }

    fn load_models(&self) -> Result<Models> {
        let dtype: DType = self.vision.runtime.dtype.into();
        let mut chat = VisionChat::load(&self.model_repo, dtype, &self.device, self.vision.quant)
            .with_context(|| format!("cannot load vision model {}", self.model_name))?;
        chat.set_date_string(self.vision.date_string.clone());
        let translator = match &self.translator_repo {
            Some(repo) => Some(
                Translator::load(repo, dtype, &self.device)
                    .with_context(|| format!("cannot load translator {}", repo.source()))?,
            ),
            None => None,
        };
        Ok(Models { chat, translator })
    }

    fn error_record(&self, key: &str, stage: &str, message: String) -> AssetResult {
        AssetResult {
            schema_version: RESULT_SCHEMA_VERSION,
            asset: key.to_string(),
            kind: AssetKind::from_key(key).unwrap_or(AssetKind::Image),
            model: self.model_name.clone(),
            request: self.request.clone(),
            media: None,
            outputs: Vec::new(),
            timings: Timings::default(),
            error: Some(AssetError { stage: stage.to_string(), message }),
        }
    }

    /// Writes the record (result or error file), then removes the asset's record of the other kind; one that
    /// cannot be written comes back as a `write` error (it is not on disk).
    fn write_record(&self, mut record: AssetResult) -> AssetResult {
        let kind = record.record_kind();
        let path = self.record_path(&record.asset, kind);
        if let Err(error) = write_json_atomic(&path, &record, b"  ") {
            let message = format!("{}: cannot write {}: {error}", record.asset, path.display());
            tracing::warn!(asset = %record.asset, stage = "write", error = %message, "asset failed");
            record.error = Some(AssetError { stage: "write".to_string(), message });
            return record;
        }
        let other = self.record_path(&record.asset, kind.other());
        match fs::remove_file(&other) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %other.display(), %error, "stale record not removed")
            }
            _ => {}
        }
        record
    }

    fn summary(
        &self,
        args: &RunArgs,
        decode: Option<&DecodeSettings>,
        started: SystemTime,
        model_load_time_sec: f64,
        assets: AssetCounts,
        tally: Tally,
    ) -> Summary {
        let unix = |time: SystemTime| round3(time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        let per = |total: f64, count: f64| if count > 0.0 { total / count } else { 0.0 };
        Summary {
            model: self.model_name.clone(),
            translator: self.request.translator.clone(),
            tasks: self.request.tasks.clone(),
            langs: self.langs.clone(),
            temperature: match decode.map(|d| d.sampling) {
                Some(Some((temperature, _))) => serde_json::json!(temperature),
                Some(None) => serde_json::json!("greedy"),
                None => serde_json::Value::Null,
            },
            top_p: decode.and_then(|d| d.sampling).map(|(_, top_p)| top_p),
            seed: args.vision.seed,
            max_new_tokens: args.vision.max_new_tokens,
            batch_size: args.batch_size,
            started: unix(started),
            finished: unix(SystemTime::now()),
            model_load_time_sec: round3(model_load_time_sec),
            total_batch_time_sec: round3(tally.batch_s),
            average_time_per_asset_sec: round3(per(tally.batch_s, assets.processed as f64)),
            generated_tokens: tally.tokens,
            generation_time_sec: round3(tally.generation_s),
            tokens_per_sec: round3(per(tally.tokens as f64, tally.generation_s)),
            bytes_processed: tally.bytes,
            interrupted: assets.remaining > 0,
            failed_assets: tally.failed,
            previously_failed_assets: Vec::new(),
            assets,
        }
    }
}

/// An asset's record that settles the run's request.
enum Existing {
    Done(AssetResult),
    Failed(FailedAsset),
}

fn failed_asset(record: &AssetResult) -> FailedAsset {
    let error = record.error.as_ref();
    FailedAsset {
        asset: record.asset.clone(),
        stage: error.map_or_else(String::new, |e| e.stage.clone()),
        message: error.map_or_else(String::new, |e| e.message.clone()),
    }
}

/// This run's figures, added up batch by batch.
#[derive(Debug, Default)]
struct Tally {
    processed: usize,
    failed: Vec<FailedAsset>,
    tokens: u64,
    generation_s: f64,
    bytes: u64,
    batch_s: f64,
}

impl Tally {
    fn count(&mut self, record: &AssetResult) {
        self.processed += 1;
        for output in &record.outputs {
            self.tokens += u64::from(output.generated_tokens);
            self.generation_s += output.generation_s;
        }
        if let Some(error) = &record.error {
            self.failed.push(FailedAsset {
                asset: record.asset.clone(),
                stage: error.stage.clone(),
                message: error.message.clone(),
            });
        }
    }
}

/// The decoding defaults `VisionChat::default_settings` derives from generation_config.json, read without
/// loading the weights (a resumed run with nothing left to do still reports its temperature).
fn checkpoint_defaults(repo: &ModelRepo) -> Result<DecodeSettings> {
    let config: Option<GenerationConfig> = match repo.find("generation_config.json")? {
        Some(path) => Some(read_json(&path)?),
        None => None,
    };
    Ok(DecodeSettings {
        max_new_tokens: 0,
        sampling: config.as_ref().filter(|c| c.do_sample).map(|c| (c.temperature, c.top_p)),
        seed: 0,
        repetition_penalty: config.and_then(|c| c.repetition_penalty).unwrap_or(1.0),
        min_new_tokens: 0,
    })
}

fn progress_bar(len: u64, wanted: bool) -> ProgressBar {
    if !wanted || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} assets ({per_sec}, ETA {eta}) {msg}";
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Writes `value` as JSON (indented by `indent`, newline-terminated) to `path` through `<name>.tmp-<pid>` in the
/// same folder: written, fsynced, renamed over `path`, then the folder fsynced.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T, indent: &[u8]) -> io::Result<()> {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, formatter)).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display())));
    };
    fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = File::create(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written?;
    // The rename is durable once the folder is; some filesystems refuse to sync a folder, which is fine.
    if let Ok(folder) = File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Removes `*.tmp-<pid>` files under `out` whose process is gone (Linux; elsewhere they are left alone).
fn remove_stale_temporaries(out: &Path) {
    let mut folders = vec![out.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.rsplit_once(".tmp-").and_then(|(_, pid)| pid.parse::<u32>().ok()) else { continue };
            if pid != std::process::id() && !process_alive(pid) {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::debug!(path = %path.display(), "stale temporary removed"),
                    Err(error) => tracing::debug!(path = %path.display(), %error, "stale temporary kept"),
                }
            }
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `results_article.json`: see the module docs.
#[derive(Debug, Serialize)]
struct ArticleFile {
    descriptions: Vec<ArticleEntry>,
    stats: ArticleStats,
}

#[derive(Debug, Serialize)]
struct ArticleStats {
    model: String,
    temperature: Option<f64>,
    total_batch_time_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_images: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    average_time_per_image_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_videos: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    average_time_per_video_sec: Option<f64>,
}

/// One image's fields, serialized in the order they were added.
#[derive(Debug, Default)]
struct ArticleEntry(Vec<(String, serde_json::Value)>);

impl ArticleEntry {
    fn push(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.0.push((key.into(), value.into()));
    }
}

impl Serialize for ArticleEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

fn article_file<'a>(
    model: &str,
    decode: Option<&DecodeSettings>,
    records: impl Iterator<Item = &'a AssetResult>,
) -> ArticleFile {
    let mut descriptions = Vec::new();
    // (entries, seconds) of images and of videos
    let (mut images, mut videos) = ((0, 0.0), (0, 0.0));
    for record in records {
        let figures = if record.kind == AssetKind::Video { &mut videos } else { &mut images };
        figures.0 += 1;
        figures.1 += round3(record.timings.total_s);
        descriptions.push(article_entry(record));
    }
    let average = |(count, total): (usize, f64)| if count > 0 { round3(total / count as f64) } else { 0.0 };
    let with_images = images.0 > 0 || videos.0 == 0;
    ArticleFile {
        stats: ArticleStats {
            model: model.to_string(),
            temperature: decode.map(|d| d.sampling.map_or(0.0, |(temperature, _)| temperature)),
            total_batch_time_sec: round3(images.1 + videos.1),
            total_images: with_images.then_some(images.0),
            average_time_per_image_sec: with_images.then(|| average(images)),
            total_videos: (videos.0 > 0).then_some(videos.0),
            average_time_per_video_sec: (videos.0 > 0).then(|| average(videos)),
        },
        descriptions,
    }
}

fn article_entry(record: &AssetResult) -> ArticleEntry {
    let mut entry = ArticleEntry::default();
    match record.media.as_ref().and_then(|m| m.video.as_ref()) {
        Some(video) => {
            entry.push("video_file", record.asset.as_str());
            entry.push("video_size_mb", round3(video.size_mb));
            entry.push("video_duration_sec", video.duration_s.round() as u64);
            entry.push("video_fps", video.fps.round() as u64);
            entry.push("video_frames", video.frame_count);
            entry.push("video_width", video.stored_width);
            entry.push("video_height", video.stored_height);
        }
        None => entry.push("image_file", record.asset.as_str()),
    }
    for output in &record.outputs {
        let describe = output.task == "describe";
        let prefix = if describe { "description".to_string() } else { output.task.clone() };
        entry.push(format!("{prefix}_english"), output.text.as_str());
        for translation in &output.translations {
            let language = language_key(translation.lang);
            match describe {
                true => entry.push(format!("translation_{language}"), translation.text.as_str()),
                false => entry.push(format!("{prefix}_translation_{language}"), translation.text.as_str()),
            }
        }
        if let Some(tags) = &output.tags_processed {
            let key =
                if output.task == "tags" { "tags_processed".to_string() } else { format!("{prefix}_tags_processed") };
            entry.push(key, tags.clone());
        }
        match describe {
            true => entry.push("generated_tokens", output.generated_tokens),
            false => entry.push(format!("{prefix}_generated_tokens"), output.generated_tokens),
        }
        entry.push(format!("{prefix}_generation_time_sec"), round3(output.generation_s));
    }
    entry.push("total_processing_time_sec", round3(record.timings.total_s));
    entry
}

/// `French` -> `french`, `Chinese (Simplified)` -> `chinese_simplified`, `Norwegian Bokmål` -> `norwegian_bokmal`.
pub fn language_key(lang: Lang) -> String {
    let mut key = String::new();
    for c in lang.name().chars().flat_map(char::to_lowercase) {
        let c = match c {
            'à' | 'á' | 'â' | 'ä' | 'å' | 'ã' => 'a',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'ö' | 'õ' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            key.push(c);
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    key.trim_end_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vislingo_proto::result::{TaskOutput, Translation};

    fn lang(code: &str) -> Lang {
        Lang::parse(code).unwrap()
    }

    #[test]
    fn language_keys_are_lower_case_ascii_with_single_underscores() {
        assert_eq!(language_key(lang("fra_Latn")), "french");
        assert_eq!(language_key(lang("zho_Hans")), "chinese_simplified");
        assert_eq!(language_key(lang("nob_Latn")), "norwegian_bokmal");
        assert_eq!(language_key(lang("kbp_Latn")), "kabiye");
        assert_eq!(language_key(lang("acq_Arab")), "ta_izzi_adeni_arabic");
        assert_eq!(language_key(lang("arb_Arab")), "modern_standard_arabic");
    }

    #[test]
    fn every_language_gets_its_own_key() {
        let keys: std::collections::HashSet<String> = Lang::all().map(language_key).collect();
        assert_eq!(keys.len(), Lang::all().count());
        for key in &keys {
            assert!(!key.is_empty() && !key.contains("__") && !key.starts_with('_') && !key.ends_with('_'), "{key}");
            assert!(key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{key}");
        }
    }

    fn output(task: &str, text: &str, tags: Option<Vec<&str>>) -> TaskOutput {
        let tags: Option<Vec<String>> = tags.map(|t| t.into_iter().map(String::from).collect());
        let translation = |lang: Lang, text: &str| Translation { lang, text: text.to_string(), tags: None };
        TaskOutput {
            task: task.to_string(),
            text: text.to_string(),
            generated_tokens: 7,
            finished: true,
            tags_processed: tags.clone().map(|mut t| {
                t.sort();
                t
            }),
            tags,
            translations: vec![translation(lang("fra_Latn"), "fr"), translation(lang("zho_Hans"), "zh")],
            generation_s: 1.23456,
        }
    }

    fn record(outputs: Vec<TaskOutput>) -> AssetResult {
        AssetResult {
            schema_version: RESULT_SCHEMA_VERSION,
            asset: "trips/beach.jpg".into(),
            kind: AssetKind::Image,
            model: "m".into(),
            request: ResultRequest { tasks: vec![], langs: vec![], translator: None },
            media: None,
            outputs,
            timings: Timings { total_s: 2.00049, ..Timings::default() },
            error: None,
        }
    }

    #[test]
    fn article_entry_uses_the_article_names_for_describe_and_prefixes_other_tasks() {
        let record = record(vec![
            output("describe", "A beach.", None),
            output("tags", "sea, beach", Some(vec!["sea", "beach"])),
        ]);
        let entry = article_entry(&record);
        let keys: Vec<&str> = entry.0.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "image_file",
                "description_english",
                "translation_french",
                "translation_chinese_simplified",
                "generated_tokens",
                "description_generation_time_sec",
                "tags_english",
                "tags_translation_french",
                "tags_translation_chinese_simplified",
                "tags_processed",
                "tags_generated_tokens",
                "tags_generation_time_sec",
                "total_processing_time_sec",
            ]
        );
        let value = |key: &str| entry.0.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(value("image_file"), "trips/beach.jpg");
        assert_eq!(value("translation_chinese_simplified"), "zh");
        assert_eq!(value("tags_processed"), serde_json::json!(["beach", "sea"]));
        assert_eq!(value("description_generation_time_sec"), 1.235);
        assert_eq!(value("total_processing_time_sec"), 2.0);
    }

    #[test]
    fn article_stats_add_up_the_entries_and_report_greedy_as_temperature_zero() {
        let records = [record(vec![output("describe", "a", None)]), record(vec![output("describe", "b", None)])];
        let greedy =
            DecodeSettings { max_new_tokens: 1, sampling: None, seed: 0, repetition_penalty: 1.0, min_new_tokens: 0 };
        let file = article_file("m", Some(&greedy), records.iter());
        assert_eq!(file.stats.total_images, Some(2));
        assert_eq!(file.stats.total_batch_time_sec, 4.0);
        assert_eq!(file.stats.average_time_per_image_sec, Some(2.0));
        assert_eq!(file.stats.total_videos, None);
        assert_eq!(file.stats.temperature, Some(0.0));
        let json = serde_json::to_value(&file).unwrap();
        assert_eq!(json["descriptions"][1]["description_english"], "b");
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.jpg.json");
        write_json_atomic(&path, &serde_json::json!({"v": 1}), b"  ").unwrap();
        write_json_atomic(&path, &serde_json::json!({"v": 2}), b"  ").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\n  \"v\": 2\n}\n");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["b.jpg.json"]);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        // No Linux pid reaches 2^22 + 1 (pid_max's ceiling is 2^22).
        let dead = dir.path().join("sub/x.jpg.json.tmp-4194305");
        let live = dir.path().join(format!("y.jpg.json.tmp-{}", std::process::id()));
        let record = dir.path().join("z.jpg.json");
        for path in [&dead, &live, &record] {
            fs::write(path, "{}").unwrap();
        }
        remove_stale_temporaries(dir.path());
        assert_eq!(!dead.exists(), cfg!(target_os = "linux"));
        assert!(live.exists() && record.exists());
    }

    #[test]
    fn checkpoint_defaults_match_the_loaded_models_settings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mllama-tiny");
        let repo = ModelRepo::open(ModelSource::Local(dir)).unwrap();
        let chat = VisionChat::load(&repo, DType::F32, &Device::Cpu, crate::models::quant::Quant::None).unwrap();
        assert_eq!(checkpoint_defaults(&repo).unwrap(), chat.default_settings(0));
    }

    #[test]
    fn exit_codes_come_from_the_error() {
        assert_eq!(exit_code(&Exit::error(2, anyhow::anyhow!("bad folder"))), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
        let wrapped = Exit::error(130, anyhow::anyhow!("inner").context("outer"));
        assert_eq!(wrapped.to_string(), "outer");
        assert_eq!(wrapped.chain().map(|e| e.to_string()).collect::<Vec<_>>(), ["outer", "inner"]);
    }
}
