//! Pre-quantized checkpoints loaded as they are (the same files and tensor names as on the Hub): bitsandbytes
//! 4-bit (`SeanScripts/Llama-3.2-11B-Vision-Instruct-nf4`: NF4, FP4, with or without double quantization) and
//! compressed-tensors float8 (`neuralmagic/Llama-3.2-11B-Vision-Instruct-FP8-dynamic`).
//!
//! `config.json`'s `quantization_config` names the format ([`QuantizationConfig`]); [`PrequantTensors`] is a candle
//! `VarBuilder` backend over the safetensors files that, when a model asks for a weight the checkpoint stores
//! quantized, dequantizes it on the CPU to the requested dtype and shape, and passes every other tensor through.
//! Which weights are quantized is read from the files (a `quant_state` beside the weight, or a float8 weight), not
//! from the config's skip / ignore lists, so a checkpoint loads whichever modules its quantizer left dense. The
//! model then runs on dense weights; `--quant q8_0|q4k` re-quantizes them as for a dense checkpoint. Activations
//! are not quantized (an FP8-dynamic checkpoint's engine would round them to float8 per token).

pub mod bnb;
pub mod config;
pub mod fp8;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};

pub use config::QuantizationConfig;

/// Why a pre-quantized checkpoint cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PrequantError {
    #[error("{what} is not supported: {hint}")]
    Unsupported { what: String, hint: &'static str },
    #[error("quantization_config is malformed: {reason}")]
    BadConfig { reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pre-quantized weights must be safetensors files; {path} is a PyTorch pickle")]
    NotSafetensors { path: PathBuf },
    #[error("cannot dequantize {tensor}: {companion} is missing from the checkpoint")]
    MissingCompanion { tensor: String, companion: String },
    #[error("cannot dequantize {tensor}: its quant_state is malformed: {reason}")]
    BadQuantState { tensor: String, reason: String },
    #[error("cannot dequantize {tensor}: bitsandbytes quant_type `{quant_type}` is not supported (nf4 and fp4 are)")]
    UnsupportedQuantType { tensor: String, quant_type: String },
    #[error("{tensor}: the model expects shape {expected:?} but the checkpoint stores {stored:?}")]
    ShapeMismatch { tensor: String, expected: Vec<usize>, stored: Vec<usize> },
    #[error("cannot dequantize {tensor}: {what} has {got} values, expected {expected} ({why})")]
    Size { tensor: String, what: &'static str, got: usize, expected: usize, why: String },
    #[error("cannot dequantize {tensor}: {what} is {dtype:?}, expected {expected}")]
    DType { tensor: String, what: String, dtype: DType, expected: &'static str },
    #[error(
        "cannot dequantize {tensor}: a weight scale of shape {shape:?} fits no per-tensor, per-channel or per-group \
         scheme of a {rows}x{cols} weight"
    )]
    ScaleShape { tensor: String, shape: Vec<usize>, rows: usize, cols: usize },
    #[error("cannot read tensor {tensor}: {source}")]
    Tensor {
        tensor: String,
        #[source]
        source: candle_core::Error,
    },
}

/// How the checkpoint stores one quantized weight.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    /// bitsandbytes 4-bit, with the name of its quant_state tensor.
    Bnb { quant_state: String },
    /// A uint8 weight in a bitsandbytes checkpoint without a quant_state: reported when asked for.
    BnbWithoutState,
    /// compressed-tensors float8 (its `weight_scale` is required when it is loaded).
    Fp8,
}

/// The tensors of a pre-quantized checkpoint, dequantized on demand: a candle `SimpleBackend`.
pub struct PrequantTensors {
    tensors: MmapedSafetensors,
    config: QuantizationConfig,
    /// Weights stored quantized, found once from the safetensors headers.
    quantized: HashMap<String, Stored>,
}

/// A stored tensor's bytes, without copying.
struct Raw<'a> {
    dtype: DType,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl PrequantTensors {
    /// Memory-maps the safetensors files of a checkpoint whose `config.json` has `config`.
    ///
    /// # Safety
    /// The files are memory-mapped (as candle's `MmapedSafetensors`): they must not change while in use.
    pub unsafe fn open(paths: &[PathBuf], config: QuantizationConfig) -> Result<PrequantTensors, PrequantError> {
        // SAFETY: the caller keeps the files unchanged while they are mapped.
        let mapped = unsafe {
            match paths {
                [single] => MmapedSafetensors::new(single),
                _ => MmapedSafetensors::multi(paths),
            }
        };
        let tensors = mapped.map_err(|source| PrequantError::Tensor { tensor: display_paths(paths), source })?;
        let mut quantized = HashMap::new();
        for (name, view) in tensors.tensors() {
            match &config {
                QuantizationConfig::Bitsandbytes(_) => {
                    let state_of = |suffix: &str| name.strip_suffix(suffix)?.strip_suffix('.').map(str::to_string);
                    if let Some(weight) = bnb::QUANT_STATE_SUFFIXES.iter().find_map(|s| state_of(s)) {
                        quantized.insert(weight, Stored::Bnb { quant_state: name.clone() });
                    } else if name.ends_with(".weight") && DType::try_from(view.dtype()).ok() == Some(DType::U8) {
                        quantized.entry(name).or_insert(Stored::BnbWithoutState);
                    }
                }
                QuantizationConfig::CompressedTensors(_) => {
                    if name.ends_with(".weight") && DType::try_from(view.dtype()).ok() == Some(DType::F8E4M3) {
                        quantized.insert(name, Stored::Fp8);
                    }
                }
            }
        }
        tracing::info!(
            layout = %config.summary(),
            quantized_weights = quantized.len(),
            files = paths.len(),
            "pre-quantized checkpoint: weights are dequantized on load"
        );
        Ok(PrequantTensors { tensors, config, quantized })
    }

    /// The checkpoint's `quantization_config`.
    pub fn config(&self) -> &QuantizationConfig {
        &self.config
    }

    /// Whether the checkpoint stores `name` quantized (so that [`PrequantTensors::load`] dequantizes it).
    pub fn is_quantized(&self, name: &str) -> bool {
        self.quantized.contains_key(name)
    }

    /// The tensor `name` in `dtype` on `device`: dequantized (computed in f32 on the CPU, then cast once) when
    /// stored quantized, else as stored.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, PrequantError> {
        let (values, shape) = match self.quantized.get(name) {
            None => {
                return self
                    .tensors
                    .load(name, device)
                    .and_then(|t| t.to_dtype(dtype))
                    .map_err(|source| PrequantError::Tensor { tensor: name.into(), source })
            }
            Some(Stored::Bnb { quant_state }) => self.dequantize_bnb(name, quant_state)?,
            Some(Stored::BnbWithoutState) => {
                return Err(PrequantError::MissingCompanion {
                    tensor: name.into(),
                    companion: format!("{name}.{}", bnb::QUANT_STATE_SUFFIXES[0]),
                })
            }
            Some(Stored::Fp8) => self.dequantize_fp8(name)?,
        };
        tracing::debug!(tensor = name, ?shape, "dequantized");
        Tensor::from_vec(values, shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.to_device(device))
            .map_err(|source| PrequantError::Tensor { tensor: name.into(), source })
    }

    fn raw(&self, weight: &str, name: &str) -> Result<Raw<'_>, PrequantError> {
        let view = self
            .tensors
            .get(name)
            .map_err(|_| PrequantError::MissingCompanion { tensor: weight.into(), companion: name.into() })?;
        let dtype =
            DType::try_from(view.dtype()).map_err(|source| PrequantError::Tensor { tensor: name.into(), source })?;
        Ok(Raw { dtype, shape: view.shape().to_vec(), data: view.data() })
    }

    /// A small companion tensor (scales, tables) as f32 values, from any float dtype.
    fn floats(&self, weight: &str, name: &str) -> Result<Vec<f32>, PrequantError> {
        let raw = self.raw(weight, name)?;
        if !matches!(raw.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64 | DType::F8E4M3) {
            return Err(PrequantError::DType {
                tensor: weight.into(),
                what: name.into(),
                dtype: raw.dtype,
                expected: "a float type",
            });
        }
        self.tensors
            .load(name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
            .map_err(|source| PrequantError::Tensor { tensor: name.into(), source })
    }

    fn quant_state(&self, weight: &str, quant_state: &str) -> Result<bnb::QuantState, PrequantError> {
        let raw = self.raw(weight, quant_state)?;
        if raw.dtype != DType::U8 {
            return Err(PrequantError::DType {
                tensor: weight.into(),
                what: quant_state.into(),
                dtype: raw.dtype,
                expected: "U8 (the bytes of a JSON object)",
            });
        }
        bnb::QuantState::parse(weight, raw.data)
    }

    fn dequantize_bnb(&self, weight: &str, quant_state: &str) -> Result<(Vec<f32>, Vec<usize>), PrequantError> {
        let state = self.quant_state(weight, quant_state)?;
        let suffix = quant_state.rsplit('.').next().unwrap_or_default();
        if suffix != format!("bitsandbytes__{}", state.quant_type.name()) {
            return Err(PrequantError::BadQuantState {
                tensor: weight.into(),
                reason: format!("{suffix} holds quant_type {}", state.quant_type.name()),
            });
        }
        let absmax_name = format!("{weight}.absmax");
        let absmax = match &state.nested {
            None => self.floats(weight, &absmax_name)?,
            Some(nested) => {
                let codes = self.raw(weight, &absmax_name)?;
                if codes.dtype != DType::U8 {
                    return Err(PrequantError::DType {
                        tensor: weight.into(),
                        what: absmax_name,
                        dtype: codes.dtype,
                        expected: "U8 (double quantization is on)",
                    });
                }
                let code = self.floats(weight, &format!("{weight}.nested_quant_map"))?;
                let scales = self.floats(weight, &format!("{weight}.nested_absmax"))?;
                bnb::nested_absmax(weight, codes.data, &code, &scales, nested)?
            }
        };
        self.check_quant_map(weight, &state)?;
        let packed = self.raw(weight, weight)?;
        let values = bnb::dequantize(weight, packed.data, &absmax, &state)?;
        Ok((values, state.shape))
    }

    /// A stored 16-entry table that differs from the quant_type's is reported: the kernels never read it.
    fn check_quant_map(&self, weight: &str, state: &bnb::QuantState) -> Result<(), PrequantError> {
        let name = format!("{weight}.quant_map");
        if self.tensors.get(&name).is_err() {
            return Ok(());
        }
        let stored = self.floats(weight, &name)?;
        if stored.as_slice() != state.quant_type.table().as_slice() {
            tracing::warn!(
                tensor = weight,
                quant_type = state.quant_type.name(),
                ?stored,
                "quant_map differs from the table of its quant_type, which is used"
            );
        }
        Ok(())
    }

    fn dequantize_fp8(&self, weight: &str) -> Result<(Vec<f32>, Vec<usize>), PrequantError> {
        let base = weight.strip_suffix(".weight").unwrap_or(weight);
        let raw = self.raw(weight, weight)?;
        // (out, in) for a linear weight; any leading dims count as rows.
        let cols = raw.shape.last().copied().unwrap_or(1);
        let rows = raw.shape.iter().rev().skip(1).product::<usize>();
        let scale_name = format!("{base}.weight_scale");
        let scale_shape = self.raw(weight, &scale_name)?.shape;
        let layout = fp8::ScaleLayout::infer(weight, &scale_shape, rows, cols)?;
        let scale = self.floats(weight, &scale_name)?;
        let zero_point_name = format!("{base}.weight_zero_point");
        let zero_point = if self.tensors.get(&zero_point_name).is_ok() {
            let zero_point = self.floats(weight, &zero_point_name)?;
            if zero_point.len() != scale.len() {
                return Err(PrequantError::Size {
                    tensor: weight.into(),
                    what: "weight_zero_point",
                    got: zero_point.len(),
                    expected: scale.len(),
                    why: "one per scale".into(),
                });
            }
            Some(zero_point)
        } else {
            None
        };
        if self.tensors.get(&format!("{base}.weight_g_idx")).is_ok() {
            return Err(PrequantError::Unsupported {
                what: format!("activation-ordered groups ({base}.weight_g_idx)"),
                hint: "only column-ordered float8 groups load",
            });
        }
        let values = fp8::dequantize(raw.data, rows, cols, layout, &scale, zero_point.as_deref());
        Ok((values, raw.shape))
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl candle_nn::var_builder::SimpleBackend for PrequantTensors {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, device).map_err(candle_core::Error::wrap)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::wrap(PrequantError::ShapeMismatch {
                tensor: name.into(),
                expected: shape.dims().to_vec(),
                stored: tensor.dims().to_vec(),
            }));
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, device).map_err(candle_core::Error::wrap)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }
}

/// A `VarBuilder` over pre-quantized safetensors files (see [`PrequantTensors`]).
pub fn var_builder(
    paths: &[PathBuf],
    config: &QuantizationConfig,
    dtype: DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>, PrequantError> {
    // SAFETY: the files are memory-mapped read-only; vislingo never writes model files while serving.
    let tensors = unsafe { PrequantTensors::open(paths, config.clone())? };
    Ok(candle_nn::VarBuilder::from_backend(Box::new(tensors), dtype, device.clone()))
}
