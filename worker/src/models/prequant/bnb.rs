//! bitsandbytes 4-bit weights (NF4, FP4) as transformers saves a `Linear4bit`, dequantized to f32.
//!
//! For a weight `X.weight` of `n` elements (bitsandbytes/functional.py `quantize_4bit`, `QuantState.as_dict(packed
//! = True)`, transformers' `Linear4bit._save_to_state_dict`):
//! - `X.weight`: the 4-bit codes of the flattened weight, two per byte, the FIRST element in the HIGH nibble,
//!   `(n + 1) / 2` bytes (shape `[(n + 1) / 2, 1]`, uint8 unless `bnb_4bit_quant_storage` says otherwise);
//! - `X.weight.absmax`: one f32 scale per block of `blocksize` consecutive elements (the last block partial);
//!   with double quantization, uint8 codes instead, and then `X.weight.nested_absmax` (f32 per block of
//!   `nested_blocksize` codes) and `X.weight.nested_quant_map` (the 256-entry 8-bit dynamic table):
//!   `absmax[b] = nested_quant_map[code] * nested_absmax[b / nested_blocksize] + nested_offset`
//!   (`dequantize_blockwise` then `absmax += offset`);
//! - `X.weight.quant_map`: the 16-entry table (`get_4bit_type`);
//! - `X.weight.quant_state.bitsandbytes__<nf4|fp4>`: uint8 bytes of a JSON object with `quant_type`, `blocksize`,
//!   `dtype`, `shape` and, when nested, `nested_blocksize`, `nested_dtype`, `nested_offset`.
//!
//! `weight[i] = table[code_i] * absmax[i / blocksize]`, one f32 product, as the CUDA kernel
//! (`kDequantizeBlockwise` with `dDequantizeNF4` / `dDequantizeFP4Tree`) computes it before its cast to the
//! weight's dtype; the table is the one of `quant_type` (the kernels' constants; a stored `quant_map` that
//! differs is reported and not used, as the kernels do not read it).

use rayon::prelude::*;
use serde::Deserialize;

use super::PrequantError;

/// NF4: quantiles of N(0, 1) normalised to [-1, 1] (QLoRA, <https://arxiv.org/abs/2305.14314>), as
/// `get_4bit_type("nf4")` and the CUDA kernel's `dDequantizeNF4` list them (their double-precision literals
/// kept verbatim for comparison; each rounds to the f32 bitsandbytes stores).
#[allow(clippy::excessive_precision)]
pub const NF4_TABLE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// FP4 (1 sign, 2 exponent, 1 mantissa bits): `get_4bit_type("fp4")` = [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12 and
/// their negatives, as f32 divisions (the values of the CUDA kernel's `dDequantizeFP4Tree`; code 8, "-0", is +0.0
/// as the stored table has it, where the kernel gives -0.0: equal values).
pub const FP4_TABLE: [f32; 16] = [
    0.0,
    0.0625 / 12.0,
    8.0 / 12.0,
    1.0,
    4.0 / 12.0,
    6.0 / 12.0,
    2.0 / 12.0,
    3.0 / 12.0,
    0.0,
    -0.0625 / 12.0,
    -8.0 / 12.0,
    -1.0,
    -4.0 / 12.0,
    -6.0 / 12.0,
    -2.0 / 12.0,
    -3.0 / 12.0,
];

/// The 4-bit code tables bitsandbytes has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FourBit {
    Nf4,
    Fp4,
}

impl FourBit {
    pub fn table(self) -> &'static [f32; 16] {
        match self {
            FourBit::Nf4 => &NF4_TABLE,
            FourBit::Fp4 => &FP4_TABLE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FourBit::Nf4 => "nf4",
            FourBit::Fp4 => "fp4",
        }
    }
}

/// Suffixes of the packed quant_state tensor (`QuantState.valid_qs_type_keys`).
pub const QUANT_STATE_SUFFIXES: [&str; 2] = ["quant_state.bitsandbytes__nf4", "quant_state.bitsandbytes__fp4"];

/// The non-tensor part of a `QuantState` (the JSON of `X.weight.quant_state.bitsandbytes__*`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantState {
    pub quant_type: FourBit,
    pub blocksize: usize,
    /// The weight's dtype before quantization (`float32`, `bfloat16`, `float16`).
    pub dtype: String,
    pub shape: Vec<usize>,
    pub nested: Option<NestedState>,
}

/// How the absmax values are quantized when `bnb_4bit_use_double_quant` is on.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedState {
    pub blocksize: usize,
    /// `mean(absmax)`, subtracted before quantizing and added back after.
    pub offset: f32,
}

#[derive(Deserialize)]
struct QuantStateJson {
    quant_type: String,
    blocksize: usize,
    dtype: String,
    shape: Vec<usize>,
    #[serde(default)]
    nested_blocksize: Option<usize>,
    #[serde(default)]
    nested_offset: Option<f64>,
}

impl QuantState {
    /// Parses the JSON bytes of `tensor`'s quant_state.
    pub fn parse(tensor: &str, bytes: &[u8]) -> Result<QuantState, PrequantError> {
        let bad = |reason: String| PrequantError::BadQuantState { tensor: tensor.into(), reason };
        let json: QuantStateJson = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let quant_type = match json.quant_type.as_str() {
            "nf4" => FourBit::Nf4,
            "fp4" => FourBit::Fp4,
            other => {
                return Err(PrequantError::UnsupportedQuantType { tensor: tensor.into(), quant_type: other.into() })
            }
        };
        if json.blocksize == 0 {
            return Err(bad("blocksize is 0".into()));
        }
        if !matches!(json.dtype.as_str(), "float32" | "bfloat16" | "float16") {
            return Err(bad(format!("dtype `{}` is not a float type", json.dtype)));
        }
        let nested = match (json.nested_blocksize, json.nested_offset) {
            (None, None) => None,
            (Some(blocksize), Some(offset)) if blocksize > 0 => {
                // json.dumps wrote the f32 offset's exact value as a double, so this cast is exact.
                Some(NestedState { blocksize, offset: offset as f32 })
            }
            (Some(0), _) => return Err(bad("nested_blocksize is 0".into())),
            _ => return Err(bad("nested_blocksize and nested_offset come together".into())),
        };
        Ok(QuantState { quant_type, blocksize: json.blocksize, dtype: json.dtype, shape: json.shape, nested })
    }

    /// Elements of the weight.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the weight has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scale blocks of the weight (the last one may be partial).
    pub fn blocks(&self) -> usize {
        self.len().div_ceil(self.blocksize)
    }
}

/// The f32 absmax per block from its double-quantized form: `code[q] * nested_absmax[b / nested_blocksize]`, then
/// `+ offset`, each rounded to f32 as bitsandbytes computes them.
pub fn nested_absmax(
    tensor: &str,
    codes: &[u8],
    code: &[f32],
    nested_absmax: &[f32],
    nested: &NestedState,
) -> Result<Vec<f32>, PrequantError> {
    let blocks = codes.len().div_ceil(nested.blocksize);
    if nested_absmax.len() != blocks {
        return Err(PrequantError::Size {
            tensor: tensor.into(),
            what: "nested_absmax",
            got: nested_absmax.len(),
            expected: blocks,
            why: format!("one per {} absmax codes", nested.blocksize),
        });
    }
    if code.len() != 256 {
        return Err(PrequantError::Size {
            tensor: tensor.into(),
            what: "nested_quant_map",
            got: code.len(),
            expected: 256,
            why: "the 8-bit dynamic table".into(),
        });
    }
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &q)| code[q as usize] * nested_absmax[i / nested.blocksize] + nested.offset)
        .collect())
}

/// Blocks per parallel task: large enough to amortise scheduling on 100M-element weights.
const BLOCKS_PER_TASK: usize = 4096;

/// The f32 weight (flattened) from its packed codes and per-block absmax.
pub fn dequantize(tensor: &str, packed: &[u8], absmax: &[f32], state: &QuantState) -> Result<Vec<f32>, PrequantError> {
    let n = state.len();
    if packed.len() < n.div_ceil(2) {
        return Err(PrequantError::Size {
            tensor: tensor.into(),
            what: "the packed weight",
            got: packed.len(),
            expected: n.div_ceil(2),
            why: format!("two 4-bit codes per byte for shape {:?}", state.shape),
        });
    }
    if absmax.len() != state.blocks() {
        return Err(PrequantError::Size {
            tensor: tensor.into(),
            what: "absmax",
            got: absmax.len(),
            expected: state.blocks(),
            why: format!("one per block of {} of the {n} elements", state.blocksize),
        });
    }
    let table = state.quant_type.table();
    let blocksize = state.blocksize;
    let mut out = vec![0f32; n];
    let task = blocksize.saturating_mul(BLOCKS_PER_TASK).max(1);
    out.par_chunks_mut(task).enumerate().for_each(|(t, chunk)| {
        let start = t * task;
        for (offset, value) in chunk.iter_mut().enumerate() {
            let i = start + offset;
            let byte = packed[i / 2];
            let code = if i.is_multiple_of(2) { byte >> 4 } else { byte & 0x0f };
            *value = table[code as usize] * absmax[i / blocksize];
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(shape: Vec<usize>, blocksize: usize) -> QuantState {
        QuantState { quant_type: FourBit::Nf4, blocksize, dtype: "float32".into(), shape, nested: None }
    }

    #[test]
    fn the_first_element_of_each_byte_is_its_high_nibble() {
        // codes 15 (1.0), 0 (-1.0), 7 (0.0): bytes 0xF0, 0x7_ (low nibble padding)
        let out = dequantize("w", &[0xf0, 0x7a], &[2.0], &state(vec![3], 64)).unwrap();
        assert_eq!(out, vec![2.0, -2.0, 0.0]);
    }

    #[test]
    fn each_block_takes_its_own_absmax_and_the_last_block_may_be_partial() {
        let packed = [0xff; 3]; // five elements, all code 15 (1.0)
        let out = dequantize("w", &packed, &[1.0, 2.0, 3.0], &state(vec![5], 2)).unwrap();
        assert_eq!(out, vec![1.0, 1.0, 2.0, 2.0, 3.0]);
    }

    #[test]
    fn quant_state_json_as_bitsandbytes_writes_it_parses() {
        let json = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [130, 130],
            "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 2.6603434085845947}"#;
        let state = QuantState::parse("w", json).unwrap();
        assert_eq!(state.blocks(), 265);
        assert_eq!(state.nested, Some(NestedState { blocksize: 256, offset: 2.660_343_4 }));
    }
}
