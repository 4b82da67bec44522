//! Dense linear layers with a CPU fast path for few input rows (decoder steps): one pass over the weight computes
//! every row's dot products, where candle's `x · Wᵀ` through `gemm` pads its register tiles along the rows. Also
//! layers that read the same input loaded as one matmul ([`fused_linear`]).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Linear, VarBuilder};
use rayon::prelude::*;

/// Inputs of up to this many rows take the fast path; above it `gemm`'s tiles are full enough.
pub const MAX_FAST_ROWS: usize = 16;

/// Weight rows per parallel task: large enough to amortise scheduling, small enough to balance 256k-row LM heads.
const WEIGHT_ROWS_PER_TASK: usize = 128;

/// `candle_nn::Linear` that takes the few-rows path for f32 on the CPU and candle's matmul otherwise.
#[derive(Debug, Clone)]
pub struct DenseLinear {
    inner: Linear,
}

impl DenseLinear {
    pub fn new(inner: Linear) -> DenseLinear {
        DenseLinear { inner }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Module for DenseLinear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        forward(&self.inner, xs)
    }
}

/// One of the linear layers that [`fused_linear`] loads as one.
#[derive(Clone)]
pub struct Part<'a> {
    /// Output width of the layer.
    pub out_dim: usize,
    /// Where its `weight` (and `bias`) are, by their Hub names.
    pub vb: VarBuilder<'a>,
    /// A constant factor that follows the layer in the model (the attention scale of the queries, a tanh gate),
    /// multiplied into its weight and bias as they load, so that no pass over the outputs applies it.
    pub scale: Option<f64>,
}

impl<'a> Part<'a> {
    pub fn new(out_dim: usize, vb: VarBuilder<'a>) -> Part<'a> {
        Part { out_dim, vb, scale: None }
    }

    pub fn scaled(self, factor: f64) -> Part<'a> {
        Part { scale: Some(factor), ..self }
    }

    /// The layer's weight `(out_dim, in_dim)`, scaled, read through `vb` (in its dtype, on `device`).
    pub fn weight(&self, in_dim: usize, vb: &VarBuilder) -> Result<Tensor> {
        let weight = vb.get_with_hints_dtype(
            (self.out_dim, in_dim),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
            vb.dtype(),
        )?;
        self.apply_scale(weight)
    }

    /// The layer's bias `(out_dim)`, scaled.
    pub fn bias(&self) -> Result<Tensor> {
        self.apply_scale(self.vb.get(self.out_dim, "bias")?)
    }

    fn apply_scale(&self, t: Tensor) -> Result<Tensor> {
        match self.scale {
            Some(factor) => t * factor,
            None => Ok(t),
        }
    }
}

/// Several linear layers over the same input as one (`q_proj`, `k_proj`, `v_proj`): the parts' weights [and
/// biases] concatenated along the output dimension, so that one matmul gives their outputs side by side.
pub fn fused_linear(in_dim: usize, parts: &[Part], bias: bool) -> Result<Linear> {
    let weights = parts.iter().map(|part| part.weight(in_dim, &part.vb)).collect::<Result<Vec<_>>>()?;
    let bias = if bias { Some(concat_rows(parts.iter().map(Part::bias).collect::<Result<_>>()?)?) } else { None };
    Ok(Linear::new(concat_rows(weights)?, bias))
}

/// The tensors stacked along dim 0 (a single one is returned as it is).
pub fn concat_rows(mut parts: Vec<Tensor>) -> Result<Tensor> {
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    Tensor::cat(&parts, 0)
}

/// `linear.forward(xs)` with the few-rows path where it applies (f32 input and weight on the CPU, at most
/// [`MAX_FAST_ROWS`] rows); the results equal candle's up to the order of f32 additions.
pub fn forward(linear: &Linear, xs: &Tensor) -> Result<Tensor> {
    let weight = linear.weight();
    let in_dim = xs.dim(candle_core::D::Minus1)?;
    let rows = xs.elem_count() / in_dim.max(1);
    let fast = xs.device().is_cpu()
        && xs.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && rows > 0
        && rows <= MAX_FAST_ROWS;
    if !fast {
        return linear.forward(xs);
    }
    let out_dim = weight.dim(0)?;
    let x = xs.reshape((rows, in_dim))?.contiguous()?;
    let mut ys = x.apply_op2_no_bwd(&weight.contiguous()?, &FewRowsMatmul)?;
    if let Some(bias) = linear.bias() {
        ys = ys.broadcast_add(bias)?;
    }
    let mut out_dims = xs.dims().to_vec();
    *out_dims.last_mut().expect("rank checked by dim(-1)") = out_dim;
    ys.reshape(out_dims)
}

/// `x (rows, in) · W (out, in)ᵀ -> (rows, out)` for contiguous f32 CPU tensors.
struct FewRowsMatmul;

impl CustomOp2 for FewRowsMatmul {
    fn name(&self) -> &'static str {
        "few-rows-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        ws: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, in_dim) = x_layout.shape().dims2()?;
        let (out_dim, w_in) = w_layout.shape().dims2()?;
        if w_in != in_dim {
            candle_core::bail!("few-rows matmul: input has {in_dim} columns, weight expects {w_in}");
        }
        let x = contiguous_f32(xs, x_layout)?;
        let w = contiguous_f32(ws, w_layout)?;
        let ys = matmul_transposed(x, rows, w, out_dim, in_dim);
        Ok((CpuStorage::F32(ys), Shape::from((rows, out_dim))))
    }
}

/// The elements of a contiguous f32 tensor.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("few-rows matmul: expected f32 storage");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("few-rows matmul: expected contiguous inputs"),
    }
}

/// `y[r][j] = x[r] · w[j]`, parallel over blocks of weight rows, each weight row read once for all `rows`.
pub fn matmul_transposed(x: &[f32], rows: usize, w: &[f32], out_dim: usize, in_dim: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), rows * in_dim);
    debug_assert_eq!(w.len(), out_dim * in_dim);
    // Computed as yᵀ (out, rows) so that each task writes one contiguous block, then transposed.
    let mut yt = vec![0f32; out_dim * rows];
    let dot_rows = dot_rows_kernel();
    yt.par_chunks_mut(WEIGHT_ROWS_PER_TASK * rows).enumerate().for_each(|(task, block)| {
        let first = task * WEIGHT_ROWS_PER_TASK;
        for (offset, out) in block.chunks_exact_mut(rows).enumerate() {
            let w_row = &w[(first + offset) * in_dim..][..in_dim];
            dot_rows(x, rows, in_dim, w_row, out);
        }
    });
    let mut y = vec![0f32; rows * out_dim];
    for (j, col) in yt.chunks_exact(rows).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * out_dim + j] = v;
        }
    }
    y
}

/// `out[r] = x[r] · w_row` for every row `r` of `x` (rows × in_dim).
type DotRows = fn(&[f32], usize, usize, &[f32], &mut [f32]);

/// The fastest [`DotRows`] this CPU runs, chosen once per matmul rather than per weight row.
fn dot_rows_kernel() -> DotRows {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: only chosen when the CPU supports the features the function is compiled for.
            return |x, rows, in_dim, w_row, out| unsafe { avx2::dot_rows(x, rows, in_dim, w_row, out) };
        }
    }
    dot_rows_portable
}

fn dot_rows_portable(x: &[f32], rows: usize, in_dim: usize, w_row: &[f32], out: &mut [f32]) {
    for (r, o) in out[..rows].iter_mut().enumerate() {
        *o = dot_portable(&x[r * in_dim..][..in_dim], w_row);
    }
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let chunks = a.len() / LANES * LANES;
    for (ca, cb) in a[..chunks].chunks_exact(LANES).zip(b[..chunks].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let tail: f32 = a[chunks..].iter().zip(&b[chunks..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Four input rows at a time against one weight row, 16 columns per iteration (8 independent accumulators).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows(x: &[f32], rows: usize, in_dim: usize, w_row: &[f32], out: &mut [f32]) {
        let wide = in_dim / 16 * 16;
        let w = w_row.as_ptr();
        let mut r = 0;
        while r < rows {
            let group = (rows - r).min(4);
            let xp: [*const f32; 4] = std::array::from_fn(|g| x.as_ptr().add((r + g.min(group - 1)) * in_dim));
            let mut lo = [_mm256_setzero_ps(); 4];
            let mut hi = [_mm256_setzero_ps(); 4];
            let mut k = 0;
            while k < wide {
                let w_lo = _mm256_loadu_ps(w.add(k));
                let w_hi = _mm256_loadu_ps(w.add(k + 8));
                for g in 0..4 {
                    lo[g] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[g].add(k)), w_lo, lo[g]);
                    hi[g] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[g].add(k + 8)), w_hi, hi[g]);
                }
                k += 16;
            }
            for g in 0..group {
                let mut sum = horizontal_sum(_mm256_add_ps(lo[g], hi[g]));
                for kk in wide..in_dim {
                    sum += *xp[g].add(kk) * *w.add(kk);
                }
                out[r + g] = sum;
            }
            r += group;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn horizontal_sum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn reference(x: &[f32], rows: usize, w: &[f32], out_dim: usize, in_dim: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * out_dim];
        for r in 0..rows {
            for j in 0..out_dim {
                y[r * out_dim + j] =
                    (0..in_dim).map(|k| x[r * in_dim + k] as f64 * w[j * in_dim + k] as f64).sum::<f64>();
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator keeps the test free of RNG crates' version drift.
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_f64_reference_for_every_row_count_and_ragged_widths() {
        for &(in_dim, out_dim) in &[(1usize, 3usize), (7, 5), (16, 130), (33, 257), (1024, 64)] {
            for rows in 1..=MAX_FAST_ROWS {
                let x = values(rows * in_dim, (rows * 31 + in_dim) as u32);
                let w = values(out_dim * in_dim, (out_dim * 17 + in_dim) as u32);
                let got = matmul_transposed(&x, rows, &w, out_dim, in_dim);
                let want = reference(&x, rows, &w, out_dim, in_dim);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (in_dim as f64).sqrt().max(1.0);
                    assert!((*g as f64 - e).abs() <= tol, "rows {rows} {in_dim}x{out_dim} [{i}]: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn linear_forward_equals_candle_for_strided_inputs_with_bias() -> Result<()> {
        let device = Device::Cpu;
        let (in_dim, out_dim) = (48, 37);
        let weight = Tensor::from_vec(values(out_dim * in_dim, 3), (out_dim, in_dim), &device)?;
        let bias = Tensor::from_vec(values(out_dim, 4), out_dim, &device)?;
        let linear = Linear::new(weight, Some(bias));
        // (2, 3, in) taken as a transposed view: not contiguous.
        let xs = Tensor::from_vec(values(2 * 3 * in_dim, 5), (3, 2, in_dim), &device)?.transpose(0, 1)?;
        assert!(!xs.is_contiguous());
        let fast = forward(&linear, &xs)?;
        let slow = linear.forward(&xs.contiguous()?)?;
        assert_eq!(fast.dims(), &[2, 3, out_dim]);
        let diff = (fast - slow)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max difference {diff}");
        // Above the row limit the layer falls back to candle's matmul, with the same result.
        let many = Tensor::from_vec(values(40 * in_dim, 6), (40, in_dim), &device)?;
        let want = many.matmul(&linear.weight().t()?)?.broadcast_add(linear.bias().unwrap())?;
        let diff = (forward(&linear, &many)? - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max difference {diff}");
        Ok(())
    }
}
