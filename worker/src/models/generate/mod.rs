//! The one decoding loop every model uses: greedy, beam search and sampling over a `DecodeSession` (a model
//! with its KV cache), mirroring transformers 4.46.3 `GenerationMixin._sample` / `_beam_search` so that token
//! ids match the reference exactly.
//!
//! Rows are independent: a finished row (or a finished beam group) is dropped from the session, which changes
//! nothing in the other rows' results but stops paying for it.

mod beam;
mod continuous;
mod sampling;

use candle_core::Tensor;

pub use beam::EarlyStopping;
pub use continuous::{Admission, ContinuousBatch, Ended, JoinSession};

/// A model mid-generation: it holds the KV caches of `rows()` sequences.
pub trait DecodeSession {
    /// Number of sequences currently held.
    fn rows(&self) -> usize;
    /// Feeds one new token per row and returns the logits of each row's last position, shape `(rows, vocab)`.
    /// The first call feeds each row's whole prompt; prompts may differ in length (the session pads them).
    fn forward(&mut self, new_tokens: &[Vec<u32>]) -> candle_core::Result<Tensor>;
    /// Keeps only these rows, in this order (a row may repeat: beams are forked this way).
    fn select_rows(&mut self, rows: &[usize]) -> candle_core::Result<()>;
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Greedy,
    Beam { num_beams: usize, length_penalty: f64, early_stopping: EarlyStopping },
    Sample { temperature: f64, top_p: f64, seed: u64 },
}

/// What every strategy shares.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub strategy: Strategy,
    /// Upper bound on generated tokens (the prompt not included), as transformers' `max_new_tokens`.
    pub max_new_tokens: usize,
    /// Tokens generated before an end token may be chosen (transformers' `min_new_tokens`).
    pub min_new_tokens: usize,
    /// Any of these ends a sequence.
    pub eos_token_ids: Vec<u32>,
    /// transformers' `repetition_penalty` (1.0 = off).
    pub repetition_penalty: f32,
}

/// One sequence to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRequest {
    /// Tokens already in the sequence (for an encoder-decoder: the decoder start token).
    pub prompt: Vec<u32>,
    /// Tokens forced at the first generated positions (NLLB's target language, transformers' `forced_bos_token_id`).
    pub forced: Vec<u32>,
}

/// One generated sequence: the prompt, the generated tokens and the end token if one was produced — exactly
/// what transformers' `generate` returns for that row alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Whether an end token was generated (otherwise `max_new_tokens` stopped it).
    pub finished: bool,
}

impl Generated {
    /// The generated tokens without the prompt.
    pub fn new_tokens(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("model forward pass failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("invalid generation settings: {0}")]
    Invalid(String),
}

/// Runs `params.strategy` for every request; `session` holds one row per request, in order.
pub fn generate(
    session: &mut dyn DecodeSession,
    requests: &[RowRequest],
    params: &GenerationParams,
) -> Result<Vec<Generated>, GenerateError> {
    validate(session, requests, params)?;
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    match &params.strategy {
        Strategy::Greedy => sampling::run(session, requests, params, None),
        Strategy::Sample { temperature, top_p, seed } => {
            let sampler = sampling::Sampler { temperature: *temperature, top_p: *top_p, seed: *seed };
            sampling::run(session, requests, params, Some(sampler))
        }
        Strategy::Beam { num_beams: 1, .. } => sampling::run(session, requests, params, None),
        Strategy::Beam { num_beams, length_penalty, early_stopping } => {
            let settings = beam::BeamSettings {
                num_beams: *num_beams,
                length_penalty: *length_penalty,
                early_stopping: *early_stopping,
            };
            beam::run(session, requests, params, &settings)
        }
    }
}

fn validate(
    session: &dyn DecodeSession,
    requests: &[RowRequest],
    params: &GenerationParams,
) -> Result<(), GenerateError> {
    if session.rows() != requests.len() {
        return Err(GenerateError::Invalid(format!(
            "session holds {} rows for {} requests",
            session.rows(),
            requests.len()
        )));
    }
    for request in requests {
        validate_row(request, params.max_new_tokens)?;
    }
    validate_params(params)
}

fn validate_row(request: &RowRequest, max_new_tokens: usize) -> Result<(), GenerateError> {
    if request.prompt.is_empty() {
        return Err(GenerateError::Invalid("every prompt needs at least one token".into()));
    }
    if max_new_tokens == 0 {
        return Err(GenerateError::Invalid("max_new_tokens must be at least 1".into()));
    }
    Ok(())
}

fn validate_params(params: &GenerationParams) -> Result<(), GenerateError> {
    let invalid = |m: String| Err(GenerateError::Invalid(m));
    if params.max_new_tokens == 0 {
        return invalid("max_new_tokens must be at least 1".into());
    }
    if params.repetition_penalty <= 0.0 || !params.repetition_penalty.is_finite() {
        return invalid(format!("repetition_penalty must be > 0, got {}", params.repetition_penalty));
    }
    match &params.strategy {
        Strategy::Beam { num_beams: 0, .. } => invalid("num_beams must be at least 1".into()),
        Strategy::Sample { temperature, .. } if !(*temperature > 0.0 && temperature.is_finite()) => {
            invalid(format!("temperature must be > 0, got {temperature}"))
        }
        Strategy::Sample { top_p, .. } if !(*top_p > 0.0 && *top_p <= 1.0) => {
            invalid(format!("top_p must be in (0, 1], got {top_p}"))
        }
        _ => Ok(()),
    }
}

/// Processing shared by every strategy, in transformers' order for the processors vislingo uses:
/// repetition penalty, min-new-tokens (end tokens banned), forced tokens.
/// `generated` is how many tokens this row has generated so far; `sequence` is the row's whole sequence.
fn process_scores(
    scores: &mut [f32],
    sequence: &[u32],
    generated: usize,
    request: &RowRequest,
    params: &GenerationParams,
) {
    if params.repetition_penalty != 1.0 {
        // RepetitionPenaltyLogitsProcessor: gather, then scatter, so a repeated id is penalised once.
        let mut seen = sequence.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for &id in &seen {
            if let Some(s) = scores.get_mut(id as usize) {
                *s = if *s < 0.0 { *s * params.repetition_penalty } else { *s / params.repetition_penalty };
            }
        }
    }
    if generated < params.min_new_tokens {
        for &eos in &params.eos_token_ids {
            if let Some(s) = scores.get_mut(eos as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if let Some(&forced) = request.forced.get(generated) {
        // ForcedBOSTokenLogitsProcessor: everything -inf, the forced token 0.
        scores.fill(f32::NEG_INFINITY);
        if let Some(s) = scores.get_mut(forced as usize) {
            *s = 0.0;
        }
    }
}

/// `log_softmax` of one row in f32, as torch computes it (max-shifted).
fn log_softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = *x - max - log_sum;
    }
}

/// Index of the first maximum (torch.argmax picks the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

fn logits_rows(logits: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()
}

#[cfg(test)]
mod tests;
