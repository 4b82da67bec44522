//! Beam search as transformers 4.46.3 `_beam_search` + `BeamSearchScorer` + `BeamHypotheses`
//! (generation/utils.py, generation/beam_search.py): log-softmax scores, top `2 * num_beams` candidates,
//! finished hypotheses scored by `sum_logprobs / generated_len ** length_penalty`, the three early-stopping
//! rules, and the final pick of the best hypothesis. Beam groups that are done leave the session.

use std::str::FromStr;

use super::{log_softmax_in_place, logits_rows, process_scores, DecodeSession, GenerateError, Generated};
use super::{GenerationParams, RowRequest};

/// transformers' `early_stopping`: `true` stops a group once it has `num_beams` finished hypotheses,
/// `false` (the default) when the best running beam cannot beat the worst kept hypothesis at the current
/// length, `never` when it cannot at any length up to the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    True,
    #[default]
    False,
    Never,
}

impl FromStr for EarlyStopping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "true" => Ok(EarlyStopping::True),
            "false" => Ok(EarlyStopping::False),
            "never" => Ok(EarlyStopping::Never),
            other => Err(format!("early stopping must be true, false or never, not `{other}`")),
        }
    }
}

pub(super) struct BeamSettings {
    pub num_beams: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
}

/// A kept hypothesis: its score, its tokens (without the end token), and whether it ended with one.
struct Hypothesis {
    score: f64,
    tokens: Vec<u32>,
    ended: bool,
}

/// The `num_beams` best hypotheses of one input (transformers' `BeamHypotheses`).
struct Hypotheses<'a> {
    settings: &'a BeamSettings,
    max_length: usize,
    beams: Vec<Hypothesis>,
    worst_score: f64,
}

impl<'a> Hypotheses<'a> {
    fn new(settings: &'a BeamSettings, max_length: usize) -> Self {
        Hypotheses { settings, max_length, beams: Vec::new(), worst_score: 1e9 }
    }

    fn add(&mut self, tokens: Vec<u32>, sum_logprobs: f64, generated_len: usize, ended: bool) {
        let score = sum_logprobs / (generated_len as f64).powf(self.settings.length_penalty);
        if self.beams.len() < self.settings.num_beams || score > self.worst_score {
            self.beams.push(Hypothesis { score, tokens, ended });
            if self.beams.len() > self.settings.num_beams {
                // sorted([(s, idx) ...]): the lowest score goes, ties broken by the lowest index.
                let mut ranked: Vec<(f64, usize)> = self.beams.iter().enumerate().map(|(i, h)| (h.score, i)).collect();
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(ranked[0].1);
                self.worst_score = ranked[1].0;
            } else {
                self.worst_score = self.worst_score.min(score);
            }
        }
    }

    /// `generated` counts the tokens the running beams hold after this step (transformers' `cur_len -
    /// decoder_prompt_len`); `max_length` counts generated tokens too.
    fn is_done(&self, best_sum_logprobs: f64, generated: usize) -> bool {
        if self.beams.len() < self.settings.num_beams {
            return false;
        }
        let penalty = self.settings.length_penalty;
        let highest_attainable = match self.settings.early_stopping {
            EarlyStopping::True => return true,
            EarlyStopping::False => best_sum_logprobs / (generated as f64).powf(penalty),
            EarlyStopping::Never if penalty > 0.0 => best_sum_logprobs / (self.max_length as f64).powf(penalty),
            EarlyStopping::Never => best_sum_logprobs / (generated as f64).powf(penalty),
        };
        self.worst_score >= highest_attainable
    }

    /// The best hypothesis; on equal scores the one added last, as `sorted(...)` then `pop()`.
    fn best(mut self) -> Hypothesis {
        let mut best = 0;
        for (i, h) in self.beams.iter().enumerate() {
            if h.score >= self.beams[best].score {
                best = i;
            }
        }
        self.beams.swap_remove(best)
    }
}

pub(super) fn run(
    session: &mut dyn DecodeSession,
    requests: &[RowRequest],
    params: &GenerationParams,
    settings: &BeamSettings,
) -> Result<Vec<Generated>, GenerateError> {
    let beams = settings.num_beams;
    // transformers measures lengths from the (padded) prompt, so only generated tokens count.
    let max_length = params.max_new_tokens;
    let first_eos =
        *params.eos_token_ids.first().ok_or_else(|| GenerateError::Invalid("beam search needs an end token".into()))?;

    // Expand every input to `beams` rows (repeat_interleave), first beam scored 0, the others -1e9.
    let expanded: Vec<usize> = (0..requests.len()).flat_map(|i| std::iter::repeat_n(i, beams)).collect();
    session.select_rows(&expanded)?;
    let mut sequences: Vec<Vec<u32>> = expanded.iter().map(|&i| requests[i].prompt.clone()).collect();
    let mut beam_scores: Vec<f32> = (0..sequences.len()).map(|r| if r % beams == 0 { 0.0 } else { -1e9 }).collect();
    let mut hypotheses: Vec<Hypotheses> = requests.iter().map(|_| Hypotheses::new(settings, max_length)).collect();
    let mut done = vec![false; requests.len()];
    // Inputs whose beams the session holds, in order; each has `beams` consecutive rows.
    let mut active: Vec<usize> = (0..requests.len()).collect();
    let mut inputs: Vec<Vec<u32>> = sequences.clone();
    let mut step = 0;

    loop {
        let logits = logits_rows(&session.forward(&inputs)?)?;
        let vocab = logits.first().map_or(0, Vec::len);
        let mut next_rows = Vec::new(); // session rows to keep, in the new order
        let mut next_sequences = Vec::new();
        let mut next_scores = Vec::new();
        let mut still_active = Vec::new();

        for (slot, &input) in active.iter().enumerate() {
            // Candidate scores of all beams of this input, flattened as (beam * vocab + token).
            let mut flat = Vec::with_capacity(beams * vocab);
            for beam in 0..beams {
                let row = slot * beams + beam;
                let mut scores = logits[row].clone();
                log_softmax_in_place(&mut scores);
                process_scores(&mut scores, &sequences[row], step, &requests[input], params);
                let running = beam_scores[row];
                flat.extend(scores.iter().map(|&s| s + running));
            }
            let candidates = top_k(&flat, 2 * beams);

            let mut chosen = Vec::with_capacity(beams);
            for (rank, &index) in candidates.iter().enumerate() {
                let (beam, token) = (index / vocab, (index % vocab) as u32);
                let row = slot * beams + beam;
                if params.eos_token_ids.contains(&token) {
                    if rank >= beams {
                        continue;
                    }
                    hypotheses[input].add(sequences[row].clone(), flat[index] as f64, step + 1, true);
                } else {
                    chosen.push((row, token, flat[index]));
                    if chosen.len() == beams {
                        break;
                    }
                }
            }
            if chosen.len() < beams {
                return Err(GenerateError::Invalid(format!(
                    "beam search found fewer than {beams} continuations that are not end tokens"
                )));
            }
            let best_candidate = flat[candidates[0]] as f64;
            done[input] = done[input] || hypotheses[input].is_done(best_candidate, step + 1);
            if done[input] {
                continue;
            }
            still_active.push(input);
            for (row, token, score) in chosen {
                let mut sequence = sequences[row].clone();
                sequence.push(token);
                next_rows.push(row);
                next_sequences.push(sequence);
                next_scores.push(score);
            }
        }

        step += 1;
        if still_active.is_empty() || step >= max_length {
            // Unfinished beams of inputs not done join their hypotheses (BeamSearchScorer.finalize).
            for (slot, &input) in still_active.iter().enumerate() {
                for beam in 0..beams {
                    let i = slot * beams + beam;
                    let generated_len = next_sequences[i].len() - requests[input].prompt.len();
                    let tokens = std::mem::take(&mut next_sequences[i]);
                    hypotheses[input].add(tokens, next_scores[i] as f64, generated_len, false);
                }
            }
            break;
        }
        session.select_rows(&next_rows)?;
        inputs = next_sequences.iter().map(|s| vec![*s.last().expect("non-empty")]).collect();
        sequences = next_sequences;
        beam_scores = next_scores;
        active = still_active;
    }

    Ok(hypotheses
        .into_iter()
        .zip(requests)
        .map(|(h, request)| {
            let best = h.best();
            let mut tokens = best.tokens;
            if best.ended {
                tokens.push(first_eos);
            }
            Generated { tokens, prompt_len: request.prompt.len(), finished: best.ended }
        })
        .collect())
}

/// Indices of the `k` largest values, largest first; equal values in index order.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    let mut indices: Vec<usize> = (0..values.len()).collect();
    let by_score_desc = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k < indices.len() {
        indices.select_nth_unstable_by(k, by_score_desc);
        indices.truncate(k);
    }
    indices.sort_by(by_score_desc);
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, -1.0, 0.3], 3), vec![1, 2, 4]);
    }

    #[test]
    fn hypotheses_keep_the_best_num_beams() {
        let settings = BeamSettings { num_beams: 2, length_penalty: 1.0, early_stopping: EarlyStopping::False };
        let mut h = Hypotheses::new(&settings, 10);
        h.add(vec![1], -3.0, 1, true);
        h.add(vec![2], -1.0, 1, true);
        h.add(vec![3], -2.0, 1, true);
        let scores: Vec<f64> = h.beams.iter().map(|b| b.score).collect();
        assert_eq!(scores, vec![-1.0, -2.0]);
        assert_eq!(h.worst_score, -2.0);
        assert_eq!(h.best().tokens, vec![2]);
    }

    #[test]
    fn early_stopping_parses_transformers_values() {
        assert_eq!("never".parse::<EarlyStopping>(), Ok(EarlyStopping::Never));
        assert_eq!("True".parse::<EarlyStopping>(), Ok(EarlyStopping::True));
        assert!("sometimes".parse::<EarlyStopping>().is_err());
    }
}
