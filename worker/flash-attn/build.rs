//! With the `cuda` feature, compiles the flash-attention kernels of `kernels/` with nvcc into a static library (as
//! candle-flash-attn's build script does), with CUTLASS's headers from `VISLINGO_CUTLASS_DIR` (its `include/`
//! folder; `bash bench/gpu.sh build` unpacks them from the `nvidia-cutlass` wheel) instead of a git checkout.
//! Without it there is nothing to build.

#[cfg(feature = "cuda")]
const KERNEL_FILES: [&str; 7] = [
    "kernels/flash_api.cu",
    "kernels/flash_fwd_hdim64_bf16_sm80.cu",
    "kernels/flash_fwd_hdim64_fp16_sm80.cu",
    "kernels/flash_fwd_hdim96_bf16_sm80.cu",
    "kernels/flash_fwd_hdim96_fp16_sm80.cu",
    "kernels/flash_fwd_hdim128_bf16_sm80.cu",
    "kernels/flash_fwd_hdim128_fp16_sm80.cu",
];

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    build_kernels()?;
    Ok(())
}

#[cfg(feature = "cuda")]
fn build_kernels() -> anyhow::Result<()> {
    use cudaforge::KernelBuilder;
    use std::path::PathBuf;

    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=VISLINGO_CUTLASS_DIR");
    let cutlass = PathBuf::from(std::env::var("VISLINGO_CUTLASS_DIR").map_err(|_| {
        anyhow::anyhow!(
            "VISLINGO_CUTLASS_DIR must name CUTLASS's include/ folder (bash bench/gpu.sh build sets it up from \
             the nvidia-cutlass wheel)"
        )
    })?);
    anyhow::ensure!(
        cutlass.join("cute").is_dir() && cutlass.join("cutlass").is_dir(),
        "VISLINGO_CUTLASS_DIR={} holds no cute/ and cutlass/ headers",
        cutlass.display()
    );
    println!("cargo::rerun-if-env-changed=VISLINGO_FLASH_ATTN_BUILD_DIR");
    // The kernels take ~3 min each on 2 cores: VISLINGO_FLASH_ATTN_BUILD_DIR keeps their objects across target
    // directories (unchanged sources are not compiled again).
    let out_dir = match std::env::var("VISLINGO_FLASH_ATTN_BUILD_DIR") {
        Ok(dir) => {
            std::fs::create_dir_all(&dir)?;
            PathBuf::from(dir).canonicalize()?
        }
        Err(_) => PathBuf::from(std::env::var("OUT_DIR")?),
    };
    KernelBuilder::new()
        .source_files(KERNEL_FILES.iter())
        .out_dir(&out_dir)
        .include_path(&cutlass)
        .arg("-std=c++17")
        .arg("-O3")
        .arg("-U__CUDA_NO_HALF_OPERATORS__")
        .arg("-U__CUDA_NO_HALF_CONVERSIONS__")
        .arg("-U__CUDA_NO_HALF2_OPERATORS__")
        .arg("-U__CUDA_NO_BFLOAT16_CONVERSIONS__")
        .arg("--expt-relaxed-constexpr")
        .arg("--expt-extended-lambda")
        .arg("--use_fast_math")
        // CUTLASS 3.5 takes CUDA 13.0 for older than 12.5 (it tests the minor version alone) and then names the
        // driver's function types without their version suffix, which CUDA 13's cudaTypedefs.h no longer has.
        .arg("-DPFN_cuTensorMapEncodeTiled=PFN_cuTensorMapEncodeTiled_v12000")
        .arg("-DPFN_cuTensorMapEncodeIm2col=PFN_cuTensorMapEncodeIm2col_v12000")
        .arg("-Xcompiler")
        .arg("-fPIC")
        .thread_percentage(1.0)
        .build_lib(out_dir.join("libvislingoflashattention.a"))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!("cargo::rustc-link-search={}", out_dir.display());
    println!("cargo::rustc-link-lib=vislingoflashattention");
    println!("cargo::rustc-link-lib=dylib=cudart");
    println!("cargo::rustc-link-lib=dylib=stdc++");
    Ok(())
}
