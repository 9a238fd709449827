// tc_conv_wgrad.cu — the weight gradient of a convolution on tensor cores, an implicit GEMM over
// tc_tile.cuh's CTA tile: dW[K][R·S·C] = dyᵀ[K][N·P·Q] · im2col(x)[N·P·Q][R·S·C], f32 output (the
// master weights' gradient, KRSC).
//
// - GEMM M = K output channels, N = R·S·C taps, K = N·P·Q output pixels.
// - A = dyᵀ is MN-major in shared memory: a k row is one output pixel, its K channels contiguous
//   (ldmatrix.trans gives the A fragments). B = im2col(x) is MN-major too: a chunk is 8 channels of
//   one tap of the input pixel that the output pixel reads, zero fill in the padding; each thread
//   copies one fixed tap chunk, so its (r, s, c) is computed once.
// - Split-K over the pixels for parallelism when K·R·S·C gives few CTAs: grid z = split, each split
//   sums `tiles_per_split` consecutive 32-pixel k tiles into its own f32 partial
//   [split][K][R·S·C]; tc_conv_wgrad_reduce then adds the partials in split order. The split count
//   is a function of the shape alone (kernels/src/tc_conv.rs), so the result is deterministic and
//   the same on every device. With one split the kernel writes dW directly.
//
// Launch: grid (ceil(R·S·C/TC_BN), ceil(K/128), splits), 128 threads, TC_SMEM_BYTES(TC_BN) bytes of
// dynamic shared memory. Sum order of dW[k][rsc]: per split, from +0 over its pixels in order, one
// f32 rounding per product; then ((p0 + p1) + p2) + … .
#include "tc_conv.cuh"

#define TC_BN 128

struct tcw_load {
    const __nv_bfloat16* dy;
    const __nv_bfloat16* x;
    tc_conv_shape sh;
    int pixels, kt0, m0;
    bool nin;            // this thread's B chunk lies inside R·S·C
    int dh, dw, ch;      // its tap: r·dil − pad, s·dil − pad, first channel

    __device__ __forceinline__ void operator()(__nv_bfloat16* sa, __nv_bfloat16* sb, int kt) const {
        const int base = (kt0 + kt) * TC_BK;
        const int ca = tc_mnmajor_chunk<TC_BM>(), gm = m0 + ca * 8;
#pragma unroll
        for (int i = 0; i < TC_BM / 32; i++) {
            const int row = tc_mnmajor_row<TC_BM>(i), pix = base + row;
            const bool ok = pix < pixels && gm < sh.k;
            bg_cp_async_cg16(sa + tc_mnmajor_off<TC_BM>(row, ca), ok ? dy + (long long)pix * sh.k + gm : dy, ok ? 16 : 0);
        }
        const int cb = tc_mnmajor_chunk<TC_BN>();
#pragma unroll
        for (int i = 0; i < TC_BN / 32; i++) {
            const int row = tc_mnmajor_row<TC_BN>(i), pix = base + row;
            const int img = pix / (sh.p * sh.q), pq = pix - img * (sh.p * sh.q), p = pq / sh.q, q = pq - p * sh.q;
            const int h = p * sh.stride_h + dh, w = q * sh.stride_w + dw;
            const bool ok = nin && pix < pixels && tc_conv_inside(h, w, sh.h, sh.w);
            const __nv_bfloat16* src = x + (((long long)img * sh.h + h) * sh.w + w) * sh.c + ch;
            bg_cp_async_cg16(sb + tc_mnmajor_off<TC_BN>(row, cb), ok ? src : x, ok ? 16 : 0);
        }
    }
};

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_wgrad_f32(const __nv_bfloat16* __restrict__ dy, const __nv_bfloat16* __restrict__ x,
                      float* __restrict__ partial, tc_conv_shape sh, int tiles_per_split) {
    DYNAMIC_SHARED(__nv_bfloat16, tcw_smem);
    const int gemm_n = sh.r * sh.s * sh.c, pixels = sh.n * sh.p * sh.q;
    const int ktiles = (pixels + TC_BK - 1) / TC_BK;
    const int kt0 = blockIdx.z * tiles_per_split;
    const int count = kt0 < ktiles ? min(tiles_per_split, ktiles - kt0) : 0;
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    const int gn = n0 + tc_mnmajor_chunk<TC_BN>() * 8;
    const int rs = gn / sh.c, ch = gn - rs * sh.c, r = rs / sh.s, s = rs - r * sh.s;
    const tcw_load ld{dy, x, sh, pixels, kt0, m0, gn < gemm_n, r * sh.dil_h - sh.pad_h, s * sh.dil_w - sh.pad_w, ch};
    float acc[4][TC_BN / 16][4];
    tc_mainloop<TC_BN, false, false>(acc, tcw_smem, count, ld);
    float* out = partial + (long long)blockIdx.z * sh.k * gemm_n;
    tc_epilogue<TC_BN>(acc, m0, n0, sh.k, gemm_n, [&](int row, int col, float u, float v) {
        *reinterpret_cast<float2*>(out + (long long)row * gemm_n + col) = make_float2(u, v);
    });
}

// dw[i] = partial[0][i] + partial[1][i] + … in split order (a fixed order: deterministic).
extern "C" __global__ void tc_conv_wgrad_reduce(const float* __restrict__ partial, float* __restrict__ dw,
                                                long long count, int splits) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float sum = partial[i];
        for (int z = 1; z < splits; z++) sum += partial[z * count + i];
        dw[i] = sum;
    }
}
