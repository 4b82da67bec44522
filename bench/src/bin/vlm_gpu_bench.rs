//! GPU throughput benchmark of vislingo's vision models and translator (`bench/gpu.sh` runs it on the H100 beside
//! `bench/gpu_reference.py`): `make-checkpoint` writes a random-weight checkpoint of a full-size architecture in
//! the Hub layout by recording every tensor the loader asks for; `describe` runs the worker's models on a folder of
//! images or videos made of them (describe with a fixed number of new tokens, then translation of given texts) and prints JSON figures.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use vislingo_proto::Lang;
use vislingo_worker::cli::{parse_device, DTypeArg};
use vislingo_worker::media::{decode_bytes, DecodeOptions, RgbImage};
use vislingo_worker::models::hub::{read_json, ModelRepo, ModelSource};
use vislingo_worker::models::llava_next::{LlavaNextVideo, LlavaNextVideoConfig};
use vislingo_worker::models::mllama::{Mllama, MllamaConfig};
use vislingo_worker::models::nllb::{M2M100Config, TranslateOptions, TranslationJob, Translator, M2M100};
use vislingo_worker::models::quant::Quant;
use vislingo_worker::models::vision_chat::{DecodeSettings, Media, MediaPrompt, VisionChat};

#[derive(Parser)]
#[command(about = "GPU throughput benchmark of vislingo's models (see BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a random-weight checkpoint (normal(0, 0.02), norms 1) of the architecture in `--config`, with the
    /// tokenizer and processor files of `--like` (a tiny fixture), as sharded safetensors in the Hub layout.
    MakeCheckpoint(MakeCheckpointArgs),
    /// Describes every image of `--images` (or, with `--frames K`, videos of K frames made of them) in batches,
    /// then translates `--texts`; prints a JSON report.
    Describe(ImagesArgs),
    /// Flash attention (the `flash-attn` build) against attention from materialised scores on the vision encoders'
    /// shapes: the error of each against an f32 computation, and their times; exits 1 if flash is less accurate.
    CheckAttention(CheckAttentionArgs),
}

#[derive(clap::Args)]
struct CheckAttentionArgs {
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Timed runs of each method per shape (medians reported).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Family {
    Mllama,
    LlavaNextVideo,
    Nllb,
}

#[derive(clap::Args)]
struct MakeCheckpointArgs {
    #[arg(long, value_enum)]
    family: Family,
    /// config.json of the full-size architecture.
    #[arg(long)]
    config: PathBuf,
    /// A folder whose non-weight files (tokenizer, chat template, processor) are copied.
    #[arg(long)]
    like: PathBuf,
    /// `FILE=JSON`: the JSON object's keys are set in the copied FILE (e.g. full-size tile sizes in
    /// preprocessor_config.json). Repeatable.
    #[arg(long = "merge")]
    merges: Vec<String>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: DTypeArg,
    /// Where the random values are drawn.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    #[arg(long, default_value_t = 5.0)]
    shard_gb: f64,
}

#[derive(clap::Args)]
struct ImagesArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    translator: Option<PathBuf>,
    #[arg(long, default_value = "cuda:0")]
    device: String,
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: DTypeArg,
    #[arg(long, default_value = "none")]
    quant: Quant,
    /// Folder of images (sorted by name); `--count` of them are described, cycling if there are fewer.
    #[arg(long)]
    images: PathBuf,
    #[arg(long, default_value_t = 64)]
    count: usize,
    /// Each asset is a video of this many frames (one image repeated; the model cost does not depend on the
    /// pixels) instead of an image.
    #[arg(long)]
    frames: Option<usize>,
    /// Images decoded together.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Tokens every answer generates (end tokens banned until then).
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    #[arg(long, default_value = "Describe this in detail.")]
    prompt: String,
    /// JSON list of English texts (one per image, cycled) translated in place of the random model's output.
    #[arg(long)]
    texts: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "fra_Latn,spa_Latn,deu_Latn")]
    langs: Vec<String>,
    /// Tokens every translated sentence generates (end tokens banned until then).
    #[arg(long, default_value_t = 48)]
    translation_tokens: usize,
    /// Decoder rows (sentences x languages) the translator runs at once.
    #[arg(long, default_value_t = 1024)]
    translation_rows: usize,
    /// Translator dtype (the article's NLLB runs in f32; vislingo's default on GPU is f16).
    #[arg(long, value_enum, default_value = "f16")]
    translator_dtype: DTypeArg,
    /// Batch sizes at which one decode step is timed (difference of 1 and 1 + `step_tokens` new tokens).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    step_batches: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    step_tokens: usize,
    /// After the run, a continuous-batching run as `worker serve` decodes: every image asked this many tasks at
    /// once, each forced to its own answer length (e.g. 256,64,64,128 for describe, tags, sentiment, ad), at most
    /// `--batch` images in flight, a new image joining the decode batch as soon as one is done. Empty: skipped.
    #[arg(long, value_delimiter = ',')]
    task_tokens: Vec<usize>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::MakeCheckpoint(args) => make_checkpoint(args),
        Command::Describe(args) => describe(args),
        Command::CheckAttention(args) => check_attention(args),
    }
}

/// One attention shape of the vision encoders: `(batch, heads, queries, keys, head_dim)`, the queries a prefix of
/// `keys` positions as the encoders' real-first order gives them.
struct AttentionCase {
    name: &'static str,
    shape: (usize, usize, usize, usize, usize),
    dtype: DType,
}

fn check_attention(args: CheckAttentionArgs) -> Result<()> {
    use vislingo_worker::models::attention::{attend_flash, attend_materialised};
    let device = parse_device(&args.device)?;
    let cases = [
        // Llama 3.2 Vision: 4 tiles of 1,608 positions, 6,404 real, 16 heads of 80 (the 96 kernel).
        AttentionCase { name: "mllama real queries", shape: (1, 16, 6404, 6432, 80), dtype: DType::BF16 },
        AttentionCase { name: "mllama padding queries", shape: (2, 16, 28, 6404, 80), dtype: DType::BF16 },
        AttentionCase { name: "mllama one tile, f16", shape: (1, 16, 1601, 1608, 80), dtype: DType::F16 },
        // CLIP ViT-L/14-336 of LLaVA-NeXT-Video: 8 frames of 577 positions, 16 heads of 64.
        AttentionCase { name: "clip frames", shape: (8, 16, 577, 577, 64), dtype: DType::BF16 },
        AttentionCase { name: "head dim 128", shape: (2, 8, 1024, 1024, 128), dtype: DType::BF16 },
    ];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut reports = Vec::new();
    let mut all_pass = true;
    for case in &cases {
        let (batch, heads, queries, keys, head_dim) = case.shape;
        // Standard normal values (candle's CPU generator), as f32 on the device.
        let random = || -> Result<Tensor> {
            Ok(Tensor::randn(0f32, 1.0, (batch, heads, keys, head_dim), &Device::Cpu)?.to_device(&device)?)
        };
        // Queries pre-scaled as the encoders make them; a narrowed view, as the real-first split takes them.
        let q_all = (random()? * (head_dim as f64).powf(-0.5))?;
        let (k, v) = (random()?.to_dtype(case.dtype)?, random()?.to_dtype(case.dtype)?);
        let q = q_all.to_dtype(case.dtype)?.narrow(2, 0, queries)?;
        let reference =
            attend_materialised(&q.to_dtype(DType::F32)?, &k.to_dtype(DType::F32)?, &v.to_dtype(DType::F32)?, None)?;
        let error = |out: &Tensor| -> Result<f32> {
            Ok((out.to_dtype(DType::F32)? - &reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
        };
        let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> Result<(Tensor, f64)> {
            let out = f()?; // warm-up (kernel loading)
            synchronize(&device)?;
            let mut times = Vec::with_capacity(args.repeats);
            for _ in 0..args.repeats.max(1) {
                let started = Instant::now();
                f()?;
                synchronize(&device)?;
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            Ok((out, median(times)))
        };
        let (flash, flash_ms) = time(&|| attend_flash(&q, &k, &v))?;
        let (materialised, materialised_ms) = time(&|| attend_materialised(&q, &k, &v, None))?;
        let (flash_error, materialised_error) = (error(&flash)?, error(&materialised)?);
        // Both round to the same half type; flash accumulates in f32 without rounding the scores or weights.
        let pass = flash_error <= (2.0 * materialised_error).max(1e-3);
        all_pass &= pass;
        println!(
            "{} {}: {:?} {:?}: flash {flash_ms:.3} ms, error {flash_error:.2e}; materialised {materialised_ms:.3} ms, \
             error {materialised_error:.2e}; {:.1}x",
            if pass { "PASS" } else { "FAIL" },
            case.name,
            case.dtype,
            case.shape,
            materialised_ms / flash_ms
        );
        reports.push(json!({
            "case": case.name,
            "shape": [batch, heads, queries, keys, head_dim],
            "dtype": case.dtype.as_str(),
            "flash_ms": flash_ms,
            "materialised_ms": materialised_ms,
            "flash_max_abs_error": flash_error,
            "materialised_max_abs_error": materialised_error,
            "pass": pass,
        }));
    }
    let report = json!({ "device": args.device, "repeats": args.repeats, "cases": reports, "pass": all_pass });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if !all_pass {
        bail!("flash attention is less accurate than the materialised attention on some shape");
    }
    Ok(())
}

/// Hands out random tensors and remembers them by name.
struct RecordingBackend {
    device: Device,
    tensors: Arc<Mutex<BTreeMap<String, Tensor>>>,
}

impl SimpleBackend for RecordingBackend {
    fn get(&self, shape: Shape, name: &str, hint: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut tensors = self.tensors.lock().expect("not poisoned");
        if let Some(t) = tensors.get(name) {
            return t.to_device(dev)?.to_dtype(dtype);
        }
        let value = match hint {
            Init::Const(c) if c == 1.0 => Tensor::ones(shape, DType::F32, &self.device)?,
            _ => (Tensor::randn(0f32, 1f32, shape, &self.device)? * 0.02)?,
        }
        .to_dtype(dtype)?;
        tensors.insert(name.to_string(), value.clone());
        value.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random checkpoint: {name} requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

fn make_checkpoint(args: MakeCheckpointArgs) -> Result<()> {
    let started = Instant::now();
    let device = parse_device(&args.device)?;
    let dtype = DType::from(args.dtype);
    let recorded = Arc::new(Mutex::new(BTreeMap::new()));
    let backend = RecordingBackend { device: device.clone(), tensors: recorded.clone() };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    match args.family {
        Family::Mllama => {
            let config: MllamaConfig = read_json(&args.config)?;
            drop(Mllama::new(&config, vb)?);
        }
        Family::LlavaNextVideo => {
            let config: LlavaNextVideoConfig = read_json(&args.config)?;
            drop(LlavaNextVideo::new(&config, vb)?);
        }
        Family::Nllb => {
            let config: M2M100Config = read_json(&args.config)?;
            drop(M2M100::new(&config, vb)?);
        }
    }
    let tensors = std::mem::take(&mut *recorded.lock().expect("not poisoned"));
    std::fs::create_dir_all(&args.out)?;
    for entry in std::fs::read_dir(&args.like)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let weight = name.ends_with(".safetensors") || name.ends_with(".bin") || name.ends_with(".index.json");
        if entry.file_type()?.is_file() && !weight && !name.starts_with("reference") && name != "config.json" {
            std::fs::copy(entry.path(), args.out.join(&name))?;
        }
    }
    std::fs::copy(&args.config, args.out.join("config.json"))?;
    for merge in &args.merges {
        let (file, overrides) = merge.split_once('=').context("--merge FILE=JSON")?;
        let path = args.out.join(file);
        let mut config: serde_json::Value = read_json(&path)?;
        let overrides: serde_json::Value = serde_json::from_str(overrides).context("--merge: a JSON object")?;
        for (key, value) in overrides.as_object().context("--merge: a JSON object")? {
            config[key] = value.clone();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    }

    let limit = (args.shard_gb * 1e9) as usize;
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut size = 0usize;
    let mut total = 0usize;
    let mut parameters = 0usize;
    for (name, tensor) in tensors {
        let bytes = tensor.elem_count() * tensor.dtype().size_in_bytes();
        if size > 0 && size + bytes > limit {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        total += bytes;
        parameters += tensor.elem_count();
        shards.last_mut().expect("one shard").push((name, tensor));
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        let mut host = HashMap::new();
        for (name, tensor) in shard {
            weight_map.insert(name.clone(), file.clone());
            host.insert(name, tensor.to_device(&Device::Cpu)?);
        }
        candle_core::safetensors::save(&host, args.out.join(&file))?;
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(args.out.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index)?)?;
    println!(
        "{}: {:.3} B parameters, {:.2} GB in {count} shards, {:.1} s",
        args.out.display(),
        parameters as f64 / 1e9,
        total as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn synchronize(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

fn load_images(folder: &Path, count: usize) -> Result<Vec<RgbImage>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    if files.is_empty() {
        bail!("{}: no images", folder.display());
    }
    let decoded = files
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path)?;
            Ok(decode_bytes(&bytes, &path.display().to_string(), &DecodeOptions::default())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((0..count).map(|i| decoded[i % decoded.len()].clone()).collect())
}

fn describe(args: ImagesArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = DType::from(args.dtype);
    let started = Instant::now();
    let repo = ModelRepo::open(ModelSource::Local(args.model.clone()))?;
    let chat = VisionChat::load(&repo, dtype, &device, args.quant)?;
    synchronize(&device)?;
    let load_s = started.elapsed().as_secs_f64();
    eprintln!("vision model loaded in {load_s:.1} s");
    let translator = match &args.translator {
        Some(path) => {
            let repo = ModelRepo::open(ModelSource::Local(path.clone()))?;
            Some(Translator::load(&repo, args.translator_dtype.into(), &device)?)
        }
        None => None,
    };
    let loaded_vram_gib =
        vislingo_worker::device_memory::device_memory(&device).map(|(used, _)| used as f64 / 2f64.powi(30));
    let images = load_images(&args.images, args.count.max(*args.step_batches.iter().max().unwrap_or(&1)))?;
    let settings = forced_length;
    let videos: Vec<Vec<RgbImage>> = match args.frames {
        Some(frames) => images.iter().map(|image| vec![image.clone(); frames]).collect(),
        None => Vec::new(),
    };
    let media = |i: usize| match args.frames {
        Some(_) => Media::Video(&videos[i]),
        None => Media::Image(&images[i]),
    };
    let prompts = |range: std::ops::Range<usize>| -> Vec<MediaPrompt> {
        range.map(|i| MediaPrompt { media: media(i), text: &args.prompt }).collect()
    };

    // Warm-up: kernels load and compile at first use.
    chat.answer(&prompts(0..2.min(images.len())), &settings(4))?;
    synchronize(&device)?;

    // One decode step at each batch size: (generation time of 1 + n new tokens - that of 1 new token) / n. The
    // generation phases alone are compared: the vision encoder's time varies more from run to run than n steps
    // take at a large batch.
    let mut steps = Vec::new();
    for &batch in &args.step_batches {
        let time = |tokens: usize| -> Result<(f64, f64)> {
            let started = Instant::now();
            let (_, t) = chat.answer(&prompts(0..batch), &settings(tokens))?;
            synchronize(&device)?;
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "  batch {batch}, {tokens} tokens: {elapsed:.2} s (preprocess {:.2}, vision {:.2}, generate {:.2})",
                t.preprocess_s, t.vision_s, t.generate_s
            );
            Ok((elapsed, t.generate_s))
        };
        let (one, one_generating) = time(1)?;
        let (_, more_generating) = time(1 + args.step_tokens)?;
        let step_ms = (more_generating - one_generating) / args.step_tokens as f64 * 1e3;
        eprintln!("batch {batch}: prefill + first token {:.1} ms, decode step {step_ms:.2} ms", one * 1e3);
        steps.push(json!({"batch": batch, "first_token_ms": one * 1e3, "step_ms": step_ms}));
    }

    // The run: describe every image in batches, then translate the batch's texts.
    let texts: Vec<String> = match &args.texts {
        Some(path) => read_json(path)?,
        None => Vec::new(),
    };
    let langs = args.langs.iter().map(|l| Lang::parse(l)).collect::<Result<Vec<_>, _>>()?;
    let source = Lang::parse("eng_Latn")?;
    let options = TranslateOptions {
        max_new_tokens: Some(args.translation_tokens),
        min_new_tokens: args.translation_tokens,
        max_batch_rows: args.translation_rows,
        ..TranslateOptions::default()
    };
    let (mut vision_s, mut generate_s, mut translate_s, mut generated, mut translated_tokens) = (0.0, 0.0, 0.0, 0, 0);
    let run_started = Instant::now();
    for start in (0..args.count).step_by(args.batch) {
        let n = args.batch.min(args.count - start);
        let (answers, timings) = chat.answer(&prompts(start..start + n), &settings(args.new_tokens))?;
        eprintln!(
            "  images {start}..{}: preprocess {:.2} s, vision {:.2} s, generate {:.2} s",
            start + n,
            timings.preprocess_s,
            timings.vision_s,
            timings.generate_s
        );
        vision_s += timings.vision_s + timings.preprocess_s;
        generate_s += timings.generate_s;
        generated += answers.iter().map(|a| a.token_ids.len()).sum::<usize>();
        if let (Some(translator), false) = (&translator, texts.is_empty() || langs.is_empty()) {
            let started = Instant::now();
            let jobs: Vec<TranslationJob> = (start..start + n)
                .map(|i| TranslationJob { text: &texts[i % texts.len()], source, targets: &langs })
                .collect();
            let done = translator.translate_many(&jobs, &options)?;
            synchronize(&device)?;
            translate_s += started.elapsed().as_secs_f64();
            eprintln!(
                "  translated {} texts x {} languages in {:.2} s",
                n,
                langs.len(),
                started.elapsed().as_secs_f64()
            );
            translated_tokens += done.iter().flat_map(|t| &t.translations).map(|t| t.token_ids.len()).sum::<usize>();
        }
    }
    synchronize(&device)?;
    let total_s = run_started.elapsed().as_secs_f64();
    let softmax_kernel = match vislingo_worker::models::attention::SoftmaxKernel::configured() {
        vislingo_worker::models::attention::SoftmaxKernel::Candle => "candle",
        vislingo_worker::models::attention::SoftmaxKernel::Vislingo => "vislingo",
    };
    let flash_attention = vislingo_worker::models::attention::flash_attention_enabled();
    let fused_mlp = vislingo_worker::models::gated::fused_kernel_enabled();
    let mut kernels = vec![format!("softmax {softmax_kernel}")];
    if flash_attention {
        kernels.push("flash attention".to_string());
    }
    if fused_mlp {
        kernels.push("fused MLP".to_string());
    }
    let report = json!({
        "engine": format!("vislingo ({})", kernels.join(", ")),
        "softmax_kernel": softmax_kernel,
        "flash_attention": flash_attention,
        "fused_mlp": fused_mlp,
        "model": args.model.display().to_string(),
        "dtype": dtype.as_str(),
        "quant": args.quant.as_str(),
        "images": args.count,
        "frames": args.frames,
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "langs": args.langs,
        "load_s": load_s,
        "loaded_vram_gib": loaded_vram_gib,
        "total_s": total_s,
        "images_per_s": args.count as f64 / total_s,
        "generated_tokens": generated,
        "tokens_per_s": generated as f64 / generate_s.max(1e-9),
        "vision_s": vision_s,
        "generate_s": generate_s,
        "translate_s": translate_s,
        "translated_tokens": translated_tokens,
        "translation_share": translate_s / total_s,
        "steps": steps,
    });
    let mut report = report;
    if !args.task_tokens.is_empty() {
        report["continuous"] = continuous_tasks(&chat, &args, &media, &device)?;
    }
    println!("{}", serde_json::to_string(&report)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// Every image asked `args.task_tokens.len()` tasks in one continuous batch (at most `args.batch` images in flight,
/// the next image admitted as soon as one is done): images per second and generated tokens per second.
fn continuous_tasks<'m>(
    chat: &VisionChat,
    args: &ImagesArgs,
    media: &dyn Fn(usize) -> Media<'m>,
    device: &Device,
) -> Result<serde_json::Value> {
    use vislingo_worker::models::vision_chat::Admit;
    let prompts: Vec<String> = (0..args.task_tokens.len()).map(|t| format!("{} (task {t})", args.prompt)).collect();
    let settings = forced_length;
    let longest = args.task_tokens.iter().copied().max().unwrap_or(1);
    let mut batch = chat.batch::<(usize, usize)>(&settings(longest))?;
    let mut rows_left: HashMap<usize, usize> = HashMap::new();
    let (mut next, mut done, mut generated, mut steps, mut most_rows) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    while done < args.count {
        let mut joining = Vec::new();
        while rows_left.len() < args.batch && next < args.count {
            for (task, &tokens) in args.task_tokens.iter().enumerate() {
                let prompt = MediaPrompt { media: media(next), text: &prompts[task] };
                joining.push(Admit { tag: (next, task), prompt, max_new_tokens: tokens });
            }
            rows_left.insert(next, args.task_tokens.len());
            next += 1;
        }
        let (mut ended, _) = batch.admit(joining)?;
        most_rows = most_rows.max(batch.len());
        ended.extend(batch.step()?);
        steps += 1;
        for ((image, _), answer) in ended {
            generated += answer.token_ids.len();
            let left = rows_left.get_mut(&image).expect("in flight");
            *left -= 1;
            if *left == 0 {
                rows_left.remove(&image);
                done += 1;
            }
        }
    }
    synchronize(device)?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "continuous: {} images x {:?} tokens, at most {} in flight: {seconds:.2} s, {:.3} images/s, {:.0} tokens/s",
        args.count,
        args.task_tokens,
        args.batch,
        args.count as f64 / seconds,
        generated as f64 / seconds
    );
    Ok(json!({
        "images": args.count,
        "task_tokens": args.task_tokens,
        "in_flight": args.batch,
        "most_rows": most_rows,
        "steps": steps,
        "seconds": seconds,
        "images_per_s": args.count as f64 / seconds,
        "generated_tokens": generated,
        "tokens_per_s": generated as f64 / seconds,
    }))
}

/// Greedy decoding forced to exactly `tokens` new tokens (end tokens banned until then).
fn forced_length(tokens: usize) -> DecodeSettings {
    DecodeSettings { max_new_tokens: tokens, sampling: None, seed: 0, repetition_penalty: 1.0, min_new_tokens: tokens }
}
