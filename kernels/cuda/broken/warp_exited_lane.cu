// warp_exited_lane.cu — BROKEN ON PURPOSE (emulator test): a full-mask shuffle after half of the
// warp has returned. Undefined on a GPU; the emulator reports the exited lane named in the mask.
#include "common.cuh"

extern "C" __global__ void broken_warp_exited_lane(float* __restrict__ out) {
    if (threadIdx.x >= 16) return;
    const float v = __shfl_down_sync(0xffffffffu, (float)threadIdx.x, 1); // BUG: lanes 16-31 are gone
    out[threadIdx.x] = v;
}
