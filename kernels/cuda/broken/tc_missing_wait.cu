// tc_missing_wait.cu — BROKEN ON PURPOSE (emulator test): tc_selftest_cp_async_ldmatrix without
// the cp.async.wait: the barrier alone does not make cp.async data arrive. On a GPU ldmatrix may
// read stale shared memory; the emulator reports the read of bytes whose copy has not been waited
// for, in every mode.
#include "common.cuh"
#include "tensor_core.cuh"

extern "C" __global__ void broken_tc_missing_wait(const unsigned short* __restrict__ src, unsigned* __restrict__ out) {
    DYNAMIC_SHARED(unsigned short, mw_rows);
    const int t = threadIdx.x, w = t / 32, l = t % 32;
    bg_cp_async_cg16(mw_rows + 8 * t, src + 8 * t, 16);
    bg_cp_async_commit(); // BUG: no bg_cp_async_wait<0>() after the commit
    __syncthreads();
    unsigned r[4];
    bg_ldmatrix_x4(r, mw_rows + 8 * (((w + 1) % 4) * 32 + l));
    for (int k = 0; k < 4; k++) out[t * 4 + k] = r[k];
}
