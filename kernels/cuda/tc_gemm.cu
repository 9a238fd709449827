// tc_gemm.cu — C[M,N] (f32) = A[M,K] (bf16, row-major) · B[K,N] (bf16, row-major) on tensor cores:
// the plain GEMM over tc_tile.cuh's CTA tile (128×128×32, 4 warps of 64×64, 3-stage cp.async
// pipeline, swizzled shared memory, ldmatrix, mma.sync), which the convolutions share.
//
// A is K-major in shared memory (ldmatrix.x4), B MN-major (ldmatrix.x4.trans). Edges: copies of
// chunks outside A or B use src-size 0 (zero fill), so partial tiles add exact zeros; stores are
// bounds-checked. Requirements: K % 8 == 0 and N % 8 == 0 (every 16-byte chunk lies wholly inside
// or outside a row, and rows stay 16-byte aligned); A and B 16-byte aligned, C 8-byte aligned; M
// any.
//
// Launch: grid (ceil(N/128), ceil(M/128)), 128 threads, TC_SMEM_BYTES(128) of dynamic shared
// memory. kernels/src/tc.rs mirrors these numbers for launch code and the SASS check.
//
// Order of the sum for C[m][n] (what the emulator computes and the CPU twin reproduces): from
// +0, k = 0, 1, …, 32·ceil(K/32) - 1 in order, one f32 rounding per product added (products
// beyond K are +0 or -0 times a value and change nothing but the sign of an exact zero).
#include "tc_tile.cuh"

#define TC_BN 128

// The copies of k tile kt: 512 chunks of A and 512 of B, four of each per thread.
struct tcg_load {
    const __nv_bfloat16* A;
    const __nv_bfloat16* B;
    int M, N, K, m0, n0;
    __device__ __forceinline__ void operator()(__nv_bfloat16* sa, __nv_bfloat16* sb, int kt) const {
        const int ca = tc_kmajor_chunk(), gk = kt * TC_BK + ca * 8;
#pragma unroll
        for (int i = 0; i < TC_BM / 32; i++) {
            const int m = tc_kmajor_row(i), gm = m0 + m;
            const bool ok = gm < M && gk < K;
            // Out of range: zero fill, reading nothing (the source is A itself, always valid).
            bg_cp_async_cg16(sa + tc_kmajor_off(m, ca), ok ? A + (long long)gm * K + gk : A, ok ? 16 : 0);
        }
        const int cb = tc_mnmajor_chunk<TC_BN>(), gn = n0 + cb * 8;
#pragma unroll
        for (int i = 0; i < TC_BN / 32; i++) {
            const int k = tc_mnmajor_row<TC_BN>(i), gkb = kt * TC_BK + k;
            const bool ok = gkb < K && gn < N;
            bg_cp_async_cg16(sb + tc_mnmajor_off<TC_BN>(k, cb), ok ? B + (long long)gkb * N + gn : B, ok ? 16 : 0);
        }
    }
};

extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)
    tc_gemm_bf16(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B, float* __restrict__ C,
                 int M, int N, int K) {
    DYNAMIC_SHARED(__nv_bfloat16, tcg_smem);
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    float acc[4][TC_BN / 16][4];
    tc_mainloop<TC_BN, true, false>(acc, tcg_smem, (K + TC_BK - 1) / TC_BK, tcg_load{A, B, M, N, K, m0, n0});
    tc_epilogue<TC_BN>(acc, m0, n0, M, N, [&](int row, int col, float x, float y) {
        *reinterpret_cast<float2*>(C + (long long)row * N + col) = make_float2(x, y);
    });
}
