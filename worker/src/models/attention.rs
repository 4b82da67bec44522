//! Attention from materialised scores, shared by the models: a softmax that takes bf16/f16 scores as they are on
//! CUDA (candle's kernel, or `csrc/softmax.cu` computing in f32), and grouped-query attention with an optional additive
//! mask that bounds the scores' memory by taking long query blocks a chunk at a time. Queries come scaled by
//! `1/sqrt(head_dim)` (a pass over the queries, or none when folded into their projection, rather than a pass over
//! the much larger scores).

use candle_core::{DType, Result, Tensor};

/// Bytes of attention scores one [`grouped_attention`] call may hold at once: a prefill of a long prompt (a video
/// prompt is over 1,100 tokens, a Mllama prompt attends to 6,404 vision tokens) takes its queries in chunks.
pub const SCORES_BUDGET: usize = 1 << 30;

/// Which kernel computes the attention softmax on CUDA (the CPU has one path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxKernel {
    /// candle's `softmax_last_dim`: one warp per row, three reads and two writes of each row.
    Candle,
    /// `csrc/softmax.cu`: one block per row, rows up to 8,192 half values read once into registers, f32 math and
    /// one rounding.
    Vislingo,
}

impl SoftmaxKernel {
    /// `VISLINGO_SOFTMAX_KERNEL` (`vislingo`, the default, or `candle`), read once. Both pass the CUDA parity tests
    /// (`VL_ATTENTION="candle vislingo" bash bench/gpu.sh parity`); vislingo's is the faster (BENCHMARKS.md, GPU).
    pub fn configured() -> SoftmaxKernel {
        static CONFIGURED: std::sync::OnceLock<SoftmaxKernel> = std::sync::OnceLock::new();
        *CONFIGURED.get_or_init(|| match std::env::var("VISLINGO_SOFTMAX_KERNEL").as_deref() {
            Ok("vislingo") | Ok("") | Err(_) => SoftmaxKernel::Vislingo,
            Ok("candle") => SoftmaxKernel::Candle,
            Ok(other) => {
                tracing::warn!(value = other, "VISLINGO_SOFTMAX_KERNEL is vislingo or candle: using vislingo");
                SoftmaxKernel::Vislingo
            }
        })
    }
}

/// `softmax(x, dim=-1, dtype=torch.float32).to(x.dtype)` with the [`SoftmaxKernel::configured`] kernel.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    softmax_last_dim_with(x, SoftmaxKernel::configured())
}

/// [`softmax_last_dim`] with the given kernel on CUDA. candle's CUDA kernel keeps the running max and the sum of
/// exponentials of f16/bf16 inputs in f32 (its exponentials round to the input type), and `csrc/softmax.cu` does
/// all of it in f32, so on CUDA the scores go in as they are (no f32 copy of them); candle's CPU kernel sums half
/// types in their own precision, so on the CPU they go through f32.
pub fn softmax_last_dim_with(x: &Tensor, kernel: SoftmaxKernel) -> Result<Tensor> {
    if x.device().is_cuda() {
        #[cfg(feature = "cuda")]
        if kernel == SoftmaxKernel::Vislingo {
            return cuda::softmax_last_dim(x);
        }
        let _ = kernel;
        return candle_nn::ops::softmax_last_dim(x);
    }
    if matches!(x.dtype(), DType::F16 | DType::BF16) {
        return candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
    }
    candle_nn::ops::softmax_last_dim(x)
}

/// The row softmax kernel of `csrc/softmax.cu` (compiled to PTX by build.rs) as a candle op.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, CudaStorageSlice, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
    use std::sync::atomic::Ordering;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx"));

    pub(super) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
        static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) || FAILED.load(Ordering::Relaxed) {
            return candle_nn::ops::softmax_last_dim(x);
        }
        match x.contiguous()?.apply_op1_no_bwd(&RowSoftmax) {
            Ok(weights) => Ok(weights),
            Err(error) => {
                // A driver that cannot load the PTX (older than the nvcc that made it): candle's kernel instead.
                FAILED.store(true, Ordering::Relaxed);
                tracing::warn!(%error, "the softmax kernel failed: using candle's from now on");
                candle_nn::ops::softmax_last_dim(x)
            }
        }
    }

    struct RowSoftmax;

    impl CustomOp1 for RowSoftmax {
        fn name(&self) -> &'static str {
            "vislingo-softmax-last-dim"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("vislingo-softmax-last-dim runs on CUDA only")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
            let Some((start, end)) = layout.contiguous_offsets() else {
                candle_core::bail!("vislingo-softmax-last-dim: the input must be contiguous")
            };
            let cols = layout.dims().last().copied().unwrap_or(1);
            let device = &storage.device;
            let out = match &storage.slice {
                CudaStorageSlice::F32(s) => launch(device, s.slice(start..end), start, cols, "f32")?,
                CudaStorageSlice::F16(s) => launch(device, s.slice(start..end), start, cols, "f16")?,
                CudaStorageSlice::BF16(s) => launch(device, s.slice(start..end), start, cols, "bf16")?,
                _ => candle_core::bail!("vislingo-softmax-last-dim: f32, f16 or bf16 only"),
            };
            Ok((out, layout.shape().clone()))
        }
    }

    /// Threads per block of the in-registers kernels, and 16-byte vectors per thread (`VL_SOFTMAX_VECTORS`).
    const IN_REGISTERS_THREADS: usize = 256;
    const IN_REGISTERS_VECTORS: usize = 4;

    /// One block per row of `cols` elements; `offset`: elements before `src` in its allocation (whose start is
    /// 16-byte aligned).
    fn launch<T: DeviceRepr + CudaDType>(
        device: &CudaDevice,
        src: CudaView<T>,
        offset: usize,
        cols: usize,
        dtype: &str,
    ) -> Result<CudaStorage> {
        let elements = src.len();
        // SAFETY: the kernel writes every element before anything reads it.
        let dst = unsafe { device.alloc::<T>(elements)? };
        let rows = elements.checked_div(cols).unwrap_or(0);
        if rows > 0 {
            let size = std::mem::size_of::<T>();
            let per_vector = 16 / size;
            let in_registers = cols.is_multiple_of(per_vector)
                && (offset * size).is_multiple_of(16)
                && cols <= IN_REGISTERS_THREADS * IN_REGISTERS_VECTORS * per_vector;
            let (kernel, threads) = if in_registers {
                (format!("vl_softmax_in_registers_{dtype}"), IN_REGISTERS_THREADS as u32)
            } else {
                (format!("vl_softmax_{dtype}"), (cols.div_ceil(32) * 32).clamp(32, 256) as u32)
            };
            let func = device.get_or_load_custom_func(&kernel, "vislingo_softmax", PTX)?;
            let config =
                LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
            let cols = cols as i64;
            let mut builder = func.builder();
            builder.arg(&src);
            builder.arg(&dst);
            builder.arg(&cols);
            // SAFETY: the arguments match the kernel's (input, output, row length); the grid covers the rows.
            unsafe { builder.launch(config) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(dst, device.clone()))
    }
}

/// `softmax(q·kᵀ + mask)·v` for pre-scaled queries `q` `(.., len, d)`, keys and values `(.., keys, d)`, and
/// `mask` broadcastable to `(.., len, keys)` (`None`: nothing masked). Unmasked `(batch, heads, len, d)` attention
/// runs as flash attention where [`flash_attention_enabled`] and the kernels take the dtype and head dimension.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    if mask.is_none() {
        if let Some(out) = flash::attend(q, k, v)? {
            return Ok(out);
        }
    }
    attend_materialised(q, k, v, mask)
}

/// Whether unmasked attention on CUDA runs as flash attention: in a build with the `flash-attn` feature unless
/// `VISLINGO_FLASH_ATTN=0` (read once). The kernels pass `vlm-gpu-bench check-attention` on an H100 (docs/gpu.md).
pub fn flash_attention_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let setting = std::env::var("VISLINGO_FLASH_ATTN").unwrap_or_default();
        if setting == "1" && !cfg!(feature = "flash-attn") {
            tracing::warn!(
                "VISLINGO_FLASH_ATTN=1, but this build has no flash-attn feature: attention materialises scores"
            );
        }
        setting != "0" && cfg!(feature = "flash-attn")
    })
}

/// Flash attention of pre-scaled `(batch, heads, len, d)` queries, whatever `VISLINGO_FLASH_ATTN` says (for
/// checking the kernels against [`attend_materialised`]): an error in a build without the `flash-attn` feature, off
/// CUDA, or for a dtype or head dimension the kernels lack.
pub fn attend_flash(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    flash::run(q, k, v)?.ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "no flash attention for {:?} {:?} on {:?} (the flash-attn feature: {})",
            q.dtype(),
            q.dims(),
            q.device(),
            cfg!(feature = "flash-attn")
        ))
    })
}

#[cfg(feature = "flash-attn")]
mod flash {
    use candle_core::{Result, Tensor};

    /// [`super::attend`]'s flash path: `None` where it does not apply (not enabled, or see [`run`]).
    pub(super) fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
        if !super::flash_attention_enabled() {
            return Ok(None);
        }
        run(q, k, v)
    }

    /// Flash attention from `worker/flash-attn`; `None` off CUDA or for a dtype, rank or head dimension the
    /// kernels lack.
    pub(super) fn run(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
        if !q.device().is_cuda() || q.rank() != 4 || !vislingo_flash_attn::supports(q.dtype(), q.dim(3)?) {
            return Ok(None);
        }
        // The kernels take (batch, len, heads, d) with any batch, position and head strides: views, no copies.
        let out = vislingo_flash_attn::flash_attn(&q.transpose(1, 2)?, &k.transpose(1, 2)?, &v.transpose(1, 2)?, 1.0)?;
        Ok(Some(out.transpose(1, 2)?))
    }
}

#[cfg(not(feature = "flash-attn"))]
mod flash {
    use candle_core::{Result, Tensor};

    pub(super) fn attend(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    pub(super) fn run(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// [`attend`] from materialised scores (`q·kᵀ`, softmax, product with `v`), whatever the build: the reference the
/// flash kernels are checked against.
pub fn attend_materialised(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
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
