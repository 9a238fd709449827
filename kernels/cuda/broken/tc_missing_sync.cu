// tc_missing_sync.cu — BROKEN ON PURPOSE (emulator test): tc_selftest_cp_async_ldmatrix without
// the __syncthreads() after the wait. cp.async data is visible only to the thread that waited for
// it; warp w reads the next warp's rows, which on a GPU may not have arrived yet. The emulator
// reports it in every mode: whichever warp reads first, some warp reads rows that were issued
// but not published by a barrier.
#include "common.cuh"
#include "tensor_core.cuh"

extern "C" __global__ void broken_tc_missing_sync(const unsigned short* __restrict__ src, unsigned* __restrict__ out) {
    DYNAMIC_SHARED(unsigned short, ms_rows);
    const int t = threadIdx.x, w = t / 32, l = t % 32;
    bg_cp_async_cg16(ms_rows + 8 * t, src + 8 * t, 16);
    bg_cp_async_wait_all(); // BUG: a __syncthreads() belongs after this
    unsigned r[4];
    bg_ldmatrix_x4(r, ms_rows + 8 * (((w + 1) % 4) * 32 + l));
    for (int k = 0; k < 4; k++) out[t * 4 + k] = r[k];
}
