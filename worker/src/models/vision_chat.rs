//! The vision-language chat model of a worker, whichever family it is: picked by `config.json`'s `model_type`
//! (`mllama`: Llama 3.2 Vision, images; `llava_next_video`: LLaVA-NeXT-Video, images and videos), so the pipeline
//! drives one type without knowing which model answers.

use candle_core::{DType, Device};
use serde::Deserialize;

use crate::models::hub::{read_json, ModelRepo};
use crate::models::llava_next::{self, LlavaNextChat};
pub use crate::models::llava_next::{Media, MediaPrompt};
use crate::models::mllama::chat::{ImagePrompt, MllamaChat};
use crate::models::quant::Quant;
pub use crate::models::vlm::{BatchTimings, ChatError, DecodeSettings, FeatureCache};

/// The model families the worker runs, by their `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// `mllama`: Llama 3.2 Vision (images only).
    Mllama,
    /// `llava_next_video`: LLaVA-NeXT-Video (images and videos).
    LlavaNextVideo,
}

impl ModelFamily {
    /// The family of the checkpoint, from its `config.json` alone (no weights are read).
    pub fn detect(repo: &ModelRepo) -> Result<ModelFamily, ChatError> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            model_type: Option<String>,
        }
        let probe: Probe = read_json(&repo.require("config.json")?)?;
        match probe.model_type.as_deref() {
            Some("mllama") => Ok(ModelFamily::Mllama),
            Some("llava_next_video") => Ok(ModelFamily::LlavaNextVideo),
            other => Err(ChatError::UnsupportedModel {
                model: repo.source().to_string(),
                model_type: other.unwrap_or("(none)").to_string(),
            }),
        }
    }

    /// Whether the family answers about videos (sampled frames).
    pub fn takes_videos(self) -> bool {
        matches!(self, ModelFamily::LlavaNextVideo)
    }

    /// The family's name for people.
    pub fn label(self) -> &'static str {
        match self {
            ModelFamily::Mllama => "Llama 3.2 Vision (mllama)",
            ModelFamily::LlavaNextVideo => "LLaVA-NeXT-Video",
        }
    }
}

/// One answer, whichever model gave it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The full model input after the chat template and image/video-token handling.
    pub prompt_token_ids: Vec<u32>,
    /// Generated ids only (an end token included when one was produced).
    pub token_ids: Vec<u32>,
    pub text: String,
    /// Whether an end token stopped it (otherwise `max_new_tokens` did).
    pub finished: bool,
    /// Image tiles (Llama 3.2 Vision) or video frames the model saw; `None` for LLaVA-NeXT still images.
    pub tiles: Option<usize>,
    /// Image or video feature tokens in the prompt (LLaVA-NeXT-Video).
    pub media_tokens: Option<usize>,
}

/// A loaded chat model of either family.
#[derive(Debug)]
pub enum VisionChat {
    Mllama(MllamaChat),
    LlavaNext(LlavaNextChat),
}

impl VisionChat {
    /// Loads the checkpoint as its `config.json`'s `model_type` says.
    pub fn load(repo: &ModelRepo, dtype: DType, device: &Device, quant: Quant) -> Result<VisionChat, ChatError> {
        Ok(match ModelFamily::detect(repo)? {
            ModelFamily::Mllama => VisionChat::Mllama(MllamaChat::load(repo, dtype, device, quant)?),
            ModelFamily::LlavaNextVideo => VisionChat::LlavaNext(LlavaNextChat::load(repo, dtype, device, quant)?),
        })
    }

    pub fn family(&self) -> ModelFamily {
        match self {
            VisionChat::Mllama(_) => ModelFamily::Mllama,
            VisionChat::LlavaNext(_) => ModelFamily::LlavaNextVideo,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            VisionChat::Mllama(chat) => chat.name(),
            VisionChat::LlavaNext(chat) => chat.name(),
        }
    }

    pub fn takes_videos(&self) -> bool {
        self.family().takes_videos()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        match self {
            VisionChat::Mllama(chat) => chat.model().device(),
            VisionChat::LlavaNext(chat) => chat.model().device(),
        }
    }

    /// Pins the date that Llama 3.2's chat template prints (LLaVA-NeXT-Video's template prints none).
    pub fn set_date_string(&mut self, date: Option<String>) {
        if let VisionChat::Mllama(chat) = self {
            chat.date_string = date;
        }
    }

    /// The checkpoint's own decoding defaults (`generation_config.json`).
    pub fn default_settings(&self, max_new_tokens: usize) -> DecodeSettings {
        match self {
            VisionChat::Mllama(chat) => chat.default_settings(max_new_tokens),
            VisionChat::LlavaNext(chat) => chat.default_settings(max_new_tokens),
        }
    }

    /// Answers every prompt together. A video given to a model that takes none is [`ChatError::NoVideos`].
    pub fn answer(
        &self,
        prompts: &[MediaPrompt],
        settings: &DecodeSettings,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        self.answer_cached(prompts, settings, &FeatureCache::new())
    }

    /// [`VisionChat::answer`] reusing the vision features of media in `cache` (the pipeline keeps one per batch,
    /// so the tasks asked of an asset encode it once).
    pub fn answer_cached<'m>(
        &self,
        prompts: &[MediaPrompt<'m>],
        settings: &DecodeSettings,
        cache: &FeatureCache<'m>,
    ) -> Result<(Vec<Answer>, BatchTimings), ChatError> {
        match self {
            VisionChat::Mllama(chat) => {
                let images = prompts
                    .iter()
                    .map(|p| match p.media {
                        Media::Image(image) => Ok(ImagePrompt { image, text: p.text }),
                        Media::Video(_) => {
                            Err(ChatError::NoVideos { model: chat.name().to_string(), family: self.family().label() })
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (answers, timings) = chat.answer_cached(&images, settings, cache)?;
                let answers = answers
                    .into_iter()
                    .map(|a| Answer {
                        prompt_token_ids: a.prompt_token_ids,
                        token_ids: a.token_ids,
                        text: a.text,
                        finished: a.finished,
                        tiles: Some(a.num_tiles),
                        media_tokens: None,
                    })
                    .collect();
                Ok((answers, timings))
            }
            VisionChat::LlavaNext(chat) => {
                let (answers, timings) = chat.answer_cached(prompts, settings, cache)?;
                let answers = answers
                    .into_iter()
                    .zip(prompts)
                    .map(|(a, p): (llava_next::Answer, _)| Answer {
                        prompt_token_ids: a.prompt_token_ids,
                        token_ids: a.token_ids,
                        text: a.text,
                        finished: a.finished,
                        tiles: match p.media {
                            Media::Video(frames) => Some(frames.len()),
                            Media::Image(_) => None,
                        },
                        media_tokens: Some(a.media_tokens),
                    })
                    .collect();
                Ok((answers, timings))
            }
        }
    }
}
