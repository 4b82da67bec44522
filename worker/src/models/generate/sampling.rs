//! Greedy decoding and multinomial sampling (temperature, top-p), one token per row per step, as
//! transformers' `_sample`.

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

    for step in 0..params.max_new_tokens {
        let logits = logits_rows(&session.forward(&inputs)?)?;
        let mut keep = Vec::with_capacity(active.len());
        for (row, (mut scores, &request)) in logits.into_iter().zip(&active).enumerate() {
            process_scores(&mut scores, &sequences[request], step, &requests[request], params);
            let token = match &sampler {
                None => argmax(&scores),
                Some(sampler) => sampler.sample(&mut scores, &mut rngs[request]),
            } as u32;
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

#[cfg(test)]
mod tests {
    use super::*;

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
