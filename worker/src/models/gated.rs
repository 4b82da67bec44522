//! The gated activation of Llama's MLP, `silu(gate) * up`, from the fused `gate | up` projection: candle's two
//! strided elementwise ops, or on CUDA with `VISLINGO_FUSED_MLP=1` one kernel (`csrc/silu_mul.cu`).

use candle_core::{Result, Tensor, D};

/// Whether `VISLINGO_FUSED_MLP=1` asks for `csrc/silu_mul.cu` on CUDA (read once). Opt-in until the parity suites
/// have passed with it on a GPU (`bash bench/gpu.sh parity` runs them both ways).
pub fn fused_kernel_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("VISLINGO_FUSED_MLP").is_ok_and(|v| v == "1"))
}

/// `silu(gate_up[.., :intermediate]) * gate_up[.., intermediate:]`, `(.., intermediate)`.
pub fn silu_mul(gate_up: &Tensor, intermediate: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if gate_up.device().is_cuda() && fused_kernel_enabled() {
        return cuda::silu_mul(gate_up, intermediate);
    }
    unfused(gate_up, intermediate)
}

/// candle's ops on the two halves as strided views (no copies).
fn unfused(gate_up: &Tensor, intermediate: usize) -> Result<Tensor> {
    let gate = gate_up.narrow(D::Minus1, 0, intermediate)?;
    let up = gate_up.narrow(D::Minus1, intermediate, intermediate)?;
    gate.silu()? * up
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, CudaStorageSlice, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/silu_mul.ptx"));
    const THREADS: usize = 256;
    /// Enough blocks to fill an H100 several times over; larger inputs take the grid-stride loop.
    const MAX_BLOCKS: usize = 4096;

    pub(super) fn silu_mul(gate_up: &Tensor, intermediate: usize) -> Result<Tensor> {
        if !matches!(gate_up.dtype(), DType::F32 | DType::F16 | DType::BF16)
            || gate_up.dim(D::Minus1)? != 2 * intermediate
        {
            return super::unfused(gate_up, intermediate);
        }
        gate_up.contiguous()?.apply_op1_no_bwd(&SiluMul { intermediate })
    }

    struct SiluMul {
        intermediate: usize,
    }

    impl CustomOp1 for SiluMul {
        fn name(&self) -> &'static str {
            "vislingo-silu-mul"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("vislingo-silu-mul runs on CUDA only")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
            let Some((start, end)) = layout.contiguous_offsets() else {
                candle_core::bail!("vislingo-silu-mul: the input must be contiguous")
            };
            let inter = self.intermediate;
            let device = &storage.device;
            let out = match &storage.slice {
                CudaStorageSlice::F32(s) => launch(device, s.slice(start..end), inter, "f32")?,
                CudaStorageSlice::F16(s) => launch(device, s.slice(start..end), inter, "f16")?,
                CudaStorageSlice::BF16(s) => launch(device, s.slice(start..end), inter, "bf16")?,
                _ => candle_core::bail!("vislingo-silu-mul: f32, f16 or bf16 only"),
            };
            let mut dims = layout.dims().to_vec();
            *dims.last_mut().expect("checked: the last dimension is 2 * intermediate") = inter;
            Ok((out, Shape::from(dims)))
        }
    }

    fn launch<T: DeviceRepr + CudaDType>(
        device: &CudaDevice,
        gate_up: CudaView<T>,
        inter: usize,
        dtype: &str,
    ) -> Result<CudaStorage> {
        let rows = gate_up.len() / (2 * inter).max(1);
        let elements = rows * inter;
        // SAFETY: the kernel writes every element before anything reads it.
        let out = unsafe { device.alloc::<T>(elements)? };
        if elements > 0 {
            let func = device.get_or_load_custom_func(&format!("vl_silu_mul_{dtype}"), "vislingo_silu_mul", PTX)?;
            let blocks = elements.div_ceil(THREADS).min(MAX_BLOCKS) as u32;
            let config =
                LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS as u32, 1, 1), shared_mem_bytes: 0 };
            let (rows, inter) = (rows as i64, inter as i64);
            let mut builder = func.builder();
            builder.arg(&gate_up);
            builder.arg(&out);
            builder.arg(&rows);
            builder.arg(&inter);
            // SAFETY: the arguments match the kernel's (input, output, rows, intermediate size).
            unsafe { builder.launch(config) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn silu_mul_multiplies_the_silu_of_the_first_half_by_the_second() {
        let gate_up = Tensor::new(&[[1.0f32, -2.0, 0.5, 3.0], [0.0, 4.0, -1.0, 2.0]], &Device::Cpu).unwrap();
        let out = silu_mul(&gate_up, 2).unwrap().to_vec2::<f32>().unwrap();
        let silu = |x: f32| x / (1.0 + (-x).exp());
        let expected = [[silu(1.0) * 0.5, silu(-2.0) * 3.0], [silu(0.0) * -1.0, silu(4.0) * 2.0]];
        for (row, want) in out.iter().zip(expected) {
            for (got, want) in row.iter().zip(want) {
                assert!((got - want).abs() < 1e-6, "{got} vs {want}");
            }
        }
    }
}
