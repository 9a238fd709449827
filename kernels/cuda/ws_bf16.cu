// ws_bf16.cu — weight standardization for the bf16 training path: the f32 master weight, KRSC
// [K][R·S·C] (the tc_conv weight layout, so each output channel is one contiguous row), becomes
// the bf16 ŵ (KRSC) that the tc_conv kernels read, once per step, with f32 per-row μ and r.
//
// The statistics and ŵ in f32 are those of ws_forward_f32 (weight_std.cu) bit for bit: the same
// bg_block_moments (norm_stats.cuh), the same (w − μ)·r; only the store rounds to bf16 (RNE).
// The backward is ws_backward_f32 unchanged: it takes the f32 dŵ that tc_conv_wgrad writes and
// the f32 master w, recomputes the f32 ŵ from μ and r, and writes the f32 dw (the gradient of
// the f32 standardization; the bf16 rounding of ŵ is treated as the identity, as straight-through).
#include "norm_stats.cuh"

// Grid K (one block per output channel), block a multiple of 32 (≤ 1024).
extern "C" __global__ void ws_forward_f32_bf16(long long n, double eps, const float* w, __nv_bfloat16* out,
                                               float* mean, float* rstd) {
    __shared__ double scratch[32];
    const float* wr = w + blockIdx.x * n;
    __nv_bfloat16* orow = out + blockIdx.x * n;
    const bg_moments st = bg_block_moments(wr, n, eps, scratch);
    const float rt = (float)st.rstd, mt = (float)st.mean;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) orow[j] = __float2bfloat16_rn((wr[j] - mt) * rt);
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = mt;
        rstd[blockIdx.x] = rt;
    }
}
