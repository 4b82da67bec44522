//! Command-line interface of the `worker` binary: flags (each with an environment fallback) and the
//! subcommands they drive.

use std::io::Read;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vislingo_proto::{lang, Lang};

use crate::media::video::{SampleOptions, DEFAULT_FRAMES};
use crate::models::generate::EarlyStopping;
use crate::models::hub::{ModelRepo, ModelSource};
use crate::models::nllb::{Sampling, Segmentation, TranslateOptions, Translated, Translator};
use crate::models::vision_chat::{DecodeSettings, VisionChat};

/// vislingo worker: describes images and videos with a vision-language model and translates the results.
#[derive(Debug, Parser)]
#[command(name = "worker", version, about)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log shippers.
    #[arg(long, env = "VISLINGO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate a text with NLLB-200 into one or more FLORES-200 languages.
    Translate(TranslateArgs),
    /// Describe images or videos with the vision-language model (one task or a raw prompt), optionally translated.
    Describe(DescribeArgs),
    /// Describe every image and video of a folder: one JSON result per asset under --out, resumable, with a summary.
    Run(crate::run::RunArgs),
    /// Probe a video and print its metadata and the frames sampled from it (optionally as PNGs).
    Frames(crate::frames::FramesArgs),
    /// Consume jobs from RabbitMQ: download from S3, describe, translate, write results/<batch>/<asset>.json.
    Serve(Box<crate::serve::ServeArgs>),
}

/// The vision-language model, its decoding, and the translator.
#[derive(Debug, Clone, Args)]
pub struct VisionArgs {
    /// Vision-language model: a Hugging Face repo id or a local folder.
    #[arg(long, env = "VISLINGO_MODEL", default_value = "unsloth/Llama-3.2-11B-Vision-Instruct")]
    pub model: String,
    /// NLLB translator for --langs: a Hugging Face repo id or a local folder.
    #[arg(long, env = "VISLINGO_TRANSLATOR", default_value = "facebook/nllb-200-distilled-600M")]
    pub translator: String,
    /// Languages to translate into (FLORES-200 codes or aliases, comma-separated); empty: English only.
    #[arg(long, env = "VISLINGO_LANGS", default_value = "")]
    pub langs: String,
    /// A TOML file of task overrides and extra tasks (see worker/src/tasks/builtin.toml).
    #[arg(long, env = "VISLINGO_TASK_FILE")]
    pub task_file: Option<std::path::PathBuf>,
    /// Greedy decoding instead of the checkpoint's sampling defaults.
    #[arg(long, env = "VISLINGO_GREEDY")]
    pub greedy: bool,
    /// Sampling temperature (default: the checkpoint's generation_config.json).
    #[arg(long, env = "VISLINGO_TEMPERATURE")]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold (default: the checkpoint's).
    #[arg(long, env = "VISLINGO_TOP_P")]
    pub top_p: Option<f64>,
    /// Random seed for sampling.
    #[arg(long, env = "VISLINGO_SEED", default_value_t = 0)]
    pub seed: u64,
    /// transformers' repetition_penalty (1.0 = off; default: the checkpoint's).
    #[arg(long, env = "VISLINGO_REPETITION_PENALTY")]
    pub repetition_penalty: Option<f32>,
    /// Most tokens per answer (default: each task's own budget).
    #[arg(long, env = "VISLINGO_MAX_NEW_TOKENS")]
    pub max_new_tokens: Option<usize>,
    /// Date printed by chat templates that show one (default: today).
    #[arg(long, env = "VISLINGO_DATE_STRING")]
    pub date_string: Option<String>,
    /// Quantize the text decoder's linear layers as they load (q4k fits the 11B model in 16 GB with the translator).
    #[arg(long, env = "VISLINGO_QUANT", value_enum, default_value_t = crate::models::quant::Quant::None)]
    pub quant: crate::models::quant::Quant,
    /// Apply the EXIF orientation of photos (`--exif ignore` reproduces transformers, which ignores it).
    #[arg(long, env = "VISLINGO_EXIF", value_enum, default_value_t = ExifArg::Apply)]
    pub exif: ExifArg,
    /// Frames sampled from each video (`np.arange(0, N, N / k)`; videos need a LLaVA-NeXT-Video model).
    #[arg(long, env = "VISLINGO_FRAMES", default_value_t = DEFAULT_FRAMES, value_parser = parse_frames)]
    pub frames: usize,
    /// Give the model video frames as stored, ignoring the clip's rotation (the Python reference ignores it).
    #[arg(long, env = "VISLINGO_NO_ROTATE")]
    pub no_rotate: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn parse_frames(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(frames) if frames >= 1 => Ok(frames),
        _ => Err(format!("`{value}` is not a frame count: expected a whole number of at least 1")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExifArg {
    Apply,
    Ignore,
}

#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    /// Image or video files (videos need a LLaVA-NeXT-Video model).
    #[arg(required = true)]
    pub images: Vec<std::path::PathBuf>,
    /// Task: describe, tags, sentiment, ad, or one from --task-file.
    #[arg(long, env = "VISLINGO_TASK", default_value = "describe")]
    pub task: String,
    /// A raw user message instead of the task's prompt (the chat template still applies).
    #[arg(long, env = "VISLINGO_PROMPT")]
    pub prompt: Option<String>,
    /// `text` for people, `json` for programs (prompt and generated ids included).
    #[arg(long, env = "VISLINGO_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub vision: VisionArgs,
}

/// Loaded models and pipeline settings from `VisionArgs`.
pub struct LoadedModels {
    pub chat: VisionChat,
    pub translator: Option<Translator>,
    pub langs: Vec<Lang>,
}

impl VisionArgs {
    /// Loads the vision model, and the translator when languages are requested.
    pub fn load(&self) -> Result<LoadedModels> {
        let langs =
            if self.langs.trim().is_empty() { Vec::new() } else { lang::parse_list(&self.langs).context("--langs")? };
        let (chat, translator) = self.load_models(!langs.is_empty())?;
        Ok(LoadedModels { chat, translator, langs })
    }

    /// Loads the vision model, and the translator when `with_translator`.
    pub fn load_models(&self, with_translator: bool) -> Result<(VisionChat, Option<Translator>)> {
        let device = parse_device(&self.runtime.device)?;
        let dtype: DType = self.runtime.dtype.into();
        let repo = ModelRepo::open(ModelSource::parse(&self.model, self.runtime.revision.as_deref()))
            .with_context(|| format!("model {}", self.model))?;
        let mut chat = VisionChat::load(&repo, dtype, &device, self.quant)
            .with_context(|| format!("cannot load vision model {}", self.model))?;
        chat.set_date_string(self.date_string.clone());
        let translator = if with_translator {
            let repo = ModelRepo::open(ModelSource::parse(&self.translator, None))
                .with_context(|| format!("translator {}", self.translator))?;
            Some(
                Translator::load(&repo, dtype, &device)
                    .with_context(|| format!("cannot load translator {}", self.translator))?,
            )
        } else {
            None
        };
        crate::device_memory::log_device_memory(&device, "models loaded");
        Ok((chat, translator))
    }

    /// The checkpoint's decoding (`VisionChat::default_settings`) with --greedy, --temperature (0 = greedy),
    /// --top-p, --seed and --repetition-penalty applied.
    pub fn decode_settings(&self, checkpoint: DecodeSettings) -> DecodeSettings {
        let checkpoint_top_p = checkpoint.sampling.map_or(1.0, |(_, top_p)| top_p);
        let sampling = match (self.greedy, self.temperature) {
            (true, _) | (false, Some(0.0)) => None,
            (false, Some(temperature)) => Some((temperature, self.top_p.unwrap_or(checkpoint_top_p))),
            (false, None) => checkpoint.sampling.map(|(temperature, top_p)| (temperature, self.top_p.unwrap_or(top_p))),
        };
        let repetition_penalty = self.repetition_penalty.unwrap_or(checkpoint.repetition_penalty);
        DecodeSettings { sampling, seed: self.seed, repetition_penalty, ..checkpoint }
    }

    pub fn tasks(&self) -> Result<crate::tasks::TaskSet> {
        let mut tasks = crate::tasks::TaskSet::builtin();
        if let Some(path) = &self.task_file {
            tasks.apply_overrides_file(path)?;
        }
        Ok(tasks)
    }

    /// Video frame sampling as --frames and --no-rotate say.
    pub fn video_options(&self) -> SampleOptions {
        SampleOptions { frames: self.frames, rotate: !self.no_rotate, ..SampleOptions::default() }
    }

    pub fn decode_options(&self) -> crate::media::DecodeOptions {
        let mut options = crate::media::DecodeOptions::default();
        if self.exif == ExifArg::Ignore {
            options.exif = crate::media::ExifOrientation::Ignore;
        }
        options
    }
}

/// Where and how a model runs.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Weight precision on the device.
    #[arg(long, env = "VISLINGO_DTYPE", value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, env = "VISLINGO_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Hugging Face revision (branch, tag or commit) of Hub models.
    #[arg(long, env = "VISLINGO_REVISION")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DTypeArg> for DType {
    fn from(value: DTypeArg) -> Self {
        match value {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TranslateArgs {
    /// Text to translate; `-` reads it from standard input.
    pub text: String,
    /// NLLB model: a Hugging Face repo id or a local folder.
    #[arg(long, env = "VISLINGO_TRANSLATOR", default_value = "facebook/nllb-200-distilled-600M")]
    pub model: String,
    /// Target languages, comma-separated FLORES-200 codes or aliases (fr, spanish, zh-TW).
    #[arg(long, env = "VISLINGO_TO", required = true)]
    pub to: String,
    /// Source language.
    #[arg(long, env = "VISLINGO_FROM", default_value = "eng_Latn")]
    pub from: String,
    /// Beam width (1 = greedy, transformers' default for NLLB).
    #[arg(long, env = "VISLINGO_BEAMS", default_value_t = 1)]
    pub beams: usize,
    /// Most tokens generated per sentence (default: the checkpoint's max_length - 1).
    #[arg(long, env = "VISLINGO_MAX_NEW_TOKENS")]
    pub max_new_tokens: Option<usize>,
    /// Fewest tokens generated per sentence before it may end.
    #[arg(long, env = "VISLINGO_MIN_NEW_TOKENS", default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Beam search length penalty (exponent of the length that divides the score).
    #[arg(long, env = "VISLINGO_LENGTH_PENALTY", default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Beam search early stopping: true, false or never (as transformers).
    #[arg(long, env = "VISLINGO_EARLY_STOPPING", default_value = "false")]
    pub early_stopping: EarlyStopping,
    /// Sample instead of greedy decoding, with this temperature.
    #[arg(long, env = "VISLINGO_TEMPERATURE")]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold (with --temperature).
    #[arg(long, env = "VISLINGO_TOP_P", default_value_t = 1.0)]
    pub top_p: f64,
    /// Random seed for sampling.
    #[arg(long, env = "VISLINGO_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Split long text into sentences before translating (`none` translates it whole).
    #[arg(long, env = "VISLINGO_SEGMENT", default_value = "sentences")]
    pub segment: Segmentation,
    /// Decoder rows (sentences x languages x beams) run together at most.
    #[arg(long, env = "VISLINGO_MAX_BATCH_ROWS", default_value_t = 256)]
    pub max_batch_rows: usize,
    /// Output: `text` (one line per language) or `json` (ids included, for comparison with transformers).
    #[arg(long, env = "VISLINGO_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("device `{spec}`: expected cpu, cuda or cuda:N"))?,
        None => bail!("device `{spec}`: expected cpu, cuda or cuda:N"),
    };
    if !candle_core::utils::cuda_is_available() {
        bail!("device `{spec}`: this worker was built without CUDA; rebuild with `--features cuda`");
    }
    Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Translate(args) => translate(args),
        Command::Run(args) => crate::run::run(args),
        Command::Describe(args) => describe(args),
        Command::Frames(args) => crate::frames::run(args),
        Command::Serve(args) => crate::serve::serve(*args),
    }
}

fn translate(args: TranslateArgs) -> Result<()> {
    let text = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the text from standard input")?;
        text
    } else {
        args.text.clone()
    };
    let source = Lang::parse(&args.from).context("--from")?;
    let targets = lang::parse_list(&args.to).context("--to")?;
    let sampling = args.temperature.map(|temperature| Sampling { temperature, top_p: args.top_p, seed: args.seed });
    let options = TranslateOptions {
        beams: Some(args.beams),
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        length_penalty: Some(args.length_penalty),
        early_stopping: args.early_stopping,
        sampling,
        segmentation: args.segment,
        max_batch_rows: args.max_batch_rows,
    };
    let device = parse_device(&args.runtime.device)?;
    let source_spec = ModelSource::parse(&args.model, args.runtime.revision.as_deref());
    let repo = ModelRepo::open(source_spec).with_context(|| format!("model {}", args.model))?;
    let translator = Translator::load(&repo, args.runtime.dtype.into(), &device)
        .with_context(|| format!("cannot load translator {}", args.model))?;
    let translated = translator.translate(&text, source, &targets, &options)?;
    print_translation(&translated, args.format)
}

fn print_translation(translated: &Translated, format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Json => {
            let json = serde_json::json!({
                "source": {
                    "lang": translated.source.lang,
                    "text": translated.source.text,
                    "input_ids": translated.source.input_ids,
                    "segments": translated.source.segments,
                },
                "translations": translated.translations,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        OutputFormat::Text => {
            for t in &translated.translations {
                println!("[{} {}] {}", t.lang.code(), t.lang.name(), t.text);
            }
        }
    }
    Ok(())
}

fn describe(args: DescribeArgs) -> Result<()> {
    let task_set = args.vision.tasks()?;
    let mut task = task_set.get(&args.task)?.clone();
    if let Some(prompt) = &args.prompt {
        task.prompt = prompt.clone();
        task.video_prompt = prompt.clone();
    }
    let models = args.vision.load()?;
    let pipeline = crate::pipeline::Pipeline {
        chat: &models.chat,
        translator: models.translator.as_ref(),
        settings: crate::pipeline::PipelineSettings {
            tasks: vec![task],
            langs: models.langs.clone(),
            source_lang: Lang::parse("eng_Latn").expect("English is a FLORES-200 code"),
            decode: args.vision.decode_options(),
            video: args.vision.video_options(),
            generation: args.vision.decode_settings(models.chat.default_settings(512)),
            max_new_tokens: args.vision.max_new_tokens,
            translation: TranslateOptions::default(),
        },
    };
    let assets = args
        .images
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(crate::pipeline::AssetBytes { key: path.display().to_string(), bytes })
        })
        .collect::<Result<Vec<_>>>()?;
    let processed = pipeline.process(&assets);
    let mut failed = 0;
    let mut objects = Vec::new();
    for p in &processed {
        let result = &p.result;
        if let Some(error) = &result.error {
            failed += 1;
            eprintln!("error: {} ({} stage)", error.message, error.stage);
        }
        let output = result.outputs.first();
        let answer = p.answers.first().and_then(|a| a.as_ref());
        match args.format {
            OutputFormat::Json => objects.push(serde_json::json!({
                "asset": result.asset,
                "kind": result.kind,
                "task": output.map(|o| o.task.clone()),
                "prompt_token_ids": answer.map(|a| a.prompt_token_ids.clone()),
                "token_ids": answer.map(|a| a.token_ids.clone()),
                "text": output.map(|o| o.text.clone()),
                "tags": output.and_then(|o| o.tags.clone()),
                "tags_processed": output.and_then(|o| o.tags_processed.clone()),
                "translations": output.map(|o| o.translations.clone()).unwrap_or_default(),
                "media": result.media,
                "timings": result.timings,
                "error": result.error,
            })),
            OutputFormat::Text => {
                if let Some(output) = output {
                    println!("== {}", result.asset);
                    println!("{}", output.text);
                    for t in &output.translations {
                        println!("[{} {}] {}", t.lang.code(), t.lang.name(), t.text);
                    }
                }
            }
        }
    }
    if args.format == OutputFormat::Json {
        let json = if objects.len() == 1 { objects.remove(0) } else { serde_json::Value::Array(objects) };
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    if failed > 0 {
        bail!("{failed} of {} assets failed", processed.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with(flags: &[&str]) -> DecodeSettings {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            vision: VisionArgs,
        }
        let args = Wrapper::parse_from(std::iter::once("worker").chain(flags.iter().copied()));
        let checkpoint = DecodeSettings {
            max_new_tokens: 0,
            sampling: Some((0.6, 0.9)),
            seed: 0,
            repetition_penalty: 1.1,
            min_new_tokens: 0,
        };
        args.vision.decode_settings(checkpoint)
    }

    #[test]
    fn sampling_flags_override_the_checkpoint_and_greedy_wins() {
        assert_eq!(settings_with(&[]).sampling, Some((0.6, 0.9)));
        assert_eq!(settings_with(&["--temperature", "0.3"]).sampling, Some((0.3, 0.9)));
        assert_eq!(settings_with(&["--top-p", "0.5"]).sampling, Some((0.6, 0.5)));
        assert_eq!(settings_with(&["--temperature", "0"]).sampling, None);
        assert_eq!(settings_with(&["--greedy", "--temperature", "0.3"]).sampling, None);
        let settings = settings_with(&["--seed", "5"]);
        assert_eq!((settings.seed, settings.repetition_penalty), (5, 1.1));
        assert_eq!(settings_with(&["--repetition-penalty", "1.3"]).repetition_penalty, 1.3);
    }

    #[test]
    fn devices_parse_and_cuda_without_the_feature_is_a_clear_error() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        assert!(parse_device("tpu").unwrap_err().to_string().contains("expected cpu, cuda or cuda:N"));
        if !candle_core::utils::cuda_is_available() {
            assert!(parse_device("cuda:0").unwrap_err().to_string().contains("--features cuda"));
        }
    }
}
