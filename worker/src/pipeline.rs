//! Assets -> decoded images or sampled video frames -> each task's English text from the vision model (all tasks
//! of all assets in flight decoded in one continuous batch, [`Scheduler`]) -> tags parsed -> translations -> one
//! `AssetResult` per asset. Shared by `worker run`, `worker describe` and the queue consumer. A failure of one
//! asset becomes its error record; the others go on.
//!
//! An asset is a video when its key has a video extension ([`AssetKind::from_key`]); anything else is decoded as
//! an image. A video given to a model that takes none (Llama 3.2 Vision) gets an `unsupported` error record that
//! says to use a LLaVA-NeXT-Video model; it is not decoded.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Instant;

use rayon::prelude::*;

use vislingo_proto::result::{
    AssetError, MediaInfo, ResultRequest, Timings, Translation, VideoMedia, RESULT_SCHEMA_VERSION,
};
use vislingo_proto::{AssetKind, AssetResult, Lang, TaskOutput};

use crate::media::video::{sample_bytes, SampleOptions, SampledVideo};
use crate::media::{decode_bytes, DecodeOptions, RgbImage};
use crate::models::nllb::{Segmentation, TranslateOptions, TranslationJob, Translator};
use crate::models::vision_chat::{
    Admit, Answer, ChatBatch, DecodeSettings, Media, MediaPrompt, ModelFamily, VisionChat,
};
use crate::tasks::{parse_tags, Task, TaskKind};

/// An asset's bytes, however they were fetched.
#[derive(Debug, Clone)]
pub struct AssetBytes {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// What to do with every asset of a batch.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub tasks: Vec<Task>,
    pub langs: Vec<Lang>,
    /// Source language of the model's texts.
    pub source_lang: Lang,
    pub decode: DecodeOptions,
    /// How video frames are sampled (count, rotation, limits).
    pub video: SampleOptions,
    /// Sampling, seed and repetition penalty; `max_new_tokens` comes from each task unless `max_new_tokens` is set.
    pub generation: DecodeSettings,
    pub max_new_tokens: Option<usize>,
    pub translation: TranslateOptions,
}

/// One asset's result plus the model-level detail `worker describe --format json` prints.
#[derive(Debug, Clone)]
pub struct Processed {
    pub result: AssetResult,
    /// Per task, in `settings.tasks` order, when generation reached it.
    pub answers: Vec<Option<Answer>>,
}

/// An asset ready for the model.
enum Decoded {
    Image(RgbImage),
    Video(SampledVideo),
}

impl Decoded {
    fn media(&self) -> Media<'_> {
        match self {
            Decoded::Image(image) => Media::Image(image),
            Decoded::Video(video) => Media::Video(&video.frames),
        }
    }

    fn kind(&self) -> AssetKind {
        match self {
            Decoded::Image(_) => AssetKind::Image,
            Decoded::Video(_) => AssetKind::Video,
        }
    }
}

/// The error message of a video given to a model of `family`, which takes none.
pub fn video_unsupported_message(asset: &str, model: &str, family: ModelFamily) -> String {
    format!(
        "{asset}: {model} is a {} model, which takes no videos; run videos with a LLaVA-NeXT-Video model \
         (--model llava-hf/LLaVA-NeXT-Video-7B-hf)",
        family.label()
    )
}

pub struct Pipeline<'a> {
    pub chat: &'a VisionChat,
    pub translator: Option<&'a Translator>,
    pub settings: PipelineSettings,
}

/// What one asset asks for: its tasks, the languages of its translations and how its video (if any) is sampled.
#[derive(Debug, Clone)]
pub struct AssetRequest {
    pub tasks: Vec<Task>,
    pub langs: Vec<Lang>,
    pub video: SampleOptions,
}

impl<'a> Pipeline<'a> {
    /// The request recorded in results, to tell whether an existing result can be reused.
    pub fn request(&self) -> ResultRequest {
        self.result_request(&self.default_request())
    }

    /// The settings' tasks, languages and video sampling, which [`Pipeline::process`] applies to every asset.
    pub fn default_request(&self) -> AssetRequest {
        AssetRequest {
            tasks: self.settings.tasks.clone(),
            langs: self.settings.langs.clone(),
            video: self.settings.video.clone(),
        }
    }

    /// The request recorded in an asset's result.
    pub fn result_request(&self, request: &AssetRequest) -> ResultRequest {
        ResultRequest {
            tasks: request.tasks.iter().map(|t| t.name.clone()).collect(),
            langs: request.langs.clone(),
            translator: self.translator.filter(|_| !request.langs.is_empty()).map(|t| t.name().to_string()),
        }
    }

    /// Runs every asset with the default request, all of them in one decode batch; one result per asset, in
    /// order. Each asset's `total_s` is the batch's time divided by its assets.
    pub fn process(&self, assets: &[AssetBytes]) -> Vec<Processed> {
        let started = Instant::now();
        let mut scheduler = Scheduler::new(self);
        scheduler.submit_all(
            assets.iter().enumerate().map(|(index, asset)| (index as u64, asset, self.default_request())).collect(),
        );
        let mut processed: Vec<Option<Processed>> = (0..assets.len()).map(|_| None).collect();
        while !scheduler.is_idle() {
            for (tag, p) in scheduler.step() {
                processed[tag as usize] = Some(p);
            }
        }
        let total = started.elapsed().as_secs_f64() / assets.len().max(1) as f64;
        processed
            .into_iter()
            .map(|p| {
                let mut p = p.expect("every submitted asset ends");
                p.result.timings.total_s = total;
                p
            })
            .collect()
    }

    fn empty_result(&self, key: &str, request: &AssetRequest) -> Processed {
        Processed {
            result: AssetResult {
                schema_version: RESULT_SCHEMA_VERSION,
                asset: key.to_string(),
                kind: AssetKind::Image,
                model: self.chat.name().to_string(),
                request: self.result_request(request),
                media: None,
                outputs: Vec::new(),
                timings: Timings::default(),
                error: None,
            },
            answers: vec![None; request.tasks.len()],
        }
    }

    /// Decodes an image or samples a video; a failure is recorded in `processed`.
    fn decode(&self, asset: &AssetBytes, request: &AssetRequest, processed: &mut Processed) -> Option<Decoded> {
        let started = Instant::now();
        let kind = AssetKind::from_key(&asset.key).unwrap_or(AssetKind::Image);
        processed.result.kind = kind;
        let decoded = match kind {
            AssetKind::Image => match decode_bytes(&asset.bytes, &asset.key, &self.settings.decode) {
                Ok(image) => {
                    processed.result.media = Some(MediaInfo {
                        bytes: asset.bytes.len() as u64,
                        width: image.width as u32,
                        height: image.height as u32,
                        ..MediaInfo::default()
                    });
                    Some(Decoded::Image(image))
                }
                Err(error) => {
                    fail(processed, "decode", error.to_string());
                    None
                }
            },
            AssetKind::Video if !self.chat.takes_videos() => {
                let message = video_unsupported_message(&asset.key, self.chat.name(), self.chat.family());
                fail(processed, "unsupported", message);
                None
            }
            AssetKind::Video => match sample_bytes(&asset.bytes, &asset.key, &request.video) {
                Ok(video) => {
                    processed.result.media = Some(video_media(&video, request.video.rotate));
                    Some(Decoded::Video(video))
                }
                Err(error) => {
                    fail(processed, "decode", error.to_string());
                    None
                }
            },
        };
        processed.result.timings.decode_s = started.elapsed().as_secs_f64();
        decoded
    }

    /// Translates every translatable output of the finished assets in one call: texts split into sentences,
    /// tags one by one, each asset into its own languages.
    fn translate(&self, finished: &mut [InFlight]) {
        let Some(translator) = self.translator else { return };
        let started = Instant::now();
        // (asset, output, tag index or None for the text), text to translate
        let mut items: Vec<((usize, usize, Option<usize>), String)> = Vec::new();
        for (a, asset) in finished.iter().enumerate() {
            if asset.request.langs.is_empty() || asset.processed.result.error.is_some() {
                continue;
            }
            for (o, output) in asset.processed.result.outputs.iter().enumerate() {
                let task = asset.request.tasks.iter().find(|t| t.name == output.task);
                if !task.is_some_and(|t| t.translate) || output.text.trim().is_empty() {
                    continue;
                }
                match &output.tags {
                    Some(tags) => items.extend(tags.iter().enumerate().map(|(t, tag)| ((a, o, Some(t)), tag.clone()))),
                    None => items.push(((a, o, None), output.text.clone())),
                }
            }
        }
        if items.is_empty() {
            return;
        }
        let jobs: Vec<TranslationJob> = items
            .iter()
            .map(|((a, _, _), text)| TranslationJob {
                text,
                source: self.settings.source_lang,
                targets: &finished[*a].request.langs,
            })
            .collect();
        // Tags are translated one by one and never split; texts follow the requested segmentation.
        let tag_options = TranslateOptions { segmentation: Segmentation::None, ..self.settings.translation.clone() };
        let (tag_jobs, text_jobs): (Vec<(usize, &TranslationJob)>, Vec<(usize, &TranslationJob)>) =
            jobs.iter().enumerate().partition(|(i, _)| items[*i].0 .2.is_some());
        let run = |jobs: &[(usize, &TranslationJob)], options: &TranslateOptions| {
            let owned: Vec<TranslationJob> = jobs.iter().map(|(_, job)| **job).collect();
            if owned.is_empty() {
                return Ok(Vec::new());
            }
            translator.translate_many(&owned, options)
        };
        let translated = run(&tag_jobs, &tag_options).and_then(|tags| {
            let texts = run(&text_jobs, &self.settings.translation)?;
            let mut all: Vec<Option<_>> = (0..jobs.len()).map(|_| None).collect();
            for ((i, _), t) in tag_jobs.iter().zip(tags).chain(text_jobs.iter().zip(texts)) {
                all[*i] = Some(t);
            }
            Ok(all.into_iter().map(|t| t.expect("every job translated")).collect::<Vec<_>>())
        });
        drop(jobs);
        let elapsed = started.elapsed().as_secs_f64();
        let involved: std::collections::BTreeSet<usize> = items.iter().map(|((a, _, _), _)| *a).collect();
        match translated {
            Ok(translated) => {
                for (((a, o, tag), _), result) in items.iter().zip(translated) {
                    let output = &mut finished[*a].processed.result.outputs[*o];
                    for (l, target) in result.translations.into_iter().enumerate() {
                        if output.translations.len() <= l {
                            let tags = output.tags.as_ref().map(|_| Vec::new());
                            output.translations.push(Translation { lang: target.lang, text: String::new(), tags });
                        }
                        let translation = &mut output.translations[l];
                        match tag {
                            Some(_) => {
                                translation.tags.get_or_insert_with(Vec::new).push(target.text.trim().to_string())
                            }
                            None => translation.text = target.text.trim().to_string(),
                        }
                    }
                }
                for asset in finished.iter_mut() {
                    for output in &mut asset.processed.result.outputs {
                        for translation in &mut output.translations {
                            if let Some(tags) = &translation.tags {
                                translation.text = tags.join(", ");
                            }
                        }
                    }
                }
            }
            Err(error) => {
                for &a in &involved {
                    fail(&mut finished[a].processed, "translate", error.to_string());
                }
            }
        }
        for &a in &involved {
            finished[a].processed.result.timings.translation_s = elapsed / involved.len() as f64;
        }
    }
}

/// Assets translated together once this many wait (NLLB batches their sentences: one call for many assets
/// costs little more than one for a single asset, and the decode batch waits meanwhile).
const TRANSLATION_GROUP: usize = 16;
/// Longest an asset waits for others to be translated with.
const TRANSLATION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An asset between its submission and its result.
struct InFlight {
    /// The caller's tag.
    tag: u64,
    processed: Processed,
    request: AssetRequest,
    /// Tasks still being answered.
    rows_left: usize,
    /// Decode time of each task's row (each step's time shared by the rows it ran).
    task_seconds: Vec<f64>,
    submitted: Instant,
}

/// Which asset and task a decode row answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowTag {
    asset: u64,
    task: usize,
}

/// Continuous batching over assets: each submitted asset is decoded (image or video frames), its tasks join
/// the running decode batch at the next step (the asset's media encoded once for all of them), and once all its
/// answers are in it is translated (with the other assets finishing at that step) and handed back. Assets
/// come and go at any step; the model is never idle while one long answer finishes.
pub struct Scheduler<'p, 'a> {
    pipeline: &'p Pipeline<'a>,
    batch: Result<ChatBatch<'a, RowTag>, String>,
    assets: BTreeMap<u64, InFlight>,
    /// Decoded assets waiting for the next step to join the batch.
    waiting: Vec<(u64, Decoded)>,
    /// Assets whose answers are all in (or that failed), to translate and hand back.
    finished: Vec<u64>,
    /// Assets done decoding that wait to be translated together, and since when.
    to_translate: Vec<(u64, Instant)>,
    /// The scheduler's own id of the next asset (callers' tags may repeat once handed back).
    next_id: u64,
}

impl<'p, 'a> Scheduler<'p, 'a> {
    pub fn new(pipeline: &'p Pipeline<'a>) -> Scheduler<'p, 'a> {
        let batch = pipeline.chat.batch(&pipeline.settings.generation).map_err(|e| e.to_string());
        Scheduler {
            pipeline,
            batch,
            assets: BTreeMap::new(),
            waiting: Vec::new(),
            finished: Vec::new(),
            to_translate: Vec::new(),
            next_id: 0,
        }
    }

    /// Assets submitted and not yet done decoding (those waiting for their translation are not counted: the
    /// next assets may take their place in the decode batch).
    pub fn in_flight(&self) -> usize {
        self.assets.len() - self.to_translate.len()
    }

    pub fn is_idle(&self) -> bool {
        self.assets.is_empty()
    }

    /// Decode rows (one per task of each asset being answered).
    pub fn rows(&self) -> usize {
        self.batch.as_ref().map_or(0, ChatBatch::len)
    }

    /// Takes an asset in: decodes it now; it joins the decode batch at the next [`Scheduler::step`], which hands
    /// it back with `tag`.
    pub fn submit(&mut self, tag: u64, asset: &AssetBytes, request: AssetRequest) {
        self.submit_all(vec![(tag, asset, request)]);
    }

    /// [`Scheduler::submit`] for several assets, decoded in parallel (image and video decoding is CPU work the
    /// GPU would otherwise wait on between steps).
    pub fn submit_all<A: Borrow<AssetBytes> + Send>(&mut self, assets: Vec<(u64, A, AssetRequest)>) {
        let pipeline = self.pipeline;
        let decoded: Vec<_> = assets
            .into_par_iter()
            .map(|(tag, asset, request)| {
                let asset = asset.borrow();
                let mut processed = pipeline.empty_result(&asset.key, &request);
                let decoded = pipeline.decode(asset, &request, &mut processed);
                (tag, request, processed, decoded)
            })
            .collect();
        for (caller_tag, request, processed, decoded) in decoded {
            let tag = self.next_id;
            self.next_id += 1;
            let rows_left = request.tasks.len();
            let task_seconds = vec![0.0; rows_left];
            let submitted = Instant::now();
            self.assets
                .insert(tag, InFlight { tag: caller_tag, processed, request, rows_left, task_seconds, submitted });
            match decoded {
                Some(decoded) if rows_left > 0 => self.waiting.push((tag, decoded)),
                _ => self.finished.push(tag),
            }
        }
    }

    /// Admits the waiting assets, runs one decode step, and hands back the assets that finished (translated).
    pub fn step(&mut self) -> Vec<(u64, Processed)> {
        let waiting = std::mem::take(&mut self.waiting);
        if !waiting.is_empty() {
            self.admit(waiting);
        }
        if self.rows() > 0 {
            self.decode_step();
        }
        self.hand_back()
    }

    /// Admits the assets together; if that fails, one by one, so that only the asset at fault fails.
    fn admit(&mut self, waiting: Vec<(u64, Decoded)>) {
        if let Err(error) = self.admit_group(&waiting) {
            if waiting.len() == 1 {
                let (tag, _) = &waiting[0];
                self.fail_asset(*tag, "generate", error);
                return;
            }
            for entry in waiting {
                if let Err(error) = self.admit_group(std::slice::from_ref(&entry)) {
                    self.fail_asset(entry.0, "generate", error);
                }
            }
        }
    }

    fn admit_group(&mut self, group: &[(u64, Decoded)]) -> Result<(), String> {
        let settings_max = self.pipeline.settings.max_new_tokens;
        let mut texts: Vec<(RowTag, String, usize)> = Vec::new();
        for (tag, decoded) in group {
            let asset = &self.assets[tag];
            for (task_index, task) in asset.request.tasks.iter().enumerate() {
                let max_new_tokens = settings_max.unwrap_or(task.max_new_tokens);
                let text = task.prompt_for(decoded.kind()).to_string();
                texts.push((RowTag { asset: *tag, task: task_index }, text, max_new_tokens));
            }
        }
        let media: BTreeMap<u64, Media> = group.iter().map(|(tag, decoded)| (*tag, decoded.media())).collect();
        let prompts: Vec<Admit<RowTag>> = texts
            .iter()
            .map(|(tag, text, max_new_tokens)| Admit {
                tag: *tag,
                prompt: MediaPrompt { media: media[&tag.asset], text },
                max_new_tokens: *max_new_tokens,
            })
            .collect();
        let batch = self.batch.as_mut().map_err(|e| e.clone())?;
        let keys = |tag: u64| self.assets.get(&tag).map(|a| a.processed.result.asset.clone()).unwrap_or_default();
        let (ended, timings) = batch.admit(prompts).map_err(|error| {
            let names: Vec<String> = group.iter().map(|(tag, _)| keys(*tag)).collect();
            format!("{}: {error}", names.join(", "))
        })?;
        let share = 1.0 / group.len() as f64;
        for (tag, _) in group {
            let timings_of = &mut self.assets.get_mut(tag).expect("in flight").processed.result.timings;
            timings_of.vision_s += timings.vision_s * share;
            timings_of.generation_s += (timings.preprocess_s + timings.generate_s) * share;
        }
        for (tag, answer) in ended {
            self.row_ended(tag, answer);
        }
        Ok(())
    }

    fn decode_step(&mut self) {
        let Ok(batch) = self.batch.as_mut() else { return };
        let live: Vec<RowTag> = batch.tags().into_iter().copied().collect();
        let started = Instant::now();
        let stepped = batch.step();
        let share = started.elapsed().as_secs_f64() / live.len().max(1) as f64;
        for tag in &live {
            if let Some(asset) = self.assets.get_mut(&tag.asset) {
                asset.task_seconds[tag.task] += share;
            }
        }
        match stepped {
            Ok(ended) => {
                for (tag, answer) in ended {
                    self.row_ended(tag, answer);
                }
            }
            Err(error) => {
                // The batch is lost: every asset in it fails, and a fresh batch takes the next ones.
                self.batch = self.pipeline.chat.batch(&self.pipeline.settings.generation).map_err(|e| e.to_string());
                let tags: std::collections::BTreeSet<u64> = live.iter().map(|t| t.asset).collect();
                for tag in tags {
                    let key = self.assets.get(&tag).map(|a| a.processed.result.asset.clone()).unwrap_or_default();
                    self.fail_asset(tag, "generate", format!("{key}: {error}"));
                }
            }
        }
    }

    fn row_ended(&mut self, tag: RowTag, answer: Answer) {
        let Some(asset) = self.assets.get_mut(&tag.asset) else { return };
        if asset.rows_left == 0 {
            return;
        }
        if let (Some(media), Some(tiles)) = (&mut asset.processed.result.media, answer.tiles) {
            media.tiles = Some(tiles as u32);
        }
        asset.processed.answers[tag.task] = Some(answer);
        asset.rows_left -= 1;
        if asset.rows_left == 0 {
            self.finished.push(tag.asset);
        }
    }

    /// Records the failure; the asset's rows still in the batch finish unseen.
    fn fail_asset(&mut self, tag: u64, stage: &str, message: String) {
        let Some(asset) = self.assets.get_mut(&tag) else { return };
        if asset.processed.result.error.is_none() {
            fail(&mut asset.processed, stage, message);
        }
        if asset.rows_left > 0 {
            asset.rows_left = 0;
            self.finished.push(tag);
        }
    }

    /// Assets that finished: outputs in task order; those to translate wait for others (one batched translation
    /// call per [`TRANSLATION_GROUP`] assets, or once nothing else decodes, or after [`TRANSLATION_WAIT`]), the
    /// rest are handed back at once.
    fn hand_back(&mut self) -> Vec<(u64, Processed)> {
        let mut ready = Vec::new();
        for tag in std::mem::take(&mut self.finished) {
            let Some(asset) = self.assets.get_mut(&tag) else { continue };
            let p = &mut asset.processed;
            if p.result.error.is_none() {
                for ((task, answer), seconds) in asset.request.tasks.iter().zip(&p.answers).zip(&asset.task_seconds) {
                    if let Some(answer) = answer {
                        p.result.outputs.push(task_output(task, answer, *seconds));
                    }
                }
                p.result.timings.generation_s += asset.task_seconds.iter().sum::<f64>();
            }
            let translates = self.pipeline.translator.is_some()
                && p.result.error.is_none()
                && !asset.request.langs.is_empty()
                && asset.request.tasks.iter().any(|t| t.translate);
            if translates {
                self.to_translate.push((tag, Instant::now()));
            } else {
                ready.push(tag);
            }
        }
        let oldest_waits = self.to_translate.first().is_some_and(|(_, since)| since.elapsed() >= TRANSLATION_WAIT);
        let nothing_else = self.rows() == 0 && self.waiting.is_empty();
        if !self.to_translate.is_empty()
            && (self.to_translate.len() >= TRANSLATION_GROUP || nothing_else || oldest_waits)
        {
            ready.extend(std::mem::take(&mut self.to_translate).into_iter().map(|(tag, _)| tag));
        }
        if ready.is_empty() {
            return Vec::new();
        }
        let mut finished: Vec<InFlight> = ready.iter().filter_map(|tag| self.assets.remove(tag)).collect();
        self.pipeline.translate(&mut finished);
        finished
            .into_iter()
            .map(|mut asset| {
                asset.processed.result.timings.total_s = asset.submitted.elapsed().as_secs_f64();
                (asset.tag, asset.processed)
            })
            .collect()
    }
}

/// A video's media record: the frames' size as the model saw them, the probe's metadata and the frame numbers.
fn video_media(video: &SampledVideo, rotated: bool) -> MediaInfo {
    let info = &video.info;
    let (width, height) = video.frames.first().map_or((info.width, info.height), |f| (f.width as u32, f.height as u32));
    let source = serde_json::to_value(info.frame_count_source).ok().and_then(|v| v.as_str().map(String::from));
    MediaInfo {
        bytes: info.size_bytes,
        width,
        height,
        tiles: None,
        video: Some(VideoMedia {
            size_mb: info.size_mb,
            duration_s: info.duration_s,
            fps: info.fps,
            frame_count: info.frame_count as u64,
            frame_count_source: source.unwrap_or_default(),
            codec: info.codec.clone(),
            container: info.container.clone(),
            rotation: info.rotation,
            rotation_applied: rotated && info.rotation != 0,
            stored_width: info.width,
            stored_height: info.height,
            frame_indices: video.frame_indices.iter().map(|&i| i as u64).collect(),
        }),
    }
}

fn task_output(task: &Task, answer: &Answer, generation_s: f64) -> TaskOutput {
    let text = answer.text.trim().to_string();
    let tags = (task.kind == TaskKind::Tags).then(|| parse_tags(&text));
    TaskOutput {
        task: task.name.clone(),
        generated_tokens: answer.token_ids.len() as u32,
        finished: answer.finished,
        tags: tags.as_ref().map(|t| t.tags.clone()),
        tags_processed: tags.map(|t| t.tags_processed),
        text,
        translations: Vec::new(),
        generation_s,
    }
}

fn fail(processed: &mut Processed, stage: &str, message: String) {
    tracing::warn!(asset = %processed.result.asset, stage, error = %message, "asset failed");
    processed.result.error = Some(AssetError { stage: stage.to_string(), message });
}
