//! Greedy decoding and multinomial sampling (temperature, top-p), one token per row per step, as
//! transformers' `_sample`.

use candle_core::{DType, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    argmax, logits_rows, process_scores, DecodeSession, GenerateError, Generated, GenerationParams, RowRequest,
};

/// Sampling settings; `None` in `run` means greedy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sampler {
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

impl Sampler {
    /// TemperatureLogitsWarper, TopPLogitsWarper, then a draw from the softmax.
    fn sample(&self, scores: &mut [f32], rng: &mut StdRng) -> usize {
        let temperature = self.temperature as f32;
        for s in scores.iter_mut() {
            *s /= temperature;
        }
        if self.top_p < 1.0 {
            apply_top_p(scores, self.top_p);
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = scores.iter().map(|&s| ((s - max) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut draw = rng.random::<f64>() * total;
        let mut last_positive = argmax(scores);
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                last_positive = i;
                if draw < w {
                    return i;
                }
                draw -= w;
            }
        }
        last_positive
    }
}

/// Keeps the smallest set of most likely tokens whose probability reaches `top_p` (at least one), as
/// TopPLogitsWarper: sort ascending, drop tokens whose cumulative probability is <= 1 - top_p.
fn apply_top_p(scores: &mut [f32], top_p: f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let max = scores[*order.last().expect("non-empty vocabulary")];
    let exps: Vec<f64> = order.iter().map(|&i| ((scores[i] - max) as f64).exp()).collect();
    let total: f64 = exps.iter().sum();
    let mut cumulative = 0.0;
    let last = order.len() - 1;
    for (rank, &index) in order.iter().enumerate() {
        cumulative += exps[rank] / total;
        if cumulative <= 1.0 - top_p && rank != last {
            scores[index] = f32::NEG_INFINITY;
        }
    }
}

pub(super) fn run(
    session: &mut dyn DecodeSession,
    requests: &[RowRequest],
    params: &GenerationParams,
    sampler: Option<Sampler>,
) -> Result<Vec<Generated>, GenerateError> {
    let mut rows: Vec<LiveRow<usize>> = requests
        .iter()
        .enumerate()
        .map(|(index, request)| LiveRow::new(index, request.clone(), params.max_new_tokens, sampler))
        .collect();
    let mut done: Vec<Option<Generated>> = vec![None; requests.len()];
    let mut decoder = RowDecoder::new(params, sampler);
    let prompts: Vec<Vec<u32>> = requests.iter().map(|r| r.prompt.clone()).collect();
    let mut finished = decoder.advance(session, &mut rows, &prompts)?;
    loop {
        for row in finished {
            done[row.tag] = Some(row.generated);
        }
        if rows.is_empty() {
            break;
        }
        let inputs = rows.iter().map(LiveRow::next_input).collect::<Vec<_>>();
        finished = decoder.advance(session, &mut rows, &inputs)?;
    }
    Ok(done.into_iter().map(|g| g.expect("every row ends")).collect())
}

/// A sequence being decoded: its request, its tokens so far and its own random stream.
pub(super) struct LiveRow<T> {
    pub tag: T,
    request: RowRequest,
    sequence: Vec<u32>,
    max_new_tokens: usize,
    rng: StdRng,
}

impl<T> LiveRow<T> {
    /// Each row gets its own stream from the same seed, so a row's sample does not depend on its batch.
    pub fn new(tag: T, request: RowRequest, max_new_tokens: usize, sampler: Option<Sampler>) -> LiveRow<T> {
        let sequence = request.prompt.clone();
        let rng = StdRng::seed_from_u64(sampler.map_or(0, |s| s.seed));
        LiveRow { tag, request, sequence, max_new_tokens, rng }
    }

    fn generated(&self) -> usize {
        self.sequence.len() - self.request.prompt.len()
    }

    /// The token the next step feeds: the last one chosen.
    pub fn next_input(&self) -> Vec<u32> {
        vec![*self.sequence.last().expect("a row holds at least its prompt")]
    }
}

/// A row that ended, with its sequence as `generate` returns it.
pub(super) struct FinishedRow<T> {
    pub tag: T,
    pub generated: Generated,
}

/// Chooses each row's next token from a forward pass and retires the rows that end.
pub(super) struct RowDecoder<'p> {
    params: &'p GenerationParams,
    sampler: Option<Sampler>,
    banned_ends: Option<Tensor>,
}

impl<'p> RowDecoder<'p> {
    pub fn new(params: &'p GenerationParams, sampler: Option<Sampler>) -> RowDecoder<'p> {
        RowDecoder { params, sampler, banned_ends: None }
    }

    /// Feeds `inputs` (one entry per row of `session`, aligned with `rows`), appends each row's next token and
    /// removes the rows that produced an end token or reached their `max_new_tokens`, from `rows` and from the
    /// session, returning them.
    pub fn advance<T>(
        &mut self,
        session: &mut dyn DecodeSession,
        rows: &mut Vec<LiveRow<T>>,
        inputs: &[Vec<u32>],
    ) -> Result<Vec<FinishedRow<T>>, GenerateError> {
        let logits = session.forward(inputs)?;
        let params = self.params;
        let on_device = self.sampler.is_none() && params.repetition_penalty == 1.0 && !logits.device().is_cpu();
        let mut chosen = if on_device {
            let banned: Vec<bool> = rows.iter().map(|row| row.generated() < params.min_new_tokens).collect();
            Chosen::Tokens(device_greedy(&logits, &banned, params, &mut self.banned_ends)?)
        } else {
            Chosen::Scores(logits_rows(&logits)?)
        };
        let mut keep = Vec::with_capacity(rows.len());
        let mut ended = Vec::new();
        for (index, row) in rows.iter_mut().enumerate() {
            let step = row.generated();
            let token = match &mut chosen {
                // Forced tokens win as ForcedBOSTokenLogitsProcessor makes them (every other score -inf).
                Chosen::Tokens(tokens) => row.request.forced.get(step).copied().unwrap_or(tokens[index]),
                Chosen::Scores(scores) => {
                    let mut scores = std::mem::take(&mut scores[index]);
                    process_scores(&mut scores, &row.sequence, step, &row.request, params);
                    match &self.sampler {
                        None => argmax(&scores) as u32,
                        Some(sampler) => sampler.sample(&mut scores, &mut row.rng) as u32,
                    }
                }
            };
            row.sequence.push(token);
            let finished = params.eos_token_ids.contains(&token);
            if finished || row.generated() >= row.max_new_tokens {
                ended.push((index, finished));
            } else {
                keep.push(index);
            }
        }
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        if !keep.is_empty() {
            session.select_rows(&keep)?;
        }
        let mut out = Vec::with_capacity(ended.len());
        for &(index, finished) in ended.iter().rev() {
            let row = rows.remove(index);
            let prompt_len = row.request.prompt.len();
            out.push(FinishedRow { tag: row.tag, generated: Generated { tokens: row.sequence, prompt_len, finished } });
        }
        out.reverse();
        Ok(out)
    }
}

/// What a step chose: token ids picked on the device, or every row's scores copied to the host.
enum Chosen {
    Tokens(Vec<u32>),
    Scores(Vec<Vec<f32>>),
}

/// Greedy choice on the logits' device (a GPU): end tokens banned in the rows marked `banned` (those still
/// under `min_new_tokens`), then the arg-max of each row, so only one id per row crosses to the host instead of
/// the whole vocabulary. Equals the host path (`process_scores` + `argmax`) for greedy decoding without a
/// repetition penalty.
fn device_greedy(
    logits: &Tensor,
    banned: &[bool],
    params: &GenerationParams,
    banned_ends: &mut Option<Tensor>,
) -> candle_core::Result<Vec<u32>> {
    let logits = logits.to_dtype(DType::F32)?;
    let free = || logits.argmax(D::Minus1)?.to_vec1::<u32>();
    if params.eos_token_ids.is_empty() || !banned.contains(&true) {
        return free();
    }
    if banned_ends.is_none() {
        let vocab = logits.dim(D::Minus1)?;
        let mut ban = vec![0f32; vocab];
        for &eos in &params.eos_token_ids {
            if let Some(slot) = ban.get_mut(eos as usize) {
                *slot = f32::NEG_INFINITY;
            }
        }
        *banned_ends = Some(Tensor::from_vec(ban, vocab, logits.device())?);
    }
    let with_ban =
        logits.broadcast_add(banned_ends.as_ref().expect("set above"))?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    if banned.iter().all(|&b| b) {
        return Ok(with_ban);
    }
    let without = free()?;
    Ok(banned.iter().zip(with_ban.into_iter().zip(without)).map(|(&b, (w, f))| if b { w } else { f }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_greedy_equals_the_host_path_with_end_tokens_banned_then_allowed() {
        let vocab = 50;
        let mut data: Vec<f32> = (0..3 * vocab).map(|i| ((i * 7919) % 101) as f32 / 10.0).collect();
        // Row 0's best token is an end token (7); row 2's is 3.
        data[7] = 100.0;
        data[2 * vocab + 3] = 50.0;
        let logits = Tensor::from_vec(data.clone(), (3, vocab), &candle_core::Device::Cpu).unwrap();
        let params = GenerationParams {
            strategy: super::super::Strategy::Greedy,
            max_new_tokens: 4,
            min_new_tokens: 2,
            eos_token_ids: vec![7, 9],
            repetition_penalty: 1.0,
        };
        let request = RowRequest { prompt: vec![1], forced: Vec::new() };
        for step in [0, 1, 2, 3] {
            let mut banned = None;
            let on_device = device_greedy(&logits, &[step < params.min_new_tokens; 3], &params, &mut banned).unwrap();
            let on_host: Vec<u32> = data
                .chunks(vocab)
                .map(|row| {
                    let mut scores = row.to_vec();
                    process_scores(&mut scores, &[1], step, &request, &params);
                    argmax(&scores) as u32
                })
                .collect();
            assert_eq!(on_device, on_host, "step {step}");
            assert_eq!(on_device[0] == 7, step >= 2, "the end token is banned only before min_new_tokens");
            assert_eq!(on_device[2], 3);
        }
    }

    #[test]
    fn device_greedy_bans_end_tokens_only_in_the_rows_still_under_min_new_tokens() {
        let vocab = 10;
        let mut data = vec![0f32; 2 * vocab];
        // Both rows prefer the end token 7, then token 3.
        for row in 0..2 {
            data[row * vocab + 7] = 9.0;
            data[row * vocab + 3] = 5.0;
        }
        let logits = Tensor::from_vec(data, (2, vocab), &candle_core::Device::Cpu).unwrap();
        let params = GenerationParams {
            strategy: super::super::Strategy::Greedy,
            max_new_tokens: 8,
            min_new_tokens: 4,
            eos_token_ids: vec![7],
            repetition_penalty: 1.0,
        };
        let mut banned = None;
        assert_eq!(device_greedy(&logits, &[true, false], &params, &mut banned).unwrap(), vec![3, 7]);
        assert_eq!(device_greedy(&logits, &[false, true], &params, &mut banned).unwrap(), vec![7, 3]);
        assert_eq!(device_greedy(&logits, &[false, false], &params, &mut banned).unwrap(), vec![7, 7]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities ~ [0.5, 0.3, 0.2]
        let mut scores = vec![0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        apply_top_p(&mut scores, 0.7);
        assert!(scores[0].is_finite() && scores[1].is_finite());
        assert_eq!(scores[2], f32::NEG_INFINITY);
    }

    #[test]
    fn top_p_always_keeps_the_most_likely_token() {
        let mut scores = vec![1.0f32, 5.0, 2.0];
        apply_top_p(&mut scores, 1e-9);
        assert_eq!(scores.iter().filter(|s| s.is_finite()).count(), 1);
        assert!(scores[1].is_finite());
    }
}
