//! The vision-language chat model of a worker, whichever family it is: picked by `config.json`'s `model_type`
//! (`mllama`: Llama 3.2 Vision, images; `llava_next_video`: LLaVA-NeXT-Video, images and videos), so the pipeline
//! drives one type without knowing which model answers.

use std::time::Instant;

use candle_core::{DType, Device};
use serde::Deserialize;

use crate::models::generate::{Admission, ContinuousBatch, Ended, RowRequest};
use crate::models::hub::{read_json, ModelRepo};
use crate::models::llava_next::LlamaSession;
use crate::models::llava_next::{self, LlavaNextChat};
pub use crate::models::llava_next::{Media, MediaPrompt};
use crate::models::mllama::chat::{ImagePrompt, MllamaChat};
use crate::models::mllama::TextSession;
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

/// One prompt to start decoding, with the caller's tag and its own limit on generated tokens.
#[derive(Debug, Clone)]
pub struct Admit<'m, T> {
    pub tag: T,
    pub prompt: MediaPrompt<'m>,
    pub max_new_tokens: usize,
}

/// What an admitted prompt's answer carries besides its tokens.
struct RowInfo<T> {
    tag: T,
    prompt_token_ids: Vec<u32>,
    tiles: Option<usize>,
    media_tokens: Option<usize>,
}

enum FamilyBatch<'c, T> {
    Mllama(ContinuousBatch<TextSession<'c>, RowInfo<T>>),
    LlavaNext(ContinuousBatch<LlamaSession<'c>, RowInfo<T>>),
}

/// The decode batch of a worker's model (continuous batching): prompts join while others are mid-answer and each
/// answer comes out as soon as it ends, equal to the prompt's answer alone.
pub struct ChatBatch<'c, T> {
    chat: &'c VisionChat,
    rows: FamilyBatch<'c, T>,
}

impl VisionChat {
    /// An empty decode batch decoding as `settings` say (each admission brings its own `max_new_tokens`).
    pub fn batch<T>(&self, settings: &DecodeSettings) -> Result<ChatBatch<'_, T>, ChatError> {
        let rows = match self {
            VisionChat::Mllama(chat) => FamilyBatch::Mllama(ContinuousBatch::new(chat.assets().params(settings))?),
            VisionChat::LlavaNext(chat) => {
                FamilyBatch::LlavaNext(ContinuousBatch::new(chat.assets().params(settings))?)
            }
        };
        Ok(ChatBatch { chat: self, rows })
    }
}

impl<'c, T> ChatBatch<'c, T> {
    /// Prompts being decoded.
    pub fn len(&self) -> usize {
        match &self.rows {
            FamilyBatch::Mllama(batch) => batch.len(),
            FamilyBatch::LlavaNext(batch) => batch.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes the prompts' media (each medium once), runs their prefill together and adds them to the batch.
    /// Returns the answers that ended at their first token, and the time spent.
    pub fn admit(&mut self, prompts: Vec<Admit<'_, T>>) -> Result<(Vec<(T, Answer)>, BatchTimings), ChatError> {
        if prompts.is_empty() {
            return Ok((Vec::new(), BatchTimings::default()));
        }
        let longest = prompts.iter().map(|p| p.max_new_tokens).max().unwrap_or(0);
        let cache = FeatureCache::new();
        let admissions = |prepared_ids: Vec<Vec<u32>>, counts: Vec<usize>, prompts: Vec<Admit<'_, T>>, video: bool| {
            prompts
                .into_iter()
                .zip(prepared_ids)
                .zip(counts)
                .map(|((admit, ids), count)| {
                    let frames = match admit.prompt.media {
                        Media::Video(frames) => Some(frames.len()),
                        Media::Image(_) => None,
                    };
                    let (tiles, media_tokens) = if video { (frames, Some(count)) } else { (Some(count), None) };
                    Admission {
                        tag: RowInfo { tag: admit.tag, prompt_token_ids: ids.clone(), tiles, media_tokens },
                        request: RowRequest { prompt: ids, forced: Vec::new() },
                        max_new_tokens: admit.max_new_tokens,
                    }
                })
                .collect::<Vec<_>>()
        };
        let (ended, timings) = match (&mut self.rows, self.chat) {
            (FamilyBatch::Mllama(batch), VisionChat::Mllama(chat)) => {
                let images = prompts
                    .iter()
                    .map(|p| match p.prompt.media {
                        Media::Image(image) => Ok(ImagePrompt { image, text: p.prompt.text }),
                        Media::Video(_) => Err(ChatError::NoVideos {
                            model: chat.name().to_string(),
                            family: ModelFamily::Mllama.label(),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let prepared = chat.prepare(&images, longest, &cache)?;
                let started = Instant::now();
                let ended = batch.admit(prepared.session, admissions(prepared.ids, prepared.counts, prompts, false))?;
                (ended, BatchTimings { generate_s: started.elapsed().as_secs_f64(), ..prepared.timings })
            }
            (FamilyBatch::LlavaNext(batch), VisionChat::LlavaNext(chat)) => {
                let media: Vec<MediaPrompt> = prompts.iter().map(|p| p.prompt).collect();
                let prepared = chat.prepare(&media, longest, &cache)?;
                let started = Instant::now();
                let ended = batch.admit(prepared.session, admissions(prepared.ids, prepared.counts, prompts, true))?;
                (ended, BatchTimings { generate_s: started.elapsed().as_secs_f64(), ..prepared.timings })
            }
            _ => unreachable!("a batch is made by its own chat model"),
        };
        let answers = ended.into_iter().map(|e| self.answer(e)).collect::<Result<Vec<_>, _>>()?;
        Ok((answers, timings))
    }

    /// One decode step of every prompt in the batch; returns the answers that ended.
    pub fn step(&mut self) -> Result<Vec<(T, Answer)>, ChatError> {
        let ended = match &mut self.rows {
            FamilyBatch::Mllama(batch) => batch.step()?,
            FamilyBatch::LlavaNext(batch) => batch.step()?,
        };
        ended.into_iter().map(|e| self.answer(e)).collect()
    }

    /// The tags of the prompts being decoded, in batch order.
    pub fn tags(&self) -> Vec<&T> {
        match &self.rows {
            FamilyBatch::Mllama(batch) => batch.tags().map(|info| &info.tag).collect(),
            FamilyBatch::LlavaNext(batch) => batch.tags().map(|info| &info.tag).collect(),
        }
    }

    fn answer(&self, ended: Ended<RowInfo<T>>) -> Result<(T, Answer), ChatError> {
        let token_ids = ended.generated.new_tokens().to_vec();
        let tokenizer = match self.chat {
            VisionChat::Mllama(chat) => chat.tokenizer(),
            VisionChat::LlavaNext(chat) => chat.tokenizer(),
        };
        let text = tokenizer.decode(&token_ids, true)?;
        let info = ended.tag;
        let answer = Answer {
            prompt_token_ids: info.prompt_token_ids,
            token_ids,
            text,
            finished: ended.generated.finished,
            tiles: info.tiles,
            media_tokens: info.media_tokens,
        };
        Ok((info.tag, answer))
    }
}
