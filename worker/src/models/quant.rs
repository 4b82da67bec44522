//! In-situ weight quantization on load (`--quant q4k|q8_0|none`): [`QLinear`], a linear layer whose weight is
//! either dense or quantized in place to a GGML block format with candle's `QMatMul`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::models::linear::{concat_rows, fused_linear, Part};

/// Weight format of linear layers after loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Quant {
    /// Keep the weights dense, in the model dtype.
    #[default]
    #[value(name = "none")]
    None,
    /// GGML Q8_0: blocks of 32 int8 weights with one f16 scale (34 bytes per 32 weights, 8.5 bits a weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// GGML Q4_K: super-blocks of 256 4-bit weights with 6-bit sub-block scales and mins (144 bytes per 256
    /// weights, 4.5 bits a weight).
    #[value(name = "q4k", alias = "q4_k")]
    Q4k,
}

/// A `--quant` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quantization {given:?}: expected one of none, q8_0, q4k (alias q4_k)")]
pub struct ParseQuantError {
    /// The string that was given.
    pub given: String,
}

impl Quant {
    /// Every format, in the order the CLI lists them.
    pub const ALL: [Quant; 3] = [Quant::None, Quant::Q8_0, Quant::Q4k];

    /// The CLI name ("none", "q8_0", "q4k").
    pub fn as_str(self) -> &'static str {
        match self {
            Quant::None => "none",
            Quant::Q8_0 => "q8_0",
            Quant::Q4k => "q4k",
        }
    }

    /// The candle block format, `None` for dense weights.
    pub fn ggml_dtype(self) -> Option<GgmlDType> {
        match self {
            Quant::None => None,
            Quant::Q8_0 => Some(GgmlDType::Q8_0),
            Quant::Q4k => Some(GgmlDType::Q4K),
        }
    }

    /// Weights per block (Q8_0: 32, Q4K: 256); the input dimension of a quantized layer must be a multiple of it.
    pub fn block_size(self) -> Option<usize> {
        self.ggml_dtype().map(|dtype| dtype.block_size())
    }

    /// Whether a linear layer with this input dimension would be quantized (rather than kept dense).
    pub fn applies_to(self, in_dim: usize) -> bool {
        self.block_size().is_some_and(|block| in_dim > 0 && in_dim.is_multiple_of(block))
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quant {
    type Err = ParseQuantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Quant::None),
            "q8_0" => Ok(Quant::Q8_0),
            "q4k" | "q4_k" => Ok(Quant::Q4k),
            _ => Err(ParseQuantError { given: s.to_string() }),
        }
    }
}

/// A linear layer whose weight is dense (candle_nn::Linear) or quantized in place (candle QMatMul), with an
/// optional dense bias. `forward` maps (..., in) to (..., out) for inputs of any rank and layout.
#[derive(Clone, Debug)]
pub enum QLinear {
    /// Dense weight (out, in) in the model dtype.
    Dense(Linear),
    /// Block-quantized weight (out, in) on the model device; the bias stays dense, in `out_dtype`.
    Quantized {
        /// Always the `QMatMul::QTensor` variant when built by [`QLinear::load`] or [`QLinear::from_linear`].
        weight: QMatMul,
        bias: Option<Tensor>,
        /// The model dtype: the dtype of the outputs.
        out_dtype: DType,
    },
}

impl QLinear {
    /// Loads `weight` (out, in) [and `bias` when `bias` is true] by Hub name through `vb` and quantizes the weight
    /// when `quant` != None and the input dimension is a multiple of the format's block size (Q8_0: 32, Q4K: 256)
    /// — otherwise keeps it dense and says so at debug level.
    ///
    /// A weight to quantize is read in `vb.dtype()` on the CPU (whatever `vb`'s device), quantized there on all
    /// cores and only the blocks are moved to `vb.device()`, so neither the dense nor the f32 copy is kept (nor, on a GPU, ever
    /// allocated there). Memory goes down as long as `vb`'s backend does not itself own the tensors (mmaped or
    /// buffered safetensors do not; `VarBuilder::from_tensors` and `VarMap` do).
    pub fn load(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        quant: Quant,
    ) -> candle_core::Result<QLinear> {
        QLinear::load_fused(in_dim, &[Part::new(out_dim, vb)], bias, quant)
    }

    /// Loads several layers that read the same input as one: their weights `(out_i, in)` [and biases], each by
    /// its Hub name through its own `vb` and multiplied by its `scale`, concatenated along the output dimension,
    /// then quantized as one weight by the rules of [`QLinear::load`]. The output is the parts' outputs side by
    /// side (`q | k | v`), so one matmul does the work of several. Quantized blocks never straddle a row, so
    /// quantizing the concatenation gives the parts' own blocks.
    pub fn load_fused(in_dim: usize, parts: &[Part], bias: bool, quant: Quant) -> candle_core::Result<QLinear> {
        let Some(first) = parts.first().map(|part| &part.vb) else {
            candle_core::bail!("a fused linear layer needs at least one part");
        };
        let out_dim: usize = parts.iter().map(|part| part.out_dim).sum();
        let device = first.device().clone();
        let out_dtype = first.dtype();
        let ggml_dtype = quant.ggml_dtype().filter(|_| quant.applies_to(in_dim));
        if let (Some(block), None) = (quant.block_size(), ggml_dtype) {
            tracing::debug!(
                layer = %first.prefix(),
                in_dim,
                out_dim,
                block,
                "input dim is not a multiple of the {quant} block size: keeping the weight dense"
            );
        }
        let Some(ggml_dtype) = ggml_dtype else {
            return Ok(QLinear::Dense(fused_linear(in_dim, parts, bias)?));
        };
        // Read on the CPU: only the blocks go to the device.
        let weights = parts
            .iter()
            .map(|part| part.weight(in_dim, &part.vb.clone().set_device(Device::Cpu)))
            .collect::<Result<_, _>>()?;
        let weight = quantize_weight(concat_rows(weights)?, ggml_dtype, &device)?;
        let bias =
            if bias { Some(concat_rows(parts.iter().map(Part::bias).collect::<Result<_, _>>()?)?) } else { None };
        Ok(QLinear::Quantized { weight, bias, out_dtype })
    }

    /// Quantizes an already loaded dense layer on its own device (same rules as [`QLinear::load`]); the dense
    /// weight is released when `linear` held its last reference.
    pub fn from_linear(linear: Linear, quant: Quant) -> candle_core::Result<QLinear> {
        let Some(ggml_dtype) = quant.ggml_dtype() else {
            return Ok(QLinear::Dense(linear));
        };
        let (out_dim, in_dim) = linear.weight().dims2()?;
        if !quant.applies_to(in_dim) {
            tracing::debug!(
                in_dim,
                out_dim,
                block = ggml_dtype.block_size(),
                "input dim is not a multiple of the {quant} block size: keeping the weight dense"
            );
            return Ok(QLinear::Dense(linear));
        }
        let out_dtype = linear.weight().dtype();
        let device = linear.weight().device().clone();
        let bias = linear.bias().map(|b| b.to_dtype(out_dtype)).transpose()?;
        let weight = linear.weight().clone();
        drop(linear);
        let weight = quantize_weight(weight, ggml_dtype, &device)?;
        Ok(QLinear::Quantized { weight, bias, out_dtype })
    }

    /// Whether the weight is held in a block-quantized format.
    pub fn is_quantized(&self) -> bool {
        matches!(self, QLinear::Quantized { weight: QMatMul::QTensor(_), .. })
    }

    /// The GGML format of a quantized weight, `None` for a dense one.
    pub fn quantized_dtype(&self) -> Option<GgmlDType> {
        match self {
            QLinear::Quantized { weight: QMatMul::QTensor(q), .. } => Some(q.dtype()),
            _ => None,
        }
    }

    /// Bytes the weight occupies on its device (for memory reports); the bias is not counted.
    ///
    /// On x86 CPUs candle also caches, on the first matmul and for as long as the layer lives, a copy of the
    /// blocks repacked for its SIMD kernels, which is not counted here: +6 bits a weight for Q4K (with AVX2) and
    /// +8.5 bits for Q8_0 (with AVX512-VNNI or AVX-VNNI); CUDA keeps only the blocks.
    pub fn weight_bytes(&self) -> usize {
        fn dense_bytes(t: &Tensor) -> usize {
            t.elem_count() * t.dtype().size_in_bytes()
        }
        match self {
            QLinear::Dense(linear) => dense_bytes(linear.weight()),
            QLinear::Quantized { weight, .. } => match weight {
                QMatMul::QTensor(q) => q.storage_size_in_bytes(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => dense_bytes(t),
            },
        }
    }
}

/// Weights below which a matrix is quantized on one thread (spawning costs more than it saves).
const MIN_WEIGHTS_PER_THREAD: usize = 1 << 20;

/// Quantizes a dense (out, in) weight to `dtype` with its blocks on `device`, consuming the dense tensor.
///
/// candle quantizes on one CPU thread (on CUDA too: `QTensor::quantize` copies the f32 tensor to the host), about
/// 9 ns a weight for Q8_0 and 30 ns for Q4K, i.e. minutes for an 8B-weight decoder; so the rows are split into
/// chunks quantized on all cores and the chunks' blocks, which are row-major, are concatenated. Each chunk is made
/// into a fresh f32 buffer first because `QTensor::quantize` reads its source storage's whole buffer, ignoring
/// the layout's offset and strides.
fn quantize_weight(weight: Tensor, dtype: GgmlDType, device: &Device) -> candle_core::Result<QMatMul> {
    // The block ends the caller's (maybe GPU) tensor before quantizing the CPU copy.
    let weight = {
        let dense = weight;
        dense.to_device(&Device::Cpu)?
    };
    let (rows, cols) = weight.dims2()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (rows * cols / MIN_WEIGHTS_PER_THREAD).clamp(1, cores.min(rows.max(1)));
    let chunk_rows = rows.div_ceil(threads).max(1);

    let quantize_rows = |start: usize| -> candle_core::Result<QTensor> {
        let chunk = weight.narrow(0, start, chunk_rows.min(rows - start))?;
        let chunk = if chunk.dtype() == DType::F32 { chunk.force_contiguous()? } else { chunk.to_dtype(DType::F32)? };
        QTensor::quantize(&chunk, dtype)
    };
    let qtensor = if threads == 1 {
        let qtensor = quantize_rows(0)?;
        drop(weight);
        if device.is_cpu() {
            qtensor
        } else {
            QTensor::new(QStorage::from_data(qtensor.data()?, device, dtype)?, (rows, cols))?
        }
    } else {
        let chunks = std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..rows).step_by(chunk_rows).map(|start| scope.spawn(move || quantize_rows(start))).collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect::<candle_core::Result<Vec<_>>>()
        })?;
        drop(weight);
        let mut blocks = Vec::with_capacity(chunks.iter().map(QTensor::storage_size_in_bytes).sum());
        for chunk in chunks {
            blocks.extend_from_slice(&chunk.data()?);
        }
        QTensor::new(QStorage::from_data(Cow::Owned(blocks), device, dtype)?, (rows, cols))?
    };
    // Built directly rather than through `QMatMul::from_qtensor`, which dequantizes back to dense f32 (or f16)
    // when CANDLE_DEQUANTIZE_ALL (or CANDLE_DEQUANTIZE_ALL_F16) is set: `--quant` must really save memory.
    Ok(QMatMul::QTensor(Arc::new(qtensor)))
}

/// The dtype a quantized matmul takes its input in on `device`: candle 0.11.1 has native paths for f32 and bf16
/// on the CPU (its f16 path is single-threaded) and for f32/f16/bf16 on CUDA; anything else goes through f32.
fn compute_dtype(device: &Device, dtype: DType) -> DType {
    match (device, dtype) {
        (Device::Cpu, DType::F32 | DType::BF16) => dtype,
        (Device::Cuda(_), DType::F32 | DType::F16 | DType::BF16) => dtype,
        _ => DType::F32,
    }
}

impl Module for QLinear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (weight, bias, out_dtype) = match self {
            QLinear::Dense(linear) => return crate::models::linear::forward(linear, xs),
            QLinear::Quantized { weight, bias, out_dtype } => (weight, bias, *out_dtype),
        };
        let in_dim = xs.dim(D::Minus1)?;
        let mut out_dims = xs.dims().to_vec();
        let rows = xs.elem_count() / in_dim.max(1);
        let out_dim = match weight {
            QMatMul::QTensor(q) => q.shape().dims2()?.0,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2()?.0,
        };
        *out_dims.last_mut().expect("dim(-1) succeeded, so rank >= 1") = out_dim;
        if rows == 0 {
            return Tensor::zeros(out_dims, out_dtype, xs.device());
        }
        // candle's quantized kernels take a contiguous 2D (or 3D) input; flatten the leading dims.
        let x = xs.reshape((rows, in_dim))?.contiguous()?;
        let x = x.to_dtype(compute_dtype(x.device(), x.dtype()))?;
        let ys = weight.forward(&x)?.to_dtype(out_dtype)?.reshape(out_dims)?;
        match bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
    }
}
