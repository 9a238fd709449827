// group_norm.cu — group norm over a contiguous [N, C, S] input (S = the product of the spatial
// dims) with G groups of cg = C/G channels: the m = cg·S elements of group u = n·G + g are the
// contiguous block [u·m, (u+1)·m). One block per (n, g) group, as the CPU twin
// (ops/src/group_norm/cpu.rs) makes one task per group; the formulas and roundings are the CPU's.
//
// Forward: μ₀ = Σx/m rounded to T, corrected two-pass biased variance from x − μ₀ (f64 sums,
// fixed tree), r = 1/sqrt(σ² + ε); per channel scale = r·γ_c and shift = β_c − μ·scale (f64,
// rounded to T, kept in shared memory), y = x·scale + shift, ReLU'd when asked. μ and r (T) are
// saved per group.
// Backward: g' = dy, masked by y > 0 after a fused ReLU. A warp per channel sums a_c = Σ g' and
// b_c = Σ g'·x over the channel's S elements; then Σ g'·x̂ = r·(b_c − μ·a_c) (dgamma's partial,
// a_c is dbeta's) and dx = A_c·g' + (B·x + C) with A_c = r·γ_c, B = −r²·m2,
// C = r·(r·m2·μ − m1), m1 = Σ_c γ_c a_c / m, m2 = Σ_c γ_c Σg'x̂_c / m. The per-(n, c) partials go
// to f64 buffers that gn_param_grads reduces over n in order (deterministic, no atomics).
#include "common.cuh"

// Division of an in-group index by S: 32-bit (the host checks m < 2³²), 64-bit division being
// a long software sequence on the GPU.
__device__ __forceinline__ unsigned gn_channel(long long j, unsigned s) { return (unsigned)j / s; }

template <typename T>
__device__ void gn_forward_group(long long m, unsigned s, int cg, int groups, double eps, int relu,
                                 const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                 T* __restrict__ y, T* __restrict__ mean_out, T* __restrict__ rstd_out) {
    __shared__ double scratch[32];
    DYNAMIC_SHARED(double, gn_fwd_shared);  // 2·cg values of T: scale, then shift
    T* scale = (T*)gn_fwd_shared;
    T* shift = scale + cg;
    const long long u = blockIdx.x;
    const int c0 = (int)(u % groups) * cg;
    const T* xg = x + u * m;
    T* yg = y + u * m;
    const double dm = (double)m;

    double sum = 0.0;
    for (long long j = threadIdx.x; j < m; j += blockDim.x) sum += (double)xg[j];
    sum = bg_block_sum(sum, scratch);
    const T mean0 = (T)(sum / dm);
    double dev = 0.0, sq = 0.0;
    for (long long j = threadIdx.x; j < m; j += blockDim.x) {
        T v = xg[j] - mean0;
        dev += (double)v;
        sq += (double)(v * v);
    }
    dev = bg_block_sum(dev, scratch);
    sq = bg_block_sum(sq, scratch);
    const double mean = (double)mean0 + dev / dm;
    double var = (sq - dev * dev / dm) / dm;
    if (!(var > 0.0)) var = 0.0;  // the CPU's f64::max(var, 0): NaN gives 0 too
    const double r = 1.0 / sqrt(var + eps);

    for (int ch = threadIdx.x; ch < cg; ch += blockDim.x) {
        double gc = gamma ? (double)gamma[c0 + ch] : 1.0;
        double bc = beta ? (double)beta[c0 + ch] : 0.0;
        double sc = r * gc;
        scale[ch] = (T)sc;
        shift[ch] = (T)(bc - mean * sc);
    }
    __syncthreads();
    for (long long j = threadIdx.x; j < m; j += blockDim.x) {
        unsigned ch = gn_channel(j, s);
        T t = xg[j] * scale[ch] + shift[ch];
        if (relu && t < T(0)) t = T(0);
        yg[j] = t;
    }
    if (threadIdx.x == 0) {
        mean_out[u] = (T)mean;
        rstd_out[u] = (T)r;
    }
}

template <typename T>
__device__ void gn_backward_group(long long m, unsigned s, int cg, int groups, int relu, int write_dx,
                                  const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ y,
                                  const T* __restrict__ gamma, const T* __restrict__ mean, const T* __restrict__ rstd,
                                  T* __restrict__ dx, double* __restrict__ part_g, double* __restrict__ part_gx) {
    __shared__ double scratch[32];
    DYNAMIC_SHARED(double, gn_bwd_shared);  // a_c, b_c (f64), then A_c (T), cg of each
    double* sa = gn_bwd_shared;
    double* sb = sa + cg;
    T* coef = (T*)(sb + cg);
    const long long u = blockIdx.x;
    const int c0 = (int)(u % groups) * cg;
    const long long base = u * m;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const double mu = (double)mean[u], r = (double)rstd[u];

    // Pass 1: per-channel sums, a warp per channel (whole warps, so the shuffles see all lanes).
    for (int ch = warp; ch < cg; ch += nwarps) {
        const long long cb = base + (long long)ch * s;
        double a = 0.0, b = 0.0;
        for (unsigned k = lane; k < s; k += 32) {
            T gv = dy[cb + k];
            if (relu && !(y[cb + k] > T(0))) gv = T(0);
            a += (double)gv;
            b += (double)(gv * x[cb + k]);
        }
        a = bg_warp_sum(a);
        b = bg_warp_sum(b);
        if (lane == 0) {
            sa[ch] = a;
            sb[ch] = b;
        }
    }
    __syncthreads();

    // Per channel: the dgamma/dbeta partials, A_c, and the two group means (fixed tree).
    const long long n_idx = u / groups, C = (long long)groups * cg;
    double t1 = 0.0, t2 = 0.0;
    for (int ch = threadIdx.x; ch < cg; ch += blockDim.x) {
        double a = sa[ch], gxhat = r * (sb[ch] - mu * a);
        double gc = gamma ? (double)gamma[c0 + ch] : 1.0;
        part_g[n_idx * C + c0 + ch] = a;
        part_gx[n_idx * C + c0 + ch] = gxhat;
        coef[ch] = (T)(r * gc);
        t1 += gc * a;
        t2 += gc * gxhat;
    }
    const double m1 = bg_block_sum(t1, scratch) / (double)m;  // its barriers also publish coef
    const double m2 = bg_block_sum(t2, scratch) / (double)m;
    const T bx = (T)(-r * r * m2), cc = (T)(r * (r * m2 * mu - m1));

    if (write_dx) {
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            T gv = dy[base + j];
            if (relu && !(y[base + j] > T(0))) gv = T(0);
            dx[base + j] = coef[gn_channel(j, s)] * gv + (bx * x[base + j] + cc);
        }
    }
}

// dgamma[c] = Σ_n part_gx[n, c], dbeta[c] = Σ_n part_g[n, c], in order of n (as the CPU).
template <typename T>
__device__ void gn_param_grads(long long n, long long c, const double* __restrict__ part_g,
                               const double* __restrict__ part_gx, T* __restrict__ dgamma, T* __restrict__ dbeta) {
    BG_FOR_EACH(ch, c) {
        double a = 0.0, b = 0.0;
        for (long long i = 0; i < n; ++i) {
            a += part_g[i * c + ch];
            b += part_gx[i * c + ch];
        }
        dbeta[ch] = (T)a;
        dgamma[ch] = (T)b;
    }
}

// gn_forward / gn_backward: grid N·G blocks, block a multiple of 32 (≤ 1024); dynamic shared
// memory 2·cg·sizeof(T) (forward) and cg·(16 + sizeof(T)) (backward). gamma/beta may be null.
// gn_param_grads: grid-stride over the C channels.
#define BG_GN_KERNELS(SUF, T)                                                                                   \
    extern "C" __global__ void gn_forward_##SUF(long long m, unsigned s, int cg, int groups, double eps,        \
                                                int relu, const T* x, const T* gamma, const T* beta, T* y,      \
                                                T* mean, T* rstd) {                                             \
        gn_forward_group<T>(m, s, cg, groups, eps, relu, x, gamma, beta, y, mean, rstd);                        \
    }                                                                                                           \
    extern "C" __global__ void gn_backward_##SUF(long long m, unsigned s, int cg, int groups, int relu,        \
                                                 int write_dx, const T* x, const T* dy, const T* y,             \
                                                 const T* gamma, const T* mean, const T* rstd, T* dx,           \
                                                 double* part_g, double* part_gx) {                             \
        gn_backward_group<T>(m, s, cg, groups, relu, write_dx, x, dy, y, gamma, mean, rstd, dx, part_g,        \
                             part_gx);                                                                          \
    }                                                                                                           \
    extern "C" __global__ void gn_param_grads_##SUF(long long n, long long c, const double* part_g,            \
                                                    const double* part_gx, T* dgamma, T* dbeta) {               \
        gn_param_grads<T>(n, c, part_g, part_gx, dgamma, dbeta);                                                \
    }

BG_GN_KERNELS(f32, float)
BG_GN_KERNELS(f64, double)
