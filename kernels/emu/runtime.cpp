// runtime.cpp — running blocks (the C entry points called from src/emu/launch.rs), and catching
// memory faults inside kernels.
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <mutex>
#include <string>
#include <unordered_map>

extern "C" const emu::KernelTable* const bitgrad_emu_tables[];
extern "C" const size_t bitgrad_emu_table_count;

namespace emu {

// ---- memory faults --------------------------------------------------------------------------

static struct sigaction g_old_segv, g_old_bus;
static thread_local Worker* t_fault_worker = nullptr; // set only while a block runs

static void on_fault(int sig, siginfo_t* si, void* uctx) {
    Worker* w = t_fault_worker;
    if (w && w->in_kernel) {
        w->in_kernel = 0;
        w->fault_addr = si->si_addr;
#if defined(__x86_64__)
        // Page-fault error code bit 1: the access was a write.
        w->fault_write = (((ucontext_t*)uctx)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
        w->fault_write = -1;
#endif
        siglongjmp(w->recover_jb, 1);
    }
    // Not ours: behave as if we were never installed.
    struct sigaction* old = sig == SIGBUS ? &g_old_bus : &g_old_segv;
    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
        old->sa_sigaction(sig, si, uctx);
    } else if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN) {
        signal(sig, SIG_DFL); // returning re-executes the access, which now kills the process
    } else {
        old->sa_handler(sig);
    }
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sigemptyset(&sa.sa_mask);
        // ONSTACK: a fiber stack overflow must still be reported; NODEFER: we leave by siglongjmp
        // without restoring the signal mask, so the signal must not stay blocked.
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
}

void ensure_altstack(Worker& w) {
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) && cur.ss_size >= 8192) return;
    if (w.altstack) return;
    const size_t size = 64 * 1024;
    char* mem = (char*)malloc(size);
    if (!mem) return;
    stack_t ss = {};
    ss.ss_sp = mem;
    ss.ss_size = size;
    if (sigaltstack(&ss, nullptr) == 0) {
        w.altstack = mem;
    } else {
        free(mem);
    }
}

// ---- blocks ---------------------------------------------------------------------------------

static bool prepare_shared(Worker& w, size_t bytes) {
    size_t need = bytes < 256 ? 256 : bytes;
    if (need > w.shared_cap) {
        void* p = nullptr;
        if (posix_memalign(&p, 256, need) != 0) return false;
        free(w.shared);
        w.shared = (char*)p;
        w.shared_cap = need;
    }
    memset(w.shared, 0xFF, need); // never-written shared memory reads as NaN
    return true;
}

static uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Runs threads until none is runnable, releasing barriers in between. Separate from run_block so
// that the fault recovery point (sigsetjmp there) outlives every jump made here.
static void schedule(Worker& w) {
    for (;;) {
        if (_setjmp(w.sched_jb) == 0) w.resume_next();
        w.cur = nullptr;
        if (w.failed || w.exited == w.nthreads) return;
        // Nothing runnable: a barrier everyone reached (at the same call site) is released.
        const ThreadState& t0 = w.threads[0];
        bool release = w.at_barrier == w.nthreads;
        int count = 0;
        for (uint32_t i = 0; release && i < w.nthreads; i++) {
            const ThreadState& t = w.threads[i];
            release = t.bar_line == t0.bar_line && strcmp(t.bar_file, t0.bar_file) == 0;
            count += t.bar_pred;
        }
        if (!release) {
            w.failed = true;
            w.err->kind = ERR_DEADLOCK;
            describe_deadlock(w, w.err->msg, sizeof w.err->msg);
            return;
        }
        w.at_barrier = 0;
        tc_barrier_released(w);
        for (uint32_t i = 0; i < w.nthreads; i++) {
            w.threads[i].bar_result = count;
            w.push(&w.threads[i]);
        }
    }
}

static int run_block(Worker& w, uint64_t linear, EmuErr* err) {
    const LaunchDesc& L = *w.launch;
    uint32_t bx = L.block[0], by = L.block[1], n = L.block[0] * L.block[1] * L.block[2];
    uint3 idx = {(uint32_t)(linear % L.grid[0]), (uint32_t)(linear / L.grid[0] % L.grid[1]),
                 (uint32_t)(linear / ((uint64_t)L.grid[0] * L.grid[1]))};
    err->block[0] = idx.x, err->block[1] = idx.y, err->block[2] = idx.z;
    if (!prepare_shared(w, L.shared_bytes)) {
        err->kind = ERR_RESOURCE;
        snprintf(err->msg, sizeof err->msg, "could not allocate %u bytes of shared memory", L.shared_bytes);
        return 1;
    }
    t_block = BlockPublic{idx, {L.block[0], L.block[1], L.block[2]}, {L.grid[0], L.grid[1], L.grid[2]}, w.shared};
    w.threads.resize(n);
    w.queue.resize(n);
    w.q_head = w.q_len = 0;
    uint32_t warps = (n + 31) / 32;
    w.lanes_waiting.assign(warps, 0), w.lanes_in_tc.assign(warps, 0), w.lanes_exited.assign(warps, 0);
    w.lanes_at_barrier.assign(warps, 0), w.tc_site.resize(warps);
    for (uint32_t i = 0; i < n; i++) {
        ThreadState& t = w.threads[i];
        t.tid = uint3{i % bx, i / bx % by, i / (bx * by)};
        t.linear = i, t.lane = i % 32, t.warp = i / 32;
        t.fiber = nullptr;
        t.bar_file = "", t.bar_line = 0;
        t.w_file = nullptr, t.w_line = 0, t.w_ptr = nullptr;
        t.copies.clear();
        t.groups = 0;
        w.push(&t);
        t.state = T_NOT_STARTED;
    }
    w.nthreads = n, w.exited = 0, w.at_barrier = 0, w.failed = false, w.cur = nullptr;
    w.rng = splitmix(L.seed ^ splitmix(linear)) | 1;
    tc_block_start(w, L.shared_bytes);
    w.err = err;
    if (sigsetjmp(w.recover_jb, 0) != 0) { // a memory fault in this block
        w.failed = true;
        err->kind = in_fiber_guard(w, w.fault_addr) ? ERR_STACK : ERR_FAULT;
        err->addr = (uint64_t)(uintptr_t)w.fault_addr;
        err->is_write = w.fault_write;
        if (w.cur) {
            err->has_thread = 1;
            err->thread[0] = w.cur->tid.x, err->thread[1] = w.cur->tid.y, err->thread[2] = w.cur->tid.z;
        }
        if (err->kind == ERR_STACK)
            snprintf(err->msg, sizeof err->msg, "fiber stack overflow (stacks are %zu KiB)", fiber_stack_bytes() / 1024);
    } else {
        w.in_kernel = 1;
        schedule(w);
        w.in_kernel = 0;
    }
    t_thread = nullptr;
    if (w.failed) {
        w.reset_pool(); // fibers are stuck mid-kernel
        return 1;
    }
    return 0;
}

} // namespace emu

using namespace emu;

// Runs blocks [begin, end) (linear, x fastest) of a launch on the calling OS thread. Returns 0, or
// 1 with *err filled in.
extern "C" int bitgrad_emu_run_blocks(const LaunchDesc* launch, uint64_t begin, uint64_t end, EmuErr* err) {
    memset(err, 0, sizeof *err);
    err->is_write = -1;
    Worker& w = worker();
    if (w.busy) { // cannot happen from Rust (kernels never call back), but must not corrupt state
        err->kind = ERR_RESOURCE;
        snprintf(err->msg, sizeof err->msg, "re-entrant launch on one OS thread");
        return 1;
    }
    install_fault_handler();
    ensure_altstack(w);
    w.busy = true;
    w.launch = launch;
    t_fault_worker = &w;
    int rc = 0;
    for (uint64_t b = begin; b < end && rc == 0; b++) rc = run_block(w, b, err);
    t_fault_worker = nullptr;
    w.busy = false;
    return rc;
}

// The kernel table entry for `name`, or null.
extern "C" const KernelEntry* bitgrad_emu_find(const char* name, size_t len) {
    static const std::unordered_map<std::string, const KernelEntry*> map = [] {
        std::unordered_map<std::string, const KernelEntry*> m;
        for (size_t t = 0; t < bitgrad_emu_table_count; t++) {
            const KernelTable* tab = bitgrad_emu_tables[t];
            for (size_t i = 0; i < tab->count; i++) m.emplace(tab->entries[i].name, &tab->entries[i]);
        }
        return m;
    }();
    auto it = map.find(std::string(name, len));
    return it == map.end() ? nullptr : it->second;
}
