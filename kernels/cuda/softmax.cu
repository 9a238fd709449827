// softmax.cu — softmax and log-softmax along one axis; one block per row.
//
// A row is every element along the axis for one position of the other axes: row o starts at
// bg_offset(lx, o) in x (lx describes the other axes) and steps by `xs`; the output is
// contiguous in the input's shape, so row o starts at bg_offset(ly, o) and steps by `ys`.
// Three passes over the row (max, Σ exp, write), as the CPU does: the max is subtracted for
// stability (an all −inf row gives NaN, as in PyTorch) and the sum accumulates in f64.
#include "common.cuh"

template <typename T>
__device__ void softmax_row(long long len, int log_out, const T* __restrict__ x, const bg_layout& lx, long long xs,
                            T* __restrict__ y, const bg_layout& ly, long long ys) {
    typedef typename bg_acc<T>::type A;
    __shared__ double scratch[32];
    __shared__ A smax[32];
    const long long o = blockIdx.x;
    const T* xr = x + bg_offset(lx, o);
    T* yr = y + bg_offset(ly, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;

    // Pass 1: the max, NaN winning.
    A m = A(-BG_INF);
    for (long long j = threadIdx.x; j < len; j += blockDim.x) {
        A v = bg_load(xr[j * xs]);
        if (v > m || v != v) m = v;
    }
    for (int s = 16; s > 0; s >>= 1) {
        A w = __shfl_xor_sync(0xffffffffu, m, s);
        if (w > m || w != w) m = w;
    }
    if (lane == 0) smax[warp] = m;
    __syncthreads();
    m = lane < nwarps ? smax[lane] : A(-BG_INF);
    for (int s = 16; s > 0; s >>= 1) {
        A w = __shfl_xor_sync(0xffffffffu, m, s);
        if (w > m || w != w) m = w;
    }
    if (m == A(BG_INF) || m == A(-BG_INF)) m = A(0);

    // Pass 2: Σ exp(x − m) in f64.
    double sum = 0.0;
    for (long long j = threadIdx.x; j < len; j += blockDim.x) sum += (double)bg_exp(bg_load(xr[j * xs]) - m);
    sum = bg_block_sum(sum, scratch);

    // Pass 3: write.
    if (log_out) {
        const A lse = (A)bg_log(sum);
        for (long long j = threadIdx.x; j < len; j += blockDim.x) yr[j * ys] = bg_store<T>(bg_load(xr[j * xs]) - m - lse);
    } else {
        const A inv = (A)(1.0 / sum);
        for (long long j = threadIdx.x; j < len; j += blockDim.x)
            yr[j * ys] = bg_store<T>(bg_exp(bg_load(xr[j * xs]) - m) * inv);
    }
}

// Block size: a multiple of 32, at most 1024.
#define BG_SOFTMAX_KERNEL(SUF, T)                                                                            \
    extern "C" __global__ void softmax_##SUF(long long len, int log_out, const T* x, bg_layout lx,          \
                                             long long xs, T* y, bg_layout ly, long long ys) {               \
        softmax_row<T>(len, log_out, x, lx, xs, y, ly, ys);                                                  \
    }

BG_SOFTMAX_KERNEL(f32, float)
BG_SOFTMAX_KERNEL(f64, double)
BG_SOFTMAX_KERNEL(f16, __half)
BG_SOFTMAX_KERNEL(bf16, __nv_bfloat16)
