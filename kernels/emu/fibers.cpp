// fibers.cpp — fiber stacks, the per-OS-thread worker, and the switching between CUDA threads.
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <memory>

namespace emu {

thread_local const ThreadPublic* t_thread = nullptr;
thread_local BlockPublic t_block = {};

// 128 KiB: room for kernels with sizeable local arrays; only touched pages cost memory.
static const size_t kStackBytes = 128 * 1024;
size_t fiber_stack_bytes() { return kStackBytes; }

static size_t page_size() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

Fiber* new_fiber() {
    size_t len = kStackBytes + page_size();
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    // The lowest page is the guard: stacks grow down, an overflow faults instead of corrupting.
    if (mprotect(m, page_size(), PROT_NONE) != 0) {
        munmap(m, len);
        return nullptr;
    }
    Fiber* f = new Fiber();
    f->has_ctx = false;
    f->map = (char*)m;
    f->map_len = len;
    f->thread = nullptr;
    return f;
}

void free_fiber_stack(Fiber* f) { munmap(f->map, f->map_len); }

bool in_fiber_guard(const Worker& w, const void* addr) {
    for (const Fiber* f : w.fibers) {
        if ((const char*)addr >= f->map && (const char*)addr < f->map + page_size()) return true;
    }
    return false;
}

Worker::~Worker() {
    for (Fiber* f : fibers) {
        free_fiber_stack(f);
        delete f;
    }
    free(shared);
    if (altstack) {
        stack_t ss = {};
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, nullptr);
        free(altstack);
    }
}

static thread_local std::unique_ptr<Worker> t_worker_owner;
static thread_local Worker* t_worker = nullptr;

Worker& worker() {
    if (!t_worker) {
        t_worker_owner.reset(new Worker());
        t_worker = t_worker_owner.get();
    }
    return *t_worker;
}

// ---- run queue ------------------------------------------------------------------------------

void Worker::push(ThreadState* t) {
    t->state = T_RUNNABLE;
    // Every way out of a warp op, collective or barrier goes through here (or ends the block).
    uint32_t bit = ~(1u << t->lane);
    lanes_waiting[t->warp] &= bit, lanes_in_tc[t->warp] &= bit, lanes_at_barrier[t->warp] &= bit;
    queue[(q_head + q_len) % queue.size()] = t;
    q_len++;
}

ThreadState* Worker::pop() {
    if (q_len == 0 || failed) return nullptr;
    if (launch->shuffle && q_len > 1) { // swap a random runnable thread to the front
        rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27; // xorshift64*
        size_t pick = (size_t)((rng * 0x2545F4914F6CDD1Dull) >> 33) % q_len;
        size_t a = q_head, b = (q_head + pick) % queue.size();
        ThreadState* tmp = queue[a];
        queue[a] = queue[b];
        queue[b] = tmp;
    }
    ThreadState* t = queue[q_head];
    q_head = (q_head + 1) % queue.size();
    q_len--;
    return t;
}

// ---- switching ------------------------------------------------------------------------------

Fiber* Worker::take_fiber() {
    if (!free_fibers.empty()) {
        Fiber* f = free_fibers.back();
        free_fibers.pop_back();
        return f;
    }
    Fiber* f = new_fiber();
    if (f) fibers.push_back(f);
    return f;
}

static void activate(Worker& w, ThreadState* t) {
    t->state = T_RUNNING;
    w.cur = t;
    t_thread = t;
}

void Worker::enter(ThreadState* t) {
    if (!t->fiber) {
        Fiber* f = take_fiber();
        if (!f) fail(ERR_RESOURCE, "could not map a %zu KiB fiber stack", kStackBytes / 1024);
        f->thread = t;
        t->fiber = f;
    }
    activate(*this, t);
    Fiber* f = t->fiber;
    if (f->has_ctx) _longjmp(f->jb, 1);
    start_fiber(f);
}

void Worker::resume_next() {
    ThreadState* t = pop();
    if (!t) _longjmp(sched_jb, 1); // nothing runnable: the block runner decides what happens next
    enter(t);
}

void Worker::park() {
    Fiber* f = cur->fiber;
    f->has_ctx = true;
    if (_setjmp(f->jb) == 0) resume_next();
    // Resumed by enter(), which made this thread current again.
}

void Worker::fail(int kind, const char* fmt, ...) {
    if (!failed) {
        failed = true;
        err->kind = kind;
        if (cur) {
            err->has_thread = 1;
            err->thread[0] = cur->tid.x, err->thread[1] = cur->tid.y, err->thread[2] = cur->tid.z;
        }
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    _longjmp(sched_jb, 1);
}

// After an error the fibers are stuck mid-kernel: forget their contexts, reuse their stacks.
void Worker::reset_pool() {
    free_fibers.clear();
    for (Fiber* f : fibers) {
        f->has_ctx = false;
        f->thread = nullptr;
        free_fibers.push_back(f);
    }
    pool_dirty = false;
}

// Every fiber runs this loop: run the bound CUDA thread to completion, then the next one.
static void fiber_main() {
    Worker& w = worker();
    Fiber* self = w.cur->fiber;
    for (;;) {
        ThreadState* t = self->thread;
        w.launch->kernel->tramp(w.launch->args);
        t->state = T_EXITED;
        w.lanes_exited[t->warp] |= 1u << t->lane;
        tc_thread_exited(w, t);
        t->fiber = nullptr;
        self->thread = nullptr;
        w.exited++;
        ThreadState* next = w.pop();
        if (next && !next->fiber) { // a fresh thread: run it right here, no switch
            self->thread = next;
            next->fiber = self;
            activate(w, next);
            continue;
        }
        w.free_fibers.push_back(self);
        self->has_ctx = true;
        if (_setjmp(self->jb) == 0) {
            if (next) w.enter(next);
            _longjmp(w.sched_jb, 1);
        }
        // Resumed by enter() with a new thread bound to this fiber.
    }
}

void start_fiber(Fiber* f) {
    ucontext_t uc;
    getcontext(&uc);
    uc.uc_stack.ss_sp = f->map + page_size();
    uc.uc_stack.ss_size = f->map_len - page_size();
    uc.uc_link = nullptr;
    makecontext(&uc, fiber_main, 0);
    setcontext(&uc);
    abort(); // setcontext only returns on failure, which a valid context cannot produce
}

} // namespace emu
