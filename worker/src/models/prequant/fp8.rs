//! compressed-tensors `float-quantized` weights (llm-compressor's FP8 schemes) dequantized to f32.
//!
//! A quantized `X.weight` is stored as `float8_e4m3fn` with `X.weight_scale` (f32, bf16 or f16): one value
//! (per-tensor), shape `[out, 1]` (per-channel, what FP8-dynamic checkpoints use) or `[out, groups]` (per-group of
//! `in / groups` columns), and, for asymmetric schemes only, `X.weight_zero_point` of the scale's shape
//! (all-zero points are not saved). compressed-tensors' `FloatQuantizationCompressor.decompress_weight` ->
//! `dequantize` -> `_dequantize`: `(x_q - zero_point) * scale`. Here it is computed in f32: for a bf16 or f16
//! scale without zero point the f32 product is exact (4 x 11 significant bits), so rounding it to the scale's
//! dtype gives what compressed-tensors computes in that dtype.

use rayon::prelude::*;

use super::PrequantError;

/// `float8_e4m3fn` (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities, NaN = S.1111.111): the
/// f32 value of every byte.
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((byte >> 3) & 0x0f);
    let mantissa = f32::from(byte & 0x07);
    if exponent == 0x0f && byte & 0x07 == 0x07 {
        f32::NAN
    } else if exponent == 0 {
        sign * mantissa * 2f32.powi(-9) // subnormal: (m / 8) * 2^-6
    } else {
        sign * (1.0 + mantissa / 8.0) * 2f32.powi(exponent - 7)
    }
}

/// How a weight's scales (and zero points) map to its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleLayout {
    Tensor,
    Channel,
    /// Columns per group.
    Group(usize),
}

impl ScaleLayout {
    /// The layout of a scale of `shape` for a `rows x cols` weight, as compressed-tensors' `dequantize` infers it:
    /// 0 or 1 dims -> per tensor (one value), `[rows, 1]` -> per channel, `[rows, g]` -> groups of `cols / g`.
    pub fn infer(tensor: &str, shape: &[usize], rows: usize, cols: usize) -> Result<ScaleLayout, PrequantError> {
        let bad = || PrequantError::ScaleShape { tensor: tensor.into(), shape: shape.to_vec(), rows, cols };
        match shape {
            [] | [1] | [1, 1] => Ok(ScaleLayout::Tensor),
            [r, 1] if *r == rows => Ok(ScaleLayout::Channel),
            [r, g] if *r == rows && *g > 0 && cols.is_multiple_of(*g) => Ok(ScaleLayout::Group(cols / g)),
            _ => Err(bad()),
        }
    }

    /// Index into the scale of element `(row, col)`.
    fn index(self, row: usize, col: usize, cols: usize) -> usize {
        match self {
            ScaleLayout::Tensor => 0,
            ScaleLayout::Channel => row,
            ScaleLayout::Group(size) => row * (cols / size) + col / size,
        }
    }
}

/// The f32 weight (row-major `rows x cols`) from its float8 bytes, scales and optional zero points (both laid out
/// as `layout` says).
pub fn dequantize(
    weight: &[u8],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    scale: &[f32],
    zero_point: Option<&[f32]>,
) -> Vec<f32> {
    let table: [f32; 256] = std::array::from_fn(|b| e4m3_to_f32(b as u8));
    let mut out = vec![0f32; rows * cols];
    out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(row, values)| {
        for (col, value) in values.iter_mut().enumerate() {
            let s = layout.index(row, col, cols);
            let q = table[weight[row * cols + col] as usize];
            *value = match zero_point {
                Some(zp) => (q - zp[s]) * scale[s],
                None => q * scale[s],
            };
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_bytes_decode_as_candle_reads_float8() {
        use candle_core::{DType, Device, Tensor};
        let bytes: Vec<u8> = (0..=255).collect();
        let candle = Tensor::from_raw_buffer(&bytes, DType::F8E4M3, &[256], &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .unwrap();
        for (byte, candle) in bytes.into_iter().zip(candle) {
            let ours = e4m3_to_f32(byte);
            assert!(ours == candle || (ours.is_nan() && candle.is_nan()), "{byte:#04x}: {ours} vs {candle}");
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
    }

    #[test]
    fn scales_apply_per_tensor_channel_and_group() {
        let one = 0x38; // 1.0
        let weight = [one; 8]; // 2 x 4
        assert_eq!(dequantize(&weight, 2, 4, ScaleLayout::Tensor, &[3.0], None), vec![3.0; 8]);
        assert_eq!(dequantize(&weight, 2, 4, ScaleLayout::Channel, &[1.0, 2.0], None), [[1.0; 4], [2.0; 4]].concat());
        let grouped =
            dequantize(&weight, 2, 4, ScaleLayout::Group(2), &[1.0, 2.0, 3.0, 4.0], Some(&[0.0, 1.0, 0.0, 0.5]));
        assert_eq!(grouped, vec![1.0, 1.0, 0.0, 0.0, 3.0, 3.0, 2.0, 2.0]);
        assert!(ScaleLayout::infer("w", &[2, 3], 2, 4).is_err());
        assert_eq!(ScaleLayout::infer("w", &[2, 1], 2, 4).unwrap(), ScaleLayout::Channel);
    }
}
