//! Flash-attention v2 forward for vislingo's vision encoders: `softmax(q·kᵀ·scale)·v` without materialising the
//! scores, non-causal, unpadded, head dims up to 128 (multiples of 8), f16/bf16 on CUDA. The kernels and this op
//! are candle-flash-attn 0.11.1's, trimmed to what the encoders use (see build.rs for the build). Without the
//! `cuda` feature only [`supports`] is here.

use candle_core::DType;

/// The largest head dimension the compiled kernels take.
pub const MAX_HEAD_DIM: usize = 128;

/// Whether `flash_attn` (the `cuda` feature) takes queries of this dtype and head dimension (on a CUDA device).
pub fn supports(dtype: DType, head_dim: usize) -> bool {
    matches!(dtype, DType::F16 | DType::BF16) && head_dim % 8 == 0 && head_dim <= MAX_HEAD_DIM
}

#[cfg(feature = "cuda")]
mod ffi;
#[cfg(feature = "cuda")]
pub use op::flash_attn;

#[cfg(feature = "cuda")]
mod op {
    use super::{ffi, MAX_HEAD_DIM};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
    use candle_core::{CpuStorage, CudaStorage, DType, Layout, Result, Shape, Tensor};
    use half::{bf16, f16};

    /// `softmax(q·kᵀ·softmax_scale)·v` for `q` `(batch, len_q, heads, head_dim)` and `k`, `v` `(batch, len_k,
    /// kv_heads, head_dim)` (kv_heads dividing heads), each with its last dimension contiguous; returns `(batch,
    /// len_q, heads, head_dim)`, contiguous.
    pub fn flash_attn(q: &Tensor, k: &Tensor, v: &Tensor, softmax_scale: f32) -> Result<Tensor> {
        q.apply_op3(k, v, FlashAttn { softmax_scale })
    }

    struct FlashAttn {
        softmax_scale: f32,
    }

    fn round_multiple(x: usize, m: usize) -> usize {
        x.div_ceil(m) * m
    }

    fn u32_of(value: usize, what: &str) -> Result<u32> {
        u32::try_from(value).map_err(|_| candle_core::Error::Msg(format!("flash-attn: {what} {value} exceeds u32")))
    }

    impl FlashAttn {
        #[allow(clippy::too_many_arguments)]
        fn cuda_fwd_t<
            T: candle_core::cuda_backend::CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
        >(
            &self,
            q: &CudaStorage,
            q_l: &Layout,
            k: &CudaStorage,
            k_l: &Layout,
            v: &CudaStorage,
            v_l: &Layout,
            is_bf16: bool,
        ) -> Result<(CudaStorage, Shape)> {
            let dev = q.device();
            let out_shape = q_l.shape().clone();
            let out_l = Layout::contiguous(&out_shape);

            let q = q.as_cuda_slice::<T>()?.slice(q_l.start_offset()..);
            let k = k.as_cuda_slice::<T>()?.slice(k_l.start_offset()..);
            let v = v.as_cuda_slice::<T>()?.slice(v_l.start_offset()..);
            let (q_stride, k_stride, v_stride, o_stride) = (q_l.stride(), k_l.stride(), v_l.stride(), out_l.stride());
            if q_stride.len() != 4 || k_stride.len() != 4 || v_stride.len() != 4 {
                candle_core::bail!("flash-attn: q, k and v must have rank 4")
            }
            if q_stride[3] != 1 || k_stride[3] != 1 || v_stride[3] != 1 {
                candle_core::bail!("flash-attn: the last dimension of q, k and v must be contiguous")
            }
            let (batch, len_q, heads, head_dim) = q_l.shape().dims4()?;
            let (_, len_k, kv_heads, _) = k_l.shape().dims4()?;
            let expected_kv = (batch, len_k, kv_heads, head_dim);
            if expected_kv != k_l.shape().dims4()? || expected_kv != v_l.shape().dims4()? {
                candle_core::bail!("flash-attn: shapes q {:?}, k {:?}, v {:?}", q_l.shape(), k_l.shape(), v_l.shape())
            }
            if head_dim % 8 != 0 || head_dim > MAX_HEAD_DIM {
                candle_core::bail!("flash-attn: head dim {head_dim} (multiples of 8 up to {MAX_HEAD_DIM} only)")
            }
            if kv_heads == 0 || heads % kv_heads != 0 {
                candle_core::bail!("flash-attn: {kv_heads} key/value heads must divide {heads} query heads")
            }

            let stream = dev.cuda_stream();
            let head_dim_rounded = round_multiple(head_dim, 32);
            let mut dst = unsafe { dev.alloc::<T>(out_shape.elem_count())? };
            let mut softmax_lse = dev.alloc_zeros::<f32>(batch * heads * len_q)?;
            unsafe {
                let (q_ptr, _guard) = q.device_ptr(&stream);
                let (k_ptr, _guard) = k.device_ptr(&stream);
                let (v_ptr, _guard) = v.device_ptr(&stream);
                let (dst_ptr, _guard) = dst.device_ptr_mut(&stream);
                let (softmax_lse_ptr, _guard) = softmax_lse.device_ptr_mut(&stream);
                ffi::run_mha(
                    q_ptr as *const core::ffi::c_void,
                    k_ptr as *const core::ffi::c_void,
                    v_ptr as *const core::ffi::c_void,
                    dst_ptr as *const core::ffi::c_void,
                    softmax_lse_ptr as *const core::ffi::c_void,
                    /* alibi_slopes_ptr */ std::ptr::null(),
                    /* cu_seqlens_q_ptr */ std::ptr::null(),
                    /* cu_seqlens_k_ptr */ std::ptr::null(),
                    u32_of(q_stride[0], "q batch stride")?,
                    u32_of(k_stride[0], "k batch stride")?,
                    u32_of(v_stride[0], "v batch stride")?,
                    u32_of(o_stride[0], "output batch stride")?,
                    /* alibi_slopes_batch_stride */ 0,
                    u32_of(q_stride[1], "q row stride")?,
                    u32_of(k_stride[1], "k row stride")?,
                    u32_of(v_stride[1], "v row stride")?,
                    u32_of(o_stride[1], "output row stride")?,
                    u32_of(q_stride[2], "q head stride")?,
                    u32_of(k_stride[2], "k head stride")?,
                    u32_of(v_stride[2], "v head stride")?,
                    u32_of(o_stride[2], "output head stride")?,
                    u32_of(batch, "batch")?,
                    u32_of(heads, "heads")?,
                    u32_of(kv_heads, "key/value heads")?,
                    u32_of(head_dim, "head dim")?,
                    u32_of(head_dim_rounded, "head dim")?,
                    self.softmax_scale,
                    u32_of(len_q, "query length")?,
                    u32_of(len_k, "key length")?,
                    u32_of(round_multiple(len_q, 128), "query length")?,
                    u32_of(round_multiple(len_k, 128), "key length")?,
                    u32_of(batch * len_q, "queries")?,
                    /* is_bf16 */ i32::from(is_bf16),
                    /* is_causal */ 0,
                    /* unpadded_lse */ 0,
                    /* window_size_left, right: no window (every key) */ -1,
                    -1,
                    /* softcap */ 0.0,
                    /* block_table_ptr */ std::ptr::null(),
                    /* block_table_batch_stride */ 0,
                    /* page_block_size */ -1,
                    /* mm_prefix_ranges_ptr */ std::ptr::null(),
                    /* mm_prefix_range_batch_stride */ 0,
                    /* max_mm_prefix_ranges */ 0,
                    stream.cu_stream() as *mut core::ffi::c_void,
                )
            }
            Ok((CudaStorage::wrap_cuda_slice(dst, dev.clone()), out_shape))
        }
    }

    impl candle_core::CustomOp3 for FlashAttn {
        fn name(&self) -> &'static str {
            "vislingo-flash-attn"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("flash-attn runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            q: &CudaStorage,
            q_l: &Layout,
            k: &CudaStorage,
            k_l: &Layout,
            v: &CudaStorage,
            v_l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            match q.dtype() {
                DType::F16 => self.cuda_fwd_t::<f16>(q, q_l, k, k_l, v, v_l, false),
                DType::BF16 => self.cuda_fwd_t::<bf16>(q, q_l, k, k_l, v, v_l, true),
                dtype => candle_core::bail!("flash-attn: f16 or bf16 only ({dtype:?})"),
            }
        }
    }
}
