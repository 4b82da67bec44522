//! NLLB-200 translation: loads an M2M100 checkpoint (facebook/nllb-200-distilled-600M, 1.3B, 3.3B) and
//! translates many texts into many languages in batched encoder and decoder passes. Long texts are split into
//! sentences first (`segment`), since NLLB is a single-sentence model that repeats or drops content on long input.

pub mod config;
pub mod model;
pub mod segment;
pub mod tokenizer;

use candle_core::{DType, Device};
use serde::Serialize;
use vislingo_proto::Lang;

use crate::models::generate::{self, DecodeSession, EarlyStopping, GenerationParams, RowRequest, Strategy};
use crate::models::hub::{read_json, HubError, ModelRepo, WeightFiles};
use crate::models::profile;
pub use config::{GenerationDefaults, M2M100Config};
pub use model::M2M100;
pub use segment::{Segmentation, Segmented};
pub use tokenizer::{NllbTokenizer, TokenizerError, UnknownLanguage};

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("config.json of {model} is not an NLLB/M2M100 config: {reason}")]
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
    UnknownLanguage(#[from] UnknownLanguage),
    #[error("nothing to translate: text {index} is empty")]
    EmptyText { index: usize },
    #[error("text {index} is too long to translate: {what} has {tokens} tokens and the model takes at most {limit}; split it into sentences (--segment sentences) or shorten it")]
    TooLong { index: usize, what: String, tokens: usize, limit: usize },
    #[error("invalid translation settings: {0}")]
    Settings(String),
    #[error("translation failed: {0}")]
    Generate(#[from] generate::GenerateError),
    #[error("translation failed in the model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("cannot rejoin translated sentences: {0}")]
    Segment(#[from] segment::SegmentError),
}

/// Sampling instead of greedy/beam search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

/// How to translate; `Default` follows the checkpoint's generation_config.json as transformers does.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateOptions {
    /// Beam width; `None` takes the checkpoint's `num_beams` (1 for NLLB: greedy).
    pub beams: Option<usize>,
    /// Tokens generated per sentence at most; `None` takes the checkpoint's `max_length - 1`.
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: usize,
    pub length_penalty: Option<f64>,
    pub early_stopping: EarlyStopping,
    pub sampling: Option<Sampling>,
    pub segmentation: Segmentation,
    /// Decoder rows (sentences x languages x beams) run together at most; bounds memory.
    pub max_batch_rows: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            beams: None,
            max_new_tokens: None,
            min_new_tokens: 0,
            length_penalty: None,
            early_stopping: EarlyStopping::False,
            sampling: None,
            segmentation: Segmentation::Sentences,
            max_batch_rows: 256,
        }
    }
}

/// One text to translate from `source` into each of `targets`.
#[derive(Debug, Clone, Copy)]
pub struct TranslationJob<'a> {
    pub text: &'a str,
    pub source: Lang,
    pub targets: &'a [Lang],
}

/// A translated text: the source as the encoder saw it, and one translation per target language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Translated {
    pub source: SourceText,
    pub translations: Vec<TargetText>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceText {
    pub lang: Lang,
    pub text: String,
    /// Encoder ids of every segment, concatenated (for one segment: exactly the encoder input).
    pub input_ids: Vec<u32>,
    pub segments: Vec<SourceSegment>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceSegment {
    pub text: String,
    pub input_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetText {
    pub lang: Lang,
    pub text: String,
    /// Generated sequences of every segment, concatenated; each as transformers' `generate` returns it
    /// (decoder start, language token, ..., end token).
    pub token_ids: Vec<u32>,
    pub segments: Vec<TargetSegment>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSegment {
    pub text: String,
    pub token_ids: Vec<u32>,
}

/// The NLLB model and tokenizer, loaded once and shared by every translation.
#[derive(Debug, Clone)]
pub struct Translator {
    model: M2M100,
    tokenizer: NllbTokenizer,
    defaults: GenerationDefaults,
    name: String,
}

impl Translator {
    /// Loads config.json, the weights (safetensors, sharded safetensors or pytorch_model.bin), tokenizer.json and
    /// the optional generation_config.json / tokenizer_config.json of `repo`.
    pub fn load(repo: &ModelRepo, dtype: DType, device: &Device) -> Result<Translator, TranslateError> {
        let name = repo.source().to_string();
        let config_path = repo.require("config.json")?;
        let config: M2M100Config = read_json(&config_path)?;
        config.validate().map_err(|reason| TranslateError::Config { model: name.clone(), reason })?;
        let defaults = match repo.find("generation_config.json")? {
            Some(path) => read_json(&path)?,
            None => GenerationDefaults::default(),
        };
        let tokenizer_config = repo.find("tokenizer_config.json")?;
        let tokenizer = NllbTokenizer::from_files(&repo.require("tokenizer.json")?, tokenizer_config.as_deref())?;
        let weights = WeightFiles::locate(repo)?;
        let vb = weights.var_builder(dtype, device)?;
        let model =
            M2M100::new(&config, vb).map_err(|source| TranslateError::Weights { model: name.clone(), source })?;
        tracing::info!(model = %name, ?dtype, layers = config.encoder_layers + config.decoder_layers, "translator loaded");
        Ok(Translator { model, tokenizer, defaults, name })
    }

    pub fn model(&self) -> &M2M100 {
        &self.model
    }

    pub fn tokenizer(&self) -> &NllbTokenizer {
        &self.tokenizer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Translates one text into every target language.
    pub fn translate(
        &self,
        text: &str,
        source: Lang,
        targets: &[Lang],
        options: &TranslateOptions,
    ) -> Result<Translated, TranslateError> {
        let mut out = self.translate_many(&[TranslationJob { text, source, targets }], options)?;
        Ok(out.remove(0))
    }

    /// Translates every job: all segments of all texts go through the encoder together, and all (segment,
    /// language) pairs through one decode, in chunks of at most `max_batch_rows` decoder rows.
    pub fn translate_many(
        &self,
        jobs: &[TranslationJob],
        options: &TranslateOptions,
    ) -> Result<Vec<Translated>, TranslateError> {
        let params = self.generation_params(options)?;
        let beams = match params.strategy {
            Strategy::Beam { num_beams, .. } => num_beams,
            _ => 1,
        };

        // Split and encode every text; one encoder row per segment.
        let mut prepared = Vec::with_capacity(jobs.len());
        let mut segment_ids: Vec<Vec<u32>> = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            if job.text.trim().is_empty() {
                return Err(TranslateError::EmptyText { index });
            }
            let segmented = Segmented::split(job.text, options.segmentation);
            if segmented.pieces().is_empty() {
                return Err(TranslateError::EmptyText { index });
            }
            let first_segment = segment_ids.len();
            for (n, piece) in segmented.pieces().iter().enumerate() {
                let ids = self.tokenizer.encode(piece, job.source)?;
                let limit = self.model.max_positions();
                if ids.len() > limit {
                    let what =
                        if segmented.pieces().len() == 1 { "the text".into() } else { format!("sentence {}", n + 1) };
                    return Err(TranslateError::TooLong { index, what, tokens: ids.len(), limit });
                }
                segment_ids.push(ids);
            }
            let target_ids =
                job.targets.iter().map(|&lang| self.tokenizer.lang_id(lang)).collect::<Result<Vec<_>, _>>()?;
            prepared.push((segmented, first_segment, target_ids));
        }

        // Decoder rows: (segment, target language token), grouped by segment so each is encoded once.
        let mut rows_of_segment: Vec<Vec<(usize, u32)>> = vec![Vec::new(); segment_ids.len()];
        for (segmented, first_segment, target_ids) in &prepared {
            for &lang_id in target_ids {
                for segment in *first_segment..first_segment + segmented.pieces().len() {
                    rows_of_segment[segment].push((segment, lang_id));
                }
            }
        }
        // Longest segments first, so chunks hold segments of similar length (less padding).
        let mut order: Vec<usize> = (0..segment_ids.len()).collect();
        order.sort_by_key(|&s| std::cmp::Reverse(segment_ids[s].len()));

        let mut generated: std::collections::HashMap<(usize, u32), Vec<u32>> = Default::default();
        let mut chunk: Vec<usize> = Vec::new();
        let mut chunk_rows = 0;
        for &segment in &order {
            let rows = rows_of_segment[segment].len() * beams;
            if !chunk.is_empty() && chunk_rows + rows > options.max_batch_rows {
                self.decode_chunk(&chunk, &segment_ids, &rows_of_segment, &params, &mut generated)?;
                chunk.clear();
                chunk_rows = 0;
            }
            chunk.push(segment);
            chunk_rows += rows;
        }
        if !chunk.is_empty() {
            self.decode_chunk(&chunk, &segment_ids, &rows_of_segment, &params, &mut generated)?;
        }

        // Reassemble per text and language.
        let mut results = Vec::with_capacity(jobs.len());
        for (job, (segmented, first_segment, target_ids)) in jobs.iter().zip(prepared) {
            let count = segmented.pieces().len();
            let source_segments: Vec<SourceSegment> = (0..count)
                .map(|n| SourceSegment {
                    text: segmented.pieces()[n].clone(),
                    input_ids: segment_ids[first_segment + n].clone(),
                })
                .collect();
            let mut translations = Vec::with_capacity(job.targets.len());
            for (&lang, &lang_id) in job.targets.iter().zip(&target_ids) {
                let mut segments = Vec::with_capacity(count);
                for n in 0..count {
                    let token_ids = generated.get(&(first_segment + n, lang_id)).cloned().unwrap_or_default();
                    let text = self.tokenizer.decode(&token_ids)?;
                    segments.push(TargetSegment { text, token_ids });
                }
                let texts: Vec<String> = segments.iter().map(|s| s.text.clone()).collect();
                translations.push(TargetText {
                    lang,
                    text: segmented.join(&texts)?,
                    token_ids: segments.iter().flat_map(|s| s.token_ids.iter().copied()).collect(),
                    segments,
                });
            }
            results.push(Translated {
                source: SourceText {
                    lang: job.source,
                    text: job.text.to_string(),
                    input_ids: source_segments.iter().flat_map(|s| s.input_ids.iter().copied()).collect(),
                    segments: source_segments,
                },
                translations,
            });
        }
        Ok(results)
    }

    /// Encodes `segments` together, then decodes every (segment, language) row of theirs together.
    fn decode_chunk(
        &self,
        segments: &[usize],
        segment_ids: &[Vec<u32>],
        rows_of_segment: &[Vec<(usize, u32)>],
        params: &GenerationParams,
        generated: &mut std::collections::HashMap<(usize, u32), Vec<u32>>,
    ) -> Result<(), TranslateError> {
        let started = std::time::Instant::now();
        let inputs: Vec<Vec<u32>> = segments.iter().map(|&s| segment_ids[s].clone()).collect();
        let encoded = self.model.encode(&inputs)?;
        let encoded_s = profile::lap(self.model.device(), started);
        let mut session = self.model.start_decoding(&encoded)?;
        let mut expand = Vec::new();
        let mut rows = Vec::new();
        for (encoder_row, &segment) in segments.iter().enumerate() {
            for &row in &rows_of_segment[segment] {
                expand.push(encoder_row);
                rows.push(row);
            }
        }
        session.select_rows(&expand)?;
        let start = self.model.config().decoder_start_token_id;
        let requests: Vec<RowRequest> =
            rows.iter().map(|&(_, lang_id)| RowRequest { prompt: vec![start], forced: vec![lang_id] }).collect();
        let prepared_s = profile::lap(self.model.device(), started);
        let outputs = generate::generate(&mut session, &requests, params)?;
        if profile::enabled() {
            let steps = outputs.iter().map(|o| o.tokens.len().saturating_sub(o.prompt_len)).max().unwrap_or(0);
            profile::report(
                &format!("nllb chunk of {} segments, {} rows, {steps} steps", segments.len(), rows.len()),
                &[
                    ("encode", encoded_s),
                    ("cross keys/values", prepared_s - encoded_s),
                    ("generate", profile::lap(self.model.device(), started) - prepared_s),
                ],
            );
        }
        for (row, output) in rows.into_iter().zip(outputs) {
            generated.insert(row, output.tokens);
        }
        Ok(())
    }

    fn generation_params(&self, options: &TranslateOptions) -> Result<GenerationParams, TranslateError> {
        let config = self.model.config();
        // Positions cover the decoder start token plus the generated ones.
        let position_limit = self.model.max_positions().saturating_sub(1);
        let max_new_tokens = match options.max_new_tokens {
            Some(n) if n > position_limit => {
                return Err(TranslateError::Settings(format!(
                    "max_new_tokens {n} exceeds the model's {position_limit} decoder positions"
                )))
            }
            Some(n) => n,
            None => self.defaults.max_length.saturating_sub(1).clamp(1, position_limit.max(1)),
        };
        let beams = options.beams.or(self.defaults.num_beams).unwrap_or(1);
        if beams == 0 {
            return Err(TranslateError::Settings("beams must be at least 1".into()));
        }
        if options.max_batch_rows == 0 {
            return Err(TranslateError::Settings("max_batch_rows must be at least 1".into()));
        }
        let strategy = match (options.sampling, beams) {
            (Some(Sampling { temperature, top_p, seed }), 1) => Strategy::Sample { temperature, top_p, seed },
            (Some(_), _) => return Err(TranslateError::Settings("sampling with beams > 1 is not supported".into())),
            (None, 1) => Strategy::Greedy,
            (None, num_beams) => Strategy::Beam {
                num_beams,
                length_penalty: options.length_penalty.or(self.defaults.length_penalty).unwrap_or(1.0),
                early_stopping: options.early_stopping,
            },
        };
        Ok(GenerationParams {
            strategy,
            max_new_tokens,
            min_new_tokens: options.min_new_tokens,
            eos_token_ids: vec![config.eos_token_id],
            repetition_penalty: 1.0,
        })
    }
}
