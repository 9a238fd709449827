// tensor_core.cuh — the only way bitgrad kernels reach the tensor-core instructions: mma.sync
// m16n8k16 (bf16 or f16 in, f32 accumulators), ldmatrix m8n8 (x1/x2/x4, optionally .trans) and
// cp.async (4/8/16 bytes with a source size, commit_group, wait_group, wait_all).
//
// Under NVRTC (__CUDA_ARCH__, sm_80 or newer) each function is one inline PTX instruction. On the
// emulator (BITGRAD_EMU) it calls the emulation in kernels/emu/tensor.cpp, which follows the PTX
// fragment tables lane by lane and checks what PTX leaves undefined (diverged warps, exited lanes,
// reading cp.async data before its wait and barrier). The emulator also receives the call site
// through defaulted __builtin_FILE/__builtin_LINE arguments, so its errors name the kernel's line.
//
// Fragments (g = lane / 4, t = lane % 4; in a packed b32 register the first element is the low
// half):
//   A 16×16 row-major, a[0..3]: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
//   B 16×8 "col" (k-major pairs), b[0..1]: (k = 2t..2t+1, n = g), (k = 2t+8.., n = g)
//   C/D 16×8 f32, c[0..3]: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
// ldmatrix: lane 8j+i gives the address of row i of matrix j (16 bytes, 16-byte aligned, in shared
// memory); register j of lane l gets matrix j's (row l/4, cols 2(l%4), 2(l%4)+1), or with .trans
// (rows 2(l%4), 2(l%4)+1, col l/4). cp.async: the destination must be in shared memory, both
// addresses aligned to the copy size; bytes past src_bytes are zero-filled. Its data is visible to
// the issuing thread after the covering wait, to other threads only after a __syncthreads().
//
// On the emulator, cp.async destinations and ldmatrix rows must lie in DYNAMIC_SHARED memory.
#pragma once

#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ < 800
#error "tensor_core.cuh needs sm_80 or newer (mma.sync bf16, cp.async)"
#endif
#define BG_TC_SITE
#define BG_TC_SITE_ONLY
#elif defined(BITGRAD_EMU)
#define BG_TC_SITE_ONLY const char* bg_file = __builtin_FILE(), int bg_line = __builtin_LINE()
#define BG_TC_SITE , BG_TC_SITE_ONLY
#else
#error "tensor_core.cuh is compiled by NVRTC (__CUDA_ARCH__) or by the emulator (BITGRAD_EMU)"
#endif

#if defined(__CUDA_ARCH__)
// The 32-bit shared-state-space address of a generic pointer into shared memory.
__device__ __forceinline__ unsigned bg_smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

// ---- mma.sync m16n8k16 ------------------------------------------------------------------------

// d = A·B + c with bf16 A and B; d may be c.
__device__ __forceinline__ void bg_mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2],
                                                  const float c[4] BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    ::emu::tc_mma_m16n8k16(1, d, a, b, c, bg_file, bg_line);
#endif
}

// d = A·B + c with f16 A and B; d may be c.
__device__ __forceinline__ void bg_mma_f16_16816(float d[4], const unsigned a[4], const unsigned b[2],
                                                 const float c[4] BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    ::emu::tc_mma_m16n8k16(0, d, a, b, c, bg_file, bg_line);
#endif
}

// ---- ldmatrix ---------------------------------------------------------------------------------

__device__ __forceinline__ void bg_ldmatrix_x1(unsigned r[1], const void* row BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(bg_smem_addr(row)));
#else
    ::emu::tc_ldmatrix(1, 0, r, row, bg_file, bg_line);
#endif
}

__device__ __forceinline__ void bg_ldmatrix_x2(unsigned r[2], const void* row BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(bg_smem_addr(row)));
#else
    ::emu::tc_ldmatrix(2, 0, r, row, bg_file, bg_line);
#endif
}

__device__ __forceinline__ void bg_ldmatrix_x4(unsigned r[4], const void* row BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(bg_smem_addr(row)));
#else
    ::emu::tc_ldmatrix(4, 0, r, row, bg_file, bg_line);
#endif
}

__device__ __forceinline__ void bg_ldmatrix_x1_trans(unsigned r[1], const void* row BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(bg_smem_addr(row)));
#else
    ::emu::tc_ldmatrix(1, 1, r, row, bg_file, bg_line);
#endif
}

__device__ __forceinline__ void bg_ldmatrix_x2_trans(unsigned r[2], const void* row BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(bg_smem_addr(row)));
#else
    ::emu::tc_ldmatrix(2, 1, r, row, bg_file, bg_line);
#endif
}

__device__ __forceinline__ void bg_ldmatrix_x4_trans(unsigned r[4], const void* row BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(bg_smem_addr(row)));
#else
    ::emu::tc_ldmatrix(4, 1, r, row, bg_file, bg_line);
#endif
}

// ---- cp.async ---------------------------------------------------------------------------------

// Copies BYTES (4, 8 or 16) from global `src` to shared `dst`: the first `src_bytes` from src, the
// rest zeros (src_bytes = 0: all zeros, src is not read). Cached in L1 (.ca).
template <int BYTES>
__device__ __forceinline__ void bg_cp_async_ca(void* dst, const void* src, int src_bytes BG_TC_SITE) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(bg_smem_addr(dst)), "l"(src), "n"(BYTES),
                 "r"(src_bytes)
                 : "memory");
#else
    ::emu::tc_cp_async(dst, src, BYTES, src_bytes, 0, bg_file, bg_line);
#endif
}

// 16 bytes bypassing L1 (.cg), the operand-tile copy of the GEMM main loops.
__device__ __forceinline__ void bg_cp_async_cg16(void* dst, const void* src, int src_bytes BG_TC_SITE) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(bg_smem_addr(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
#else
    ::emu::tc_cp_async(dst, src, 16, src_bytes, 1, bg_file, bg_line);
#endif
}

// Closes this thread's uncommitted copies into a group (an empty group if there are none). Every
// thread must commit the same number of groups, so never commit conditionally.
__device__ __forceinline__ void bg_cp_async_commit(BG_TC_SITE_ONLY) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
    ::emu::tc_cp_async_commit(bg_file, bg_line);
#endif
}

// Waits until at most N of this thread's most recent groups are still in flight. The landed data
// is visible to this thread only: other threads need a __syncthreads() after it.
template <int N>
__device__ __forceinline__ void bg_cp_async_wait(BG_TC_SITE_ONLY) {
    static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
    ::emu::tc_cp_async_wait(N, bg_file, bg_line);
#endif
}

// Commits this thread's outstanding copies and waits for all of them.
__device__ __forceinline__ void bg_cp_async_wait_all(BG_TC_SITE_ONLY) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#else
    ::emu::tc_cp_async_wait(-1, bg_file, bg_line);
#endif
}
