// elementwise.cu — unary and binary maps, comparisons and `where`, for any strided (broadcast,
// permuted, sliced) inputs; the output is always contiguous. The op is a runtime code (uniform
// across the grid, so no divergence) to keep the kernel count small; codes mirror the engine's
// UnaryOp / BinaryOp / CmpOp order (engine/src/gpu/prims/elementwise.rs).
//
// Roofline: one read per input and one write per output element; nothing to reuse. The
// contiguous f32 case has float4 variants (16-byte loads) for the bulk of the elements.
#include "common.cuh"

// Integer and byte "loads" for comparisons: compared as stored. Declared before the templates
// that call them (fundamental types have no argument-dependent lookup).
__device__ __forceinline__ long long bg_load(long long x) { return x; }
__device__ __forceinline__ unsigned char bg_load(unsigned char x) { return x; }

// Unary codes: 0 neg, 1 exp, 2 log, 3 sqrt, 4 rsqrt, 5 recip, 6 sqr, 7 relu, 8 sigmoid, 9 tanh,
// 10 abs, 11 sign, 12 step, 13 powf(p0), 14 affine(x * p0 + p1).
template <typename A> __device__ __forceinline__ A bg_unary(int op, A x, A p0, A p1) {
    const A zero = A(0), one = A(1);
    switch (op) {
        case 0: return -x;
        case 1: return bg_exp(x);
        case 2: return bg_log(x);
        case 3: return bg_sqrt(x);
        case 4: return one / bg_sqrt(x);  // as the CPU computes it (not the approximate rsqrt)
        case 5: return one / x;
        case 6: return x * x;
        case 7: return x > zero ? x : zero;
        case 8: return one / (one + bg_exp(-x));
        case 9: return bg_tanh(x);
        case 10: return bg_abs(x);
        case 11: return x > zero ? one : (x < zero ? -one : zero);
        case 12: return x > zero ? one : zero;
        case 13: return bg_pow(x, p0);
        default: return x * p0 + p1;
    }
}

// Binary codes: 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum (NaN propagates from either).
template <typename A> __device__ __forceinline__ A bg_binary(int op, A x, A y) {
    switch (op) {
        case 0: return x + y;
        case 1: return x - y;
        case 2: return x * y;
        case 3: return x / y;
        case 4: return (x != x || x > y) ? x : y;
        default: return (x != x || x < y) ? x : y;
    }
}

// Comparison codes: 0 eq, 1 ne, 2 lt, 3 le, 4 gt, 5 ge.
template <typename A> __device__ __forceinline__ unsigned char bg_compare(int op, A x, A y) {
    switch (op) {
        case 0: return x == y;
        case 1: return x != y;
        case 2: return x < y;
        case 3: return x <= y;
        case 4: return x > y;
        default: return x >= y;
    }
}

template <typename T>
__device__ void unary_impl(long long n, int op, double p0, double p1, const T* __restrict__ x, const bg_layout& lx,
                           T* __restrict__ y) {
    typedef typename bg_acc<T>::type A;
    const A q0 = (A)p0, q1 = (A)p1;
    BG_FOR_EACH(i, n) { y[i] = bg_store<T>(bg_unary<A>(op, bg_load(x[bg_offset(lx, i)]), q0, q1)); }
}

template <typename T>
__device__ void binary_impl(long long n, int op, const T* __restrict__ a, const bg_layout& la,
                            const T* __restrict__ b, const bg_layout& lb, T* __restrict__ out) {
    typedef typename bg_acc<T>::type A;
    BG_FOR_EACH(i, n) {
        out[i] = bg_store<T>(bg_binary<A>(op, bg_load(a[bg_offset(la, i)]), bg_load(b[bg_offset(lb, i)])));
    }
}

template <typename T>
__device__ void compare_impl(long long n, int op, const T* __restrict__ a, const bg_layout& la,
                             const T* __restrict__ b, const bg_layout& lb, unsigned char* __restrict__ out) {
    BG_FOR_EACH(i, n) { out[i] = bg_compare(op, bg_load(a[bg_offset(la, i)]), bg_load(b[bg_offset(lb, i)])); }
}

#define BG_FLOAT_KERNELS(SUF, T)                                                                                 \
    extern "C" __global__ void unary_##SUF(long long n, int op, double p0, double p1, const T* x, bg_layout lx,  \
                                           T* y) {                                                               \
        unary_impl<T>(n, op, p0, p1, x, lx, y);                                                                  \
    }                                                                                                            \
    extern "C" __global__ void binary_##SUF(long long n, int op, const T* a, bg_layout la, const T* b,          \
                                            bg_layout lb, T* out) {                                              \
        binary_impl<T>(n, op, a, la, b, lb, out);                                                                \
    }

BG_FLOAT_KERNELS(f32, float)
BG_FLOAT_KERNELS(f64, double)
BG_FLOAT_KERNELS(f16, __half)
BG_FLOAT_KERNELS(bf16, __nv_bfloat16)

#define BG_COMPARE_KERNEL(SUF, T)                                                                            \
    extern "C" __global__ void compare_##SUF(long long n, int op, const T* a, bg_layout la, const T* b,     \
                                             bg_layout lb, unsigned char* out) {                             \
        compare_impl<T>(n, op, a, la, b, lb, out);                                                           \
    }

BG_COMPARE_KERNEL(f32, float)
BG_COMPARE_KERNEL(f64, double)
BG_COMPARE_KERNEL(f16, __half)
BG_COMPARE_KERNEL(bf16, __nv_bfloat16)
BG_COMPARE_KERNEL(i64, long long)
BG_COMPARE_KERNEL(u8, unsigned char)

// Contiguous, 16-byte-aligned f32: four elements per load. `n4` counts float4s; the host runs
// the scalar kernel on the (< 4) remaining elements.
extern "C" __global__ void unary_vec4_f32(long long n4, int op, double p0, double p1, const float4* __restrict__ x,
                                          float4* __restrict__ y) {
    const float q0 = (float)p0, q1 = (float)p1;
    BG_FOR_EACH(i, n4) {
        float4 v = x[i];
        v.x = bg_unary<float>(op, v.x, q0, q1);
        v.y = bg_unary<float>(op, v.y, q0, q1);
        v.z = bg_unary<float>(op, v.z, q0, q1);
        v.w = bg_unary<float>(op, v.w, q0, q1);
        y[i] = v;
    }
}

extern "C" __global__ void binary_vec4_f32(long long n4, int op, const float4* __restrict__ a,
                                           const float4* __restrict__ b, float4* __restrict__ out) {
    BG_FOR_EACH(i, n4) {
        float4 u = a[i], v = b[i];
        u.x = bg_binary<float>(op, u.x, v.x);
        u.y = bg_binary<float>(op, u.y, v.y);
        u.z = bg_binary<float>(op, u.z, v.z);
        u.w = bg_binary<float>(op, u.w, v.w);
        out[i] = u;
    }
}

// `mask ? a : b`, by element size: the choice needs no arithmetic on the values.
#define BG_WHERE_KERNEL(SUF, T)                                                                               \
    extern "C" __global__ void where_##SUF(long long n, const unsigned char* mask, bg_layout lm, const T* a,  \
                                           bg_layout la, const T* b, bg_layout lb, T* out) {                  \
        BG_FOR_EACH(i, n) {                                                                                   \
            out[i] = mask[bg_offset(lm, i)] ? a[bg_offset(la, i)] : b[bg_offset(lb, i)];                      \
        }                                                                                                     \
    }

BG_WHERE_KERNEL(b1, unsigned char)
BG_WHERE_KERNEL(b2, unsigned short)
BG_WHERE_KERNEL(b4, unsigned int)
BG_WHERE_KERNEL(b8, unsigned long long)
