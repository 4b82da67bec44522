//! The model thread of `worker serve`: one std thread loads and owns the vision model and the translator and runs
//! the pipeline's continuous batch ([`Scheduler`]) over the assets it receives on a channel: each asset joins the
//! decode batch at the next step, whatever its tasks and languages, and its record goes back on its own oneshot
//! as soon as its answers are in and translated; the tokio runtime never blocks on inference.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use vislingo_proto::result::{AssetError, ResultRequest, Timings, RESULT_SCHEMA_VERSION};
use vislingo_proto::{AssetKind, AssetResult, Lang};

use crate::cli::VisionArgs;
use crate::media::video::SampleOptions;
use crate::models::nllb::TranslateOptions;
use crate::pipeline::{AssetBytes, AssetRequest, Pipeline, PipelineSettings, Scheduler};
use crate::tasks::{Task, TaskSet};

/// One asset with what its job asks for.
pub struct EngineItem {
    pub tasks: Vec<Task>,
    pub langs: Vec<Lang>,
    /// Video frames to sample, when the job sets it (otherwise the worker's `--frames`).
    pub frames: Option<u32>,
    pub asset: AssetBytes,
}

struct EngineRequest {
    item: EngineItem,
    reply: oneshot::Sender<AssetResult>,
}

/// What the loaded models are called in result records.
#[derive(Debug, Clone)]
pub struct ModelNames {
    pub model: String,
    pub translator: Option<String>,
    /// Whether the vision model takes videos (LLaVA-NeXT-Video) or images only (Llama 3.2 Vision).
    pub takes_videos: bool,
}

/// Handle to the model thread.
pub struct Engine {
    sender: std::sync::mpsc::Sender<EngineRequest>,
    pub names: ModelNames,
    pub tasks: TaskSet,
    pub load_seconds: f64,
    /// The models' device, for its memory metrics.
    pub device: candle_core::Device,
}

impl Engine {
    /// Starts the thread and waits until it has loaded the models (or failed to).
    /// `decode_rows` is set to the decode batch's size after every step.
    pub async fn start(vision: VisionArgs, translator: bool, decode_rows: prometheus::IntGauge) -> Result<Engine> {
        let tasks = vision.tasks()?;
        let (sender, receiver) = std::sync::mpsc::channel::<EngineRequest>();
        let (loaded_tx, loaded_rx) = oneshot::channel::<Result<(ModelNames, f64, candle_core::Device)>>();
        std::thread::Builder::new()
            .name("vislingo-model".into())
            .spawn(move || model_thread(vision, translator, receiver, loaded_tx, decode_rows))
            .context("cannot start the model thread")?;
        let (names, load_seconds, device) = loaded_rx.await.context("the model thread ended while loading")??;
        Ok(Engine { sender, names, tasks, load_seconds, device })
    }

    /// Hands `items` to the model thread's decode batch, beside whatever else is in flight; one record per item,
    /// in order, once the last of them is done.
    pub async fn process(&self, items: Vec<EngineItem>) -> Result<Vec<AssetResult>> {
        let mut answers = Vec::with_capacity(items.len());
        for item in items {
            let (reply, answer) = oneshot::channel();
            self.sender.send(EngineRequest { item, reply }).map_err(|_| anyhow::anyhow!("the model thread is gone"))?;
            answers.push(answer);
        }
        let mut records = Vec::with_capacity(answers.len());
        for answer in answers {
            records.push(answer.await.context("the model thread ended while it held the job")?);
        }
        Ok(records)
    }

    /// The record of a job that failed before the pipeline (download, invalid request).
    pub fn error_record(
        &self,
        asset: &str,
        kind: AssetKind,
        tasks: &[String],
        langs: &[Lang],
        stage: &str,
        message: String,
    ) -> AssetResult {
        AssetResult {
            schema_version: RESULT_SCHEMA_VERSION,
            asset: asset.to_string(),
            kind,
            model: self.names.model.clone(),
            request: ResultRequest {
                tasks: tasks.to_vec(),
                langs: langs.to_vec(),
                translator: self.names.translator.clone().filter(|_| !langs.is_empty()),
            },
            media: None,
            outputs: Vec::new(),
            timings: Timings::default(),
            error: Some(AssetError { stage: stage.to_string(), message }),
        }
    }
}

fn model_thread(
    vision: VisionArgs,
    with_translator: bool,
    receiver: std::sync::mpsc::Receiver<EngineRequest>,
    loaded: oneshot::Sender<Result<(ModelNames, f64, candle_core::Device)>>,
    decode_rows: prometheus::IntGauge,
) {
    let started = Instant::now();
    let models = vision.load_models(with_translator);
    let (chat, translator) = match models {
        Ok(models) => models,
        Err(error) => {
            let _ = loaded.send(Err(error));
            return;
        }
    };
    let names = ModelNames {
        model: chat.name().to_string(),
        translator: translator.as_ref().map(|t| t.name().to_string()),
        takes_videos: chat.takes_videos(),
    };
    let base = PipelineSettings {
        tasks: Vec::new(),
        langs: Vec::new(),
        source_lang: Lang::parse("eng_Latn").expect("English is a FLORES-200 language"),
        decode: vision.decode_options(),
        video: vision.video_options(),
        generation: vision.decode_settings(chat.default_settings(512)),
        max_new_tokens: vision.max_new_tokens,
        translation: TranslateOptions::default(),
    };
    if loaded.send(Ok((names, started.elapsed().as_secs_f64(), chat.device().clone()))).is_err() {
        return;
    }
    let pipeline = Pipeline { chat: &chat, translator: translator.as_ref(), settings: base };
    let mut scheduler = Scheduler::new(&pipeline);
    // Per tag: where the record goes, and what to write if the batch panics.
    let mut waiting: HashMap<u64, (oneshot::Sender<AssetResult>, String, AssetRequest)> = HashMap::new();
    let mut next_tag = 0u64;
    loop {
        // Take what has arrived; block only when there is nothing to decode.
        let mut arrived = Vec::new();
        if scheduler.is_idle() {
            match receiver.recv() {
                Ok(request) => arrived.push(request),
                Err(_) => break,
            }
        }
        while let Ok(request) = receiver.try_recv() {
            arrived.push(request);
        }
        let mut submitted = Vec::with_capacity(arrived.len());
        for EngineRequest { item, reply } in arrived {
            super::fault::at(super::fault::FaultPoint::BeforePipeline, &item.asset.key);
            let video = match item.frames {
                Some(frames) => SampleOptions { frames: frames as usize, ..pipeline.settings.video.clone() },
                None => pipeline.settings.video.clone(),
            };
            let request = AssetRequest { tasks: item.tasks, langs: item.langs, video };
            waiting.insert(next_tag, (reply, item.asset.key.clone(), request.clone()));
            submitted.push((next_tag, item.asset, request));
            next_tag += 1;
        }
        // Decoded together, in parallel.
        scheduler.submit_all(submitted);
        let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| scheduler.step()));
        decode_rows.set(scheduler.rows() as i64);
        match stepped {
            Ok(done) => {
                for (tag, processed) in done {
                    if let Some((reply, _, _)) = waiting.remove(&tag) {
                        let _ = reply.send(processed.result);
                    }
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(error = %message, assets = waiting.len(), "decode batch panicked");
                // Every asset in flight was in the batch: each gets an error record; a fresh batch goes on.
                for (_, (reply, key, request)) in waiting.drain() {
                    let mut record = panic_record(&pipeline, &key, &request);
                    record.error =
                        Some(AssetError { stage: "generate".into(), message: format!("internal error: {message}") });
                    let _ = reply.send(record);
                }
                scheduler = Scheduler::new(&pipeline);
            }
        }
    }
}

fn panic_record(pipeline: &Pipeline, key: &str, request: &AssetRequest) -> AssetResult {
    AssetResult {
        schema_version: RESULT_SCHEMA_VERSION,
        asset: key.to_string(),
        kind: AssetKind::from_key(key).unwrap_or(AssetKind::Image),
        model: pipeline.chat.name().to_string(),
        request: pipeline.result_request(request),
        media: None,
        outputs: Vec::new(),
        timings: Timings::default(),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatchers_task_names_are_the_workers_builtin_tasks() {
        let tasks = TaskSet::builtin();
        let builtin: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(builtin, vislingo_proto::BUILTIN_TASKS);
    }
}
