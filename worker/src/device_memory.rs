//! Memory in use on the model's device, for the start-up log, `/metrics` and the GPU benchmark (CUDA builds only;
//! the CPU reports none).

use candle_core::Device;

/// `(used, total)` bytes of the device's memory, as the driver counts them (every process on the card), or
/// `None` on the CPU or when the driver cannot tell.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
            Some(((total - free) as u64, total as u64))
        }
        _ => None,
    }
}

/// Logs the device memory in use after loading the models (nothing on the CPU).
pub fn log_device_memory(device: &Device, what: &str) {
    if let Some((used, total)) = device_memory(device) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        tracing::info!(used_gib = format!("{:.2}", gib(used)), total_gib = format!("{:.2}", gib(total)), "{what}");
    }
}
