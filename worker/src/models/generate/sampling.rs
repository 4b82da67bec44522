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
    let mut sequences: Vec<Vec<u32>> = requests.iter().map(|r| r.prompt.clone()).collect();
    let mut finished = vec![false; requests.len()];
    // Each row gets its own stream from the same seed, so a row's sample does not depend on its batch.
    let mut rngs: Vec<StdRng> = requests.iter().map(|_| StdRng::seed_from_u64(sampler.map_or(0, |s| s.seed))).collect();
    // Request index of each row the session holds.
    let mut active: Vec<usize> = (0..requests.len()).collect();
    let mut inputs: Vec<Vec<u32>> = sequences.clone();

    let mut banned_ends: Option<Tensor> = None;

    for step in 0..params.max_new_tokens {
        let logits = session.forward(&inputs)?;
        let mut chosen = if sampler.is_none() && params.repetition_penalty == 1.0 && !logits.device().is_cpu() {
            Chosen::Tokens(device_greedy(&logits, step, params, &mut banned_ends)?)
        } else {
            Chosen::Scores(logits_rows(&logits)?)
        };
        let mut keep = Vec::with_capacity(active.len());
        for (row, &request) in active.iter().enumerate() {
            let token = match &mut chosen {
                // Forced tokens win as ForcedBOSTokenLogitsProcessor makes them (every other score -inf).
                Chosen::Tokens(tokens) => requests[request].forced.get(step).copied().unwrap_or(tokens[row]),
                Chosen::Scores(rows) => {
                    let mut scores = std::mem::take(&mut rows[row]);
                    process_scores(&mut scores, &sequences[request], step, &requests[request], params);
                    match &sampler {
                        None => argmax(&scores) as u32,
                        Some(sampler) => sampler.sample(&mut scores, &mut rngs[request]) as u32,
                    }
                }
            };
            sequences[request].push(token);
            if params.eos_token_ids.contains(&token) {
                finished[request] = true;
            } else {
                keep.push(row);
            }
        }
        if keep.is_empty() || step + 1 == params.max_new_tokens {
            break;
        }
        if keep.len() != active.len() {
            session.select_rows(&keep)?;
            active = keep.iter().map(|&row| active[row]).collect();
        }
        inputs = active.iter().map(|&request| vec![*sequences[request].last().expect("non-empty")]).collect();
    }

    Ok(sequences
        .into_iter()
        .zip(requests)
        .zip(finished)
        .map(|((tokens, request), finished)| Generated { tokens, prompt_len: request.prompt.len(), finished })
        .collect())
}

/// What a step chose: token ids picked on the device, or every row's scores copied to the host.
enum Chosen {
    Tokens(Vec<u32>),
    Scores(Vec<Vec<f32>>),
}

/// Greedy choice on the logits' device (a GPU): the end tokens banned while `min_new_tokens` holds, then the
/// arg-max of each row, so only one id per row crosses to the host instead of the whole vocabulary. Equals the
/// host path (`process_scores` + `argmax`) for greedy decoding without a repetition penalty.
fn device_greedy(
    logits: &Tensor,
    step: usize,
    params: &GenerationParams,
    banned_ends: &mut Option<Tensor>,
) -> candle_core::Result<Vec<u32>> {
    let logits = logits.to_dtype(DType::F32)?;
    let logits = if step < params.min_new_tokens && !params.eos_token_ids.is_empty() {
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
        logits.broadcast_add(banned_ends.as_ref().expect("set above"))?
    } else {
        logits
    };
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
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
            let on_device = device_greedy(&logits, step, &params, &mut banned).unwrap();
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
