// emu_selftest.cu — kernels that exercise the CPU emulator (kernels/emu) feature by feature:
// dynamic shared memory with __syncthreads, warp shuffles and votes, atomics on global and shared
// memory, __half/__nv_bfloat16 conversions, by-value struct and scalar arguments, 3-D indices,
// macro-stamped kernels calling template helpers. Valid CUDA: NVRTC compiles it too. The tests in
// kernels/tests/ launch these and check the answers.
#include "common.cuh"

// Linear thread index within the block and block index within the grid (x fastest).
__device__ __forceinline__ unsigned linear_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ unsigned linear_bid() {
    return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
}

// Per-block sum of a grid-strided slice of x, through dynamic shared memory (blockDim floats).
// The halving tree works for any block size, including odd ones.
extern "C" __global__ void selftest_block_sum(const float* __restrict__ x, float* __restrict__ out, int n) {
    DYNAMIC_SHARED(float, bs_partial);
    const unsigned tid = linear_tid(), nt = blockDim.x * blockDim.y * blockDim.z;
    const unsigned nb = gridDim.x * gridDim.y * gridDim.z;
    float acc = 0.0f;
    for (unsigned i = linear_bid() * nt + tid; i < (unsigned)n; i += nb * nt) acc += x[i];
    bs_partial[tid] = acc;
    __syncthreads();
    for (unsigned active = nt; active > 1;) {
        const unsigned half = (active + 1) / 2;
        if (tid < active - half) bs_partial[tid] += bs_partial[tid + half];
        __syncthreads();
        active = half;
    }
    if (tid == 0) out[linear_bid()] = bs_partial[0];
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Sum of x into *out: warp shuffles, then one float atomicAdd per warp. blockDim.x % 32 == 0.
extern "C" __global__ void __launch_bounds__(1024) selftest_warp_sum(const float* __restrict__ x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float s = warp_sum(i < n ? x[i] : 0.0f);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, s);
}

// Every warp op with its edge cases; 8 ints of output per thread. blockDim.x % 32 == 0.
extern "C" __global__ void selftest_warp_ops(const int* __restrict__ x, int* __restrict__ out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = x[i];
    int* o = out + 8 * i;
    o[0] = __shfl_sync(0xffffffffu, v, v & 31, 8);  // source from a data-dependent lane, width 8
    o[1] = __shfl_up_sync(0xffffffffu, v, 3, 16);   // low lanes of each 16 keep their own value
    o[2] = __shfl_down_sync(0xffffffffu, v, 5);     // high lanes keep their own value
    o[3] = __shfl_xor_sync(0xffffffffu, v, 6, 4);   // xor beyond the width: own value
    o[4] = (int)__ballot_sync(0xffffffffu, v > 0);
    o[5] = __any_sync(0xffffffffu, v > 1000);
    o[6] = __all_sync(0xffffffffu, v > -1000);
    // Half-warp masks: the two halves synchronise independently.
    const unsigned half = (threadIdx.x & 16) ? 0xffff0000u : 0x0000ffffu;
    o[7] = (int)__shfl_xor_sync(half, (double)v, 1);
    __syncwarp();
}

// Integer atomics from every block: a 64-bit total, a max, and a 16-bin histogram built in static
// shared memory first.
extern "C" __global__ void selftest_atomics(const int* __restrict__ x, int n, unsigned long long* total, int* max_out,
                                            unsigned* hist) {
    __shared__ unsigned s_hist[16];
    const int tid = threadIdx.x;
    if (tid < 16) s_hist[tid] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + tid; i < n; i += gridDim.x * blockDim.x) {
        atomicAdd(total, (unsigned long long)x[i]);
        atomicMax(max_out, x[i]);
        atomicAdd(&s_hist[x[i] & 15], 1u);
    }
    __syncthreads();
    if (tid < 16) atomicAdd(&hist[tid], s_hist[tid]);
}

// __syncthreads_count: how many threads of each block see a positive value.
extern "C" __global__ void selftest_count_positive(const float* __restrict__ x, int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = __syncthreads_count(i < n && x[i] > 0.0f);
    if (threadIdx.x == 0) out[blockIdx.x] = c;
}

// 16-bit float conversions, as raw bits.
extern "C" __global__ void selftest_f32_to_f16(const float* __restrict__ x, unsigned short* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __half_as_ushort(__float2half_rn(x[i]));
}
extern "C" __global__ void selftest_f16_to_f32(const unsigned short* __restrict__ x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __half2float(__ushort_as_half(x[i]));
}
extern "C" __global__ void selftest_f32_to_bf16(const float* __restrict__ x, unsigned short* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}
extern "C" __global__ void selftest_bf16_to_f32(const unsigned short* __restrict__ x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __bfloat162float(__ushort_as_bfloat16(x[i]));
}
// __half in, __nv_bfloat16 out: y = bf16(2 * float(x)).
extern "C" __global__ void selftest_half_to_bf16x2(const __half* __restrict__ x, __nv_bfloat16* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16(2.0f * __half2float(x[i]));
}

// A struct passed by value, and scalars of several sizes.
struct Affine {
    float scale;
    float shift;
    int n;
};
extern "C" __global__ void selftest_affine(const float* __restrict__ x, float* __restrict__ y, Affine p) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) y[i] = fmaf(x[i], p.scale, p.shift);
}
extern "C" __global__ void selftest_scalars(double* out, double a, long long b, unsigned c, float d) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        out[0] = a;
        out[1] = (double)b;
        out[2] = (double)c;
        out[3] = (double)d;
    }
}

// Every thread of a 3-D launch writes (linear block << 10 | linear thread) at its global index.
extern "C" __global__ void selftest_index(unsigned* out) {
    const unsigned tid = linear_tid(), bid = linear_bid();
    out[bid * (blockDim.x * blockDim.y * blockDim.z) + tid] = (bid << 10) | tid;
}

// Elementwise kernels stamped out by a macro, calling a template helper (the shipped kernels'
// style); the emulator must find them after preprocessing.
template <typename T>
__device__ __forceinline__ T axpy_one(T a, T x, T y) {
    return a * x + y;
}
#define SELFTEST_AXPY(NAME, T)                                                                   \
    extern "C" __global__ void NAME(T a, const T* __restrict__ x, T* __restrict__ y, int n) {   \
        const int i = blockIdx.x * blockDim.x + threadIdx.x;                                    \
        if (i < n) y[i] = axpy_one<T>(a, x[i], y[i]);                                           \
    }
SELFTEST_AXPY(selftest_axpy_f32, float)
SELFTEST_AXPY(selftest_axpy_f64, double)

// A kernel with __launch_bounds__ below the device's 1024 threads: a driver must refuse a bigger
// block (the emulator ignores launch bounds; the CUDA shim reads them from the compiled image).
extern "C" __global__ void __launch_bounds__(128) selftest_bounded(int* out) {
    out[linear_bid() * blockDim.x + threadIdx.x] = (int)threadIdx.x;
}
