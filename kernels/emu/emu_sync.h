// emu_sync.h — barriers, warp shuffles and votes, atomics and fences.
//
// Barriers and warp ops call into the runtime (which switches fibers); the empty asm with a memory
// clobber additionally stops the compiler from keeping shared-memory values in registers across
// them. Atomics are real hardware atomics (blocks run on several OS threads at once), relaxed like
// CUDA's.
#pragma once

// The call site identifies the barrier: every thread of a block must wait at the same one.
#define EMU_BARRIER(pred) (__extension__({                                 \
    asm volatile("" ::: "memory");                                          \
    int emu_barrier_count_ = ::emu::block_barrier(__FILE__, __LINE__, (pred)); \
    asm volatile("" ::: "memory");                                          \
    emu_barrier_count_;                                                     \
}))
#define __syncthreads() ((void)EMU_BARRIER(1))
#define __syncthreads_count(pred) EMU_BARRIER((pred) ? 1 : 0)
#define __syncthreads_and(pred) (EMU_BARRIER((pred) ? 1 : 0) == (int)(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(pred) (EMU_BARRIER((pred) ? 1 : 0) != 0)

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- warp operations ------------------------------------------------------------------------
namespace emu {
inline unsigned long long warp_call(int kind, unsigned mask, unsigned long long v, int arg, int width) {
    asm volatile("" ::: "memory");
    unsigned long long r = warp_op(kind, mask, v, arg, width);
    asm volatile("" ::: "memory");
    return r;
}
template <class T>
inline unsigned long long to_bits(T v) {
    unsigned long long b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(unsigned long long b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
} // namespace emu

inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_call(::emu::WARP_SYNC, mask, 0, 0, 32); }
inline unsigned __activemask() { return ::emu::active_mask(); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)::emu::warp_call(::emu::VOTE_BALLOT, mask, pred != 0, 0, 32);
}
inline int __any_sync(unsigned mask, int pred) { return (int)::emu::warp_call(::emu::VOTE_ANY, mask, pred != 0, 0, 32); }
inline int __all_sync(unsigned mask, int pred) { return (int)::emu::warp_call(::emu::VOTE_ALL, mask, pred != 0, 0, 32); }

// The shuffles, for exactly the types CUDA overloads them for.
#define EMU_SHFL(T)                                                                                     \
    inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {                           \
        return ::emu::from_bits<T>(::emu::warp_call(::emu::SHFL_IDX, mask, ::emu::to_bits(v), src, width));   \
    }                                                                                                   \
    inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {                 \
        return ::emu::from_bits<T>(::emu::warp_call(::emu::SHFL_UP, mask, ::emu::to_bits(v), (int)delta, width)); \
    }                                                                                                   \
    inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {               \
        return ::emu::from_bits<T>(::emu::warp_call(::emu::SHFL_DOWN, mask, ::emu::to_bits(v), (int)delta, width)); \
    }                                                                                                   \
    inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {                 \
        return ::emu::from_bits<T>(::emu::warp_call(::emu::SHFL_XOR, mask, ::emu::to_bits(v), lane_mask, width)); \
    }
EMU_SHFL(int)
EMU_SHFL(unsigned int)
EMU_SHFL(long)
EMU_SHFL(unsigned long)
EMU_SHFL(long long)
EMU_SHFL(unsigned long long)
EMU_SHFL(float)
EMU_SHFL(double)
EMU_SHFL(__half)
EMU_SHFL(__nv_bfloat16)
EMU_SHFL(__half2)
EMU_SHFL(__nv_bfloat162)
#undef EMU_SHFL

// ---- atomics (global and shared memory alike) -----------------------------------------------
#define EMU_ATOMIC_INT(T)                                                                                      \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }                       \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }                       \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }                       \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }                         \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }                       \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }                     \
    inline T atomicCAS(T* p, T cmp, T v) {                                                                     \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                    \
        return cmp; /* the old value either way */                                                             \
    }                                                                                                          \
    inline T atomicMax(T* p, T v) {                                                                            \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                          \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
        }                                                                                                      \
        return old;                                                                                            \
    }                                                                                                          \
    inline T atomicMin(T* p, T v) {                                                                            \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                          \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
        }                                                                                                      \
        return old;                                                                                            \
    }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC_INT(unsigned long long)
#undef EMU_ATOMIC_INT
inline long long atomicMax(long long* p, long long v) {
    long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline long long atomicMin(long long* p, long long v) {
    long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

// Floating-point read-modify-write through a compare-and-swap on the bits.
namespace emu {
template <class F, class U, class Op>
inline F atomic_float_rmw(F* p, F v, Op op) {
    U* q = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(q, __ATOMIC_RELAXED);
    for (;;) {
        U next = to_bits(op(from_bits<F>(old), v));
        if (__atomic_compare_exchange_n(q, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return from_bits<F>(old);
    }
}
} // namespace emu
inline float atomicAdd(float* p, float v) {
    return ::emu::atomic_float_rmw<float, unsigned>(p, v, [](float a, float b) { return a + b; });
}
inline double atomicAdd(double* p, double v) {
    return ::emu::atomic_float_rmw<double, unsigned long long>(p, v, [](double a, double b) { return a + b; });
}
inline float atomicExch(float* p, float v) {
    return ::emu::from_bits<float>(__atomic_exchange_n(reinterpret_cast<unsigned*>(p), (unsigned)::emu::to_bits(v), __ATOMIC_RELAXED));
}
