// tc_wrong_fragment.cu — BROKEN ON PURPOSE (emulator test): tc_selftest_mma_tile_bf16 with the
// classic fragment mistake: a[2] and a[3] (A's columns 8..15) are gathered from columns 0..7
// again. Every mode runs it without complaint; only the comparison with a reference catches it.
#include "common.cuh"
#include "tensor_core.cuh"

extern "C" __global__ void broken_tc_wrong_fragment(const __nv_bfloat16* __restrict__ A,
                                                    const __nv_bfloat16* __restrict__ B, const float* __restrict__ C,
                                                    float* __restrict__ D) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    const unsigned short* a16 = reinterpret_cast<const unsigned short*>(A);
    const unsigned short* b16 = reinterpret_cast<const unsigned short*>(B);
    unsigned a[4], b[2];
    for (int r = 0; r < 4; r++) {
        const int row = g + 8 * (r & 1), col = 2 * t; // BUG: misses + 8 * (r >> 1)
        a[r] = a16[row * 16 + col] | (unsigned)a16[row * 16 + col + 1] << 16;
    }
    for (int r = 0; r < 2; r++) {
        const int k = 2 * t + 8 * r;
        b[r] = b16[k * 8 + g] | (unsigned)b16[(k + 1) * 8 + g] << 16;
    }
    float c[4], d[4];
    for (int i = 0; i < 4; i++) c[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    bg_mma_bf16_16816(d, a, b, c);
    for (int i = 0; i < 4; i++) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
}
