//! LLaVA-NeXT-Video as a chat model: loads a checkpoint folder or Hub repo (config, weights, tokenizer, chat
//! template, processor configs, generation config) and answers prompts about still images or videos (sampled
//! frames), many at a time, as `LlavaNextVideoProcessor` + `generate` would.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::processor::LlavaNextProcessor;
use super::text::LlamaSession;
use super::{LlavaNextVideo, LlavaNextVideoConfig};
use crate::media::RgbImage;
use crate::models::chat_template::{Content, Message};
use crate::models::hub::{read_json, ModelRepo, WeightFiles};
use crate::models::quant::Quant;
use crate::models::tokenizer::HfTokenizer;
pub use crate::models::vlm::{BatchTimings, ChatError, DecodeSettings, GenerationConfig};
use crate::models::vlm::{ChatAssets, FeatureCache, MediaFeatures, MediaKey, PreparedPrompts};

const FAMILY: &str = "LLaVA-NeXT-Video";

/// What a prompt is about.
#[derive(Debug, Clone, Copy)]
pub enum Media<'a> {
    /// A still image (anyres path, `<image>`).
    Image(&'a RgbImage),
    /// A video as its sampled frames, all the same size (`<video>`).
    ///
    /// Its placeholder count is its own `frames x pooled patches`. transformers 4.46.3 fails on two kinds of
    /// input vislingo answers (a batch of videos with different frame counts, and a one-frame clip on the 7B):
    /// see the module docs of `models::llava_next`.
    Video(&'a [RgbImage]),
}

/// One question about one image or video.
#[derive(Debug, Clone, Copy)]
pub struct MediaPrompt<'a> {
    pub media: Media<'a>,
    /// The user message (the chat template wraps it).
    pub text: &'a str,
}

/// The model's answer to one prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The full model input after the chat template and placeholder expansion.
    pub prompt_token_ids: Vec<u32>,
    /// Generated ids only (the end token included when one was produced).
    pub token_ids: Vec<u32>,
    pub text: String,
    /// Whether an end token stopped it (otherwise `max_new_tokens` did).
    pub finished: bool,
    /// Image or video feature tokens the model saw.
    pub media_tokens: usize,
}

/// A prompt's media after preprocessing.
enum Processed {
    Image(super::processor::ProcessedImage),
    Video(super::processor::ProcessedVideo),
}

pub struct LlavaNextChat {
    model: LlavaNextVideo,
    assets: ChatAssets,
    processor: LlavaNextProcessor,
    name: String,
}

impl LlavaNextChat {
    pub fn load(repo: &ModelRepo, dtype: DType, device: &Device, quant: Quant) -> Result<LlavaNextChat, ChatError> {
        let name = repo.source().to_string();
        let config: LlavaNextVideoConfig = read_json(&repo.require("config.json")?)?;
        config.validate().map_err(|reason| ChatError::Config { model: name.clone(), family: FAMILY, reason })?;
        let assets = ChatAssets::load(repo, ("<s>", "</s>"), config.text_config.eos_token_id.as_ref())?;
        let processor = LlavaNextProcessor::from_files(
            &repo.require("preprocessor_config.json")?,
            repo.find("video_preprocessor_config.json")?.as_deref(),
            repo.find("processor_config.json")?.as_deref(),
            config.vision_config.patch_size,
            &config.vision_feature_select_strategy,
        )?;
        let crop = processor.image.crop_hw();
        let size = config.vision_config.image_size;
        if crop != (size, size) || processor.video.crop_hw() != (size, size) {
            return Err(ChatError::Config {
                model: name,
                family: FAMILY,
                reason: format!("the processors crop to {crop:?}, the vision tower takes {size}x{size}"),
            });
        }
        let weights = WeightFiles::locate(repo)?;
        let model = LlavaNextVideo::new_quantized(&config, weights.var_builder(dtype, device)?, quant)
            .map_err(|source| ChatError::Weights { model: name.clone(), source })?;
        tracing::info!(model = %name, ?dtype, %quant, "video model loaded");
        Ok(LlavaNextChat { model, assets, processor, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn model(&self) -> &LlavaNextVideo {
        &self.model
    }

    /// The text side of the checkpoint: tokenizer, template, end tokens, decoding defaults.
    pub fn assets(&self) -> &ChatAssets {
        &self.assets
    }

    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.assets.tokenizer
    }

    pub fn processor(&self) -> &LlavaNextProcessor {
        &self.processor
    }

    /// The checkpoint's own decoding defaults (`generation_config.json`).
    pub fn default_settings(&self, max_new_tokens: usize) -> DecodeSettings {
        self.assets.generation.settings(max_new_tokens)
    }

    /// The rendered chat prompt for a user message about an image or a video (before placeholder expansion).
    pub fn prompt_text(&self, text: &str, video: bool) -> Result<String, ChatError> {
        let media = if video { Content::Video } else { Content::Image };
        let content = vec![media, Content::Text { text: text.to_string() }];
        Ok(self.assets.template.render(&[Message::user(content)], true, None)?)
    }

    /// Model input ids: the chat template with the generation prompt, each `<image>` / `<video>` repeated
    /// `media_tokens` times (the processor's expansion), tokenized with the tokenizer's special tokens (BOS).
    pub fn prompt_ids(&self, text: &str, video: bool, media_tokens: usize) -> Result<Vec<u32>, ChatError> {
        let prompt = self.prompt_text(text, video)?;
        let config = &self.processor.config;
        let token = if video { &config.video_token } else { &config.image_token };
        let prompt = prompt.replace(token.as_str(), &token.repeat(media_tokens));
        Ok(self.assets.tokenizer.encode(&prompt, true)?)
    }

    /// Answers every prompt: each image or video through the vision tower, all sequences decoded together.
    pub fn answer(
        &self,
        prompts: &[MediaPrompt],
        settings: &DecodeSettings,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        self.answer_cached(prompts, settings, &FeatureCache::new())
    }

    /// [`LlavaNextChat::answer`] with the vision features of media already in `cache` reused (each image or
    /// video goes through the vision tower once, however many prompts ask about it) and new ones added to it.
    pub fn answer_cached<'m>(
        &self,
        prompts: &[MediaPrompt<'m>],
        settings: &DecodeSettings,
        cache: &FeatureCache<'m>,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        if prompts.is_empty() {
            return Ok((Vec::new(), BatchTimings::default()));
        }
        let PreparedPrompts { ids, mut session, counts, mut timings } =
            self.prepare(prompts, settings.max_new_tokens, cache)?;
        let started = Instant::now();
        let decoded = self.assets.generate(&mut session, &ids, settings)?;
        timings.generate_s = started.elapsed().as_secs_f64();
        let answers = decoded
            .into_iter()
            .zip(ids)
            .zip(counts)
            .map(|((out, prompt_token_ids), media_tokens)| Answer {
                prompt_token_ids,
                token_ids: out.token_ids,
                text: out.text,
                finished: out.finished,
                media_tokens,
            })
            .collect();
        Ok((answers, timings))
    }

    /// The prompts' ids and a decoding session holding their embeddings, each medium's features taken from
    /// `cache` or computed and added to it. Refuses prompts that would pass the model's positions with
    /// `max_new_tokens` generated.
    pub fn prepare<'m>(
        &self,
        prompts: &[MediaPrompt<'m>],
        max_new_tokens: usize,
        cache: &FeatureCache<'m>,
    ) -> Result<PreparedPrompts<LlamaSession<'_>>, ChatError> {
        let mut timings = BatchTimings::default();
        let started = Instant::now();
        let device = self.model.device().clone();
        let medium = |prompt: &MediaPrompt<'m>| match prompt.media {
            Media::Image(image) => (MediaKey::image(image), false),
            Media::Video(frames) => (MediaKey::video(frames), true),
        };
        // The media not yet in the cache, each once, preprocessed in parallel (CPU work the GPU would wait on).
        let mut missing: Vec<(MediaKey, &MediaPrompt<'m>)> = Vec::new();
        for prompt in prompts {
            let (key, _) = medium(prompt);
            if cache.get(key).is_none() && !missing.iter().any(|(k, _)| *k == key) {
                missing.push((key, prompt));
            }
        }
        let processed: Vec<(MediaKey, Processed)> = missing
            .par_iter()
            .map(|&(key, prompt)| {
                Ok((
                    key,
                    match prompt.media {
                        Media::Image(image) => Processed::Image(self.processor.image.preprocess_image(image)?),
                        Media::Video(frames) => Processed::Video(self.processor.video.preprocess_video(frames)?),
                    },
                ))
            })
            .collect::<Result<_, ChatError>>()?;
        let mut ids = Vec::with_capacity(prompts.len());
        let mut keys = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let (key, video) = medium(prompt);
            let tokens = match cache.get(key) {
                Some(cached) => cached.count,
                None => {
                    let (_, p) = processed.iter().find(|(k, _)| *k == key).expect("every missing medium processed");
                    self.media_tokens(p)
                }
            };
            ids.push(self.prompt_ids(prompt.text, video, tokens)?);
            keys.push(key);
        }
        let limit = self.model.config().text_config.max_position_embeddings;
        self.assets.check_lengths(&ids, max_new_tokens, limit)?;
        timings.preprocess_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        for (key, media) in &processed {
            let features = match media {
                Processed::Image(p) => {
                    let (h, w) = p.crop_hw;
                    let pixels = Tensor::from_slice(&p.pixel_values, (p.num_crops, 3, h, w), &device)?;
                    self.model.image_features(&pixels, p.image_size)?
                }
                Processed::Video(p) => {
                    let (h, w) = p.crop_hw;
                    let pixels = Tensor::from_slice(&p.pixel_values, (p.frames, 3, h, w), &device)?;
                    self.model.video_features(&pixels)?
                }
            };
            cache.insert(*key, MediaFeatures { features, count: self.media_tokens(media) });
        }
        let mut embeddings = Vec::with_capacity(prompts.len());
        let mut counts = Vec::with_capacity(prompts.len());
        for (key, ids) in keys.iter().zip(&ids) {
            let media = cache.get(*key).expect("every medium encoded above");
            embeddings.push(if key.is_video() {
                self.model.merge_features(ids, None, Some(&media.features))?
            } else {
                self.model.merge_features(ids, Some(&media.features), None)?
            });
            counts.push(media.count);
        }
        timings.vision_s = started.elapsed().as_secs_f64();
        Ok(PreparedPrompts { ids, session: self.model.start(embeddings), counts, timings })
    }

    /// Placeholder tokens the processor expands a medium's `<image>` or `<video>` into.
    fn media_tokens(&self, media: &Processed) -> usize {
        match media {
            Processed::Image(p) => self.processor.image_tokens(p.image_size),
            Processed::Video(p) => self.processor.video_tokens(p.frames),
        }
    }
}

impl std::fmt::Debug for LlavaNextChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlavaNextChat").field("name", &self.name).finish_non_exhaustive()
    }
}
