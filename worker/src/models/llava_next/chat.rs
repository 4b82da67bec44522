//! LLaVA-NeXT-Video as a chat model: loads a checkpoint folder or Hub repo (config, weights, tokenizer, chat
//! template, processor configs, generation config) and answers prompts about still images or videos (sampled
//! frames), many at a time, as `LlavaNextVideoProcessor` + `generate` would.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::processor::{LlavaNextProcessor, ProcessorError};
use super::{LlavaNextVideo, LlavaNextVideoConfig};
use crate::media::RgbImage;
use crate::models::chat_template::{ChatTemplate, ChatTemplateError, Content, Message};
use crate::models::generate::{self, GenerateError, GenerationParams, RowRequest, Strategy};
use crate::models::hub::{read_json, HubError, ModelRepo, WeightFiles};
use crate::models::quant::Quant;
use crate::models::tokenizer::{HfTokenizer, TokenizerError};

pub use crate::models::mllama::chat::{BatchTimings, DecodeSettings, GenerationConfig};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("config.json of {model} is not a LLaVA-NeXT-Video config: {reason}")]
    Config { model: String, reason: String },
    #[error("weights of {model} do not match its config.json: {source}")]
    Weights {
        model: String,
        #[source]
        source: candle_core::Error,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Template(#[from] ChatTemplateError),
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    #[error("the prompt has {tokens} tokens; the model takes at most {limit}")]
    PromptTooLong { tokens: usize, limit: usize },
    #[error("generation failed: {0}")]
    Generate(#[from] GenerateError),
    #[error("the model failed: {0}")]
    Model(#[from] candle_core::Error),
}

/// What a prompt is about.
#[derive(Debug, Clone, Copy)]
pub enum Media<'a> {
    /// A still image (anyres path, `<image>`).
    Image(&'a RgbImage),
    /// A video as its sampled frames, all the same size (`<video>`).
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
    tokenizer: HfTokenizer,
    template: ChatTemplate,
    processor: LlavaNextProcessor,
    generation: GenerationConfig,
    eos_token_ids: Vec<u32>,
    name: String,
}

impl LlavaNextChat {
    pub fn load(repo: &ModelRepo, dtype: DType, device: &Device, quant: Quant) -> Result<LlavaNextChat, ChatError> {
        let name = repo.source().to_string();
        let config: LlavaNextVideoConfig = read_json(&repo.require("config.json")?)?;
        config.validate().map_err(|reason| ChatError::Config { model: name.clone(), reason })?;
        let tokenizer_config = repo.find("tokenizer_config.json")?;
        let tokenizer = HfTokenizer::from_files(&repo.require("tokenizer.json")?, tokenizer_config.as_deref())?;
        let chat_template_json = repo.find("chat_template.json")?;
        let source = ChatTemplate::find_source(chat_template_json.as_deref(), tokenizer_config.as_deref())
            .ok_or_else(|| ChatTemplateError::Missing { model: name.clone() })??;
        let bos_token = tokenizer.special_token("bos_token").unwrap_or_else(|| "<s>".into());
        let eos_token = tokenizer.special_token("eos_token").unwrap_or_else(|| "</s>".into());
        let template = ChatTemplate::new(&source, &bos_token, &eos_token)?;
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
                reason: format!("the processors crop to {crop:?}, the vision tower takes {size}x{size}"),
            });
        }
        let generation: GenerationConfig = match repo.find("generation_config.json")? {
            Some(path) => read_json(&path)?,
            None => GenerationConfig {
                do_sample: false,
                temperature: 1.0,
                top_p: 1.0,
                eos_token_id: None,
                repetition_penalty: None,
            },
        };
        let eos_token_ids = generation
            .eos_token_id
            .as_ref()
            .or(config.text_config.eos_token_id.as_ref())
            .map(|ids| ids.to_vec())
            .unwrap_or_else(|| tokenizer.token_id(&eos_token).map(|id| vec![id]).unwrap_or_default());
        let weights = WeightFiles::locate(repo)?;
        let model = LlavaNextVideo::new_quantized(&config, weights.var_builder(dtype, device)?, quant)
            .map_err(|source| ChatError::Weights { model: name.clone(), source })?;
        tracing::info!(model = %name, ?dtype, %quant, "video model loaded");
        Ok(LlavaNextChat { model, tokenizer, template, processor, generation, eos_token_ids, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn model(&self) -> &LlavaNextVideo {
        &self.model
    }

    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.tokenizer
    }

    pub fn processor(&self) -> &LlavaNextProcessor {
        &self.processor
    }

    /// The checkpoint's own decoding defaults (`generation_config.json`).
    pub fn default_settings(&self, max_new_tokens: usize) -> DecodeSettings {
        let g = &self.generation;
        DecodeSettings {
            max_new_tokens,
            sampling: g.do_sample.then_some((g.temperature, g.top_p)),
            seed: 0,
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
        }
    }

    /// The rendered chat prompt for a user message about an image or a video (before placeholder expansion).
    pub fn prompt_text(&self, text: &str, video: bool) -> Result<String, ChatError> {
        let media = if video { Content::Video } else { Content::Image };
        let content = vec![media, Content::Text { text: text.to_string() }];
        Ok(self.template.render(&[Message::user(content)], true, None)?)
    }

    /// Model input ids: the chat template with the generation prompt, each `<image>` / `<video>` repeated
    /// `media_tokens` times (the processor's expansion), tokenized with the tokenizer's special tokens (BOS).
    pub fn prompt_ids(&self, text: &str, video: bool, media_tokens: usize) -> Result<Vec<u32>, ChatError> {
        let prompt = self.prompt_text(text, video)?;
        let config = &self.processor.config;
        let token = if video { &config.video_token } else { &config.image_token };
        let prompt = prompt.replace(token.as_str(), &token.repeat(media_tokens));
        Ok(self.tokenizer.encode(&prompt, true)?)
    }

    /// Answers every prompt: each image or video through the vision tower, all sequences decoded together.
    pub fn answer(
        &self,
        prompts: &[MediaPrompt],
        settings: &DecodeSettings,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        let mut timings = BatchTimings::default();
        if prompts.is_empty() {
            return Ok((Vec::new(), timings));
        }
        let started = Instant::now();
        let device = self.model.device().clone();
        let mut processed = Vec::with_capacity(prompts.len());
        let mut ids = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let (media, tokens, video) = match prompt.media {
                Media::Image(image) => {
                    let p = self.processor.image.preprocess_image(image)?;
                    let tokens = self.processor.image_tokens(p.image_size);
                    (Processed::Image(p), tokens, false)
                }
                Media::Video(frames) => {
                    let p = self.processor.video.preprocess_video(frames)?;
                    let tokens = self.processor.video_tokens(p.frames);
                    (Processed::Video(p), tokens, true)
                }
            };
            ids.push(self.prompt_ids(prompt.text, video, tokens)?);
            processed.push((media, tokens));
        }
        let limit = self.model.config().text_config.max_position_embeddings;
        if let Some(long) = ids.iter().find(|ids| ids.len() + settings.max_new_tokens > limit) {
            return Err(ChatError::PromptTooLong { tokens: long.len() + settings.max_new_tokens, limit });
        }
        timings.preprocess_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut embeddings = Vec::with_capacity(prompts.len());
        for ((media, _), ids) in processed.iter().zip(&ids) {
            embeddings.push(match media {
                Processed::Image(p) => {
                    let (h, w) = p.crop_hw;
                    let pixels = Tensor::from_slice(&p.pixel_values, (p.num_crops, 3, h, w), &device)?;
                    let features = self.model.image_features(&pixels, p.image_size)?;
                    self.model.merge_features(ids, Some(&features), None)?
                }
                Processed::Video(p) => {
                    let (h, w) = p.crop_hw;
                    let pixels = Tensor::from_slice(&p.pixel_values, (p.frames, 3, h, w), &device)?;
                    let features = self.model.video_features(&pixels)?;
                    self.model.merge_features(ids, None, Some(&features))?
                }
            });
        }
        timings.vision_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut session = self.model.start(embeddings);
        let requests: Vec<RowRequest> =
            ids.iter().map(|ids| RowRequest { prompt: ids.clone(), forced: vec![] }).collect();
        let params = GenerationParams {
            strategy: match settings.sampling {
                Some((temperature, top_p)) => Strategy::Sample { temperature, top_p, seed: settings.seed },
                None => Strategy::Greedy,
            },
            max_new_tokens: settings.max_new_tokens,
            min_new_tokens: 0,
            eos_token_ids: self.eos_token_ids.clone(),
            repetition_penalty: settings.repetition_penalty,
        };
        let generated = generate::generate(&mut session, &requests, &params)?;
        timings.generate_s = started.elapsed().as_secs_f64();

        generated
            .into_iter()
            .zip(ids)
            .zip(&processed)
            .map(|((out, prompt_token_ids), (_, media_tokens))| {
                let token_ids = out.new_tokens().to_vec();
                let text = self.tokenizer.decode(&token_ids, true)?;
                Ok(Answer { prompt_token_ids, token_ids, text, finished: out.finished, media_tokens: *media_tokens })
            })
            .collect::<Result<Vec<_>, ChatError>>()
            .map(|answers| (answers, timings))
    }
}

impl std::fmt::Debug for LlavaNextChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlavaNextChat").field("name", &self.name).finish_non_exhaustive()
    }
}
