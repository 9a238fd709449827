// tc_selftest.cu — kernels that run each tensor-core instruction of tensor_core.cuh once, for the
// emulator's tests (kernels/tests/emu_tensor_core.rs) and, through the NVRTC build check, to prove
// that every instruction form compiles for sm_80 and sm_90. Not used by any op.
#include "common.cuh"
#include "tensor_core.cuh"

// One mma per block (one warp): lane l of block b reads its registers a[4], b[2], c[4] at
// (b·32 + l)·4, ·2, ·4 and writes d[4]. `bf16` = 1: bf16 inputs, 0: f16.
extern "C" __global__ void tc_selftest_mma(const unsigned* __restrict__ a, const unsigned* __restrict__ b,
                                           const float* __restrict__ c, float* __restrict__ d, int bf16) {
    const int i = blockIdx.x * 32 + threadIdx.x;
    unsigned ar[4] = {a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]};
    unsigned br[2] = {b[2 * i], b[2 * i + 1]};
    float cr[4] = {c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3]};
    float dr[4];
    if (bf16) {
        bg_mma_bf16_16816(dr, ar, br, cr);
    } else {
        bg_mma_f16_16816(dr, ar, br, cr);
    }
    for (int k = 0; k < 4; k++) d[4 * i + k] = dr[k];
}

// One ldmatrix per block (one warp) from 64 shared rows of 8 b16 (block b's rows are
// src[b·512 ..]): lane l gives the address of row rows[b·32 + l] and writes its registers to
// out[(b·32 + l)·4 ..], 0xDEADBEEF where the variant has fewer than 4. variant: 0 x1, 1 x2,
// 2 x4, 3 x1.trans, 4 x2.trans, 5 x4.trans. Dynamic shared memory: 1024 bytes.
extern "C" __global__ void tc_selftest_ldmatrix(const unsigned short* __restrict__ src, const int* __restrict__ rows,
                                                unsigned* __restrict__ out, int variant) {
    DYNAMIC_SHARED(unsigned short, lds_rows);
    const int l = threadIdx.x;
    for (int e = l; e < 512; e += 32) lds_rows[e] = src[blockIdx.x * 512 + e];
    __syncthreads();
    const unsigned short* row = lds_rows + 8 * rows[blockIdx.x * 32 + l];
    unsigned r[4] = {0xDEADBEEFu, 0xDEADBEEFu, 0xDEADBEEFu, 0xDEADBEEFu};
    switch (variant) {
    case 0: bg_ldmatrix_x1(r, row); break;
    case 1: bg_ldmatrix_x2(r, row); break;
    case 2: bg_ldmatrix_x4(r, row); break;
    case 3: bg_ldmatrix_x1_trans(r, row); break;
    case 4: bg_ldmatrix_x2_trans(r, row); break;
    default: bg_ldmatrix_x4_trans(r, row); break;
    }
    for (int k = 0; k < 4; k++) out[(blockIdx.x * 32 + l) * 4 + k] = r[k];
}

// Thread t copies into shared bytes [16t, 16t + size) from src + 16t with spec[2t] = form (0: ca 4,
// 1: ca 8, 2: ca 16, 3: cg 16) and spec[2t+1] = src-size, waits, and after a barrier copies its 16
// shared bytes to out + 16t (bytes the copy did not cover keep the 0xFF of fresh shared memory).
// Dynamic shared memory: 16 · blockDim.x bytes.
extern "C" __global__ void tc_selftest_cp_async(const unsigned char* __restrict__ src, const int* __restrict__ spec,
                                                unsigned char* __restrict__ out) {
    DYNAMIC_SHARED(unsigned char, cpa_bytes);
    const int t = threadIdx.x;
    unsigned char* dst = cpa_bytes + 16 * t;
    const unsigned char* from = src + 16 * t;
    const int src_size = spec[2 * t + 1];
    switch (spec[2 * t]) {
    case 0: bg_cp_async_ca<4>(dst, from, src_size); break;
    case 1: bg_cp_async_ca<8>(dst, from, src_size); break;
    case 2: bg_cp_async_ca<16>(dst, from, src_size); break;
    default: bg_cp_async_cg16(dst, from, src_size); break;
    }
    bg_cp_async_wait_all();
    __syncthreads();
    for (int k = 0; k < 16; k++) out[16 * t + k] = cpa_bytes[16 * t + k];
}

// Groups: thread t copies 4 floats per group g = 0, 1, 2 (one commit each) from
// src[(g·n + t)·4 ..] into shared memory at the same offset (n = blockDim.x), then after
// wait_group 1 records what it sees of groups 0, 1 and 2, and after wait_all group 2 again:
// out[(r·n + t)·4 ..] for readings r = 0..3. Dynamic shared memory: 48 · n bytes.
extern "C" __global__ void tc_selftest_cp_async_groups(const float* __restrict__ src, float* __restrict__ out) {
    DYNAMIC_SHARED(float, cpg);
    const int t = threadIdx.x, n = blockDim.x;
    for (int g = 0; g < 3; g++) {
        bg_cp_async_cg16(cpg + (g * n + t) * 4, src + (g * n + t) * 4, 16);
        bg_cp_async_commit();
    }
    bg_cp_async_wait<1>();
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 4; k++) out[(r * n + t) * 4 + k] = cpg[(r * n + t) * 4 + k];
    }
    bg_cp_async_wait_all();
    for (int k = 0; k < 4; k++) out[(3 * n + t) * 4 + k] = cpg[(2 * n + t) * 4 + k];
}

// The correct form of the broken cp.async kernels (broken/tc_missing_*.cu): 128 threads, thread t
// copies row t (8 b16) of src into shared memory, waits, __syncthreads(), then warp w reads the
// rows of the next warp ((w+1) % 4) with ldmatrix.x4 into out[(w·32 + l)·4 ..]. Dynamic shared
// memory: 2048 bytes.
extern "C" __global__ void tc_selftest_cp_async_ldmatrix(const unsigned short* __restrict__ src,
                                                         unsigned* __restrict__ out) {
    DYNAMIC_SHARED(unsigned short, cpl_rows);
    const int t = threadIdx.x, w = t / 32, l = t % 32;
    bg_cp_async_cg16(cpl_rows + 8 * t, src + 8 * t, 16);
    bg_cp_async_wait_all();
    __syncthreads();
    unsigned r[4];
    bg_ldmatrix_x4(r, cpl_rows + 8 * (((w + 1) % 4) * 32 + l));
    for (int k = 0; k < 4; k++) out[t * 4 + k] = r[k];
}

// A 16×8×16 bf16 tile product by one warp with fragments gathered straight from global memory by
// the PTX table: A 16×16 row-major, B 16×8 row-major ([k][n]), C and D 16×8 row-major f32.
extern "C" __global__ void tc_selftest_mma_tile_bf16(const __nv_bfloat16* __restrict__ A,
                                                     const __nv_bfloat16* __restrict__ B, const float* __restrict__ C,
                                                     float* __restrict__ D) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    const unsigned short* a16 = reinterpret_cast<const unsigned short*>(A);
    const unsigned short* b16 = reinterpret_cast<const unsigned short*>(B);
    unsigned a[4], b[2];
    for (int r = 0; r < 4; r++) { // a[r] holds elements 2r (low) and 2r+1 (high)
        const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
        a[r] = a16[row * 16 + col] | (unsigned)a16[row * 16 + col + 1] << 16;
    }
    for (int r = 0; r < 2; r++) {
        const int k = 2 * t + 8 * r;
        b[r] = b16[k * 8 + g] | (unsigned)b16[(k + 1) * 8 + g] << 16;
    }
    float c[4], d[4];
    for (int i = 0; i < 4; i++) c[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    bg_mma_bf16_16816(d, a, b, c);
    for (int i = 0; i < 4; i++) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
}

// Legal reconvergence: lanes 16..31 exchange values by a half-warp shuffle while lanes 0..15 are
// already waiting at the mma, which every lane then executes together. A · B with all-ones bf16
// fragments and c = 0 gives 16 in every d; out[l] = d[0] + (the shuffled or own lane number).
extern "C" __global__ void tc_selftest_mma_after_half_warp_shfl(float* __restrict__ out) {
    const unsigned one2 = 0x3F803F80u; // two bf16 1.0
    unsigned a[4] = {one2, one2, one2, one2}, b[2] = {one2, one2};
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f}, d[4];
    float v = (float)threadIdx.x;
    if (threadIdx.x >= 16) v = __shfl_xor_sync(0xffff0000u, v, 1);
    bg_mma_bf16_16816(d, a, b, c);
    out[threadIdx.x] = d[0] + v;
}
