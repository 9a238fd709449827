// tc_conv_fprop.cu — convolution forward on tensor cores as an implicit GEMM over tc_tile.cuh's
// CTA tile: y[N·P·Q][K] = im2col(x)[N·P·Q][R·S·C] · Wᵀ, i.e. GEMM M = N·P·Q output pixels,
// N = K output channels, K = R·S·C taps, k ordered (r, s, c) with c fastest.
//
// - A (K-major) is gathered from the NHWC input on the fly: a 16-byte chunk is 8 channels of one
//   input pixel for one tap (C % 8 == 0). Taps that fall in the padding or outside the image, and
//   rows past the last pixel, are copied with src-size 0 (zero fill), so they add exact zeros.
// - B (K-major) is the KRSC weight tensor itself: row n = output channel, R·S·C contiguous.
// - Any stride, padding and dilation; C % 8 == 0 and K % 8 == 0 (the 3-channel stem is padded to
//   8 channels with zeros by the host: bitgrad_kernels::tc_conv::pad_channels).
// - Epilogue: the f32 accumulators, plus an optional residual (bf16, the output's NHWC shape; null
//   for none) added in f32, rounded once to the output type: bf16 (tc_conv_fprop_bf16) or f32
//   (tc_conv_fprop_f32).
//
// Launch: grid (ceil(K/TC_BN), ceil(N·P·Q/128)), 128 threads, TC_SMEM_BYTES(TC_BN) bytes of
// dynamic shared memory (kernels/src/tc_conv.rs); the code is in tc_conv_fprop.cuh, shared with
// the 64-wide variants of tc_conv_fprop_n64.cu. Sum order of y[m][k]: from +0 over the taps
// (r, s, c) in that order, one f32 rounding per product, then + residual, then the output rounding.
#include "tc_conv_fprop.cuh"

#define TC_BN 128

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_fprop_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ wt,
                       const __nv_bfloat16* __restrict__ residual, __nv_bfloat16* __restrict__ y, tc_conv_shape sh) {
    DYNAMIC_SHARED(__nv_bfloat16, tcf_smem);
    tcf_run<TC_BN>(tcf_smem, x, wt, residual, y, sh);
}

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_conv_fprop_f32(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ wt,
                      const __nv_bfloat16* __restrict__ residual, float* __restrict__ y, tc_conv_shape sh) {
    DYNAMIC_SHARED(__nv_bfloat16, tcf_smem);
    tcf_run<TC_BN>(tcf_smem, x, wt, residual, y, sh);
}
