// reduce.cu — sum, max/min and argmax/argmin over any set of axes.
//
// The host splits the input's axes into kept ones (`lo`, whose offset is the input's) and reduced
// ones (`lr`, offset 0): output element o reduces x[bg_offset(lo, o) + bg_offset(lr, j)] over
// j in [0, r). Two shapes of launch:
//   *_rows: one block per output, threads stride over j and meet in a block reduction — for long
//           reductions (r ≥ 128);
//   *_cols: one thread per output, looping over j — for many short reductions.
// Both use a fixed order, so results are deterministic run to run. Sums accumulate in f64 and are
// written as f64 (the host rounds once to the dtype, as the CPU does); max/min keep the first
// NaN, else the first extreme, exactly as the CPU's sequential scan.
#include "common.cuh"

// (value, index) of an extreme; `better(b, a)` says whether candidate b replaces a.
template <typename A> struct bg_ext {
    A v;
    long long i;  // -1: empty
};

template <typename A> __device__ __forceinline__ bool bg_better(const bg_ext<A>& b, const bg_ext<A>& a, int is_max) {
    if (b.i < 0) return false;
    if (a.i < 0) return true;
    bool an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) return bn && (!an || b.i < a.i);
    if (b.v == a.v) return b.i < a.i;
    return is_max ? b.v > a.v : b.v < a.v;
}

template <typename T>
__device__ void sum_rows(long long r, const T* __restrict__ x, const bg_layout& lo, const bg_layout& lr,
                         double* __restrict__ out) {
    __shared__ double scratch[32];
    long long o = blockIdx.x;
    long long base = bg_offset(lo, o);
    double acc = 0.0;
    for (long long j = threadIdx.x; j < r; j += blockDim.x) acc += (double)bg_load(x[base + bg_offset(lr, j)]);
    acc = bg_block_sum(acc, scratch);
    if (threadIdx.x == 0) out[o] = acc;
}

template <typename T>
__device__ void sum_cols(long long n_out, long long r, const T* __restrict__ x, const bg_layout& lo,
                         const bg_layout& lr, double* __restrict__ out) {
    BG_FOR_EACH(o, n_out) {
        long long base = bg_offset(lo, o);
        double acc = 0.0;
        for (long long j = 0; j < r; ++j) acc += (double)bg_load(x[base + bg_offset(lr, j)]);
        out[o] = acc;
    }
}

template <typename T>
__device__ void ext_rows(long long r, int is_max, const T* __restrict__ x, const bg_layout& lo, const bg_layout& lr,
                         T* __restrict__ val, long long* __restrict__ idx) {
    typedef typename bg_acc<T>::type A;
    __shared__ A sv[1024];
    __shared__ long long si[1024];
    long long o = blockIdx.x;
    long long base = bg_offset(lo, o);
    bg_ext<A> best = {A(0), -1};
    for (long long j = threadIdx.x; j < r; j += blockDim.x) {
        bg_ext<A> c = {bg_load(x[base + bg_offset(lr, j)]), j};
        if (bg_better(c, best, is_max)) best = c;
    }
    sv[threadIdx.x] = best.v;
    si[threadIdx.x] = best.i;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            bg_ext<A> a = {sv[threadIdx.x], si[threadIdx.x]}, b = {sv[threadIdx.x + s], si[threadIdx.x + s]};
            if (bg_better(b, a, is_max)) {
                sv[threadIdx.x] = b.v;
                si[threadIdx.x] = b.i;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (val) val[o] = x[base + bg_offset(lr, si[0])];
        if (idx) idx[o] = si[0];
    }
}

template <typename T>
__device__ void ext_cols(long long n_out, long long r, int is_max, const T* __restrict__ x, const bg_layout& lo,
                         const bg_layout& lr, T* __restrict__ val, long long* __restrict__ idx) {
    typedef typename bg_acc<T>::type A;
    BG_FOR_EACH(o, n_out) {
        long long base = bg_offset(lo, o);
        bg_ext<A> best = {A(0), -1};
        for (long long j = 0; j < r; ++j) {
            bg_ext<A> c = {bg_load(x[base + bg_offset(lr, j)]), j};
            if (bg_better(c, best, is_max)) best = c;
        }
        if (val) val[o] = x[base + bg_offset(lr, best.i)];
        if (idx) idx[o] = best.i;
    }
}

// Integer sums: exact in i64 (wrapping, as the CPU's).
extern "C" __global__ void reduce_isum_rows_i64(long long r, const long long* x, bg_layout lo, bg_layout lr,
                                                long long* out) {
    __shared__ unsigned long long scratch[32];
    long long o = blockIdx.x;
    long long base = bg_offset(lo, o);
    unsigned long long acc = 0;
    for (long long j = threadIdx.x; j < r; j += blockDim.x) acc += (unsigned long long)x[base + bg_offset(lr, j)];
    acc = bg_block_sum(acc, scratch);
    if (threadIdx.x == 0) out[o] = (long long)acc;
}

extern "C" __global__ void reduce_isum_cols_i64(long long n_out, long long r, const long long* x, bg_layout lo,
                                                bg_layout lr, long long* out) {
    BG_FOR_EACH(o, n_out) {
        long long base = bg_offset(lo, o);
        unsigned long long acc = 0;
        for (long long j = 0; j < r; ++j) acc += (unsigned long long)x[base + bg_offset(lr, j)];
        out[o] = (long long)acc;
    }
}

// Block size for *_rows must be a power of two between 32 and 1024.
#define BG_REDUCE_KERNELS(SUF, T)                                                                             \
    extern "C" __global__ void reduce_sum_rows_##SUF(long long r, const T* x, bg_layout lo, bg_layout lr,     \
                                                     double* out) {                                           \
        sum_rows<T>(r, x, lo, lr, out);                                                                       \
    }                                                                                                         \
    extern "C" __global__ void reduce_sum_cols_##SUF(long long n_out, long long r, const T* x, bg_layout lo,  \
                                                     bg_layout lr, double* out) {                             \
        sum_cols<T>(n_out, r, x, lo, lr, out);                                                                \
    }                                                                                                         \
    extern "C" __global__ void reduce_ext_rows_##SUF(long long r, int is_max, const T* x, bg_layout lo,       \
                                                     bg_layout lr, T* val, long long* idx) {                  \
        ext_rows<T>(r, is_max, x, lo, lr, val, idx);                                                          \
    }                                                                                                         \
    extern "C" __global__ void reduce_ext_cols_##SUF(long long n_out, long long r, int is_max, const T* x,    \
                                                     bg_layout lo, bg_layout lr, T* val, long long* idx) {    \
        ext_cols<T>(n_out, r, is_max, x, lo, lr, val, idx);                                                   \
    }

BG_REDUCE_KERNELS(f32, float)
BG_REDUCE_KERNELS(f64, double)
BG_REDUCE_KERNELS(f16, __half)
BG_REDUCE_KERNELS(bf16, __nv_bfloat16)

// Integer max/min and their positions (the sums above are float-only; i64 sums are exact below).
extern "C" __global__ void reduce_ext_rows_i64(long long r, int is_max, const long long* x, bg_layout lo, bg_layout lr,
                                               long long* val, long long* idx) {
    ext_rows<long long>(r, is_max, x, lo, lr, val, idx);
}
extern "C" __global__ void reduce_ext_cols_i64(long long n_out, long long r, int is_max, const long long* x,
                                               bg_layout lo, bg_layout lr, long long* val, long long* idx) {
    ext_cols<long long>(n_out, r, is_max, x, lo, lr, val, idx);
}
