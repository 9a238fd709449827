// common.cuh — what every bitgrad kernel shares: the strided-layout argument, dtype helpers,
// grid-stride loops, block reductions and the dynamic shared memory macro.
//
// Structs passed by value mirror `#[repr(C)]` structs in engine/src/gpu/prims/mod.rs: keep the
// two in sync (the engine checks sizeof through a kernel in its tests).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Dynamic shared memory through one macro, so that the emulator can provide it.
#ifndef BITGRAD_EMU
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

#define BG_MAX_RANK 8

// +∞ as a float (NVRTC has no math.h, so no INFINITY macro).
#define BG_INF __int_as_float(0x7f800000)

// A tensor view: element (i0, …, i{rank-1}) lives at offset + Σ i_d · strides[d] (in elements).
// Strides are non-negative; 0 marks a broadcast axis.
struct bg_layout {
    long long dims[BG_MAX_RANK];
    long long strides[BG_MAX_RANK];
    long long offset;
    int rank;
    int contiguous;  // 1 when offset + i is the element of logical index i
};

// Storage index of the element with row-major logical index `i`.
__device__ __forceinline__ long long bg_offset(const bg_layout& l, long long i) {
    if (l.contiguous) return l.offset + i;
    long long off = l.offset;
    for (int d = l.rank - 1; d >= 0; --d) {
        long long n = l.dims[d];
        off += (i % n) * l.strides[d];
        i /= n;
    }
    return off;
}

// Grid-stride loop over [0, n): every launch geometry covers every element exactly once.
#define BG_FOR_EACH(i, n)                                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)blockDim.x * gridDim.x)

// The arithmetic type of a storage type: half precision computes in f32, as on the CPU.
template <typename T> struct bg_acc { typedef float type; };
template <> struct bg_acc<double> { typedef double type; };
template <> struct bg_acc<long long> { typedef long long type; };  // integers compare exactly

template <typename T> __device__ __forceinline__ typename bg_acc<T>::type bg_load(T x) { return x; }
template <> __device__ __forceinline__ float bg_load<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float bg_load<__nv_bfloat16>(__nv_bfloat16 x) {
    return __bfloat162float(x);
}

template <typename T> __device__ __forceinline__ T bg_store(typename bg_acc<T>::type x) { return x; }
template <> __device__ __forceinline__ __half bg_store<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 bg_store<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Math in the arithmetic type: the f32 functions for float, the f64 ones for double.
__device__ __forceinline__ float bg_exp(float x) { return expf(x); }
__device__ __forceinline__ double bg_exp(double x) { return exp(x); }
__device__ __forceinline__ float bg_log(float x) { return logf(x); }
__device__ __forceinline__ double bg_log(double x) { return log(x); }
__device__ __forceinline__ float bg_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double bg_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float bg_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double bg_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float bg_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double bg_abs(double x) { return fabs(x); }
__device__ __forceinline__ float bg_pow(float x, float p) { return powf(x, p); }
__device__ __forceinline__ double bg_pow(double x, double p) { return pow(x, p); }

// Sum over a warp by butterfly shuffles; every lane gets the total.
template <typename A> __device__ __forceinline__ A bg_warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a block whose size is a multiple of 32 (≤ 1024); every thread gets the total.
// `scratch` holds at least 32 values; the trailing barrier makes it reusable at once.
template <typename A> __device__ A bg_block_sum(A v, A* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = bg_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A t = lane < nwarps ? scratch[lane] : A(0);
    t = bg_warp_sum(t);
    __syncthreads();
    return t;
}
