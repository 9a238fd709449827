// index.cu — index_select / gather (a "take" by storage offsets) and their adjoints (an
// atomic scatter-add by offsets).
//
// The host validates the indices (an out-of-range index is an error there, never a wild read
// here) and turns them into storage offsets, so one kernel serves both ops. The scatter-add uses
// atomicAdd: with repeated indices the order of the additions, and so the last bits of an f32
// result, can vary from run to run (the CPU twin is sequential and exact to its order).
#include "common.cuh"

#define BG_TAKE_KERNEL(SUF, T)                                                                            \
    extern "C" __global__ void take_##SUF(long long n, const T* __restrict__ src,                        \
                                          const long long* __restrict__ offs, T* __restrict__ out) {      \
        BG_FOR_EACH(i, n) { out[i] = src[offs[i]]; }                                                      \
    }

BG_TAKE_KERNEL(b1, unsigned char)
BG_TAKE_KERNEL(b2, unsigned short)
BG_TAKE_KERNEL(b4, unsigned int)
BG_TAKE_KERNEL(b8, unsigned long long)

// out[offs[i]] += g[i] for i over g's elements (row-major through the layout `lg`).
#define BG_SCATTER_ADD_KERNEL(SUF, T)                                                                       \
    extern "C" __global__ void scatter_add_##SUF(long long n, const T* __restrict__ g, bg_layout lg,       \
                                                 const long long* __restrict__ offs, T* out) {              \
        BG_FOR_EACH(i, n) { atomicAdd(out + offs[i], g[bg_offset(lg, i)]); }                                \
    }

BG_SCATTER_ADD_KERNEL(f32, float)
BG_SCATTER_ADD_KERNEL(f64, double)
