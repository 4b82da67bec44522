//! Llama 3.2 Vision as a chat model: loads a checkpoint folder or Hub repo (config, weights, tokenizer, chat
//! template, image processor, generation config) and answers prompts about images, many at a time, as
//! `MllamaProcessor` + `generate` would.

use std::time::Instant;

use candle_core::{DType, Device};

use super::processor::{MllamaImageProcessor, ProcessorError};
use super::{cross_attention_token_masks, ImageContext, Mllama, MllamaConfig};
use crate::media::RgbImage;
use crate::models::chat_template::{ChatTemplate, ChatTemplateError, Content, Message};
use crate::models::generate::{self, GenerateError, GenerationParams, RowRequest, Strategy};
use crate::models::hub::{read_json, HubError, ModelRepo, WeightFiles};
use crate::models::quant::Quant;
use crate::models::tokenizer::{HfTokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("config.json of {model} is not a Llama 3.2 Vision (mllama) config: {reason}")]
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

/// `generation_config.json` fields that shape decoding (transformers' `GenerationConfig`).
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
pub struct GenerationConfig {
    #[serde(default)]
    pub do_sample: bool,
    #[serde(default = "GenerationConfig::default_temperature")]
    pub temperature: f64,
    #[serde(default = "GenerationConfig::default_top_p")]
    pub top_p: f64,
    #[serde(default)]
    pub eos_token_id: Option<super::config::TokenIds>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
}

impl GenerationConfig {
    fn default_temperature() -> f64 {
        1.0
    }
    fn default_top_p() -> f64 {
        1.0
    }
}

/// How to decode an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeSettings {
    pub max_new_tokens: usize,
    /// `None`: greedy.
    pub sampling: Option<(f64, f64)>,
    pub seed: u64,
    pub repetition_penalty: f32,
}

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

/// Time spent on a batch, for the per-asset statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BatchTimings {
    pub preprocess_s: f64,
    pub vision_s: f64,
    pub generate_s: f64,
}

pub struct MllamaChat {
    model: Mllama,
    tokenizer: HfTokenizer,
    template: ChatTemplate,
    processor: MllamaImageProcessor,
    generation: GenerationConfig,
    eos_token_ids: Vec<u32>,
    bos_token: String,
    image_token: String,
    /// Pins the date some chat templates print; `None` lets the template use today's date.
    pub date_string: Option<String>,
    name: String,
}

impl MllamaChat {
    pub fn load(repo: &ModelRepo, dtype: DType, device: &Device, quant: Quant) -> Result<MllamaChat, ChatError> {
        let name = repo.source().to_string();
        let config: MllamaConfig = read_json(&repo.require("config.json")?)?;
        config.validate().map_err(|reason| ChatError::Config { model: name.clone(), reason })?;
        let tokenizer_config = repo.find("tokenizer_config.json")?;
        let tokenizer = HfTokenizer::from_files(&repo.require("tokenizer.json")?, tokenizer_config.as_deref())?;
        let chat_template_json = repo.find("chat_template.json")?;
        let source = ChatTemplate::find_source(chat_template_json.as_deref(), tokenizer_config.as_deref())
            .ok_or_else(|| ChatTemplateError::Missing { model: name.clone() })??;
        let bos_token = tokenizer.special_token("bos_token").unwrap_or_else(|| "<|begin_of_text|>".into());
        let eos_token = tokenizer.special_token("eos_token").unwrap_or_else(|| "<|eot_id|>".into());
        let template = ChatTemplate::new(&source, &bos_token, &eos_token)?;
        let processor = MllamaImageProcessor::from_file(repo.require("preprocessor_config.json")?)?;
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
        let model = Mllama::new_quantized(&config, weights.var_builder(dtype, device)?, quant)
            .map_err(|source| ChatError::Weights { model: name.clone(), source })?;
        tracing::info!(model = %name, ?dtype, %quant, "vision model loaded");
        Ok(MllamaChat {
            model,
            tokenizer,
            template,
            processor,
            generation,
            eos_token_ids,
            bos_token,
            image_token: "<|image|>".into(),
            date_string: None,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn model(&self) -> &Mllama {
        &self.model
    }

    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.tokenizer
    }

    pub fn processor(&self) -> &MllamaImageProcessor {
        &self.processor
    }

    /// The checkpoint's own decoding defaults (Llama 3.2 Vision Instruct samples at temperature 0.6, top-p 0.9).
    pub fn default_settings(&self, max_new_tokens: usize) -> DecodeSettings {
        let g = &self.generation;
        DecodeSettings {
            max_new_tokens,
            sampling: g.do_sample.then_some((g.temperature, g.top_p)),
            seed: 0,
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
        }
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
        let prompt = self.template.render(&[Message::user(content)], true, self.date_string.as_deref())?;
        let prompt = if prompt.contains(&self.bos_token) {
            prompt
        } else {
            let mut rest = prompt.as_str();
            let mut leading_images = 0;
            while let Some(stripped) = rest.strip_prefix(&self.image_token) {
                rest = stripped;
                leading_images += 1;
            }
            format!("{}{}{rest}", self.image_token.repeat(leading_images), self.bos_token)
        };
        Ok(self.tokenizer.encode(&prompt, false)?)
    }

    /// Answers every prompt: images through the vision encoder together, all sequences decoded together.
    pub fn answer(
        &self,
        prompts: &[ImagePrompt],
        settings: &DecodeSettings,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        let mut timings = BatchTimings::default();
        if prompts.is_empty() {
            return Ok((Vec::new(), timings));
        }
        let started = Instant::now();
        let device = self.model.device().clone();
        let processed = prompts.iter().map(|p| self.processor.preprocess(p.image)).collect::<Result<Vec<_>, _>>()?;
        let ids = prompts.iter().map(|p| self.prompt_ids(p.text, true)).collect::<Result<Vec<_>, _>>()?;
        let limit = self.model.config().text_config.max_position_embeddings;
        if let Some(long) = ids.iter().find(|ids| ids.len() + settings.max_new_tokens > limit) {
            return Err(ChatError::PromptTooLong { tokens: long.len() + settings.max_new_tokens, limit });
        }
        let input = self.processor.vision_input(&processed, &device)?;
        timings.preprocess_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let states = self.model.encode_images(&input)?;
        let max_tiles = self.model.config().vision_config.max_num_tiles;
        let image_token_id = self.model.config().image_token_index;
        let token_masks = ids
            .iter()
            .zip(&processed)
            .map(|(ids, image)| cross_attention_token_masks(ids, image_token_id, &[image.num_tiles], max_tiles))
            .collect();
        let context = ImageContext { states, token_masks, patches_per_tile: self.model.patches_per_tile() };
        timings.vision_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut session = self.model.start(prompts.len(), Some(context))?;
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

        let answers = generated
            .into_iter()
            .zip(ids)
            .zip(&processed)
            .map(|((out, prompt_token_ids), image)| {
                let token_ids = out.new_tokens().to_vec();
                let text = self.tokenizer.decode(&token_ids, true)?;
                Ok(Answer { prompt_token_ids, token_ids, text, finished: out.finished, num_tiles: image.num_tiles })
            })
            .collect::<Result<Vec<_>, ChatError>>()?;
        Ok((answers, timings))
    }
}

impl std::fmt::Debug for MllamaChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllamaChat").field("name", &self.name).finish_non_exhaustive()
    }
}
