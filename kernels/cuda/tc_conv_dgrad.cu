// tc_conv_dgrad.cu — the input gradient of a convolution on tensor cores, an implicit GEMM over
// tc_tile.cuh's CTA tile: dx[N·H·W][C] = dy ⊛ (flipped) W.
//
// Input row h receives from output row p through filter row r when h = p·stride − pad + r·dil.
// With stride > 1 only some (r, p) pairs meet, and which r depends on h mod stride, so the input
// pixels are split into stride_h·stride_w phases (h ≡ ph, w ≡ pw), one grid z each. Within a phase
// the contributing filter rows are r ≡ first (mod step), step = stride / gcd(stride, dil), and
// p = (h + pad − r·dil) / stride is exact: every phase is a dense GEMM over only the taps that
// contribute (stride 1: one phase, all taps). Per phase:
//   GEMM M = N·⌈(H−ph)/stride_h⌉·⌈(W−pw)/stride_w⌉ input pixels, N = C,
//   K = taps_r · taps_s · K (tap-major, output channel fastest);
//   A (K-major) gathers 8 output channels of dy at (p, q) per chunk, zero fill where p or q falls
//   outside the output; B (MN-major) is W[k][r][s][0..C), 8 input channels per chunk.
// A phase that no tap reaches (1×1 stride 2: the odd rows and columns) has K = 0 and writes zeros.
//
// Launch: grid (ceil(C/TC_BN), ceil(N·⌈H/stride_h⌉·⌈W/stride_w⌉ / 128), stride_h·stride_w),
// 128 threads, TC_SMEM_BYTES(TC_BN) of dynamic shared memory; blocks past a smaller phase's end
// return at once. Output bf16 (tc_conv_dgrad_bf16) or f32 (tc_conv_dgrad_f32). Sum order of
// dx[n,h,w,c]: from +0 over the phase's taps r (ascending), then s (ascending), then k, one f32
// rounding per product, then the output rounding.
#include "tc_conv.cuh"

#define TC_BN 128

// The filter rows (or columns) that reach input rows ≡ ph (mod stride): first + j·step, j < count.
struct tcd_taps {
    int first, step, count;
};

__device__ __forceinline__ tcd_taps tcd_phase_taps(int ph, int pad, int dil, int stride, int extent) {
    tcd_taps t;
    t.step = 1;
    while ((t.step * dil) % stride != 0) t.step++;
    t.first = 0;
    while (t.first < t.step && (ph + pad - t.first * dil) % stride != 0) t.first++;
    t.count = t.first < t.step && t.first < extent ? (extent - 1 - t.first) / t.step + 1 : 0;
    return t;
}

struct tcd_load {
    const __nv_bfloat16* dy;
    const __nv_bfloat16* wt;
    tc_conv_shape sh;
    tcd_taps tr, ts;
    int ph, pw, gemm_k, n0;
    long long img[TC_BM / 32]; // n·P·Q·K of this thread's A rows' image
    int hh[TC_BM / 32], ww[TC_BM / 32]; // the pixel's index within its phase (h = hh·stride + ph)

    // Filter row r and column s of GEMM k index gk (tap-major, output channel fastest).
    __device__ __forceinline__ void tap(int gk, int& r, int& s, int& ko) const {
        const int t = gk / sh.k, ti = t / ts.count, tj = t - ti * ts.count;
        ko = gk - t * sh.k;
        r = tr.first + ti * tr.step;
        s = ts.first + tj * ts.step;
    }

    __device__ __forceinline__ void operator()(__nv_bfloat16* sa, __nv_bfloat16* sb, int kt) const {
        const int c = tc_kmajor_chunk(), gk = kt * TC_BK + c * 8;
        const bool kin = gk < gemm_k;
        int r = 0, s = 0, ko = 0;
        if (kin) tap(gk, r, s, ko);
        // Exact: r was chosen so that stride divides ph + pad − r·dil.
        const int dp = (ph + sh.pad_h - r * sh.dil_h) / sh.stride_h, dq = (pw + sh.pad_w - s * sh.dil_w) / sh.stride_w;
#pragma unroll
        for (int i = 0; i < TC_BM / 32; i++) {
            const int p = hh[i] + dp, q = ww[i] + dq;
            const bool ok = kin && tc_conv_inside(p, q, sh.p, sh.q);
            const __nv_bfloat16* src = dy + img[i] + ((long long)p * sh.q + q) * sh.k + ko;
            bg_cp_async_cg16(sa + tc_kmajor_off(tc_kmajor_row(i), c), ok ? src : dy, ok ? 16 : 0);
        }
        const int cb = tc_mnmajor_chunk<TC_BN>(), gn = n0 + cb * 8;
#pragma unroll
        for (int i = 0; i < TC_BN / 32; i++) {
            const int k = tc_mnmajor_row<TC_BN>(i), gkb = kt * TC_BK + k;
            const bool ok = gkb < gemm_k && gn < sh.c;
            int rb = 0, sb_ = 0, kb = 0;
            if (ok) tap(gkb, rb, sb_, kb);
            const __nv_bfloat16* src = wt + (((long long)kb * sh.r + rb) * sh.s + sb_) * sh.c + gn;
            bg_cp_async_cg16(sb + tc_mnmajor_off<TC_BN>(k, cb), ok ? src : wt, ok ? 16 : 0);
        }
    }
};

template <typename OUT>
__device__ __forceinline__ void tcd_run(__nv_bfloat16* smem, const __nv_bfloat16* __restrict__ dy,
                                        const __nv_bfloat16* __restrict__ wt, OUT* __restrict__ dx,
                                        const tc_conv_shape& sh) {
    const int ph = blockIdx.z / sh.stride_w, pw = blockIdx.z - ph * sh.stride_w;
    const int hp = ph < sh.h ? (sh.h - ph + sh.stride_h - 1) / sh.stride_h : 0;
    const int wp = pw < sh.w ? (sh.w - pw + sh.stride_w - 1) / sh.stride_w : 0;
    const int gemm_m = sh.n * hp * wp;
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    if (m0 >= gemm_m) return; // the whole block: this phase has fewer pixels than the grid covers
    tcd_load ld{dy, wt, sh, tcd_phase_taps(ph, sh.pad_h, sh.dil_h, sh.stride_h, sh.r),
                tcd_phase_taps(pw, sh.pad_w, sh.dil_w, sh.stride_w, sh.s), ph, pw, 0, n0, {}, {}, {}};
    ld.gemm_k = ld.tr.count * ld.ts.count * sh.k;
#pragma unroll
    for (int i = 0; i < TC_BM / 32; i++) {
        const int gm = m0 + tc_kmajor_row(i);
        const int img = gm / (hp * wp), rest = gm - img * (hp * wp), a = rest / wp, b = rest - a * wp;
        const bool in = gm < gemm_m;
        ld.img[i] = in ? (long long)img * sh.p * sh.q * sh.k : 0;
        ld.hh[i] = in ? a : TC_CONV_OFF_IMAGE;
        ld.ww[i] = in ? b : TC_CONV_OFF_IMAGE;
    }
    float acc[4][TC_BN / 16][4];
    tc_mainloop<TC_BN, true, false>(acc, smem, (ld.gemm_k + TC_BK - 1) / TC_BK, ld);
    tc_epilogue<TC_BN>(acc, m0, n0, gemm_m, sh.c, [&](int row, int col, float u, float v) {
        const int img = row / (hp * wp), rest = row - img * (hp * wp), a = rest / wp, b = rest - a * wp;
        const int h = a * sh.stride_h + ph, w = b * sh.stride_w + pw;
        const long long off = (((long long)img * sh.h + h) * sh.w + w) * sh.c + col;
        dx[off] = bg_store<OUT>(u);
        dx[off + 1] = bg_store<OUT>(v);
    });
}

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_dgrad_bf16(const __nv_bfloat16* __restrict__ dy, const __nv_bfloat16* __restrict__ wt,
                       __nv_bfloat16* __restrict__ dx, tc_conv_shape sh) {
    DYNAMIC_SHARED(__nv_bfloat16, tcd_smem);
    tcd_run(tcd_smem, dy, wt, dx, sh);
}

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_dgrad_f32(const __nv_bfloat16* __restrict__ dy, const __nv_bfloat16* __restrict__ wt,
                      float* __restrict__ dx, tc_conv_shape sh) {
    DYNAMIC_SHARED(__nv_bfloat16, tcd_smem);
    tcd_run(tcd_smem, dy, wt, dx, sh);
}
