//! One batch of assets -> decoded images or sampled video frames -> each task's English text from the vision model
//! -> tags parsed -> translations -> one `AssetResult` per asset. Shared by `worker run`, `worker describe` and the
//! queue consumer. A failure of one asset becomes its error record; the rest of the batch goes on.
//!
//! An asset is a video when its key has a video extension ([`AssetKind::from_key`]); anything else is decoded as
//! an image. A video given to a model that takes none (Llama 3.2 Vision) gets an `unsupported` error record that
//! says to use a LLaVA-NeXT-Video model; it is not decoded.

use std::time::Instant;

use vislingo_proto::result::{
    AssetError, MediaInfo, ResultRequest, Timings, Translation, VideoMedia, RESULT_SCHEMA_VERSION,
};
use vislingo_proto::{AssetKind, AssetResult, Lang, TaskOutput};

use crate::media::video::{sample_bytes, SampleOptions, SampledVideo};
use crate::media::{decode_bytes, DecodeOptions, RgbImage};
use crate::models::nllb::{Segmentation, TranslateOptions, TranslationJob, Translator};
use crate::models::vision_chat::{Answer, DecodeSettings, Media, MediaPrompt, ModelFamily, VisionChat};
use crate::models::vlm::FeatureCache;
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

impl Pipeline<'_> {
    /// The request recorded in results, to tell whether an existing result can be reused.
    pub fn request(&self) -> ResultRequest {
        ResultRequest {
            tasks: self.settings.tasks.iter().map(|t| t.name.clone()).collect(),
            langs: self.settings.langs.clone(),
            translator: self.translator.filter(|_| !self.settings.langs.is_empty()).map(|t| t.name().to_string()),
        }
    }

    pub fn process(&self, assets: &[AssetBytes]) -> Vec<Processed> {
        let batch_started = Instant::now();
        let mut processed: Vec<Processed> = assets.iter().map(|a| self.empty_result(&a.key)).collect();

        // Decode every image and sample every video; failures become error records.
        let mut decoded: Vec<(usize, Decoded)> = Vec::new();
        for (index, asset) in assets.iter().enumerate() {
            let started = Instant::now();
            let kind = AssetKind::from_key(&asset.key).unwrap_or(AssetKind::Image);
            processed[index].result.kind = kind;
            match kind {
                AssetKind::Image => match decode_bytes(&asset.bytes, &asset.key, &self.settings.decode) {
                    Ok(image) => {
                        processed[index].result.media = Some(MediaInfo {
                            bytes: asset.bytes.len() as u64,
                            width: image.width as u32,
                            height: image.height as u32,
                            ..MediaInfo::default()
                        });
                        decoded.push((index, Decoded::Image(image)));
                    }
                    Err(error) => fail(&mut processed[index], "decode", error.to_string()),
                },
                AssetKind::Video if !self.chat.takes_videos() => {
                    let message = video_unsupported_message(&asset.key, self.chat.name(), self.chat.family());
                    fail(&mut processed[index], "unsupported", message);
                }
                AssetKind::Video => match sample_bytes(&asset.bytes, &asset.key, &self.settings.video) {
                    Ok(video) => {
                        processed[index].result.media = Some(video_media(&video, self.settings.video.rotate));
                        decoded.push((index, Decoded::Video(video)));
                    }
                    Err(error) => fail(&mut processed[index], "decode", error.to_string()),
                },
            }
            processed[index].result.timings.decode_s = started.elapsed().as_secs_f64();
        }

        // Each task runs over all decoded assets in one batch; the vision features of each asset are computed by
        // the first task and reused by the others.
        let features = FeatureCache::new();
        for (task_index, task) in self.settings.tasks.iter().enumerate() {
            let live: Vec<&(usize, Decoded)> =
                decoded.iter().filter(|(i, _)| processed[*i].result.error.is_none()).collect();
            if live.is_empty() {
                break;
            }
            let prompts: Vec<MediaPrompt> = live
                .iter()
                .map(|(_, media)| MediaPrompt { media: media.media(), text: task.prompt_for(media.kind()) })
                .collect();
            let settings = DecodeSettings {
                max_new_tokens: self.settings.max_new_tokens.unwrap_or(task.max_new_tokens),
                ..self.settings.generation.clone()
            };
            match self.chat.answer_cached(&prompts, &settings, &features) {
                Ok((answers, timings)) => {
                    let share = 1.0 / live.len() as f64;
                    for ((index, _), answer) in live.iter().zip(answers) {
                        let p = &mut processed[*index];
                        p.result.timings.vision_s += timings.vision_s * share;
                        p.result.timings.generation_s += (timings.generate_s + timings.preprocess_s) * share;
                        if let (Some(media), Some(tiles)) = (&mut p.result.media, answer.tiles) {
                            media.tiles = Some(tiles as u32);
                        }
                        p.result.outputs.push(task_output(task, &answer, timings.generate_s * share));
                        p.answers[task_index] = Some(answer);
                    }
                }
                Err(error) => {
                    for (index, _) in &live {
                        fail(&mut processed[*index], "generate", format!("{}: {error}", assets[*index].key));
                    }
                }
            }
        }

        self.translate(&mut processed);
        let total = batch_started.elapsed().as_secs_f64() / assets.len().max(1) as f64;
        for p in &mut processed {
            p.result.timings.total_s = total;
        }
        processed
    }

    /// Translates every translatable output of the batch in one call: texts split into sentences, tags one by one.
    fn translate(&self, processed: &mut [Processed]) {
        let Some(translator) = self.translator else { return };
        if self.settings.langs.is_empty() {
            return;
        }
        let started = Instant::now();
        // (asset, output, tag index or None for the text), text to translate
        let mut items: Vec<((usize, usize, Option<usize>), String)> = Vec::new();
        for (a, p) in processed.iter().enumerate() {
            for (o, output) in p.result.outputs.iter().enumerate() {
                let task = self.settings.tasks.iter().find(|t| t.name == output.task);
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
        let langs = &self.settings.langs;
        let jobs: Vec<TranslationJob> = items
            .iter()
            .map(|(_, text)| TranslationJob { text, source: self.settings.source_lang, targets: langs })
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
        let elapsed = started.elapsed().as_secs_f64();
        let involved: std::collections::BTreeSet<usize> = items.iter().map(|((a, _, _), _)| *a).collect();
        match translated {
            Ok(translated) => {
                for (((a, o, tag), _), result) in items.iter().zip(translated) {
                    let output = &mut processed[*a].result.outputs[*o];
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
                for p in processed.iter_mut() {
                    for output in &mut p.result.outputs {
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
                    fail(&mut processed[a], "translate", error.to_string());
                }
            }
        }
        for &a in &involved {
            processed[a].result.timings.translation_s = elapsed / involved.len() as f64;
        }
    }

    fn empty_result(&self, key: &str) -> Processed {
        Processed {
            result: AssetResult {
                schema_version: RESULT_SCHEMA_VERSION,
                asset: key.to_string(),
                kind: AssetKind::Image,
                model: self.chat.name().to_string(),
                request: self.request(),
                media: None,
                outputs: Vec::new(),
                timings: Timings::default(),
                error: None,
            },
            answers: vec![None; self.settings.tasks.len()],
        }
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
