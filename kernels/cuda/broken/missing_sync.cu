// missing_sync.cu — BROKEN ON PURPOSE (emulator test): a block reduction that forgets the
// __syncthreads() between filling shared memory and the first reduction step.
//
// Lane t reads lane t-1's value. When the threads of a block run one after another in index
// order (as the emulator's plain mode does) lane t-1 has always written it already, so the bug
// never shows; on a GPU, and under the emulator's `shuffle` mode, it reads garbage.
// blockDim.x must be a power of two; out[blockIdx.x] gets the block's sum.
#include "common.cuh"

extern "C" __global__ void broken_reduce_missing_sync(const float* __restrict__ x, float* __restrict__ out) {
    DYNAMIC_SHARED(float, ms_partial);
    const unsigned tid = threadIdx.x;
    ms_partial[tid] = x[blockIdx.x * blockDim.x + tid];
    // BUG: a __syncthreads() belongs here.
    for (unsigned s = 1; s < blockDim.x; s <<= 1) {
        if ((tid & (2 * s - 1)) == 2 * s - 1) ms_partial[tid] += ms_partial[tid - s];
        __syncthreads();
    }
    if (tid == blockDim.x - 1) out[blockIdx.x] = ms_partial[tid];
}
