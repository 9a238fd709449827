// tc_diverged.cu — BROKEN ON PURPOSE (emulator test): warp-collective tensor-core instructions
// that not every lane executes together, undefined on a GPU (.sync.aligned). The emulator reports
// each as an invalid warp operation naming the instruction and the line.
#include "common.cuh"
#include "tensor_core.cuh"

// The two halves of the warp reach mma.sync at different call sites.
extern "C" __global__ void broken_tc_mma_diverged(float* __restrict__ out) {
    unsigned a[4] = {0x3F803F80u, 0x3F803F80u, 0x3F803F80u, 0x3F803F80u}, b[2] = {0x3F803F80u, 0x3F803F80u};
    float c[4] = {0, 0, 0, 0}, d[4];
    if (threadIdx.x < 16) {
        bg_mma_bf16_16816(d, a, b, c);
    } else {
        bg_mma_bf16_16816(d, a, b, c); // BUG: a second call site in a divergent branch
    }
    out[threadIdx.x] = d[0];
}

// Half of the warp has returned before ldmatrix.
extern "C" __global__ void broken_tc_ldmatrix_exited(unsigned* __restrict__ out) {
    DYNAMIC_SHARED(unsigned short, ex_rows);
    for (int e = threadIdx.x; e < 64; e += blockDim.x) ex_rows[e] = (unsigned short)e;
    __syncthreads();
    if (threadIdx.x >= 16) return; // BUG: lanes 16..31 leave before a warp-wide instruction
    unsigned r[1];
    bg_ldmatrix_x1(r, ex_rows + 8 * (threadIdx.x % 8));
    out[threadIdx.x] = r[0];
}
