//! Build script: compiles `csrc/vl_jpeg.c`, the libjpeg(-turbo) glue that decodes JPEGs as Pillow does,
//! and links the system libjpeg (Debian: `libjpeg62-turbo-dev`), dynamically unless `VISLINGO_STATIC_JPEG=1`.
//! With the `cuda` feature it also compiles `csrc/softmax.cu` and `csrc/silu_mul.cu` to PTX with nvcc (`$NVCC`,
//! else `nvcc` on the PATH: the one candle's kernels are built with), for `CUDA_COMPUTE_CAP` (default 80).

fn main() {
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_ptx("csrc/softmax.cu", "softmax.ptx");
        compile_ptx("csrc/silu_mul.cu", "silu_mul.ptx");
    }
    println!("cargo:rerun-if-changed=csrc/vl_jpeg.c");
    cc::Build::new().file("csrc/vl_jpeg.c").warnings(true).compile("vl_jpeg");
    // VISLINGO_STATIC_JPEG=1 links libjpeg.a into the binary (GPU hosts without Debian's libjpeg62-turbo).
    println!("cargo:rerun-if-env-changed=VISLINGO_STATIC_JPEG");
    if std::env::var("VISLINGO_STATIC_JPEG").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-search=native=/usr/lib/x86_64-linux-gnu");
        println!("cargo:rustc-link-lib=static=jpeg");
    } else {
        println!("cargo:rustc-link-lib=jpeg");
    }
}

/// `nvcc -ptx` of `source` into `$OUT_DIR/name`, for the GPUs of `CUDA_COMPUTE_CAP` and newer.
fn compile_ptx(source: &str, name: &str) {
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-changed=csrc/half_types.cuh");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string());
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join(name);
    let status = std::process::Command::new(&nvcc)
        .args(["-ptx", "-O3", &format!("-arch=compute_{cap}"), source, "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {nvcc} to compile {source} (the cuda feature needs nvcc): {e}"));
    assert!(status.success(), "{nvcc} failed to compile {source}");
}
