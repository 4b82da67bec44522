//! Llama 3.2 Vision as a chat model: loads a checkpoint folder or Hub repo (config, weights, tokenizer, chat
//! template, image processor, generation config) and answers prompts about images, many at a time, as
//! `MllamaProcessor` + `generate` would.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::processor::MllamaImageProcessor;
use super::text::TextSession;
use super::{cross_attention_token_masks, ImageContext, Mllama, MllamaConfig};
use crate::media::RgbImage;
use crate::models::chat_template::{Content, Message};
use crate::models::hub::{read_json, HubError, ModelRepo, WeightFiles};
use crate::models::prequant::QuantizationConfig;
use crate::models::quant::Quant;
use crate::models::tokenizer::HfTokenizer;
pub use crate::models::vlm::{BatchTimings, ChatError, DecodeSettings, GenerationConfig};
use crate::models::vlm::{ChatAssets, FeatureCache, MediaFeatures, MediaKey, PreparedPrompts};

const FAMILY: &str = "Llama 3.2 Vision (mllama)";

/// One question about one image.
#[derive(Debug, Clone, Copy)]
pub struct ImagePrompt<'a> {
    pub image: &'a RgbImage,
    /// The user message (the chat template wraps it).
    pub text: &'a str,
}

/// The model's answer to one prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The full model input after the chat template and image-token handling.
    pub prompt_token_ids: Vec<u32>,
    /// Generated ids only (an end token included when one was produced).
    pub token_ids: Vec<u32>,
    pub text: String,
    /// Whether an end token stopped it (otherwise `max_new_tokens` did).
    pub finished: bool,
    /// Image tiles the model saw.
    pub num_tiles: usize,
}

pub struct MllamaChat {
    model: Mllama,
    assets: ChatAssets,
    processor: MllamaImageProcessor,
    image_token: String,
    /// Pins the date some chat templates print; `None` lets the template use today's date.
    pub date_string: Option<String>,
    name: String,
}

impl MllamaChat {
    pub fn load(repo: &ModelRepo, dtype: DType, device: &Device, quant: Quant) -> Result<MllamaChat, ChatError> {
        let name = repo.source().to_string();
        let config_path = repo.require("config.json")?;
        let config: MllamaConfig = read_json(&config_path)?;
        config.validate().map_err(|reason| ChatError::Config { model: name.clone(), family: FAMILY, reason })?;
        let assets =
            ChatAssets::load(repo, ("<|begin_of_text|>", "<|eot_id|>"), config.text_config.eos_token_id.as_ref())?;
        let processor = MllamaImageProcessor::from_file(repo.require("preprocessor_config.json")?)?;
        let weights = WeightFiles::locate(repo)?;
        // A pre-quantized checkpoint (bitsandbytes 4-bit, compressed-tensors float8) loads as it is: its weights
        // are dequantized to `dtype`, then `quant` applies as to a dense checkpoint.
        let prequantized = QuantizationConfig::from_model_config(&config_path).map_err(HubError::from)?;
        let vb = weights.var_builder_with(prequantized.as_ref(), dtype, device)?;
        let model = Mllama::new_quantized(&config, vb, quant)
            .map_err(|source| ChatError::Weights { model: name.clone(), source })?;
        let stored = prequantized.as_ref().map_or_else(|| "dense".to_string(), QuantizationConfig::summary);
        tracing::info!(model = %name, ?dtype, %quant, %stored, "vision model loaded");
        Ok(MllamaChat { model, assets, processor, image_token: "<|image|>".into(), date_string: None, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn model(&self) -> &Mllama {
        &self.model
    }

    /// The text side of the checkpoint: tokenizer, template, end tokens, decoding defaults.
    pub fn assets(&self) -> &ChatAssets {
        &self.assets
    }

    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.assets.tokenizer
    }

    pub fn processor(&self) -> &MllamaImageProcessor {
        &self.processor
    }

    /// The checkpoint's own decoding defaults (Llama 3.2 Vision Instruct samples at temperature 0.6, top-p 0.9).
    pub fn default_settings(&self, max_new_tokens: usize) -> DecodeSettings {
        self.assets.generation.settings(max_new_tokens)
    }

    /// Model input ids for a user message, with an image before the text when `with_image`: the chat template
    /// with the generation prompt, tokenized without extra special tokens, as `MllamaProcessor` does
    /// (`build_string_from_input` adds BOS only when the rendered prompt lacks it).
    pub fn prompt_ids(&self, text: &str, with_image: bool) -> Result<Vec<u32>, ChatError> {
        let mut content = Vec::new();
        if with_image {
            content.push(Content::Image);
        }
        content.push(Content::Text { text: text.to_string() });
        let prompt = self.assets.template.render(&[Message::user(content)], true, self.date_string.as_deref())?;
        let bos_token = &self.assets.bos_token;
        let prompt = if prompt.contains(bos_token) {
            prompt
        } else {
            let mut rest = prompt.as_str();
            let mut leading_images = 0;
            while let Some(stripped) = rest.strip_prefix(&self.image_token) {
                rest = stripped;
                leading_images += 1;
            }
            format!("{}{bos_token}{rest}", self.image_token.repeat(leading_images))
        };
        Ok(self.assets.tokenizer.encode(&prompt, false)?)
    }

    /// Answers every prompt: images through the vision encoder together, all sequences decoded together.
    pub fn answer(
        &self,
        prompts: &[ImagePrompt],
        settings: &DecodeSettings,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        self.answer_cached(prompts, settings, &FeatureCache::new())
    }

    /// [`MllamaChat::answer`] with the vision features of images already in `cache` reused (each image is
    /// encoded once, however many prompts and calls ask about it) and those of new images added to it.
    pub fn answer_cached<'m>(
        &self,
        prompts: &[ImagePrompt<'m>],
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
            .map(|((out, prompt_token_ids), num_tiles)| Answer {
                prompt_token_ids,
                token_ids: out.token_ids,
                text: out.text,
                finished: out.finished,
                num_tiles,
            })
            .collect();
        Ok((answers, timings))
    }

    /// The prompts' ids and a decoding session holding them, the images' features taken from `cache` or
    /// encoded (together) and added to it. Refuses prompts that would pass the model's positions with
    /// `max_new_tokens` generated.
    pub fn prepare<'m>(
        &self,
        prompts: &[ImagePrompt<'m>],
        max_new_tokens: usize,
        cache: &FeatureCache<'m>,
    ) -> Result<PreparedPrompts<TextSession<'_>>, ChatError> {
        let mut timings = BatchTimings::default();
        let started = Instant::now();
        let device = self.model.device().clone();
        let ids = prompts.iter().map(|p| self.prompt_ids(p.text, true)).collect::<Result<Vec<_>, _>>()?;
        let limit = self.model.config().text_config.max_position_embeddings;
        self.assets.check_lengths(&ids, max_new_tokens, limit)?;
        let keys: Vec<MediaKey> = prompts.iter().map(|p| MediaKey::image(p.image)).collect();
        let mut missing: Vec<(MediaKey, &RgbImage)> = Vec::new();
        for (key, prompt) in keys.iter().zip(prompts) {
            if cache.get(*key).is_none() && !missing.iter().any(|(k, _)| k == key) {
                missing.push((*key, prompt.image));
            }
        }
        // In parallel: the CPU work the GPU would otherwise wait on.
        let processed =
            missing.par_iter().map(|(_, image)| self.processor.preprocess(image)).collect::<Result<Vec<_>, _>>()?;
        timings.preprocess_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        if !processed.is_empty() {
            let input = self.processor.vision_input(&processed, &device)?;
            let states = self.model.encode_images(&input)?;
            for (i, ((key, _), image)) in missing.iter().zip(&processed).enumerate() {
                cache.insert(*key, MediaFeatures { features: states.get(i)?, count: image.num_tiles });
            }
        }
        // Each distinct image once; rows point at theirs.
        let mut distinct: Vec<MediaKey> = Vec::new();
        let row_images: Vec<usize> = keys
            .iter()
            .map(|key| match distinct.iter().position(|k| k == key) {
                Some(index) => index,
                None => {
                    distinct.push(*key);
                    distinct.len() - 1
                }
            })
            .collect();
        let images: Vec<MediaFeatures> =
            distinct.iter().map(|key| cache.get(*key).expect("every image encoded above")).collect();
        let states = Tensor::stack(&images.iter().map(|r| &r.features).collect::<Vec<_>>(), 0)?;
        let rows: Vec<&MediaFeatures> = row_images.iter().map(|&i| &images[i]).collect();
        let max_tiles = self.model.config().vision_config.max_num_tiles;
        let image_token_id = self.model.config().image_token_index;
        let token_masks = ids
            .iter()
            .zip(&rows)
            .map(|(ids, image)| cross_attention_token_masks(ids, image_token_id, &[image.count], max_tiles))
            .collect();
        let context = ImageContext { states, token_masks, patches_per_tile: self.model.patches_per_tile() };
        let session = self.model.start_shared(prompts.len(), Some(context), row_images)?;
        timings.vision_s = started.elapsed().as_secs_f64();
        let counts = rows.iter().map(|r| r.count).collect();
        Ok(PreparedPrompts { ids, session, counts, timings })
    }
}

impl std::fmt::Debug for MllamaChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllamaChat").field("name", &self.name).finish_non_exhaustive()
    }
}
