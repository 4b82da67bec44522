//! Attention from materialised scores, shared by the models: a softmax that stays in bf16/f16 where the device
//! accumulates in f32 anyway, and grouped-query attention with an optional additive mask that bounds the scores'
//! memory by taking long query blocks a chunk at a time. Queries come scaled by `1/sqrt(head_dim)` (a pass over
//! the queries rather than over the much larger scores).

use candle_core::{DType, Result, Tensor};

/// Bytes of attention scores one [`grouped_attention`] call may hold at once: a prefill of a long prompt (a video
/// prompt is over 1,100 tokens, a Mllama prompt attends to 6,404 vision tokens) takes its queries in chunks.
pub const SCORES_BUDGET: usize = 1 << 30;

/// `softmax(x, dim=-1, dtype=torch.float32).to(x.dtype)`. candle's CUDA kernel keeps the running max and the sum
/// of exponentials of f16/bf16 inputs in f32, so the scores go in as they are there (no f32 copy of them); its
/// CPU kernel sums half types in their own precision, so on the CPU they go through f32.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let half = matches!(x.dtype(), DType::F16 | DType::BF16);
    if half && !x.device().is_cuda() {
        return candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
    }
    candle_nn::ops::softmax_last_dim(x)
}

/// `softmax(q·kᵀ + mask)·v` for pre-scaled queries `q` `(.., len, d)`, keys and values `(.., keys, d)`, and
/// `mask` broadcastable to `(.., len, keys)` (`None`: nothing masked).
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores,
    };
    softmax_last_dim(&scores)?.matmul(v)
}

/// Attention with `heads` query heads sharing `kv_heads` key/value heads, computed without repeating keys and
/// values (the query heads of one group are folded into the query length). `q` `(rows, heads, len, d)` is
/// pre-scaled; `k`, `v` are `(rows, kv_heads, keys, d)`; `mask` is the additive `(rows, 1, len, keys)`, `None`
/// where it would be all zeros. Query positions are taken [`SCORES_BUDGET`] worth of scores at a time.
pub fn grouped_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, kv_heads: usize) -> Result<Tensor> {
    grouped_attention_within(q, k, v, mask, kv_heads, SCORES_BUDGET)
}

/// [`grouped_attention`] holding at most `budget` bytes of scores (at least one query position's).
fn grouped_attention_within(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    kv_heads: usize,
    budget: usize,
) -> Result<Tensor> {
    let (rows, heads, len, _) = q.dims4()?;
    let keys = k.dim(2)?;
    let bytes_per_query = rows * heads * keys * q.dtype().size_in_bytes();
    let chunk = (budget / bytes_per_query.max(1)).max(1);
    if chunk >= len {
        return grouped_block(q, k, v, mask, kv_heads);
    }
    let mut outs = Vec::with_capacity(len.div_ceil(chunk));
    for start in (0..len).step_by(chunk) {
        let n = chunk.min(len - start);
        let mask = mask.map(|m| m.narrow(2, start, n)).transpose()?;
        outs.push(grouped_block(&q.narrow(2, start, n)?, k, v, mask.as_ref(), kv_heads)?);
    }
    Tensor::cat(&outs, 2)
}

fn grouped_block(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, kv_heads: usize) -> Result<Tensor> {
    let (rows, heads, len, head_dim) = q.dims4()?;
    let groups = heads / kv_heads;
    let keys = k.dim(2)?;
    let q = q.reshape((rows, kv_heads, groups * len, head_dim))?;
    let scores = q.matmul(&k.t()?)?;
    let scores = match mask {
        // (rows, 1, len, keys) broadcast over (rows, kv_heads, groups, len, keys).
        Some(mask) => scores
            .reshape((rows, kv_heads, groups, len, keys))?
            .broadcast_add(&mask.unsqueeze(2)?)?
            .reshape((rows, kv_heads, groups * len, keys))?,
        None => scores,
    };
    softmax_last_dim(&scores)?.matmul(v)?.reshape((rows, heads, len, head_dim))
}

/// `torch.finfo(dtype).min`, as an f32 that converts to exactly that value.
pub fn dtype_min(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.3895314e38,
        _ => f32::MIN,
    }
}

/// Deterministic pseudo-random values in `[-half_range, half_range)` on the CPU, for the models' unit tests.
#[cfg(test)]
pub(crate) fn test_values(shape: &[usize], seed: u64, half_range: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 * half_range - half_range
        })
        .collect();
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu).expect("shape matches the data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn values(shape: &[usize], seed: u64) -> Tensor {
        test_values(shape, seed, 1.0)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Grouped attention, chunked or not, equals plain attention over keys and values repeated per query head
    /// (`repeat_kv`) with the scores divided by `sqrt(d)` after the product.
    #[test]
    fn grouped_attention_equals_repeated_heads_with_and_without_mask_and_in_chunks() {
        let (rows, heads, kv_heads, len, keys, d) = (2, 4, 2, 5, 7, 8);
        let q = values(&[rows, heads, len, d], 1);
        let k = values(&[rows, kv_heads, keys, d], 2);
        let v = values(&[rows, kv_heads, keys, d], 3);
        let mask_values: Vec<f32> =
            (0..rows * len * keys).map(|i| if (i * 7) % 5 == 0 { dtype_min(DType::F32) } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask_values, (rows, 1, len, keys), &Device::Cpu).unwrap();
        let repeat = |t: &Tensor| {
            let (r, h, n, d) = t.dims4().unwrap();
            t.unsqueeze(2).unwrap().broadcast_as((r, h, heads / h, n, d)).unwrap().reshape((r, heads, n, d)).unwrap()
        };
        let (k_all, v_all) = (repeat(&k), repeat(&v));
        let scaled = (&q * (d as f64).powf(-0.5)).unwrap();
        for mask in [None, Some(&mask)] {
            let scores = (q.matmul(&k_all.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
            let scores = match mask {
                Some(m) => scores.broadcast_add(m).unwrap(),
                None => scores,
            };
            let want = candle_nn::ops::softmax(&scores, D::Minus1).unwrap().matmul(&v_all).unwrap();
            let got = grouped_attention(&scaled, &k, &v, mask, kv_heads).unwrap();
            assert!(max_diff(&got, &want) < 1e-6, "whole: {}", max_diff(&got, &want));
            // Scores of two query positions at a time (the last chunk holds one): the same result.
            let two_positions = 2 * rows * heads * keys * 4;
            let chunked = grouped_attention_within(&scaled, &k, &v, mask, kv_heads, two_positions).unwrap();
            assert!(max_diff(&chunked, &want) < 1e-6, "chunked: {}", max_diff(&chunked, &want));
        }
    }

    #[test]
    fn half_precision_softmax_on_the_cpu_sums_in_f32() {
        // 4,096 equal scores: a bf16 running sum stalls at 256 and would give each weight 1/256.
        let scores = Tensor::zeros((1, 4096), DType::BF16, &Device::Cpu).unwrap();
        let weights = softmax_last_dim(&scores).unwrap().to_dtype(DType::F32).unwrap();
        let first = weights.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((first - 1.0 / 4096.0).abs() < 1e-6, "{first}");
    }
}
