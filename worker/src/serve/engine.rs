//! The model thread of `worker serve`: one std thread loads and owns the vision model and the translator and runs
//! the [`Pipeline`] on batches it receives over a channel, answering each on a oneshot; the tokio runtime never
//! blocks on inference. Jobs of a batch with different tasks or languages run as separate pipeline calls.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use vislingo_proto::result::{AssetError, ResultRequest, Timings, RESULT_SCHEMA_VERSION};
use vislingo_proto::{AssetKind, AssetResult, Lang};

use crate::cli::VisionArgs;
use crate::media::video::SampleOptions;
use crate::models::nllb::{TranslateOptions, Translator};
use crate::models::vision_chat::VisionChat;
use crate::pipeline::{AssetBytes, Pipeline, PipelineSettings};
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
    items: Vec<EngineItem>,
    reply: oneshot::Sender<Vec<AssetResult>>,
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
    pub async fn start(vision: VisionArgs, translator: bool) -> Result<Engine> {
        let tasks = vision.tasks()?;
        let (sender, receiver) = std::sync::mpsc::channel::<EngineRequest>();
        let (loaded_tx, loaded_rx) = oneshot::channel::<Result<(ModelNames, f64, candle_core::Device)>>();
        std::thread::Builder::new()
            .name("vislingo-model".into())
            .spawn(move || model_thread(vision, translator, receiver, loaded_tx))
            .context("cannot start the model thread")?;
        let (names, load_seconds, device) = loaded_rx.await.context("the model thread ended while loading")??;
        Ok(Engine { sender, names, tasks, load_seconds, device })
    }

    /// Runs the pipeline on `items`; one record per item, in order.
    pub async fn process(&self, items: Vec<EngineItem>) -> Result<Vec<AssetResult>> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(EngineRequest { items, reply }).map_err(|_| anyhow::anyhow!("the model thread is gone"))?;
        answer.await.context("the model thread ended during a batch")
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
    while let Ok(request) = receiver.recv() {
        for item in &request.items {
            super::fault::at(super::fault::FaultPoint::BeforePipeline, &item.asset.key);
        }
        let records = run_batch(&chat, translator.as_ref(), &base, request.items);
        let _ = request.reply.send(records);
    }
}

/// Groups the items by request, runs each group through the pipeline, and puts the records back in order.
fn run_batch(
    chat: &VisionChat,
    translator: Option<&Translator>,
    base: &PipelineSettings,
    items: Vec<EngineItem>,
) -> Vec<AssetResult> {
    let mut groups: BTreeMap<(Vec<String>, Vec<String>, Option<u32>), Vec<usize>> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        let key = (
            item.tasks.iter().map(|t| t.name.clone()).collect(),
            item.langs.iter().map(|l| l.code().to_string()).collect(),
            item.frames,
        );
        groups.entry(key).or_default().push(index);
    }
    let mut records: Vec<Option<AssetResult>> = (0..items.len()).map(|_| None).collect();
    for indices in groups.values() {
        let first = &items[indices[0]];
        let pipeline = Pipeline {
            chat,
            translator,
            settings: PipelineSettings {
                tasks: first.tasks.clone(),
                langs: first.langs.clone(),
                video: match first.frames {
                    Some(frames) => SampleOptions { frames: frames as usize, ..base.video.clone() },
                    None => base.video.clone(),
                },
                ..base.clone()
            },
        };
        let assets: Vec<AssetBytes> = indices.iter().map(|&i| items[i].asset.clone()).collect();
        match std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.process(&assets))) {
            Ok(processed) => {
                for (&index, p) in indices.iter().zip(processed) {
                    records[index] = Some(p.result);
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(error = %message, assets = assets.len(), "pipeline panicked");
                for &index in indices {
                    let mut record = pipeline_error_record(&pipeline, &items[index].asset.key);
                    record.error =
                        Some(AssetError { stage: "generate".into(), message: format!("internal error: {message}") });
                    records[index] = Some(record);
                }
            }
        }
    }
    records.into_iter().map(|r| r.expect("every item of the batch has a record")).collect()
}

fn pipeline_error_record(pipeline: &Pipeline, key: &str) -> AssetResult {
    AssetResult {
        schema_version: RESULT_SCHEMA_VERSION,
        asset: key.to_string(),
        kind: AssetKind::Image,
        model: pipeline.chat.name().to_string(),
        request: pipeline.request(),
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
