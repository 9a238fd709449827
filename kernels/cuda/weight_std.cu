// weight_std.cu — weight standardization of a contiguous weight [O, n] (n = I·kh·kw), one block
// per output channel (row); the standalone reference kernels (a conv may fuse the forward later).
//
// Forward, as the CPU twin (ops/src/weight_std/cpu.rs): μ and r = 1/sqrt(σ² + ε) by
// bg_block_moments (norm_stats.cuh, shared with group_norm.cu: μ₀ rounded to the arithmetic type,
// then the corrected two-pass biased variance, which makes μ exact for a constant row, so a
// constant filter gives exactly ŵ = 0); ŵ = (w − μ)·r with μ and r rounded to F, and μ, r (F)
// are saved per row.
// Backward: ∂w = r·(g − mean(g) − ŵ·mean(g·ŵ)) = g·r + (ŵ·b + a) with a = −r·mean(g),
// b = −r·mean(g·ŵ), the CPU's arrangement. ŵ is recomputed from w, μ and r exactly as the forward
// computed it in F (the same two operations), rather than read back from the output: for f32/f64
// that is the stored value bit for bit; for f16/bf16 it is the f32 ŵ the CPU's backward uses,
// where the stored output has been rounded to the half dtype (reading that would add up to half
// an ulp of T to every term of Σg·ŵ and to ŵ·b). It reads as many bytes as reading ŵ would.
// Sums accumulate in f64 per thread and meet in a fixed tree (bg_block_sum): deterministic run to
// run; they may differ from the CPU's blocked order in the last bits of f64 only.
//
// Dtypes: T is the storage type, F = bg_acc<T> the arithmetic type. f16/bf16 weights compute as
// the f32 kernel (the CPU op converts them to f32) and round ŵ and ∂w once to T; μ and r stay F.
#include "norm_stats.cuh"

template <typename T, typename F = typename bg_acc<T>::type>
__device__ void ws_forward_row(long long n, double eps, const T* __restrict__ w, T* __restrict__ out,
                               F* __restrict__ mean, F* __restrict__ rstd) {
    __shared__ double scratch[32];
    const T* wr = w + blockIdx.x * n;
    T* orow = out + blockIdx.x * n;
    const bg_moments st = bg_block_moments(wr, n, eps, scratch);
    const F rt = (F)st.rstd, mt = (F)st.mean;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) orow[j] = bg_store<T>((bg_load(wr[j]) - mt) * rt);
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = mt;
        rstd[blockIdx.x] = rt;
    }
}

template <typename T, typename F = typename bg_acc<T>::type>
__device__ void ws_backward_row(long long n, const T* __restrict__ g, const T* __restrict__ w,
                                const F* __restrict__ mean, const F* __restrict__ rstd, T* __restrict__ dw) {
    __shared__ double scratch[32];
    const long long base = blockIdx.x * n;
    const double dn = (double)n;
    const F mt = mean[blockIdx.x], rt = rstd[blockIdx.x];
    double sg = 0.0, sgw = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        const F gv = bg_load(g[base + j]), what = (bg_load(w[base + j]) - mt) * rt;
        sg += (double)gv;
        sgw += (double)(gv * what);
    }
    sg = bg_block_sum(sg, scratch);
    sgw = bg_block_sum(sgw, scratch);
    const double r = (double)rt;
    const F a = (F)(-r * sg / dn), b = (F)(-r * sgw / dn);
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        const F what = (bg_load(w[base + j]) - mt) * rt;
        dw[base + j] = bg_store<T>(bg_load(g[base + j]) * rt + (what * b + a));
    }
}

// Grid: one block per row; block: a multiple of 32, at most 1024. mean and rstd are F (f32 for
// f16/bf16).
#define BG_WS_KERNELS(SUF, T, F)                                                                             \
    extern "C" __global__ void ws_forward_##SUF(long long n, double eps, const T* w, T* out, F* mean,       \
                                                F* rstd) {                                                   \
        ws_forward_row<T>(n, eps, w, out, mean, rstd);                                                       \
    }                                                                                                        \
    extern "C" __global__ void ws_backward_##SUF(long long n, const T* g, const T* w, const F* mean,        \
                                                 const F* rstd, T* dw) {                                     \
        ws_backward_row<T>(n, g, w, mean, rstd, dw);                                                         \
    }

BG_WS_KERNELS(f32, float, float)
BG_WS_KERNELS(f64, double, double)
BG_WS_KERNELS(f16, __half, float)
BG_WS_KERNELS(bf16, __nv_bfloat16, float)
