// weight_std.cu — weight standardization of a contiguous weight [O, n] (n = I·kh·kw), one block
// per output channel (row); the standalone reference kernels (a conv may fuse the forward later).
//
// Forward, as the CPU twin (ops/src/weight_std/cpu.rs): μ₀ = Σw/n rounded to T, then the
// corrected two-pass biased variance from the deviations w − μ₀ (the correction Σ(w − μ₀) makes
// μ exact for a constant row, so a constant filter gives exactly ŵ = 0), r = 1/sqrt(σ² + ε);
// ŵ = (w − μ)·r in T, and r (rounded to T) is saved per row.
// Backward: ∂w = r·(g − mean(g) − ŵ·mean(g·ŵ)) = g·r + (ŵ·b + a) with a = −r·mean(g),
// b = −r·mean(g·ŵ), the CPU's arrangement.
// Sums accumulate in f64 per thread and meet in a fixed tree (bg_block_sum): deterministic run to
// run; they may differ from the CPU's blocked order in the last bits of f64 only.
#include "common.cuh"

template <typename T>
__device__ void ws_forward_row(long long n, double eps, const T* __restrict__ w, T* __restrict__ out,
                               T* __restrict__ rstd) {
    __shared__ double scratch[32];
    const T* wr = w + blockIdx.x * n;
    T* orow = out + blockIdx.x * n;
    const double dn = (double)n;

    double s = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) s += (double)wr[j];
    s = bg_block_sum(s, scratch);
    const T mean0 = (T)(s / dn);

    double dev = 0.0, sq = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        T v = wr[j] - mean0;
        dev += (double)v;
        sq += (double)(v * v);
    }
    dev = bg_block_sum(dev, scratch);
    sq = bg_block_sum(sq, scratch);
    const double mean = (double)mean0 + dev / dn;
    double var = (sq - dev * dev / dn) / dn;
    if (!(var > 0.0)) var = 0.0;  // the CPU's f64::max(var, 0): NaN gives 0 too
    const double r = 1.0 / sqrt(var + eps);
    const T rt = (T)r, mt = (T)mean;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) orow[j] = (wr[j] - mt) * rt;
    if (threadIdx.x == 0) rstd[blockIdx.x] = rt;
}

template <typename T>
__device__ void ws_backward_row(long long n, const T* __restrict__ g, const T* __restrict__ what,
                                const T* __restrict__ rstd, T* __restrict__ dw) {
    __shared__ double scratch[32];
    const long long base = blockIdx.x * n;
    const double dn = (double)n;
    double sg = 0.0, sgw = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        T gv = g[base + j];
        sg += (double)gv;
        sgw += (double)(gv * what[base + j]);
    }
    sg = bg_block_sum(sg, scratch);
    sgw = bg_block_sum(sgw, scratch);
    const T rt = rstd[blockIdx.x];
    const double r = (double)rt;
    const T a = (T)(-r * sg / dn), b = (T)(-r * sgw / dn);
    for (long long j = threadIdx.x; j < n; j += blockDim.x) dw[base + j] = g[base + j] * rt + (what[base + j] * b + a);
}

// Grid: one block per row; block: a multiple of 32, at most 1024.
#define BG_WS_KERNELS(SUF, T)                                                                                \
    extern "C" __global__ void ws_forward_##SUF(long long n, double eps, const T* w, T* out, T* rstd) {     \
        ws_forward_row<T>(n, eps, w, out, rstd);                                                             \
    }                                                                                                        \
    extern "C" __global__ void ws_backward_##SUF(long long n, const T* g, const T* what, const T* rstd,     \
                                                 T* dw) {                                                    \
        ws_backward_row<T>(n, g, what, rstd, dw);                                                            \
    }

BG_WS_KERNELS(f32, float)
BG_WS_KERNELS(f64, double)
