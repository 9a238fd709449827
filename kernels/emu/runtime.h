// runtime.h — the emulator runtime's internal state, shared by its .cpp files (not seen by kernels).
//
// Execution model: a launch's blocks are split into ranges, each run by one OS thread (a rayon
// worker on the Rust side) one block at a time. Within a block every CUDA thread is a cooperative
// fiber. A CUDA thread only gets a fiber when it starts, and a fiber whose thread exits runs the
// next not-yet-started thread itself, so a block without barriers runs on a single fiber with no
// context switch at all. Switching uses _setjmp/_longjmp (no signal-mask syscalls); makecontext
// and setcontext are only used to enter a fresh fiber the first time.
#pragma once

#undef _FORTIFY_SOURCE // its __longjmp_chk rejects jumps between fiber stacks
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "emu_types.h"
#include "emu_state.h"
#include "emu_registry.h"

namespace emu {

// Mirrored in src/emu/ffi.rs.
struct LaunchDesc {
    const KernelEntry* kernel;
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t shared_bytes;
    uint32_t shuffle; // non-zero: resume runnable threads in a seeded random order
    void* const* args;
    uint64_t seed; // already mixed with the launch number
};

enum ErrKind : int32_t {
    ERR_NONE = 0, ERR_DEADLOCK = 1, ERR_WARP = 2, ERR_FAULT = 3, ERR_STACK = 4, ERR_RESOURCE = 5, ERR_ASYNC = 6
};

// Mirrored in src/emu/ffi.rs.
struct EmuErr {
    int32_t kind;
    uint32_t block[3];
    uint32_t thread[3];
    int32_t has_thread;
    int32_t is_write; // 1 write, 0 read, -1 unknown
    uint64_t addr;
    char msg[768];
};

enum TState : uint8_t { T_NOT_STARTED, T_RUNNABLE, T_RUNNING, T_AT_BARRIER, T_AT_WARP, T_EXITED };

struct ThreadState;

// One cp.async in flight (tensor.cpp). The source is read when the copy is issued (so a bad
// source pointer faults at the issuing thread), the destination written when it lands.
struct AsyncCopy {
    char* dst;
    uint32_t bytes;   // cp-size
    int32_t group;    // the thread's commit-group number, -1 while uncommitted
    bool landed;
    unsigned char data[16]; // src-size bytes of the source, then zeros
};

struct Fiber {
    jmp_buf jb;
    bool has_ctx; // jb holds a resumable context (else: enter through makecontext)
    char* map;    // mapping start: the guard page, then the stack
    size_t map_len;
    ThreadState* thread;
};

struct ThreadState : ThreadPublic {
    uint32_t linear, lane, warp;
    TState state;
    Fiber* fiber;
    // __syncthreads
    const char* bar_file;
    int bar_line, bar_pred, bar_result;
    // warp op in progress
    int w_kind, w_arg, w_width;
    unsigned w_mask;
    unsigned long long w_val, w_result;
    // tensor-core collective in progress (tensor.cpp): its call site and the lane's operands
    const char* w_file;
    int w_line;
    void* w_ptr;
    // cp.async: copies not yet waited for, and how many groups this thread has committed
    std::vector<AsyncCopy> copies;
    int32_t groups;
};

struct Worker {
    std::vector<Fiber*> fibers; // every fiber this OS thread owns
    std::vector<Fiber*> free_fibers;
    std::vector<ThreadState> threads;
    std::vector<ThreadState*> queue; // ring buffer of runnable threads
    // Per warp of the running block, one bit per lane: lanes parked in a warp op or tensor-core
    // collective, the subset parked in a tensor-core collective, lanes that exited, and lanes
    // waiting at __syncthreads (cleared in Worker::push, reset per block). They let
    // an arriving lane see in O(1) whether its op completes or its warp has diverged; the lane
    // scans (and their error messages) run only when a mask says they will find something.
    std::vector<uint32_t> lanes_waiting, lanes_in_tc, lanes_exited, lanes_at_barrier;
    // Per warp: the collective its lanes in `lanes_in_tc` wait in (set by the first to park), so
    // that an arriving lane compares its own call with one record instead of 31 lanes.
    struct TcSite {
        int kind, arg, line;
        const char* file;
    };
    std::vector<TcSite> tc_site;
    size_t q_head = 0, q_len = 0;

    jmp_buf sched_jb;
    sigjmp_buf recover_jb;
    volatile sig_atomic_t in_kernel = 0;
    void* fault_addr = nullptr;
    int fault_write = -1;

    const LaunchDesc* launch = nullptr;
    uint32_t nthreads = 0, exited = 0, at_barrier = 0;
    uint64_t rng = 0;
    ThreadState* cur = nullptr;
    EmuErr* err = nullptr;
    bool failed = false, busy = false, pool_dirty = false;

    char* shared = nullptr; // dynamic shared memory
    size_t shared_cap = 0;
    // cp.async bookkeeping for the running block (tensor.cpp): one word per 4 bytes of dynamic
    // shared memory saying whose copy is in flight there, and the ranges waited for since the
    // last barrier (a barrier publishes them to the whole block).
    std::vector<uint32_t> shadow;
    std::vector<uint32_t> waited; // word indices in the WAITED state
    uint64_t copy_rng = 0;
    bool shadow_dirty = false; // a cp.async ran since the shadow was last cleared
    char* altstack = nullptr; // our sigaltstack, when the thread had none

    ~Worker();
    void push(ThreadState* t);
    ThreadState* pop();
    [[noreturn]] void resume_next();
    [[noreturn]] void enter(ThreadState* t);
    [[noreturn]] void fail(int kind, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
    void park();
    void reset_pool();
    Fiber* take_fiber();
};

Worker& worker();               // this OS thread's worker, created on first use
void install_fault_handler();   // once per process; also sets up this thread's sigaltstack
void ensure_altstack(Worker& w);
[[noreturn]] void start_fiber(Fiber* f);
void free_fiber_stack(Fiber* f);
Fiber* new_fiber(); // nullptr when mmap fails
bool in_fiber_guard(const Worker& w, const void* addr);
size_t fiber_stack_bytes();
void describe_deadlock(Worker& w, char* out, size_t cap);
const char* op_name(int kind);
uint32_t lanes_in_warp(const Worker& w, uint32_t warp);
// tensor.cpp: per-block cp.async state; a barrier's release; a thread's exit.
void tc_block_start(Worker& w, size_t shared_bytes);
void tc_barrier_released(Worker& w);
void tc_thread_exited(Worker& w, ThreadState* t);
// tensor.cpp: fails when a lane of the caller's warp that `mask` names (the lanes the caller
// now waits for at `what`) waits in a tensor-core collective instead: neither can proceed, the
// warp has diverged. A lane outside the mask may finish its collective after the caller's op.
void tc_check_not_diverged(Worker& w, ThreadState* me, const char* what, unsigned mask);

} // namespace emu
