//! `mllama-load-bench`: loads a Llama 3.2 Vision checkpoint through `MllamaChat::load` (the worker's own path)
//! with one `--quant` and prints one JSON line with the load time and the process's memory, peak and after load.
//!
//! Peak resident memory (`VmHWM`) counts the safetensors pages mapped while loading (file-backed, evictable)
//! as well as the model's own tensors (anonymous); a sampler thread also records the peak anonymous memory
//! (`RssAnon`), which is what the model needs in RAM.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::Parser;
use serde_json::json;
use vislingo_worker::models::hub::{ModelRepo, ModelSource};
use vislingo_worker::models::mllama::chat::MllamaChat;
use vislingo_worker::models::quant::Quant;

#[derive(Parser, Debug)]
#[command(about = "Load a Llama 3.2 Vision checkpoint with one --quant and print its memory as one JSON line")]
struct Args {
    /// Model folder or Hub repo id.
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "none")]
    quant: Quant,
    #[arg(long, default_value = "bf16")]
    dtype: String,
}

/// The `kB` fields of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("{field} not in /proc/self/status"))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse()?;
    Ok(kb * 1024)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => anyhow::bail!("unknown dtype {other}: f32, f16 or bf16"),
    };
    let peak_anon = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak_anon, done) = (peak_anon.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(anon) = status_bytes("RssAnon") {
                    peak_anon.fetch_max(anon, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let before = status_bytes("VmRSS")?;
    let started = Instant::now();
    let repo = ModelRepo::open(ModelSource::parse(&args.model, None))?;
    let chat = MllamaChat::load(&repo, dtype, &Device::Cpu, args.quant)?;
    let load_s = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    let gib = |b: u64| (b as f64 / (1u64 << 30) as f64 * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({
            "model": args.model,
            "quant": args.quant.as_str(),
            "dtype": args.dtype,
            "load_s": (load_s * 100.0).round() / 100.0,
            "rss_before_load_gib": gib(before),
            "peak_rss_gib": gib(status_bytes("VmHWM")?),
            "peak_anon_gib": gib(peak_anon.load(Ordering::Relaxed).max(status_bytes("RssAnon")?)),
            "rss_after_load_gib": gib(status_bytes("VmRSS")?),
            "anon_after_load_gib": gib(status_bytes("RssAnon")?),
        })
    );
    drop(chat);
    Ok(())
}
