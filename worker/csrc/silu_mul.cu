// silu(gate) * up for Llama's gated MLP, read from the fused gate|up projection (worker/src/models/gated.rs): one
// kernel reading both halves and writing the product, where candle takes two (a strided silu, then a strided
// product) per layer and step. Rounds as the transformers reference does in half precision: silu's result (computed
// in f32) to the input type, then the product (in f32) to it. build.rs turns this file into PTX under `cuda`.
#include "half_types.cuh"

// `gate_up` is `(rows, 2 * inter)` contiguous, gate first; `out` is `(rows, inter)`. Grid-stride over the outputs.
template <typename T>
__device__ __forceinline__ void silu_mul(const T *__restrict__ gate_up, T *__restrict__ out, const int64_t rows,
                                         const int64_t inter) {
  const int64_t n = rows * inter;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / inter, c = i - r * inter;
    const float g = to_float(gate_up[r * 2 * inter + c]);
    const float u = to_float(gate_up[r * 2 * inter + inter + c]);
    const T s = from_float<T>(g / (1.0f + expf(-g)));
    out[i] = from_float<T>(to_float(s) * u);
  }
}

extern "C" __global__ void vl_silu_mul_f32(const float *gate_up, float *out, const int64_t rows, const int64_t inter) {
  silu_mul(gate_up, out, rows, inter);
}
extern "C" __global__ void vl_silu_mul_f16(const __half *gate_up, __half *out, const int64_t rows,
                                           const int64_t inter) {
  silu_mul(gate_up, out, rows, inter);
}
extern "C" __global__ void vl_silu_mul_bf16(const __nv_bfloat16 *gate_up, __nv_bfloat16 *out, const int64_t rows,
                                            const int64_t inter) {
  silu_mul(gate_up, out, rows, inter);
}
