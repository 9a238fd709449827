// tc_conv_fprop.cuh — the forward convolution's loader and kernel body, templated on the N tile
// (output channels per CTA: 128 in tc_conv_fprop.cu, 64 in tc_conv_fprop_n64.cu for layers of at
// most 64 output channels, where a 128-wide tile would be half zero fill). What they compute is
// described in tc_conv_fprop.cu.
#pragma once
#include "tc_conv.cuh"

template <int BN> struct tcf_load {
    const __nv_bfloat16* x;
    const __nv_bfloat16* wt;
    tc_conv_shape sh;
    int gemm_k, n0;
    long long img[TC_BM / 32]; // n·H·W·C of this thread's A rows' image
    int h0[TC_BM / 32], w0[TC_BM / 32]; // p·stride − pad, or TC_CONV_OFF_IMAGE past the last pixel

    __device__ __forceinline__ void operator()(__nv_bfloat16* sa, __nv_bfloat16* sb, int kt) const {
        const int c = tc_kmajor_chunk(), gk = kt * TC_BK + c * 8;
        const bool kin = gk < gemm_k;
        // The tap of this thread's chunk: one (r, s) and 8 channels from ch.
        const int rs = gk / sh.c, ch = gk - rs * sh.c, r = rs / sh.s, s = rs - r * sh.s;
        const int dh = r * sh.dil_h, dw = s * sh.dil_w;
#pragma unroll
        for (int i = 0; i < TC_BM / 32; i++) {
            const int h = h0[i] + dh, w = w0[i] + dw;
            const bool ok = kin && tc_conv_inside(h, w, sh.h, sh.w);
            const __nv_bfloat16* src = x + img[i] + ((long long)h * sh.w + w) * sh.c + ch;
            bg_cp_async_cg16(sa + tc_kmajor_off(tc_kmajor_row(i), c), ok ? src : x, ok ? 16 : 0);
        }
#pragma unroll
        for (int i = 0; i < BN / 32; i++) {
            const int n = tc_kmajor_row(i), gn = n0 + n;
            const bool ok = kin && gn < sh.k;
            bg_cp_async_cg16(sb + tc_kmajor_off(n, c), ok ? wt + (long long)gn * gemm_k + gk : wt, ok ? 16 : 0);
        }
    }
};

template <int BN, typename OUT>
__device__ __forceinline__ void tcf_run(__nv_bfloat16* smem, const __nv_bfloat16* __restrict__ x,
                                        const __nv_bfloat16* __restrict__ wt,
                                        const __nv_bfloat16* __restrict__ residual, OUT* __restrict__ y,
                                        const tc_conv_shape& sh) {
    const int gemm_m = sh.n * sh.p * sh.q, gemm_k = sh.r * sh.s * sh.c;
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * BN;
    tcf_load<BN> ld{x, wt, sh, gemm_k, n0, {}, {}, {}};
#pragma unroll
    for (int i = 0; i < TC_BM / 32; i++) {
        const int gm = m0 + tc_kmajor_row(i);
        const int img = gm / (sh.p * sh.q), pq = gm - img * (sh.p * sh.q), p = pq / sh.q, q = pq - p * sh.q;
        const bool in = gm < gemm_m;
        ld.img[i] = in ? (long long)img * sh.h * sh.w * sh.c : 0;
        ld.h0[i] = in ? p * sh.stride_h - sh.pad_h : TC_CONV_OFF_IMAGE;
        ld.w0[i] = in ? q * sh.stride_w - sh.pad_w : TC_CONV_OFF_IMAGE;
    }
    float acc[4][BN / 16][4];
    tc_mainloop<BN, true, true>(acc, smem, (gemm_k + TC_BK - 1) / TC_BK, ld);
    // Row m of the GEMM is output pixel m of the NHWC output: y + m·K + k.
    tc_epilogue<BN>(acc, m0, n0, gemm_m, sh.k, [&](int row, int col, float a, float b) {
        const long long off = (long long)row * sh.k + col;
        if (residual) {
            a += bg_load(residual[off]);
            b += bg_load(residual[off + 1]);
        }
        y[off] = bg_store<OUT>(a);
        y[off + 1] = bg_store<OUT>(b);
    });
}

