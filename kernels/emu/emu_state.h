// emu_state.h — where a kernel's threadIdx/blockIdx/… come from, and the runtime calls behind
// __syncthreads and the warp operations (implemented in runtime.cpp).
#pragma once

namespace emu {

// What a running CUDA thread can see of itself. The runtime's per-thread record starts with it.
struct ThreadPublic {
    uint3 tid;
};

// What every thread of the running block sees.
struct BlockPublic {
    uint3 idx;
    uint3 dim;
    uint3 grid;
    void* dyn_shared;
};

// The CUDA thread running on this OS thread right now (threads of a block are fibers of one OS
// thread), and its block.
extern thread_local const ThreadPublic* t_thread;
extern thread_local BlockPublic t_block;

inline const uint3& thread_idx() { return t_thread->tid; }
inline const uint3& block_idx() { return t_block.idx; }
inline const dim3 block_dim() { return dim3(t_block.dim); }
inline const dim3 grid_dim() { return dim3(t_block.grid); }
inline void* dynamic_shared() { return t_block.dyn_shared; }

// __syncthreads and friends: park until every thread of the block arrives at the same call site
// (`file`:`line`). `pred` feeds __syncthreads_count/_and/_or; the return value is the count of
// threads that passed a non-zero predicate.
int block_barrier(const char* file, int line, int pred);

// Warp operations. Every lane named in `mask` must arrive at the same kind of operation with the
// same mask; the last one to arrive computes all results.
enum WarpOpKind : int {
    WARP_SYNC = 0, SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, VOTE_BALLOT, VOTE_ANY, VOTE_ALL,
    // Tensor-core collectives (emu_tensor.h): every lane of the warp, same call site.
    TC_MMA_BF16, TC_MMA_F16, TC_LDMATRIX
};
unsigned long long warp_op(int kind, unsigned mask, unsigned long long value, int arg, int width);
unsigned active_mask();

} // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

// Dynamic shared memory (the launch's shared_bytes), filled with 0xFF at every block start so a
// read of never-written shared memory shows up (as NaN for floats).
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::emu::dynamic_shared())
