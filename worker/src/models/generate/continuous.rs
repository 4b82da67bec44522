//! Continuous batching: sequences join a running decode batch while others are mid-answer, and leave it as soon
//! as they end, so the model never waits on one long answer. Each row decodes exactly as it would alone (greedy
//! or sampling; beam search keeps to [`super::generate`]).

use super::sampling::{LiveRow, RowDecoder, Sampler};
use super::{validate_row, DecodeSession, GenerateError, Generated, GenerationParams, RowRequest, Strategy};

/// A session that takes in the rows of another session of its model (which has run its prefill) while it
/// decodes: the model lines their caches up with its own.
pub trait JoinSession: DecodeSession + Sized {
    /// Appends the rows of `other` after this session's rows.
    fn join(&mut self, other: Self) -> candle_core::Result<()>;
}

/// One sequence to start, with its own limit on generated tokens (tasks differ in length).
#[derive(Debug, Clone)]
pub struct Admission<T> {
    pub tag: T,
    pub request: RowRequest,
    pub max_new_tokens: usize,
}

/// A sequence that ended: the caller's tag and what `generate` would have returned for it alone.
#[derive(Debug, Clone)]
pub struct Ended<T> {
    pub tag: T,
    pub generated: Generated,
}

/// The decode batch of a worker: a session holding every live row, to which new rows are admitted at any step.
pub struct ContinuousBatch<S, T> {
    session: Option<S>,
    rows: Vec<LiveRow<T>>,
    params: GenerationParams,
    sampler: Option<Sampler>,
}

impl<S: JoinSession, T> ContinuousBatch<S, T> {
    /// `params.max_new_tokens` is not used: each admission carries its own limit.
    pub fn new(params: GenerationParams) -> Result<Self, GenerateError> {
        let sampler = match &params.strategy {
            Strategy::Greedy | Strategy::Beam { num_beams: 1, .. } => None,
            Strategy::Sample { temperature, top_p, seed } => {
                Some(Sampler { temperature: *temperature, top_p: *top_p, seed: *seed })
            }
            Strategy::Beam { .. } => {
                return Err(GenerateError::Invalid(
                    "continuous batching decodes greedily or by sampling, not by beam search".into(),
                ))
            }
        };
        super::validate_params(&GenerationParams { max_new_tokens: 1, ..params.clone() })?;
        Ok(ContinuousBatch { session: None, rows: Vec::new(), params, sampler })
    }

    /// Rows being decoded.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Runs the prefill of `session` (one row per admission, in order, not yet fed), chooses each row's first
    /// token and joins the rows that go on to the batch. Returns the rows that ended at their first token.
    pub fn admit(&mut self, mut session: S, admissions: Vec<Admission<T>>) -> Result<Vec<Ended<T>>, GenerateError> {
        if session.rows() != admissions.len() {
            return Err(GenerateError::Invalid(format!(
                "session holds {} rows for {} admissions",
                session.rows(),
                admissions.len()
            )));
        }
        for admission in &admissions {
            validate_row(&admission.request, admission.max_new_tokens)?;
        }
        if admissions.is_empty() {
            return Ok(Vec::new());
        }
        let prompts: Vec<Vec<u32>> = admissions.iter().map(|a| a.request.prompt.clone()).collect();
        let mut rows: Vec<LiveRow<T>> =
            admissions.into_iter().map(|a| LiveRow::new(a.tag, a.request, a.max_new_tokens, self.sampler)).collect();
        let ended = RowDecoder::new(&self.params, self.sampler).advance(&mut session, &mut rows, &prompts)?;
        if !rows.is_empty() {
            match self.session.as_mut() {
                Some(running) => running.join(session)?,
                None => self.session = Some(session),
            }
            self.rows.extend(rows);
        }
        Ok(ended.into_iter().map(|row| Ended { tag: row.tag, generated: row.generated }).collect())
    }

    /// One decode step of every live row; returns the rows that ended.
    pub fn step(&mut self) -> Result<Vec<Ended<T>>, GenerateError> {
        let Some(session) = self.session.as_mut() else { return Ok(Vec::new()) };
        let inputs: Vec<Vec<u32>> = self.rows.iter().map(LiveRow::next_input).collect();
        let ended = RowDecoder::new(&self.params, self.sampler).advance(session, &mut self.rows, &inputs)?;
        if self.rows.is_empty() {
            // Frees the caches: the next admission starts a fresh session.
            self.session = None;
        }
        Ok(ended.into_iter().map(|row| Ended { tag: row.tag, generated: row.generated }).collect())
    }

    /// The live rows' tags, in batch order.
    pub fn tags(&self) -> impl Iterator<Item = &T> {
        self.rows.iter().map(|row| &row.tag)
    }
}
