//! Command-line interface of the `worker` binary: flags (each with an environment fallback) and the
//! subcommands they drive.

use std::io::Read;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vislingo_proto::{lang, Lang};

use crate::models::generate::EarlyStopping;
use crate::models::hub::{ModelRepo, ModelSource};
use crate::models::nllb::{Sampling, Segmentation, TranslateOptions, Translated, Translator};

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
