// Softmax over the last dimension of contiguous attention scores (worker/src/models/attention.rs), the CUDA
// kernel behind `attention::softmax_last_dim`: one block per row with coalesced loads, max, exponentials and their
// sum in f32, and one rounding of each result, as torch's `softmax(x, dim=-1, dtype=torch.float32).to(x.dtype)`.
// candle's kernel gives each row one warp (2-byte loads per thread on bf16), reads each row three times, writes it
// twice and rounds twice. Rows of whole 16-byte vectors up to 8,192 f16/bf16 (the vision encoders' 577- to
// 6,432-wide rows) are read once into registers with 16-byte loads; other rows take three strided passes (the
// later ones mostly from L2). build.rs turns this file into PTX under the `cuda` feature.
#include "half_types.cuh"

// f32 results take the exact expf; half results the hardware exp, whose error is far below their rounding.
template <bool FAST> __device__ __forceinline__ float exp_f(float x) { return FAST ? __expf(x) : expf(x); }

// The maximum (MAX) or the sum of `v` over the block, returned to every thread. `shared` holds 32 floats.
template <bool MAX> __device__ __forceinline__ float block_reduce(float v, float *shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffff, v, offset);
    v = MAX ? fmaxf(v, other) : v + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // a previous call's readers are done with `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x / 32) ? shared[lane] : (MAX ? -INFINITY : 0.0f);
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffff, v, offset);
    v = MAX ? fmaxf(v, other) : v + other;
  }
  return v;
}

// Block size: a multiple of 32, at most 1024.
template <typename T, bool FAST>
__device__ __forceinline__ void softmax_rows(const T *__restrict__ x, T *__restrict__ y, const int64_t cols) {
  __shared__ float shared[32];
  const T *row = x + (int64_t)blockIdx.x * cols;
  T *out = y + (int64_t)blockIdx.x * cols;
  float max_value = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) max_value = fmaxf(max_value, to_float(row[c]));
  max_value = block_reduce<true>(max_value, shared);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += exp_f<FAST>(to_float(row[c]) - max_value);
  sum = block_reduce<false>(sum, shared);
  const float inverse = 1.0f / sum;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    out[c] = from_float<T>(exp_f<FAST>(to_float(row[c]) - max_value) * inverse);
}

// Rows of whole 16-byte vectors, 16-byte aligned, of at most blockDim.x * VECTORS * N elements (N per vector):
// each thread keeps its vectors in registers, so a row is read from memory once and written once.
template <typename T, int VECTORS, bool FAST>
__device__ __forceinline__ void softmax_rows_in_registers(const T *__restrict__ x, T *__restrict__ y,
                                                          const int64_t cols) {
  constexpr int N = 16 / sizeof(T);
  __shared__ float shared[32];
  const int64_t vectors = cols / N;
  const uint4 *row = reinterpret_cast<const uint4 *>(x + (int64_t)blockIdx.x * cols);
  uint4 *out = reinterpret_cast<uint4 *>(y + (int64_t)blockIdx.x * cols);
  float values[VECTORS][N];
  float max_value = -INFINITY;
#pragma unroll
  for (int k = 0; k < VECTORS; k++) {
    const int64_t c = threadIdx.x + (int64_t)k * blockDim.x;
    if (c < vectors) {
      const uint4 packed = row[c];
      const T *elements = reinterpret_cast<const T *>(&packed);
#pragma unroll
      for (int i = 0; i < N; i++) {
        values[k][i] = to_float(elements[i]);
        max_value = fmaxf(max_value, values[k][i]);
      }
    }
  }
  max_value = block_reduce<true>(max_value, shared);
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < VECTORS; k++) {
    const int64_t c = threadIdx.x + (int64_t)k * blockDim.x;
    if (c < vectors) {
#pragma unroll
      for (int i = 0; i < N; i++) {
        values[k][i] = exp_f<FAST>(values[k][i] - max_value);
        sum += values[k][i];
      }
    }
  }
  sum = block_reduce<false>(sum, shared);
  const float inverse = 1.0f / sum;
#pragma unroll
  for (int k = 0; k < VECTORS; k++) {
    const int64_t c = threadIdx.x + (int64_t)k * blockDim.x;
    if (c < vectors) {
      uint4 packed;
      T *elements = reinterpret_cast<T *>(&packed);
#pragma unroll
      for (int i = 0; i < N; i++) elements[i] = from_float<T>(values[k][i] * inverse);
      out[c] = packed;
    }
  }
}

// VL_SOFTMAX_VECTORS vectors of 16 bytes per thread: with 256 threads, rows of up to 8,192 f16/bf16 or 4,096 f32
// (attention.rs launches these kernels with that block size and bound).
#define VL_SOFTMAX_VECTORS 4
extern "C" __global__ void vl_softmax_in_registers_f32(const float *x, float *y, const int64_t cols) {
  softmax_rows_in_registers<float, VL_SOFTMAX_VECTORS, false>(x, y, cols);
}
extern "C" __global__ void vl_softmax_in_registers_f16(const __half *x, __half *y, const int64_t cols) {
  softmax_rows_in_registers<__half, VL_SOFTMAX_VECTORS, true>(x, y, cols);
}
extern "C" __global__ void vl_softmax_in_registers_bf16(const __nv_bfloat16 *x, __nv_bfloat16 *y,
                                                        const int64_t cols) {
  softmax_rows_in_registers<__nv_bfloat16, VL_SOFTMAX_VECTORS, true>(x, y, cols);
}

extern "C" __global__ void vl_softmax_f32(const float *x, float *y, const int64_t cols) {
  softmax_rows<float, false>(x, y, cols);
}
extern "C" __global__ void vl_softmax_f16(const __half *x, __half *y, const int64_t cols) {
  softmax_rows<__half, true>(x, y, cols);
}
extern "C" __global__ void vl_softmax_bf16(const __nv_bfloat16 *x, __nv_bfloat16 *y, const int64_t cols) {
  softmax_rows<__nv_bfloat16, true>(x, y, cols);
}
