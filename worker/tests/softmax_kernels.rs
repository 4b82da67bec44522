//! The attention softmax (`models::attention::softmax_last_dim_with`) against a softmax computed in f64 on the
//! host, for each dtype and row shape the models produce: rows read into registers (whole 16-byte vectors, at most
//! 8,192 half or 4,096 f32 values), rows too long or too ragged for that, and inputs that start inside their
//! allocation. vislingo's kernel is held to two roundings of the output type; candle's is reported. Runs on
//! `VISLINGO_TEST_DEVICE` (`bash bench/gpu.sh parity` runs it on CUDA, where the two kernels differ; on the CPU
//! both take the one CPU path).

mod common;

use candle_core::{DType, Device, Tensor};
use vislingo_worker::models::attention::{softmax_last_dim_with, SoftmaxKernel};

/// Scores spread over [-8, 8], each row shifted by `shift * row` (large shifts overflow `exp` without the max).
fn scores(rows: usize, cols: usize, seed: u64, shift: f32) -> Tensor {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let spread = ((state >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0;
            spread + shift * (i / cols) as f32
        })
        .collect();
    Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
}

/// Softmax of each row in f64, of the values as `dtype` holds them.
fn reference(x: &Tensor) -> Vec<Vec<f64>> {
    x.to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// Tolerance of one weight `w`: `relative * w + absolute`, for two roundings to the output type and the f32 sum of
/// up to 9,000 terms (relative), and the spacing of the output type's subnormals (absolute: f16 weights below
/// 6.1e-5 lose relative precision).
fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::BF16 => (2.0f64.powi(-7), 1e-40),
        DType::F16 => (2.0f64.powi(-10), 6e-8),
        _ => (1e-5, 1e-30),
    }
}

/// The kernel's largest error in units of the tolerance (at most 1 passes).
fn worst_error(kernel: SoftmaxKernel, x_host: &Tensor, x: &Tensor) -> f64 {
    let got = softmax_last_dim_with(x, kernel).unwrap();
    assert_eq!(got.dims(), x.dims());
    assert_eq!(got.dtype(), x.dtype());
    let (relative, absolute) = tolerance(x.dtype());
    let got = got.to_device(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let mut worst = 0.0f64;
    for (got_row, want_row) in got.iter().zip(reference(x_host)) {
        let sum: f64 = got_row.iter().sum();
        assert!((sum - 1.0).abs() < 0.02, "{kernel:?} {:?}: a row sums to {sum}", x.dtype());
        for (g, w) in got_row.iter().zip(&want_row) {
            worst = worst.max((g - w).abs() / (relative * w.abs() + absolute));
        }
    }
    worst
}

fn check(rows: usize, cols: usize, dtype: DType, shift: f32, seed: u64) {
    let device = common::test_device();
    let x_host = scores(rows, cols, seed, shift).to_dtype(dtype).unwrap();
    let x = x_host.to_device(&device).unwrap();
    // candle's CUDA kernel is reported, not held to the tolerance: it rounds `x - max` and each exponential to the
    // half type (for bf16 an error of about |x - max| * 2^-9 relative in a weight), which is candle's precision.
    let candle = worst_error(SoftmaxKernel::Candle, &x_host, &x);
    eprintln!("Candle {dtype:?} ({rows}, {cols}) on {device:?}: largest error {candle:.3} of the tolerance");
    let ours = worst_error(SoftmaxKernel::Vislingo, &x_host, &x);
    eprintln!("Vislingo {dtype:?} ({rows}, {cols}) on {device:?}: largest error {ours:.3} of the tolerance");
    assert!(ours <= 1.0, "{dtype:?} ({rows}, {cols}): error {ours:.3} times the tolerance");
}

#[test]
fn rows_that_fit_in_registers_match_an_f64_softmax() {
    check(3, 6432, DType::BF16, 300.0, 1); // Mllama's vision encoder (4 tiles of 1,608 positions)
    check(2, 8192, DType::BF16, -40.0, 2); // the longest such half row
    check(4, 1608, DType::F16, 7.0, 3);
    check(3, 4096, DType::F32, 1000.0, 4); // the longest such f32 row
    check(5, 8, DType::BF16, 0.5, 5);
}

#[test]
fn rows_too_long_or_ragged_for_registers_match_an_f64_softmax() {
    check(2, 577, DType::BF16, 1.0, 6); // CLIP ViT-L/14-336: 576 patches and the class token
    check(2, 9000, DType::BF16, 50.0, 7);
    check(2, 4100, DType::F32, 3.0, 8);
    check(3, 1, DType::F16, 2.0, 9);
    check(2, 300, DType::F32, 0.0, 10);
}

#[test]
fn inputs_starting_inside_their_allocation_match_an_f64_softmax() {
    let device = common::test_device();
    let (rows, cols) = (3, 1608);
    for dtype in [DType::BF16, DType::F32] {
        let whole = scores(rows + 2, cols, 11, 5.0).to_dtype(dtype).unwrap().to_device(&device).unwrap();
        // Rows 1..=3 of the tensor (offset one row: 16-byte aligned), and the same length starting 3 values in
        // (not aligned: the kernel that reads 16-byte vectors must not take it).
        let row_offset = whole.narrow(0, 1, rows).unwrap();
        let odd_offset = whole.flatten_all().unwrap().narrow(0, 3, rows * cols).unwrap().reshape((rows, cols)).unwrap();
        for x in [row_offset, odd_offset] {
            let x_host = x.to_device(&Device::Cpu).unwrap();
            let worst = worst_error(SoftmaxKernel::Vislingo, &x_host, &x);
            assert!(worst <= 1.0, "{dtype:?} at an offset: error {worst:.3} times the tolerance");
        }
    }
}
