//! Decoding-loop tests on a toy session whose logits are a pure function of each row's history, so that
//! batching, row selection and the strategies can be checked without a model.

use candle_core::{Device, Tensor};

use super::*;

const VOCAB: usize = 7;
const EOS: u32 = 2;

/// Logits of a row depend only on its tokens, like a real decoder with a KV cache.
struct ToySession {
    histories: Vec<Vec<u32>>,
    eos_bias: f32,
}

impl ToySession {
    fn new(rows: usize, eos_bias: f32) -> Self {
        ToySession { histories: vec![Vec::new(); rows], eos_bias }
    }

    fn logits_of(&self, history: &[u32]) -> Vec<f32> {
        let mut h: u64 = 1469598103934665603;
        for &t in history {
            h = (h ^ t as u64).wrapping_mul(1099511628211);
        }
        (0..VOCAB)
            .map(|v| {
                let x = h
                    .wrapping_add((v as u64).wrapping_mul(0x9E3779B97F4A7C15))
                    .rotate_left(17)
                    .wrapping_mul(0xBF58476D1CE4E5B9);
                let base = (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0;
                if v as u32 == EOS {
                    base + self.eos_bias * history.len() as f32
                } else {
                    base
                }
            })
            .collect()
    }
}

impl DecodeSession for ToySession {
    fn rows(&self) -> usize {
        self.histories.len()
    }
    fn forward(&mut self, new_tokens: &[Vec<u32>]) -> candle_core::Result<Tensor> {
        assert_eq!(new_tokens.len(), self.histories.len(), "one input per held row");
        let mut data = Vec::new();
        for (history, new) in self.histories.iter_mut().zip(new_tokens) {
            history.extend(new);
        }
        for history in &self.histories {
            data.extend(self.logits_of(history));
        }
        Tensor::from_vec(data, (self.histories.len(), VOCAB), &Device::Cpu)
    }
    fn select_rows(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        self.histories = rows.iter().map(|&r| self.histories[r].clone()).collect();
        Ok(())
    }
}

fn params(strategy: Strategy) -> GenerationParams {
    GenerationParams {
        strategy,
        max_new_tokens: 12,
        min_new_tokens: 0,
        eos_token_ids: vec![EOS],
        repetition_penalty: 1.0,
    }
}

fn requests() -> Vec<RowRequest> {
    vec![
        RowRequest { prompt: vec![2], forced: vec![5] },
        RowRequest { prompt: vec![2], forced: vec![6] },
        RowRequest { prompt: vec![2], forced: vec![] },
        RowRequest { prompt: vec![2], forced: vec![4] },
    ]
}

fn run(requests: &[RowRequest], p: &GenerationParams, eos_bias: f32) -> Vec<Generated> {
    let mut session = ToySession::new(requests.len(), eos_bias);
    generate(&mut session, requests, p).unwrap()
}

fn strategies() -> Vec<Strategy> {
    vec![
        Strategy::Greedy,
        Strategy::Beam { num_beams: 3, length_penalty: 1.0, early_stopping: EarlyStopping::False },
        Strategy::Beam { num_beams: 2, length_penalty: 0.5, early_stopping: EarlyStopping::True },
        Strategy::Beam { num_beams: 4, length_penalty: 2.0, early_stopping: EarlyStopping::Never },
        Strategy::Sample { temperature: 0.8, top_p: 0.9, seed: 7 },
    ]
}

#[test]
fn a_batch_gives_the_same_sequences_as_its_rows_one_at_a_time() {
    for strategy in strategies() {
        let p = params(strategy.clone());
        let batched = run(&requests(), &p, 0.15);
        for (request, expected) in requests().iter().zip(&batched) {
            let alone = run(std::slice::from_ref(request), &p, 0.15);
            assert_eq!(&alone[0], expected, "{strategy:?}");
        }
    }
}

#[test]
fn forced_tokens_come_first_and_sequences_end_at_eos_or_the_limit() {
    for strategy in strategies() {
        let p = params(strategy.clone());
        let out = run(&requests(), &p, 0.15);
        for (request, generated) in requests().iter().zip(&out) {
            assert_eq!(generated.tokens[0], 2);
            if let Some(&forced) = request.forced.first() {
                assert_eq!(generated.tokens[1], forced, "{strategy:?}");
            }
            let new = generated.new_tokens();
            assert!(new.len() <= p.max_new_tokens);
            assert_eq!(generated.finished, new.last() == Some(&EOS), "{strategy:?}");
            assert!(!new[..new.len() - 1].contains(&EOS), "{strategy:?}: end token mid-sequence");
            if !generated.finished {
                assert_eq!(new.len(), p.max_new_tokens);
            }
        }
    }
}

#[test]
fn min_new_tokens_delays_the_end_token() {
    let mut p = params(Strategy::Greedy);
    let eager = run(&requests(), &p, 5.0);
    assert!(eager.iter().any(|g| g.finished && g.new_tokens().len() < 4), "the toy model must end early");
    p.min_new_tokens = 6;
    for g in run(&requests(), &p, 5.0) {
        assert!(g.new_tokens().len() >= 6 || !g.finished);
        assert!(!g.new_tokens()[..6].contains(&EOS));
    }
}

#[test]
fn greedy_picks_the_argmax_of_processed_logits() {
    let p = params(Strategy::Greedy);
    let request = RowRequest { prompt: vec![2], forced: vec![] };
    let out = run(std::slice::from_ref(&request), &p, 0.0);
    let toy = ToySession::new(1, 0.0);
    let mut history = vec![2];
    for &token in out[0].new_tokens() {
        let logits = toy.logits_of(&history);
        assert_eq!(token as usize, argmax(&logits));
        history.push(token);
    }
}

#[test]
fn one_beam_is_greedy() {
    let greedy = run(&requests(), &params(Strategy::Greedy), 0.15);
    let beam1 = run(
        &requests(),
        &params(Strategy::Beam { num_beams: 1, length_penalty: 1.0, early_stopping: EarlyStopping::False }),
        0.15,
    );
    assert_eq!(greedy, beam1);
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_varies_across_seeds() {
    let sample = |seed| run(&requests(), &params(Strategy::Sample { temperature: 1.5, top_p: 1.0, seed }), 0.0);
    assert_eq!(sample(1), sample(1));
    let differs = (2..10).any(|seed| sample(seed) != sample(1));
    assert!(differs, "different seeds should give some different samples");
}

#[test]
fn repetition_penalty_discourages_repeats() {
    let mut p = params(Strategy::Greedy);
    p.max_new_tokens = 30;
    let request = RowRequest { prompt: vec![2], forced: vec![] };
    let distinct = |g: &Generated| {
        let mut t = g.new_tokens().to_vec();
        t.sort();
        t.dedup();
        t.len()
    };
    let plain = run(std::slice::from_ref(&request), &p, -1.0);
    p.repetition_penalty = 50.0;
    let penalised = run(std::slice::from_ref(&request), &p, -1.0);
    assert!(distinct(&penalised[0]) >= distinct(&plain[0]));
    assert_ne!(plain, penalised);
}

#[test]
fn invalid_settings_are_refused() {
    let mut session = ToySession::new(1, 0.0);
    let request = [RowRequest { prompt: vec![2], forced: vec![] }];
    let mut p = params(Strategy::Sample { temperature: 0.0, top_p: 0.9, seed: 1 });
    assert!(matches!(generate(&mut session, &request, &p), Err(GenerateError::Invalid(_))));
    p.strategy = Strategy::Greedy;
    p.max_new_tokens = 0;
    assert!(matches!(generate(&mut session, &request, &p), Err(GenerateError::Invalid(_))));
}

impl JoinSession for ToySession {
    fn join(&mut self, other: Self) -> candle_core::Result<()> {
        self.histories.extend(other.histories);
        Ok(())
    }
}

/// Runs `requests` through a continuous batch, admitting request `i` before step `admit_at[i]` (several may
/// join at once), each with its own limit; returns what ended, by request.
fn run_continuous(
    requests: &[RowRequest],
    limits: &[usize],
    admit_at: &[usize],
    p: &GenerationParams,
    eos_bias: f32,
) -> Vec<Generated> {
    let mut batch: ContinuousBatch<ToySession, usize> = ContinuousBatch::new(p.clone()).unwrap();
    let mut out: Vec<Option<Generated>> = vec![None; requests.len()];
    let mut step = 0;
    while out.iter().any(Option::is_none) {
        let joining: Vec<usize> = (0..requests.len()).filter(|&i| admit_at[i] == step).collect();
        if !joining.is_empty() {
            let admissions = joining
                .iter()
                .map(|&i| Admission { tag: i, request: requests[i].clone(), max_new_tokens: limits[i] })
                .collect();
            for ended in batch.admit(ToySession::new(joining.len(), eos_bias), admissions).unwrap() {
                out[ended.tag] = Some(ended.generated);
            }
        }
        for ended in batch.step().unwrap() {
            out[ended.tag] = Some(ended.generated);
        }
        step += 1;
        assert!(step < 1000, "the batch ends");
    }
    assert!(batch.is_empty());
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn rows_admitted_at_any_step_decode_as_they_would_alone() {
    let requests = vec![
        RowRequest { prompt: vec![2, 3], forced: vec![] },
        RowRequest { prompt: vec![1], forced: vec![] },
        RowRequest { prompt: vec![4, 4, 1, 3], forced: vec![] },
        RowRequest { prompt: vec![5], forced: vec![6] },
        RowRequest { prompt: vec![3, 1], forced: vec![] },
    ];
    let limits = [12, 3, 7, 1, 20];
    // Joining a running batch, two at once, and into an emptied batch after everyone ended.
    let admit_at = [0, 2, 2, 5, 40];
    for (strategy, min_new_tokens) in
        [(Strategy::Greedy, 0), (Strategy::Greedy, 4), (Strategy::Sample { temperature: 0.8, top_p: 0.9, seed: 7 }, 0)]
    {
        let mut p = params(strategy.clone());
        p.min_new_tokens = min_new_tokens;
        let continuous = run_continuous(&requests, &limits, &admit_at, &p, 0.15);
        for ((request, limit), got) in requests.iter().zip(limits).zip(&continuous) {
            let alone =
                run(std::slice::from_ref(request), &GenerationParams { max_new_tokens: limit, ..p.clone() }, 0.15);
            assert_eq!(&alone[0], got, "{strategy:?} min_new_tokens {min_new_tokens}");
            assert!(got.new_tokens().len() <= limit);
        }
    }
}

#[test]
fn continuous_batching_refuses_beam_search_and_mismatched_admissions() {
    let beam = Strategy::Beam { num_beams: 2, length_penalty: 1.0, early_stopping: EarlyStopping::False };
    assert!(matches!(ContinuousBatch::<ToySession, usize>::new(params(beam)), Err(GenerateError::Invalid(_))));
    let mut batch: ContinuousBatch<ToySession, usize> = ContinuousBatch::new(params(Strategy::Greedy)).unwrap();
    let admission = Admission { tag: 0, request: RowRequest { prompt: vec![2], forced: vec![] }, max_new_tokens: 3 };
    let two_rows = ToySession::new(2, 0.0);
    assert!(matches!(batch.admit(two_rows, vec![admission.clone()]), Err(GenerateError::Invalid(_))));
    let no_tokens = Admission { max_new_tokens: 0, ..admission };
    assert!(matches!(batch.admit(ToySession::new(1, 0.0), vec![no_tokens]), Err(GenerateError::Invalid(_))));
    assert!(batch.is_empty());
}
