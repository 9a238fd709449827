// divergent_barrier.cu — BROKEN ON PURPOSE (emulator test): a __syncthreads() that only half of
// the block reaches. Undefined behaviour on a GPU (usually a hang); the emulator reports it as a
// deadlock naming this file and line, in every mode.
#include "common.cuh"

extern "C" __global__ void broken_divergent_barrier(float* __restrict__ out) {
    if (threadIdx.x < 16) __syncthreads(); // BUG: divergent barrier
    out[threadIdx.x] = 1.0f;
}
