// tc_conv_fprop_n64.cu — tc_conv_fprop.cu's kernels with a 64-wide N tile (128 pixels × 64 output
// channels per CTA, 4 warps of 64×32): for layers of at most 64 output channels (BiT's stem and
// first stage), which the 128-wide tile would fill only half. Same loader, pipeline, summation
// order and results (tc_conv_fprop.cuh); 36 KiB of dynamic shared memory, 64 accumulators per
// thread. kernels/src/tc_conv.rs picks the variant.
#include "tc_conv_fprop.cuh"

#define TC_BN 64

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_fprop_bf16_n64(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ wt,
                           const __nv_bfloat16* __restrict__ residual, __nv_bfloat16* __restrict__ y,
                           tc_conv_shape sh) {
    DYNAMIC_SHARED(__nv_bfloat16, tcf_smem);
    tcf_run<TC_BN>(tcf_smem, x, wt, residual, y, sh);
}

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_fprop_f32_n64(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ wt,
                          const __nv_bfloat16* __restrict__ residual, float* __restrict__ y, tc_conv_shape sh) {
    DYNAMIC_SHARED(__nv_bfloat16, tcf_smem);
    tcf_run<TC_BN>(tcf_smem, x, wt, residual, y, sh);
}
