// oob_write.cu — BROKEN ON PURPOSE (emulator test): an off-by-one bounds check (`<=` for `<`)
// that writes one element past the end of `out`. Caught by the emulator's `guard` mode.
#include "common.cuh"

extern "C" __global__ void broken_oob_write(float* __restrict__ out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f; // BUG: i == n is past the end
}
