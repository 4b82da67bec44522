//! `prequant-dequant-bench`: how long loading a pre-quantized checkpoint spends dequantizing. Writes one full-size
//! Llama 3.2 11B text decoder layer (q/k/v/o and gate/up/down projections, 218 M weights) in the bitsandbytes NF4
//! layout (with and without double quantization) and in the compressed-tensors FP8 layout to a temporary folder,
//! then times `PrequantTensors::load` of every weight to the requested dtype and prints one JSON line.
//! The codes and scales are random: dequantization does the same work whatever their values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use serde_json::json;
use vislingo_worker::models::prequant::bnb::NF4_TABLE;
use vislingo_worker::models::prequant::{PrequantTensors, QuantizationConfig};

#[derive(Parser, Debug)]
#[command(about = "Time the dequantization of one full-size Llama 3.2 11B decoder layer in NF4 and FP8 layouts")]
struct Args {
    /// Where the temporary checkpoints go (about 0.5 GB).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// f32, f16 or bf16: the dtype the weights are loaded in.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

/// (name, out, in) of the linear layers of one Llama 3.2 11B text decoder layer (hidden 4096, 8 KV heads of 128,
/// intermediate 14336).
const LAYER: [(&str, usize, usize); 7] = [
    ("self_attn.q_proj", 4096, 4096),
    ("self_attn.k_proj", 1024, 4096),
    ("self_attn.v_proj", 1024, 4096),
    ("self_attn.o_proj", 4096, 4096),
    ("mlp.gate_proj", 14336, 4096),
    ("mlp.up_proj", 14336, 4096),
    ("mlp.down_proj", 4096, 14336),
];

/// A small xorshift generator: the values do not matter, only that they vary.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 32) as u8
            })
            .collect()
    }
}

fn nf4_checkpoint(path: &Path, double_quant: bool, rng: &mut Bytes) -> Result<()> {
    let cpu = Device::Cpu;
    let mut tensors = HashMap::new();
    for (name, out, inp) in LAYER {
        let n = out * inp;
        let weight = format!("model.layers.0.{name}.weight");
        let blocks = n.div_ceil(64);
        tensors.insert(weight.clone(), Tensor::from_vec(rng.fill(n / 2), (n / 2, 1), &cpu)?);
        let mut state = json!({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [out, inp]});
        if double_quant {
            tensors.insert(format!("{weight}.absmax"), Tensor::from_vec(rng.fill(blocks), blocks, &cpu)?);
            let nested = blocks.div_ceil(256);
            tensors.insert(format!("{weight}.nested_absmax"), Tensor::ones(nested, DType::F32, &cpu)?);
            let code: Vec<f32> = (0..256).map(|i| i as f32 / 255.0 - 0.5).collect();
            tensors.insert(format!("{weight}.nested_quant_map"), Tensor::from_vec(code, 256, &cpu)?);
            state["nested_blocksize"] = json!(256);
            state["nested_dtype"] = json!("float32");
            state["nested_offset"] = json!(0.01);
        } else {
            tensors.insert(format!("{weight}.absmax"), Tensor::ones(blocks, DType::F32, &cpu)?);
        }
        tensors.insert(format!("{weight}.quant_map"), Tensor::new(&NF4_TABLE, &cpu)?);
        let state = serde_json::to_vec(&state)?;
        let len = state.len();
        tensors.insert(format!("{weight}.quant_state.bitsandbytes__nf4"), Tensor::from_vec(state, len, &cpu)?);
    }
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

fn fp8_checkpoint(path: &Path, rng: &mut Bytes) -> Result<()> {
    let cpu = Device::Cpu;
    let mut tensors = HashMap::new();
    for (name, out, inp) in LAYER {
        // clear one exponent bit so that no byte is NaN (S.1111.111)
        let bytes: Vec<u8> = rng.fill(out * inp).into_iter().map(|b| b & 0xbf).collect();
        let weight = Tensor::from_raw_buffer(&bytes, DType::F8E4M3, &[out, inp], &cpu)?;
        tensors.insert(format!("model.layers.0.{name}.weight"), weight);
        let scale = Tensor::ones((out, 1), DType::BF16, &cpu)?;
        tensors.insert(format!("model.layers.0.{name}.weight_scale"), scale);
    }
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

/// Median seconds to load every weight of the layer.
fn time_layer(path: &Path, config: QuantizationConfig, dtype: DType, repeats: usize) -> Result<f64> {
    // SAFETY: the benchmark's own temporary file.
    let tensors = unsafe { PrequantTensors::open(&[path.to_path_buf()], config)? };
    let mut times = Vec::new();
    for _ in 0..repeats + 1 {
        let started = Instant::now();
        for (name, out, inp) in LAYER {
            let weight = tensors.load(&format!("model.layers.0.{name}.weight"), dtype, &Device::Cpu)?;
            anyhow::ensure!(weight.dims() == [out, inp], "{name}: shape {:?}", weight.dims());
        }
        times.push(started.elapsed().as_secs_f64());
    }
    times.remove(0); // warm-up: page cache
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => anyhow::bail!("unknown dtype {other}: f32, f16 or bf16"),
    };
    let dir = tempfile::tempdir_in(&args.dir).with_context(|| format!("temporary folder in {}", args.dir.display()))?;
    let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
    let weights: usize = LAYER.iter().map(|(_, o, i)| o * i).sum();
    let bnb = |double| {
        QuantizationConfig::from_value(&json!({"quant_method": "bitsandbytes", "load_in_4bit": true,
            "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": double}))
    };
    let fp8 = QuantizationConfig::from_value(&json!({"quant_method": "compressed-tensors",
        "format": "float-quantized", "config_groups": {"group_0": {"targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}}))?;
    let mut results = serde_json::Map::new();
    for (layout, path) in
        [("nf4", "nf4.safetensors"), ("nf4_double_quant", "nf4dq.safetensors"), ("fp8", "fp8.safetensors")]
    {
        let path = dir.path().join(path);
        let config = match layout {
            "nf4" => {
                nf4_checkpoint(&path, false, &mut rng)?;
                bnb(false)?
            }
            "nf4_double_quant" => {
                nf4_checkpoint(&path, true, &mut rng)?;
                bnb(true)?
            }
            _ => {
                fp8_checkpoint(&path, &mut rng)?;
                fp8.clone()
            }
        };
        let seconds = time_layer(&path, config, dtype, args.repeats)?;
        results
            .insert(layout.into(), json!({"layer_seconds": seconds, "weights_per_second": weights as f64 / seconds}));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{}",
        json!({"layer_weights": weights, "dtype": args.dtype, "repeats": args.repeats, "threads": threads,
               "results": results})
    );
    Ok(())
}
