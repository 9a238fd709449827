// gn_nhwc.cu — group norm (+ optional fused ReLU) of the bf16 training path: x and y channels-
// last bf16 [N][HW][C] (HW = H·W), γ/β f32 [C], G groups of cg = C/G channels contiguous in the
// channel axis, statistics in f32/f64. One block per (n, g); the launch geometry and the shape
// checks are in kernels/src/gn_nhwc.rs, the bit-exact CPU twin in kernels/tests/gn_nhwc.rs.
//
// Element j ∈ [0, m) of a group (m = HW·cg) is pixel j / cg, channel j % cg: consecutive threads
// read consecutive channels of a pixel. Every per-thread sum runs in f64 over j = t, t + T, …
// (T = blockDim) and meets in bg_block_sum's fixed tree, so results are deterministic and the
// CPU twin can repeat the order. Products of two widened bf16 values are exact in f64, so a
// compiler contracting them into an fma changes nothing; the other mixed operations are written
// as explicit fma/fmaf so that the GPU, the emulator and the twin round alike.
//
// Forward: μ₀ = Σx/m rounded to f32, d = x − μ₀ (f32), μ = μ₀ + Σd/m, σ² = (Σd² − (Σd)²/m)/m
// clamped at 0 (the corrected two-pass of norm_stats.cuh; a constant group gives exactly 0),
// r = 1/sqrt(σ² + ε) (f64); per channel scale = (f32)(r·γ), shift = (f32)fma(−μ, r·γ, β);
// y = bf16_rn(fmaf(x, scale, shift)), clamped at 0 with the ReLU. μ and r are saved as f32.
// Backward: g' = dy, zeroed where the stored bf16 y is not > 0 when the ReLU was fused (so the
// mask is y's, the forward output; the op needs x too, to rebuild x̂ from μ and r). A warp per
// channel sums a_c = Σg' and b_c = Σg'·x over the group's pixels (lane l takes pixels l, l+32, …,
// then bg_warp_sum); Σg'x̂_c = r·fma(−μ, a_c, b_c); m1 = Σ_c γ_c a_c / m, m2 = Σ_c γ_c Σg'x̂_c / m
// (fma chains per thread, then bg_block_sum); dx = bf16_rn(fmaf(A_c, g', fmaf(B, x, C'))) with
// A_c = (f32)(r·γ_c), B = (f32)(−r·r·m2), C' = (f32)(r·fma(r·m2, μ, −m1)). a_c and Σg'x̂_c go to
// f64 partials [N][C] that gnh_param_grads_f32 sums over n in order into f32 dβ and dγ: no atomics.
#include "common.cuh"

// Group element j (< m < 2³², checked by the host) as its channel in the group and its offset
// from the group's first element: 32-bit division, 64-bit division and remainder being long
// software sequences on the GPU.
struct gnh_elem {
    unsigned ch;
    long long off;
};
__device__ __forceinline__ gnh_elem gnh_at(long long j, unsigned cg, int c) {
    const unsigned p = (unsigned)j / cg, ch = (unsigned)j - p * cg;
    gnh_elem e;
    e.ch = ch;
    e.off = (long long)p * c + ch;
    return e;
}

__device__ __forceinline__ float gnh_load(const __nv_bfloat16* x, long long i) { return __bfloat162float(x[i]); }

// Grid N·G, block a multiple of 32 (≤ 1024), dynamic shared memory 8·cg bytes. gamma/beta may be
// null (1 and 0).
extern "C" __global__ void gnh_forward_bf16(long long hw, int c, int groups, double eps, int relu,
                                            const __nv_bfloat16* x, const float* gamma, const float* beta,
                                            __nv_bfloat16* y, float* mean_out, float* rstd_out) {
    __shared__ double scratch[32];
    DYNAMIC_SHARED(float, gnh_fwd_shared);  // scale[cg], shift[cg]
    const unsigned cg = (unsigned)(c / groups);
    const long long u = blockIdx.x, n = u / groups;
    const int c0 = (int)(u % groups) * (int)cg;
    const long long m = hw * cg, base = n * hw * c + c0;
    const double dm = (double)m;
    float* scale = gnh_fwd_shared;
    float* shift = scale + cg;

    double sum = 0.0;
    for (long long j = threadIdx.x; j < m; j += blockDim.x) sum += (double)gnh_load(x, base + gnh_at(j, cg, c).off);
    sum = bg_block_sum(sum, scratch);
    const float mean0 = (float)(sum / dm);
    double dev = 0.0, sq = 0.0;
    for (long long j = threadIdx.x; j < m; j += blockDim.x) {
        const float d = gnh_load(x, base + gnh_at(j, cg, c).off) - mean0;
        dev += (double)d;
        sq += (double)d * (double)d;  // exact product
    }
    dev = bg_block_sum(dev, scratch);
    sq = bg_block_sum(sq, scratch);
    double var = (sq - dev * dev / dm) / dm;
    if (!(var > 0.0)) var = 0.0;
    const double mean = (double)mean0 + dev / dm, rstd = 1.0 / sqrt(var + eps);

    for (unsigned ch = threadIdx.x; ch < cg; ch += blockDim.x) {
        const double gc = gamma ? (double)gamma[c0 + ch] : 1.0, bc = beta ? (double)beta[c0 + ch] : 0.0;
        const double sc = rstd * gc;
        scale[ch] = (float)sc;
        shift[ch] = (float)fma(-mean, sc, bc);
    }
    __syncthreads();
    for (long long j = threadIdx.x; j < m; j += blockDim.x) {
        const gnh_elem e = gnh_at(j, cg, c);
        const long long i = base + e.off;
        float t = fmaf(gnh_load(x, i), scale[e.ch], shift[e.ch]);
        if (relu && t < 0.0f) t = 0.0f;
        y[i] = __float2bfloat16_rn(t);
    }
    if (threadIdx.x == 0) {
        mean_out[u] = (float)mean;
        rstd_out[u] = (float)rstd;
    }
}

// Grid N·G, block a multiple of 32 (≤ 1024), dynamic shared memory 20·cg bytes. y is read only
// with relu (may be null otherwise), gamma may be null. part_g/part_gx: f64 [N][C].
extern "C" __global__ void gnh_backward_bf16(long long hw, int c, int groups, int relu, const __nv_bfloat16* x,
                                             const __nv_bfloat16* dy, const __nv_bfloat16* y, const float* gamma,
                                             const float* mean, const float* rstd, __nv_bfloat16* dx,
                                             double* part_g, double* part_gx) {
    __shared__ double scratch[32];
    DYNAMIC_SHARED(double, gnh_bwd_shared);  // a_c, b_c (f64), then A_c (f32), cg of each
    const unsigned cg = (unsigned)(c / groups);
    double* sa = gnh_bwd_shared;
    double* sb = sa + cg;
    float* coef = (float*)(sb + cg);
    const long long u = blockIdx.x, n = u / groups;
    const int c0 = (int)(u % groups) * (int)cg;
    const long long m = hw * cg, base = n * hw * c + c0;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const double mu = (double)mean[u], r = (double)rstd[u];

    for (unsigned ch = warp; ch < cg; ch += nwarps) {
        double a = 0.0, b = 0.0;
        for (long long p = lane; p < hw; p += 32) {
            const long long i = base + p * c + ch;
            float gv = gnh_load(dy, i);
            if (relu && !(gnh_load(y, i) > 0.0f)) gv = 0.0f;
            a += (double)gv;
            b += (double)gv * (double)gnh_load(x, i);  // exact product
        }
        a = bg_warp_sum(a);
        b = bg_warp_sum(b);
        if (lane == 0) {
            sa[ch] = a;
            sb[ch] = b;
        }
    }
    __syncthreads();

    double t1 = 0.0, t2 = 0.0;
    for (unsigned ch = threadIdx.x; ch < cg; ch += blockDim.x) {
        const double a = sa[ch], gxhat = r * fma(-mu, a, sb[ch]);
        const double gc = gamma ? (double)gamma[c0 + ch] : 1.0;
        part_g[n * c + c0 + ch] = a;
        part_gx[n * c + c0 + ch] = gxhat;
        coef[ch] = (float)(r * gc);
        t1 = fma(gc, a, t1);
        t2 = fma(gc, gxhat, t2);
    }
    const double m1 = bg_block_sum(t1, scratch) / (double)m;  // its barriers also publish coef
    const double m2 = bg_block_sum(t2, scratch) / (double)m;
    const float bx = (float)(-r * r * m2), cc = (float)(r * fma(r * m2, mu, -m1));
    for (long long j = threadIdx.x; j < m; j += blockDim.x) {
        const gnh_elem e = gnh_at(j, cg, c);
        const long long i = base + e.off;
        float gv = gnh_load(dy, i);
        if (relu && !(gnh_load(y, i) > 0.0f)) gv = 0.0f;
        dx[i] = __float2bfloat16_rn(fmaf(coef[e.ch], gv, fmaf(bx, gnh_load(x, i), cc)));
    }
}

// dβ[ch] = (f32)Σ_n part_g[n][ch], dγ[ch] = (f32)Σ_n part_gx[n][ch], n in order. Grid-stride
// over the C channels.
extern "C" __global__ void gnh_param_grads_f32(long long n, long long c, const double* part_g,
                                               const double* part_gx, float* dgamma, float* dbeta) {
    BG_FOR_EACH(ch, c) {
        double a = 0.0, b = 0.0;
        for (long long i = 0; i < n; ++i) {
            a += part_g[i * c + ch];
            b += part_gx[i * c + ch];
        }
        dbeta[ch] = (float)a;
        dgamma[ch] = (float)b;
    }
}
