// tc_tile.cuh — the CTA tile shared by the tensor-core GEMM (tc_gemm.cu) and the implicit-GEMM
// convolutions (tc_conv_*.cu): CUTLASS's sm_80 multistage design, written once.
//
// - CTA tile TC_BM × BN × TC_BK (BN = 128, or 64 for the forward convolution of narrow layers),
//   4 warps in a 2×2 grid, each computing a 64 × BN/2 warp tile with 4 × BN/16 mma.sync
//   m16n8k16 per 16-wide k step, f32 accumulators in registers.
// - A TC_STAGES-deep cp.async pipeline (tc_mainloop): while the warps compute k tile kt, the
//   copies of tiles kt+1 and kt+2 are in flight. One __syncthreads() per k tile both publishes the
//   tile just waited for and guarantees that the stage about to be refilled is no longer read.
// - Each operand is stored in one of two XOR-swizzled stage layouts, so that the 16-byte cp.async
//   stores and the ldmatrix row reads of every 8-lane phase hit 8 different 16-byte bank groups:
//     K-major  [rows (m or n)][32 k]  (the operand is k-contiguous in memory: a row-major A, a
//              KRSC weight read as B[k = rsc][n = out channel]): chunk c of row r at c ^ ((r>>1)&3),
//              fragments by ldmatrix.x4;
//     MN-major [32 k][W (m or n)]     (m- or n-contiguous: a row-major B, dY read as A = dYᵀ):
//              chunk c of k row at c ^ (k & 7), fragments by ldmatrix.x4.trans.
// - What a tile holds is the caller's: a loader functor `load(sa, sb, kt)` issues the cp.async
//   copies of k tile kt into one stage (zero fill, src-size 0, for whatever lies outside the
//   operand), and tc_epilogue hands each accumulator pair to a store functor. The k tiles are
//   summed in order 0, 1, …, ktiles-1, each k in order inside a tile (the emulator's mma sums its
//   16 products in k order, one f32 rounding each), which is the order every CPU twin reproduces.
#pragma once
#include "common.cuh"
#include "tensor_core.cuh"

#define TC_BM 128
#define TC_BK 32
#define TC_WM 64
#define TC_STAGES 3
#define TC_THREADS 128
#define TC_A_STAGE (TC_BM * TC_BK) // bf16 elements of one A stage
// Dynamic shared memory of a launch with an N tile of BN.
#define TC_SMEM_BYTES(BN) (TC_STAGES * (TC_A_STAGE + TC_BK * (BN)) * 2)

// Element offset of 16-byte chunk c (8 k) of row r in a K-major stage.
__device__ __forceinline__ int tc_kmajor_off(int r, int c) { return r * TC_BK + ((c ^ ((r >> 1) & 3)) << 3); }

// Element offset of 16-byte chunk c (8 m or n) of k row k in a MN-major stage W wide.
template <int W> __device__ __forceinline__ int tc_mnmajor_off(int k, int c) { return k * W + ((c ^ (k & 7)) << 3); }

// Which chunks this thread copies (consecutive threads on consecutive chunks: coalesced reads).
// K-major, ROWS rows × 4 chunks: ROWS/32 per thread, chunk tid & 3 of rows tid/4 + 32·i.
__device__ __forceinline__ int tc_kmajor_row(int i) { return (threadIdx.x >> 2) + 32 * i; }
__device__ __forceinline__ int tc_kmajor_chunk() { return threadIdx.x & 3; }
// MN-major, 32 k rows × W/8 chunks: W/32 per thread, chunk tid % (W/8) of rows tid/(W/8) + …
template <int W> __device__ __forceinline__ int tc_mnmajor_row(int i) {
    return threadIdx.x / (W / 8) + (TC_THREADS / (W / 8)) * i;
}
template <int W> __device__ __forceinline__ int tc_mnmajor_chunk() { return threadIdx.x % (W / 8); }

// The warp tile's corner inside the CTA tile.
template <int BN> __device__ __forceinline__ int tc_warp_m() { return (threadIdx.x >> 6) * TC_WM; }
template <int BN> __device__ __forceinline__ int tc_warp_n() { return ((threadIdx.x >> 5) & 1) * (BN / 2); }

// acc[i][j]: the 16×8 accumulator tile i (m), j (n) of this warp, c[0..3] as mma lays it out.
template <int BN, bool A_KMAJOR, bool B_KMAJOR, class Load>
__device__ __forceinline__ void tc_mainloop(float (&acc)[4][BN / 16][4], __nv_bfloat16* smem, int ktiles,
                                            const Load& load) {
    constexpr int B_STAGE = TC_BK * BN;
    __nv_bfloat16* sa = smem;                           // TC_STAGES A stages
    __nv_bfloat16* sb = smem + TC_STAGES * TC_A_STAGE;  // then TC_STAGES B stages
    const int lane = threadIdx.x & 31;
    const int wm = tc_warp_m<BN>(), wn = tc_warp_n<BN>();
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < BN / 16; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;

    // Prologue: tiles 0..STAGES-2 in flight, one group each (an empty group past the end keeps
    // every thread's group count equal, which the wait below counts on).
#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; s++) {
        if (s < ktiles) load(sa + s * TC_A_STAGE, sb + s * B_STAGE, s);
        bg_cp_async_commit();
    }

    for (int kt = 0; kt < ktiles; kt++) {
        // Tile kt has landed for this thread; the barrier publishes it to all and tells every
        // warp that the others are done with tile kt-1, whose stage is refilled next.
        bg_cp_async_wait<TC_STAGES - 2>();
        __syncthreads();
        const int next = kt + TC_STAGES - 1;
        if (next < ktiles) {
            const int s = next % TC_STAGES;
            load(sa + s * TC_A_STAGE, sb + s * B_STAGE, next);
        }
        bg_cp_async_commit();

        const __nv_bfloat16* ta = sa + (kt % TC_STAGES) * TC_A_STAGE;
        const __nv_bfloat16* tb = sb + (kt % TC_STAGES) * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < TC_BK / 16; kk++) {
            unsigned af[4][4], bfr[BN / 16][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (A_KMAJOR) {
                    // Lanes 0-15 give rows 0-15 at k chunk 2kk, lanes 16-31 the same rows at
                    // 2kk+1: (g, k0-7), (g+8, k0-7), (g, k8-15), (g+8, k8-15) as mma wants.
                    bg_ldmatrix_x4(af[i], ta + tc_kmajor_off(wm + i * 16 + (lane & 15), 2 * kk + (lane >> 4)));
                } else {
                    // k rows, m contiguous, transposed: matrix j = lane/8 is m chunk j & 1 at k
                    // offset 8·(j >> 1), giving the same four registers.
                    const int k = 16 * kk + (lane & 7) + ((lane >> 4) & 1) * 8;
                    bg_ldmatrix_x4_trans(af[i], ta + tc_mnmajor_off<TC_BM>(k, ((wm + 16 * i) >> 3) + ((lane >> 3) & 1)));
                }
            }
#pragma unroll
            for (int j = 0; j < BN / 32; j++) {
                // Four matrices = b[0], b[1] of the n8 tiles 2j and 2j+1.
                unsigned r[4];
                if (B_KMAJOR) {
                    // n rows, k contiguous, not transposed: matrices (n0-7, k0-7), (n0-7, k8-15),
                    // (n8-15, k0-7), (n8-15, k8-15); lane l/4 holds n = g, k = 2t, 2t+1.
                    const int n = wn + 16 * j + (lane & 7) + ((lane >> 4) & 1) * 8;
                    bg_ldmatrix_x4(r, tb + tc_kmajor_off(n, 2 * kk + ((lane >> 3) & 1)));
                } else {
                    // k rows, n contiguous, transposed: matrices (k0-7, n0-7), (k8-15, n0-7),
                    // (k0-7, n8-15), (k8-15, n8-15).
                    const int k = 16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8;
                    bg_ldmatrix_x4_trans(r, tb + tc_mnmajor_off<BN>(k, ((wn + 16 * j) >> 3) + (lane >> 4)));
                }
                bfr[2 * j][0] = r[0], bfr[2 * j][1] = r[1];
                bfr[2 * j + 1][0] = r[2], bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < BN / 16; j++) bg_mma_bf16_16816(acc[i][j], af[i], bfr[j], acc[i][j]);
        }
    }
}

// Hands every in-range accumulator pair to store(row, col, v0, v1): lane (g, t) holds rows g and
// g+8, columns 2t and 2t+1 of each 16×8 tile. N % 8 == 0, so col + 1 < N whenever col < N.
template <int BN, class Store>
__device__ __forceinline__ void tc_epilogue(const float (&acc)[4][BN / 16][4], int m0, int n0, int M, int N,
                                            const Store& store) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wm = tc_warp_m<BN>(), wn = tc_warp_n<BN>();
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < BN / 16; j++) {
            const int row = m0 + wm + i * 16 + g, col = n0 + wn + j * 8 + 2 * t;
            if (col >= N) continue;
            if (row < M) store(row, col, acc[i][j][0], acc[i][j][1]);
            if (row + 8 < M) store(row + 8, col, acc[i][j][2], acc[i][j][3]);
        }
    }
}
