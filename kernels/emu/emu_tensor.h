// emu_tensor.h — the runtime entry points behind kernels/cuda/tensor_core.cuh on the emulator:
// mma.sync, ldmatrix and cp.async (implemented in tensor.cpp). Kernels never call these directly;
// they use the bg_* device functions of tensor_core.cuh, which compile to inline PTX under NVRTC.
//
// Every function takes the kernel's call site (file, line; tensor_core.cuh fills them in with
// __builtin_FILE/__builtin_LINE) so that a fault names the line of the kernel that issued it.
#pragma once

namespace emu {

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 for the calling lane: a[4] and
// b[2] hold packed 16-bit pairs (first element in the low half), c[4]/d[4] the f32 accumulators.
// Every lane of the warp must call it at the same site; the last to arrive computes all 32.
void tc_mma_m16n8k16(int bf16, float* d, const unsigned* a, const unsigned* b, const float* c, const char* file,
                     int line);

// ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16: `row` is this lane's row address (used
// for lanes < 8·num), r[num] receives this lane's registers.
void tc_ldmatrix(int num, int trans, unsigned* r, const void* row, const char* file, int line);

// cp.async.{ca,cg}.shared.global [dst], [src], cp_size, src_size: copies src_size bytes and
// zero-fills the rest of cp_size, at a point before the covering wait (see tensor.cpp).
void tc_cp_async(void* dst, const void* src, int cp_size, int src_size, int cg, const char* file, int line);
// cp.async.commit_group: the calling thread's uncommitted copies become one (possibly empty) group.
void tc_cp_async_commit(const char* file, int line);
// cp.async.wait_group n: every group of the calling thread but the n most recent has landed.
// n < 0 means cp.async.wait_all (commit, then wait for everything).
void tc_cp_async_wait(int n, const char* file, int line);

} // namespace emu
