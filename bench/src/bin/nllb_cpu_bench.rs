//! `nllb-cpu-bench`: times vislingo's NLLB-200 translation (`Translator::translate_many`, f32, CPU) on a fixed
//! workload and prints one JSON line. `bench/nllb_cpu.py` runs it beside transformers and CTranslate2.
//!
//! Every output is checked to have exactly `--new-tokens` generated tokens, counted as transformers counts
//! `max_new_tokens`: the forced target-language token is the first generated token, so each output is
//! `[decoder_start, lang, t_1 .. t_{T-1}]` (length `1 + T`) and each row runs `T` decoder steps.
//!
//! `--profile` (or `VISLINGO_BENCH_PROFILE=1`) adds one instrumented run through the model's public pieces
//! (encoder, cross-attention cache, decoder steps, host-side argmax) and a stand-alone LM-head matmul, so the
//! time can be split by phase.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use serde_json::json;
use vislingo_proto::Lang;
use vislingo_worker::models::generate::argmax;
use vislingo_worker::models::generate::DecodeSession;
use vislingo_worker::models::hub::{ModelRepo, ModelSource};
use vislingo_worker::models::nllb::{Segmentation, TranslateOptions, TranslationJob, Translator};

#[derive(Parser, Debug)]
#[command(about = "Time vislingo's NLLB-200 CPU translation on a fixed workload; prints one JSON line")]
struct Args {
    /// Model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Source sentences, one per line.
    #[arg(long)]
    sentences: PathBuf,
    /// Use the first N sentences.
    #[arg(long)]
    count: usize,
    /// Target languages, comma-separated FLORES-200 codes.
    #[arg(long, default_value = "fra_Latn,spa_Latn,hin_Deva")]
    langs: String,
    #[arg(long, default_value = "eng_Latn")]
    source: String,
    /// Generated tokens per output, the forced language token included (transformers' max/min_new_tokens).
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// A timed run during which this process's threads spent on average more than this many thread-seconds per
    /// second waiting for a CPU (/proc/self/task/*/schedstat) while other processes kept more than 0.1 cores busy
    /// is discarded and run again, up to `--max-runs` (then the least disturbed are kept). Default: keep every
    /// run; 0.1 suits a shared machine.
    #[arg(long, default_value_t = f64::INFINITY)]
    max_cpu_wait: f64,
    /// Timed runs at most, discarded ones included (default: 3 x repeats).
    #[arg(long)]
    max_runs: Option<usize>,
    /// Also print a per-phase breakdown (encoder, decoder steps, LM head, host argmax).
    #[arg(long, env = "VISLINGO_BENCH_PROFILE")]
    profile: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.new_tokens >= 1, "--new-tokens must be at least 1");
    ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let text =
        std::fs::read_to_string(&args.sentences).with_context(|| format!("reading {}", args.sentences.display()))?;
    let sentences: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(args.count).collect();
    ensure!(sentences.len() == args.count, "{} has only {} sentences", args.sentences.display(), sentences.len());
    let source = Lang::parse(&args.source)?;
    let langs = vislingo_proto::parse_list(&args.langs)?;

    let load_start = Instant::now();
    let repo = ModelRepo::open(ModelSource::Local(args.model.clone()))?;
    let translator = Translator::load(&repo, DType::F32, &Device::Cpu)?;
    let load_s = load_start.elapsed().as_secs_f64();

    let options = TranslateOptions {
        beams: Some(1),
        max_new_tokens: Some(args.new_tokens),
        min_new_tokens: args.new_tokens,
        segmentation: Segmentation::None,
        ..TranslateOptions::default()
    };
    let jobs: Vec<TranslationJob> =
        sentences.iter().map(|&text| TranslationJob { text, source, targets: &langs }).collect();
    let start_id = translator.model().config().decoder_start_token_id;
    let eos_id = translator.model().config().eos_token_id;
    let lang_ids: Vec<u32> = langs.iter().map(|&l| translator.tokenizer().lang_id(l)).collect::<Result<_, _>>()?;

    let mut times = Vec::with_capacity(args.repeats);
    let mut contention: Vec<Load> = Vec::with_capacity(args.repeats);
    let mut discarded: Vec<(f64, Load)> = Vec::new();
    let max_runs = args.warmup + args.max_runs.unwrap_or(3 * args.repeats).max(args.repeats);
    let mut outputs: Vec<Vec<u32>> = Vec::new();
    let mut source_tokens = 0;
    let mut run = 0;
    while times.len() < args.repeats {
        if run == max_runs {
            // Out of attempts: complete with the least disturbed of the discarded runs (flagged by cpu_wait).
            discarded.sort_by(|a, b| a.1.cpu_wait.total_cmp(&b.1.cpu_wait));
            let fill = (args.repeats - times.len()).min(discarded.len());
            for (time, load) in discarded.drain(..fill) {
                times.push(time);
                contention.push(load);
            }
            eprintln!("vislingo: machine busy through {max_runs} runs; kept the least disturbed ones");
            break;
        }
        let clock = Contention::start();
        let start = Instant::now();
        let out = translator.translate_many(&jobs, &options)?;
        let elapsed = start.elapsed().as_secs_f64();
        let load = clock.stop();
        let verdict = if run < args.warmup {
            " (warm-up)"
        } else if load.cpu_wait > args.max_cpu_wait && load.other_cores > OTHERS_IDLE {
            discarded.push((elapsed, load));
            " (discarded: waited for CPUs)"
        } else {
            times.push(elapsed);
            contention.push(load);
            ""
        };
        // Check every run: exactly T generated tokens, the first one the forced language token, no end token.
        let mut these = Vec::new();
        source_tokens = 0;
        for (s, translated) in out.iter().enumerate() {
            source_tokens += translated.source.input_ids.len();
            ensure!(translated.translations.len() == langs.len(), "sentence {s}: wrong number of translations");
            for (t, target) in translated.translations.iter().enumerate() {
                let ids = &target.token_ids;
                if ids.len() != 1 + args.new_tokens
                    || ids[0] != start_id
                    || ids[1] != lang_ids[t]
                    || ids[2..].contains(&eos_id)
                {
                    bail!(
                        "sentence {s} -> {}: expected [{start_id}, {}, {} non-end tokens], got {} ids: {:?}",
                        langs[t],
                        lang_ids[t],
                        args.new_tokens - 1,
                        ids.len(),
                        ids
                    );
                }
                these.push(ids.clone());
            }
        }
        if !outputs.is_empty() && outputs != these {
            bail!("run {run} generated different tokens than the previous run");
        }
        outputs = these;
        eprintln!(
            "vislingo run {run}: {elapsed:.3} s, waiting for a CPU {:.2} threads, others busy {:.2} cores{verdict}",
            load.cpu_wait, load.other_cores
        );
        run += 1;
    }

    let rows = sentences.len() * langs.len();
    let mut line = json!({
        "engine": "vislingo-candle",
        "sentences": sentences.len(),
        "langs": langs.len(),
        "rows": rows,
        "new_tokens": args.new_tokens,
        "decoder_steps": args.new_tokens,
        "tokens_generated": rows * args.new_tokens,
        "source_tokens": source_tokens,
        "threads": candle_core::utils::get_num_threads(),
        "load_s": load_s,
        "times_s": times,
        "median_s": median(&times),
        "contention": contention.iter().map(|load| load.json()).collect::<Vec<_>>(),
        "discarded_runs": discarded
            .iter()
            .map(|(time, load)| {
                let mut entry = load.json();
                entry["time_s"] = json!(time);
                entry
            })
            .collect::<Vec<_>>(),
        "outputs": outputs,
    });
    if args.profile {
        line["profile"] = profile(&translator, &sentences, source, &lang_ids, args.new_tokens, &outputs)?;
    }
    println!("{line}");
    Ok(())
}

/// What other processes did to a run: `cpu_wait`, how many of this process's threads were on average runnable
/// but waiting for a CPU (/proc/self/task/*/schedstat; what decides whether a run was disturbed), and
/// `other_cores`, how many cores other processes kept busy (/proc/stat minus /proc/self/stat; they may use cores
/// this process leaves idle without slowing it). NaN where /proc is not readable.
#[derive(Debug, Clone, Copy)]
struct Load {
    cpu_wait: f64,
    other_cores: f64,
}

impl Load {
    fn json(self) -> serde_json::Value {
        json!({ "cpu_wait": self.cpu_wait, "other_cores_busy": self.other_cores })
    }
}

struct Contention {
    wall: Instant,
    busy: f64,
    own: f64,
    delay: f64,
}

impl Contention {
    fn start() -> Contention {
        Contention { wall: Instant::now(), busy: machine_busy_s(), own: own_cpu_s(), delay: run_delay_s() }
    }

    fn stop(&self) -> Load {
        let wall = self.wall.elapsed().as_secs_f64();
        let other = (machine_busy_s() - self.busy) - (own_cpu_s() - self.own);
        Load { cpu_wait: (run_delay_s() - self.delay) / wall, other_cores: other.max(0.0) / wall }
    }
}

/// Seconds this process's threads have spent runnable but waiting for a CPU (second field of schedstat, ns).
fn run_delay_s() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return f64::NAN };
    let mut total = 0u64;
    for task in tasks.flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += stat.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total as f64 / 1e9
}

/// Other processes below this many busy cores do not count as disturbing a run: this process's threads also wait
/// for a CPU because of each other (candle's elementwise pool, rayon's pool and the main thread can outnumber the
/// cores), which is vislingo's own doing.
const OTHERS_IDLE: f64 = 0.1;

/// Clock ticks per second of /proc (USER_HZ, 100 on every Linux architecture vislingo runs on).
const CLOCK_TICKS: f64 = 100.0;

fn machine_busy_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return f64::NAN };
    let ticks: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if ticks.len() < 8 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal: all but idle and iowait
    (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]) / CLOCK_TICKS
}

fn own_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the whole line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    match (fields.get(11).and_then(|x| x.parse::<f64>().ok()), fields.get(12).and_then(|x| x.parse::<f64>().ok())) {
        (Some(utime), Some(stime)) => (utime + stime) / CLOCK_TICKS,
        _ => f64::NAN,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One greedy run through the model's public pieces with a clock around each, rows ordered as
/// `translate_many` orders them (sentence-major, languages inner); checks it reproduces `expected`.
fn profile(
    translator: &Translator,
    sentences: &[&str],
    source: Lang,
    lang_ids: &[u32],
    new_tokens: usize,
    expected: &[Vec<u32>],
) -> Result<serde_json::Value> {
    let model = translator.model();
    let config = model.config();
    let clock = Instant::now();
    let inputs: Vec<Vec<u32>> =
        sentences.iter().map(|s| translator.tokenizer().encode(s, source)).collect::<Result<_, _>>()?;
    let tokenize_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let encoded = model.encode(&inputs)?;
    let encoder_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let mut session = model.start_decoding(&encoded)?;
    let expand: Vec<usize> = (0..inputs.len()).flat_map(|s| std::iter::repeat_n(s, lang_ids.len())).collect();
    session.select_rows(&expand)?;
    let cross_kv_s = clock.elapsed().as_secs_f64();

    let rows = expand.len();
    let mut sequences: Vec<Vec<u32>> = vec![vec![config.decoder_start_token_id]; rows];
    let mut step_forward_s = Vec::with_capacity(new_tokens);
    let mut step_host_s = Vec::with_capacity(new_tokens);
    for step in 0..new_tokens {
        let feed: Vec<Vec<u32>> = sequences.iter().map(|s| vec![*s.last().expect("non-empty")]).collect();
        let clock = Instant::now();
        let logits = session.forward(&feed)?;
        step_forward_s.push(clock.elapsed().as_secs_f64());

        let clock = Instant::now();
        let logits = logits.to_vec2::<f32>()?;
        for (row, mut scores) in logits.into_iter().enumerate() {
            let token = if step == 0 {
                lang_ids[row % lang_ids.len()]
            } else {
                scores[config.eos_token_id as usize] = f32::NEG_INFINITY; // min_new_tokens
                argmax(&scores) as u32
            };
            sequences[row].push(token);
        }
        step_host_s.push(clock.elapsed().as_secs_f64());
    }
    let matches_translate_many = sequences == expected;

    // The LM head alone: (rows, d_model) x (d_model, vocab), as the last matmul of every decoder step.
    let (vocab, d_model) = (config.vocab_size, config.d_model);
    let weight = Tensor::randn(0f32, 0.02, (vocab, d_model), &Device::Cpu)?;
    let mut lm_head = serde_json::Map::new();
    let mut lm_head_alternatives = serde_json::Map::new();
    for batch in [1usize, 2, 3, 4, 8, 30, 90] {
        let x = Tensor::randn(0f32, 1.0, (batch, d_model), &Device::Cpu)?;
        // As candle_nn::Linear does it: x (rows, d) times the transposed weight (d, vocab).
        lm_head.insert(batch.to_string(), json!(time_it(3, || x.matmul(&weight.t()?))?));
        if batch <= 8 {
            // One matrix-vector product per row (gemm's m = 1 path), then stacked.
            let per_row = time_it(3, || {
                let rows = (0..batch)
                    .map(|r| x.narrow(0, r, 1)?.matmul(&weight.t()?))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)
            })?;
            // The transposed product: weight (vocab, d) times x^T (d, rows), so the long side is gemm's m.
            let transposed = time_it(3, || weight.matmul(&x.t()?)?.t()?.contiguous())?;
            lm_head_alternatives.insert(batch.to_string(), json!({ "per_row_s": per_row, "transposed_s": transposed }));
        }
    }
    // A decoder step's other matmuls: per layer 4 self-attention + 2 cross-attention (q, out) projections of
    // d x d and fc1/fc2 of d x ffn; timed for this workload's row count.
    let ffn = config.decoder_ffn_dim;
    let x = Tensor::randn(0f32, 1.0, (rows, d_model), &Device::Cpu)?;
    let w_dd = Tensor::randn(0f32, 0.02, (d_model, d_model), &Device::Cpu)?;
    let w_fc1 = Tensor::randn(0f32, 0.02, (ffn, d_model), &Device::Cpu)?;
    let w_fc2 = Tensor::randn(0f32, 0.02, (d_model, ffn), &Device::Cpu)?;
    // `x W^T` as candle_nn::Linear computes it, or `(W x^T)^T` (the long side as gemm's m).
    let linear = |x: &Tensor, w: &Tensor, transposed: bool| -> candle_core::Result<Tensor> {
        if transposed {
            w.matmul(&x.t()?)?.t()?.contiguous()
        } else {
            x.matmul(&w.t()?)
        }
    };
    let step_linears = |transposed: bool| {
        time_it(3, || {
            let mut out = x.clone();
            for _ in 0..config.decoder_layers {
                for _ in 0..6 {
                    out = linear(&x, &w_dd, transposed)?;
                }
                let h = linear(&x, &w_fc1, transposed)?;
                out = linear(&h, &w_fc2, transposed)?;
            }
            Ok(out)
        })
    };
    let decoder_linears_s = step_linears(false)?;
    let decoder_linears_transposed_s = step_linears(true)?;

    let forward_total: f64 = step_forward_s.iter().sum();
    let host_total: f64 = step_host_s.iter().sum();
    Ok(json!({
        "rows": rows,
        "matches_translate_many": matches_translate_many,
        "tokenize_s": tokenize_s,
        "encoder_s": encoder_s,
        "cross_kv_and_expand_s": cross_kv_s,
        "decoder_forward_s": forward_total,
        "decoder_host_argmax_s": host_total,
        "step_forward_s": step_forward_s,
        "step_host_s": step_host_s,
        "lm_head_matmul_s_by_rows": lm_head,
        "lm_head_alternatives_s_by_rows": lm_head_alternatives,
        "decoder_layer_linears_per_step_s": decoder_linears_s,
        "decoder_layer_linears_per_step_transposed_s": decoder_linears_transposed_s,
        "total_s": tokenize_s + encoder_s + cross_kv_s + forward_total + host_total,
    }))
}

/// Mean seconds of `reps` calls after one warm-up call.
fn time_it(reps: usize, mut f: impl FnMut() -> candle_core::Result<Tensor>) -> Result<f64> {
    f()?;
    let clock = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    Ok(clock.elapsed().as_secs_f64() / reps as f64)
}
