// tc_conv.cuh — what the implicit-GEMM convolutions (tc_conv_fprop.cu, tc_conv_dgrad.cu,
// tc_conv_wgrad.cu) share: the problem shape, passed by value (kernels/src/tc_conv.rs's
// `ConvShape` is its #[repr(C)] mirror), and the pixel-index arithmetic.
//
// Layouts: x [N][H][W][C] (NHWC), weights [K][R][S][C] (KRSC), y [N][P][Q][K]; bf16 operands.
// Input row h of output row p and filter row r: h = p·stride_h − pad_h + r·dil_h (columns alike).
// C % 8 == 0 and K % 8 == 0: a 16-byte chunk of 8 channels never straddles a pixel or a tap.
#pragma once
#include "tc_tile.cuh"

struct tc_conv_shape {
    int n, h, w, c; // input
    int k, r, s;    // filters
    int p, q;       // output rows and columns
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// A coordinate far enough below zero that adding any filter offset keeps it out of range: marks
// the tile rows past the end of the pixels, so one range check covers both.
#define TC_CONV_OFF_IMAGE (-(1 << 28))

__device__ __forceinline__ bool tc_conv_inside(int y, int x, int h, int w) {
    return (unsigned)y < (unsigned)h && (unsigned)x < (unsigned)w;
}
