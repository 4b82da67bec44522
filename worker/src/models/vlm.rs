//! What the vision-language chat models (Llama 3.2 Vision, LLaVA-NeXT-Video) share: their error type, the
//! decoding settings and `generation_config.json`, batch timings, and the text-side assets of a checkpoint
//! (tokenizer, chat template, end tokens).

use crate::models::chat_template::{ChatTemplate, ChatTemplateError};
use crate::models::generate::{self, DecodeSession, GenerateError, GenerationParams, RowRequest, Strategy};
use crate::models::hub::{read_json, HubError, ModelRepo};
use crate::models::image_processing::ProcessorError;
use crate::models::mllama::config::TokenIds;
use crate::models::tokenizer::{HfTokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("config.json of {model} is not a {family} config: {reason}")]
    Config { model: String, family: &'static str, reason: String },
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
    #[error(
        "model {model} has model_type `{model_type}` in its config.json; vislingo runs `mllama` (Llama 3.2 Vision: \
         images) and `llava_next_video` (LLaVA-NeXT-Video: images and videos)"
    )]
    UnsupportedModel { model: String, model_type: String },
    #[error("{model} is a {family} model, which takes no videos: use a LLaVA-NeXT-Video model for videos")]
    NoVideos { model: String, family: &'static str },
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
    pub eos_token_id: Option<TokenIds>,
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

    /// The checkpoint's `generation_config.json`, or transformers' defaults (greedy) without one.
    pub fn load(repo: &ModelRepo) -> Result<GenerationConfig, HubError> {
        match repo.find("generation_config.json")? {
            Some(path) => read_json(&path),
            None => Ok(GenerationConfig {
                do_sample: false,
                temperature: 1.0,
                top_p: 1.0,
                eos_token_id: None,
                repetition_penalty: None,
            }),
        }
    }

    /// Decoding as the checkpoint's defaults say.
    pub fn settings(&self, max_new_tokens: usize) -> DecodeSettings {
        DecodeSettings {
            max_new_tokens,
            sampling: self.do_sample.then_some((self.temperature, self.top_p)),
            seed: 0,
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            min_new_tokens: 0,
        }
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
    /// End tokens are banned until this many tokens are generated (transformers' `min_new_tokens`; benchmarks
    /// set it to `max_new_tokens` so every answer has the same length).
    pub min_new_tokens: usize,
}

/// Time spent on a batch, for the per-asset statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BatchTimings {
    pub preprocess_s: f64,
    pub vision_s: f64,
    pub generate_s: f64,
}

/// One decoded answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Generated ids only (the end token included when one was produced).
    pub token_ids: Vec<u32>,
    pub text: String,
    /// Whether an end token stopped it (otherwise `max_new_tokens` did).
    pub finished: bool,
}

/// Prompts made ready for decoding: their model input ids, a session holding one row per prompt (its prefill
/// not run yet), and per prompt the count the answer reports (Mllama: image tiles; LLaVA: media tokens).
pub struct PreparedPrompts<S> {
    pub ids: Vec<Vec<u32>>,
    pub session: S,
    pub counts: Vec<usize>,
    pub timings: BatchTimings,
}

/// The text side of a chat checkpoint.
#[derive(Debug)]
pub struct ChatAssets {
    pub tokenizer: HfTokenizer,
    pub template: ChatTemplate,
    pub bos_token: String,
    pub generation: GenerationConfig,
    /// `generation_config.json`'s end tokens, else the text config's, else the tokenizer's `eos_token`.
    pub eos_token_ids: Vec<u32>,
}

impl ChatAssets {
    /// Loads `tokenizer.json` (+ `tokenizer_config.json`), the chat template (`chat_template.json`, else
    /// `tokenizer_config.json`) and `generation_config.json`. `default_tokens` are the (BOS, EOS) texts used when
    /// `tokenizer_config.json` names none; `config_eos` is the model config's `eos_token_id`.
    pub fn load(
        repo: &ModelRepo,
        default_tokens: (&str, &str),
        config_eos: Option<&TokenIds>,
    ) -> Result<ChatAssets, ChatError> {
        let tokenizer_config = repo.find("tokenizer_config.json")?;
        let tokenizer = HfTokenizer::from_files(&repo.require("tokenizer.json")?, tokenizer_config.as_deref())?;
        let chat_template_json = repo.find("chat_template.json")?;
        let source = ChatTemplate::find_source(chat_template_json.as_deref(), tokenizer_config.as_deref())
            .ok_or_else(|| ChatTemplateError::Missing { model: repo.source().to_string() })??;
        let bos_token = tokenizer.special_token("bos_token").unwrap_or_else(|| default_tokens.0.into());
        let eos_token = tokenizer.special_token("eos_token").unwrap_or_else(|| default_tokens.1.into());
        let template = ChatTemplate::new(&source, &bos_token, &eos_token)?;
        let generation = GenerationConfig::load(repo)?;
        let eos_token_ids = generation
            .eos_token_id
            .as_ref()
            .or(config_eos)
            .map(|ids| ids.to_vec())
            .unwrap_or_else(|| tokenizer.token_id(&eos_token).map(|id| vec![id]).unwrap_or_default());
        Ok(ChatAssets { tokenizer, template, bos_token, generation, eos_token_ids })
    }

    /// Refuses prompts that, with `max_new_tokens` generated, would pass the model's `limit` positions.
    pub fn check_lengths(&self, ids: &[Vec<u32>], max_new_tokens: usize, limit: usize) -> Result<(), ChatError> {
        match ids.iter().map(Vec::len).max() {
            Some(longest) if longest + max_new_tokens > limit => {
                Err(ChatError::PromptTooLong { tokens: longest + max_new_tokens, limit })
            }
            _ => Ok(()),
        }
    }

    /// The generation loop's parameters for `settings`, ending on the checkpoint's end tokens.
    pub fn params(&self, settings: &DecodeSettings) -> GenerationParams {
        GenerationParams {
            strategy: match settings.sampling {
                Some((temperature, top_p)) => Strategy::Sample { temperature, top_p, seed: settings.seed },
                None => Strategy::Greedy,
            },
            max_new_tokens: settings.max_new_tokens,
            min_new_tokens: settings.min_new_tokens.min(settings.max_new_tokens),
            eos_token_ids: self.eos_token_ids.clone(),
            repetition_penalty: settings.repetition_penalty,
        }
    }

    /// Generates an answer for every row of `session` (which holds one row per prompt) and decodes it.
    pub fn generate(
        &self,
        session: &mut dyn DecodeSession,
        prompts: &[Vec<u32>],
        settings: &DecodeSettings,
    ) -> Result<Vec<Decoded>, ChatError> {
        let requests: Vec<RowRequest> =
            prompts.iter().map(|ids| RowRequest { prompt: ids.clone(), forced: vec![] }).collect();
        generate::generate(session, &requests, &self.params(settings))?
            .into_iter()
            .map(|out| {
                let token_ids = out.new_tokens().to_vec();
                let text = self.tokenizer.decode(&token_ids, true)?;
                Ok(Decoded { token_ids, text, finished: out.finished })
            })
            .collect()
    }
}

/// Vision features of the media of one batch, computed once and reused by every task asked of them (describe,
/// tags, sentiment and ad analysis all see the same image): keyed by the media's address, which stays valid
/// and unique while the media are borrowed for `'m`.
#[derive(Debug, Default)]
pub struct FeatureCache<'m> {
    entries: std::cell::RefCell<std::collections::HashMap<MediaKey, MediaFeatures>>,
    _media: std::marker::PhantomData<&'m ()>,
}

/// What identifies one image or video of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaKey {
    address: usize,
    len: usize,
    video: bool,
}

impl MediaKey {
    pub fn image<T>(image: &T) -> MediaKey {
        MediaKey { address: image as *const T as usize, len: 1, video: false }
    }

    pub fn video<T>(frames: &[T]) -> MediaKey {
        MediaKey { address: frames.as_ptr() as usize, len: frames.len(), video: true }
    }

    pub fn is_video(&self) -> bool {
        self.video
    }
}

/// One medium's vision features and the count the prompt needs with them (Mllama: tiles; LLaVA: media tokens).
#[derive(Debug, Clone)]
pub struct MediaFeatures {
    pub features: candle_core::Tensor,
    pub count: usize,
}

impl<'m> FeatureCache<'m> {
    pub fn new() -> FeatureCache<'m> {
        FeatureCache::default()
    }

    pub fn get(&self, key: MediaKey) -> Option<MediaFeatures> {
        self.entries.borrow().get(&key).cloned()
    }

    pub fn insert(&self, key: MediaKey, features: MediaFeatures) {
        self.entries.borrow_mut().insert(key, features);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
