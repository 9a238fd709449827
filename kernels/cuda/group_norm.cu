// group_norm.cu — group norm over a contiguous [N, C, S] input (S = the product of the spatial
// dims) with G groups of cg = C/G channels: the m = cg·S elements of group u = n·G + g are the
// contiguous block [u·m, (u+1)·m). One block per (n, g) group, as the CPU twin
// (ops/src/group_norm/cpu.rs) makes one task per group; the formulas and roundings are the CPU's.
//
// Forward: μ and r = 1/sqrt(σ² + ε) by bg_block_moments (norm_stats.cuh, shared with
// weight_std.cu); per channel scale = r·γ_c and shift = β_c − μ·scale (f64, rounded to F, kept in
// shared memory), y = x·scale + shift, ReLU'd when asked. μ and r (F) are saved per group.
// Backward: g' = dy, masked by y > 0 after a fused ReLU. A warp per channel sums a_c = Σ g' and
// b_c = Σ g'·x over the channel's S elements; then Σ g'·x̂ = r·(b_c − μ·a_c) (dgamma's partial,
// a_c is dbeta's) and dx = A_c·g' + (B·x + C) with A_c = r·γ_c, B = −r²·m2,
// C = r·(r·m2·μ − m1), m1 = Σ_c γ_c a_c / m, m2 = Σ_c γ_c Σg'x̂_c / m. The per-(n, c) partials go
// to f64 buffers that gn_param_grads reduces over n in order (deterministic, no atomics).
//
// Dtypes: T is the storage type, F = bg_acc<T> the arithmetic type. f16/bf16 compute exactly as
// the f32 kernel does (the CPU op converts them to f32) and round each stored output (y, dx,
// dγ, dβ) once to T; γ and β are T like x (the CPU op's rule); μ and r are saved in F (f32),
// as the CPU's f32 computation keeps them. The fused-ReLU mask reads the stored y (in T), the
// CPU its f32 y: they differ only for an f32 y that rounds to zero in f16 (|y| < 3·10⁻⁸).
#include "norm_stats.cuh"

// Division of an in-group index by S: 32-bit (the host checks m < 2³²), 64-bit division being
// a long software sequence on the GPU.
__device__ __forceinline__ unsigned gn_channel(long long j, unsigned s) { return (unsigned)j / s; }

template <typename T, typename F = typename bg_acc<T>::type>
__device__ void gn_forward_group(long long m, unsigned s, int cg, int groups, double eps, int relu,
                                 const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                 T* __restrict__ y, F* __restrict__ mean_out, F* __restrict__ rstd_out) {
    __shared__ double scratch[32];
    DYNAMIC_SHARED(double, gn_fwd_shared);  // 2·cg values of F: scale, then shift
    F* scale = (F*)gn_fwd_shared;
    F* shift = scale + cg;
    const long long u = blockIdx.x;
    const int c0 = (int)(u % groups) * cg;
    const T* xg = x + u * m;
    T* yg = y + u * m;

    const bg_moments st = bg_block_moments(xg, m, eps, scratch);
    for (int ch = threadIdx.x; ch < cg; ch += blockDim.x) {
        double gc = gamma ? (double)bg_load(gamma[c0 + ch]) : 1.0;
        double bc = beta ? (double)bg_load(beta[c0 + ch]) : 0.0;
        double sc = st.rstd * gc;
        scale[ch] = (F)sc;
        shift[ch] = (F)(bc - st.mean * sc);
    }
    __syncthreads();
    for (long long j = threadIdx.x; j < m; j += blockDim.x) {
        unsigned ch = gn_channel(j, s);
        F t = bg_load(xg[j]) * scale[ch] + shift[ch];
        if (relu && t < F(0)) t = F(0);
        yg[j] = bg_store<T>(t);
    }
    if (threadIdx.x == 0) {
        mean_out[u] = (F)st.mean;
        rstd_out[u] = (F)st.rstd;
    }
}

template <typename T, typename F = typename bg_acc<T>::type>
__device__ void gn_backward_group(long long m, unsigned s, int cg, int groups, int relu, int write_dx,
                                  const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ y,
                                  const T* __restrict__ gamma, const F* __restrict__ mean, const F* __restrict__ rstd,
                                  T* __restrict__ dx, double* __restrict__ part_g, double* __restrict__ part_gx) {
    __shared__ double scratch[32];
    DYNAMIC_SHARED(double, gn_bwd_shared);  // a_c, b_c (f64), then A_c (F), cg of each
    double* sa = gn_bwd_shared;
    double* sb = sa + cg;
    F* coef = (F*)(sb + cg);
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
            F gv = bg_load(dy[cb + k]);
            if (relu && !(bg_load(y[cb + k]) > F(0))) gv = F(0);
            a += (double)gv;
            b += (double)(gv * bg_load(x[cb + k]));
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
        double gc = gamma ? (double)bg_load(gamma[c0 + ch]) : 1.0;
        part_g[n_idx * C + c0 + ch] = a;
        part_gx[n_idx * C + c0 + ch] = gxhat;
        coef[ch] = (F)(r * gc);
        t1 += gc * a;
        t2 += gc * gxhat;
    }
    const double m1 = bg_block_sum(t1, scratch) / (double)m;  // its barriers also publish coef
    const double m2 = bg_block_sum(t2, scratch) / (double)m;
    const F bx = (F)(-r * r * m2), cc = (F)(r * (r * m2 * mu - m1));

    if (write_dx) {
        for (long long j = threadIdx.x; j < m; j += blockDim.x) {
            F gv = bg_load(dy[base + j]);
            if (relu && !(bg_load(y[base + j]) > F(0))) gv = F(0);
            dx[base + j] = bg_store<T>(coef[gn_channel(j, s)] * gv + (bx * bg_load(x[base + j]) + cc));
        }
    }
}

// dgamma[c] = Σ_n part_gx[n, c], dbeta[c] = Σ_n part_g[n, c], in order of n (as the CPU), rounded
// to F and then to T (the CPU's f32 result, cast once to the half dtype).
template <typename T, typename F = typename bg_acc<T>::type>
__device__ void gn_param_grads(long long n, long long c, const double* __restrict__ part_g,
                               const double* __restrict__ part_gx, T* __restrict__ dgamma, T* __restrict__ dbeta) {
    BG_FOR_EACH(ch, c) {
        double a = 0.0, b = 0.0;
        for (long long i = 0; i < n; ++i) {
            a += part_g[i * c + ch];
            b += part_gx[i * c + ch];
        }
        dbeta[ch] = bg_store<T>((F)a);
        dgamma[ch] = bg_store<T>((F)b);
    }
}

// gn_forward / gn_backward: grid N·G blocks, block a multiple of 32 (≤ 1024); dynamic shared
// memory 2·cg·sizeof(F) (forward) and cg·(16 + sizeof(F)) (backward). gamma/beta may be null.
// mean/rstd are F (the arithmetic type: f32 for the half dtypes). gn_param_grads: grid-stride
// over the C channels.
#define BG_GN_KERNELS(SUF, T, F)                                                                                \
    extern "C" __global__ void gn_forward_##SUF(long long m, unsigned s, int cg, int groups, double eps,        \
                                                int relu, const T* x, const T* gamma, const T* beta, T* y,      \
                                                F* mean, F* rstd) {                                             \
        gn_forward_group<T>(m, s, cg, groups, eps, relu, x, gamma, beta, y, mean, rstd);                        \
    }                                                                                                           \
    extern "C" __global__ void gn_backward_##SUF(long long m, unsigned s, int cg, int groups, int relu,        \
                                                 int write_dx, const T* x, const T* dy, const T* y,             \
                                                 const T* gamma, const F* mean, const F* rstd, T* dx,           \
                                                 double* part_g, double* part_gx) {                             \
        gn_backward_group<T>(m, s, cg, groups, relu, write_dx, x, dy, y, gamma, mean, rstd, dx, part_g,        \
                             part_gx);                                                                          \
    }                                                                                                           \
    extern "C" __global__ void gn_param_grads_##SUF(long long n, long long c, const double* part_g,            \
                                                    const double* part_gx, T* dgamma, T* dbeta) {               \
        gn_param_grads<T>(n, c, part_g, part_gx, dgamma, dbeta);                                                \
    }

BG_GN_KERNELS(f32, float, float)
BG_GN_KERNELS(f64, double, double)
BG_GN_KERNELS(f16, __half, float)
BG_GN_KERNELS(bf16, __nv_bfloat16, float)
