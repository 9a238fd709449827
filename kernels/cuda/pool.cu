// pool.cu — max / average pooling over the last two axes and the global average pool, forward
// and backward. Inputs and outputs are contiguous [planes, h, w] and [planes, oh, ow].
//
// Every kernel gives bit-for-bit the CPU twin's numbers (ops/src/pool/cpu.rs): window sums run
// in the same row-major order, and the backward kernels are *gathers* — one thread per input
// element walks the outputs whose window covers it in row-major output order, which is the order
// in which the CPU's scatter adds into that element. So overlapping windows (stride < kernel) need
// no atomics and the result is deterministic.
#include "common.cuh"

// Mirrors `PoolArgs` in ops/src/pool/gpu.rs.
struct bg_pool {
    long long planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

// The window of output index o along one axis: rows [*lo, *hi) of the real input, and the
// window's extent within the padded input (the count_include_pad divisor).
__device__ __forceinline__ long long bg_window(long long o, long long k, long long s, long long p, long long n,
                                               long long* lo, long long* hi) {
    long long start = o * s - p;
    long long end_padded = min(start + k, n + p);
    *lo = start > 0 ? start : 0;
    *hi = min(end_padded, n);
    return end_padded - start;
}

// The outputs [*lo, *hi] along one axis whose window covers input index i (empty when lo > hi).
__device__ __forceinline__ void bg_covering(long long i, long long k, long long s, long long p, long long nout,
                                            long long* lo, long long* hi) {
    long long a = i + p - k;
    *lo = a < 0 ? 0 : a / s + 1;
    *hi = min((i + p) / s, nout - 1);
}

// One thread per output: the first maximum of its window (a NaN always wins) and its position.
template <typename T>
__device__ void max_fwd(bg_pool g, const T* __restrict__ x, T* __restrict__ y, unsigned* __restrict__ arg) {
    BG_FOR_EACH(o, g.planes * g.oh * g.ow) {
        long long ow = o % g.ow, r = o / g.ow;
        long long oh = r % g.oh, p = r / g.oh;
        long long h0, h1, w0, w1;
        bg_window(oh, g.kh, g.sh, g.ph, g.h, &h0, &h1);
        bg_window(ow, g.kw, g.sw, g.pw, g.w, &w0, &w1);
        const T* xp = x + p * g.h * g.w;
        T best = T(-BG_INF);
        long long at = h0 * g.w + w0;
        for (long long i = h0; i < h1; ++i)
            for (long long j = w0; j < w1; ++j) {
                T v = xp[i * g.w + j];
                if (v > best || v != v) {
                    best = v;
                    at = i * g.w + j;
                }
            }
        y[o] = best;
        arg[o] = (unsigned)at;
    }
}

// One thread per input element: the sum of the gradients of the outputs whose argmax it is.
template <typename T>
__device__ void max_bwd(bg_pool g, const T* __restrict__ gy, const unsigned* __restrict__ arg, T* __restrict__ gx) {
    BG_FOR_EACH(e, g.planes * g.h * g.w) {
        long long j = e % g.w, r = e / g.w;
        long long i = r % g.h, p = r / g.h;
        long long oh0, oh1, ow0, ow1;
        bg_covering(i, g.kh, g.sh, g.ph, g.oh, &oh0, &oh1);
        bg_covering(j, g.kw, g.sw, g.pw, g.ow, &ow0, &ow1);
        const long long base = p * g.oh * g.ow;
        const unsigned self = (unsigned)(i * g.w + j);
        T acc = T(0);
        for (long long a = oh0; a <= oh1; ++a)
            for (long long b = ow0; b <= ow1; ++b) {
                long long o = base + a * g.ow + b;
                if (arg[o] == self) acc += gy[o];
            }
        gx[e] = acc;
    }
}

// The divisor of output (oh, ow)'s window, as the CPU's `divisor`.
__device__ __forceinline__ long long bg_divisor(const bg_pool& g, long long oh, long long ow, int cip, long long* h0,
                                                long long* h1, long long* w0, long long* w1) {
    long long rows = bg_window(oh, g.kh, g.sh, g.ph, g.h, h0, h1);
    long long cols = bg_window(ow, g.kw, g.sw, g.pw, g.w, w0, w1);
    return cip ? rows * cols : (*h1 - *h0) * (*w1 - *w0);
}

template <typename T>
__device__ void avg_fwd(bg_pool g, int cip, const T* __restrict__ x, T* __restrict__ y) {
    BG_FOR_EACH(o, g.planes * g.oh * g.ow) {
        long long ow = o % g.ow, r = o / g.ow;
        long long oh = r % g.oh, p = r / g.oh;
        long long h0, h1, w0, w1;
        long long d = bg_divisor(g, oh, ow, cip, &h0, &h1, &w0, &w1);
        const T* xp = x + p * g.h * g.w;
        T sum = T(0);
        for (long long i = h0; i < h1; ++i)
            for (long long j = w0; j < w1; ++j) sum += xp[i * g.w + j];
        y[o] = sum / T(d);
    }
}

// One thread per input element: Σ g[o] / d(o) over the windows covering it, in output order.
template <typename T>
__device__ void avg_bwd(bg_pool g, int cip, const T* __restrict__ gy, T* __restrict__ gx) {
    BG_FOR_EACH(e, g.planes * g.h * g.w) {
        long long j = e % g.w, r = e / g.w;
        long long i = r % g.h, p = r / g.h;
        long long oh0, oh1, ow0, ow1;
        bg_covering(i, g.kh, g.sh, g.ph, g.oh, &oh0, &oh1);
        bg_covering(j, g.kw, g.sw, g.pw, g.ow, &ow0, &ow1);
        T acc = T(0);
        for (long long a = oh0; a <= oh1; ++a)
            for (long long b = ow0; b <= ow1; ++b) {
                long long h0, h1, w0, w1;
                long long d = bg_divisor(g, a, b, cip, &h0, &h1, &w0, &w1);
                acc += gy[p * g.oh * g.ow + a * g.ow + b] / T(d);
            }
        gx[e] = acc;
    }
}

// One warp per plane: the f64 mean of `plane` consecutive elements. Whole warps skip together,
// so the full-mask shuffles always name live lanes.
template <typename T>
__device__ void gap_fwd(long long planes, long long plane, const T* __restrict__ x, T* __restrict__ y) {
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)blockDim.x * gridDim.x) >> 5;
    for (long long p = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; p < planes; p += warps) {
        const T* xp = x + p * plane;
        double s = 0.0;
        for (long long i = lane; i < plane; i += 32) s += (double)bg_load(xp[i]);
        s = bg_warp_sum(s);
        if (lane == 0) y[p] = bg_store<T>((typename bg_acc<T>::type)(s / (double)plane));
    }
}

template <typename T>
__device__ void gap_bwd(long long n, long long plane, const T* __restrict__ gy, T* __restrict__ gx) {
    BG_FOR_EACH(e, n) gx[e] = gy[e / plane] / T(plane);
}

#define BG_POOL_KERNELS(SUF, T)                                                                              \
    extern "C" __global__ void maxpool2d_fwd_##SUF(bg_pool g, const T* x, T* y, unsigned* arg) {            \
        max_fwd<T>(g, x, y, arg);                                                                            \
    }                                                                                                        \
    extern "C" __global__ void maxpool2d_bwd_##SUF(bg_pool g, const T* gy, const unsigned* arg, T* gx) {    \
        max_bwd<T>(g, gy, arg, gx);                                                                          \
    }                                                                                                        \
    extern "C" __global__ void avgpool2d_fwd_##SUF(bg_pool g, int cip, const T* x, T* y) {                  \
        avg_fwd<T>(g, cip, x, y);                                                                            \
    }                                                                                                        \
    extern "C" __global__ void avgpool2d_bwd_##SUF(bg_pool g, int cip, const T* gy, T* gx) {                \
        avg_bwd<T>(g, cip, gy, gx);                                                                          \
    }                                                                                                        \
    extern "C" __global__ void gap_fwd_##SUF(long long planes, long long plane, const T* x, T* y) {         \
        gap_fwd<T>(planes, plane, x, y);                                                                     \
    }                                                                                                        \
    extern "C" __global__ void gap_bwd_##SUF(long long n, long long plane, const T* gy, T* gx) {            \
        gap_bwd<T>(n, plane, gy, gx);                                                                        \
    }

BG_POOL_KERNELS(f32, float)
BG_POOL_KERNELS(f64, double)
