// copy.cu — strided copies (contiguous(), cat, narrow writes), dtype casts, fills, arange.
//
// Copies move bytes, so they are instantiated per element size, not per dtype. Casts go through
// f64, which holds every value of every dtype exactly, and round once to the target with the
// CPU's rules: round-to-nearest-even for floats (f64 → f16/bf16 directly, no double rounding),
// truncation with saturation for integers (NaN → 0), as Rust's `as` does.
#include "common.cuh"

#define BG_COPY_KERNEL(SUF, T)                                                                              \
    extern "C" __global__ void copy_##SUF(long long n, const T* __restrict__ src, bg_layout ls,            \
                                          T* __restrict__ dst, bg_layout ld) {                              \
        BG_FOR_EACH(i, n) { dst[bg_offset(ld, i)] = src[bg_offset(ls, i)]; }                                \
    }                                                                                                       \
    extern "C" __global__ void fill_##SUF(long long n, unsigned long long bits, T* __restrict__ dst) {      \
        const T v = (T)bits;                                                                                \
        BG_FOR_EACH(i, n) { dst[i] = v; }                                                                   \
    }

BG_COPY_KERNEL(b1, unsigned char)
BG_COPY_KERNEL(b2, unsigned short)
BG_COPY_KERNEL(b4, unsigned int)
BG_COPY_KERNEL(b8, unsigned long long)

// ---- exact conversions through f64 ---------------------------------------------------------

__device__ __forceinline__ double bg_f16_bits_to_f64(unsigned short h) {
    unsigned int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0) v = (double)m * 5.9604644775390625e-08;  // m · 2^-24 (subnormal)
    else if (e == 31) v = m ? __longlong_as_double(0x7ff8000000000000ll) : __longlong_as_double(0x7ff0000000000000ll);
    else v = __longlong_as_double(((long long)(e - 15 + 1023) << 52) | ((long long)m << 42));
    return sign ? -v : v;
}

__device__ __forceinline__ double bg_bf16_bits_to_f64(unsigned short h) {
    return (double)__uint_as_float((unsigned int)h << 16);
}

// Rounds the significand `sig` (with its implicit bit) right by `shift` bits, to nearest even.
__device__ __forceinline__ unsigned long long bg_round_shift(unsigned long long sig, int shift) {
    if (shift >= 64) return 0;
    unsigned long long q = sig >> shift, rem = sig & ((1ull << shift) - 1), half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return q;
}

// f64 → a 16-bit float with `mbits` mantissa bits and exponent bias `bias` (f16: 10, 15;
// bf16: 7, 127), round to nearest even, overflow to infinity, quiet NaN kept quiet.
__device__ __forceinline__ unsigned short bg_f64_to_small(double d, int mbits, int bias) {
    unsigned long long b = (unsigned long long)__double_as_longlong(d);
    unsigned short sign = (unsigned short)((b >> 48) & 0x8000);
    int ex = (int)((b >> 52) & 0x7ff);
    unsigned long long man = b & 0xfffffffffffffull;
    int ebits = 15 - mbits;
    unsigned short inf = (unsigned short)(((1u << ebits) - 1) << mbits);
    if (ex == 0x7ff) return man ? (unsigned short)(sign | inf | (1u << (mbits - 1)) | (man >> (52 - mbits))) : (unsigned short)(sign | inf);
    if (ex == 0) return sign;  // f64 subnormals are far below either format's range
    int e = ex - 1023;
    unsigned long long sig = man | (1ull << 52);
    if (e > bias) return sign | inf;
    if (e >= 1 - bias) {  // normal: the carry of the rounding may step into the exponent (or to inf)
        unsigned long long q = bg_round_shift(sig, 52 - mbits) - (1ull << mbits);
        return (unsigned short)(sign | (((unsigned long long)(e + bias) << mbits) + q));
    }
    // subnormal: units of 2^(1 - bias - mbits)
    int shift = 52 - (e - (1 - bias - mbits));
    return (unsigned short)(sign | bg_round_shift(sig, shift));
}

__device__ __forceinline__ double bg_to_f64(float x) { return (double)x; }
__device__ __forceinline__ double bg_to_f64(double x) { return x; }
__device__ __forceinline__ double bg_to_f64(long long x) { return (double)x; }
__device__ __forceinline__ double bg_to_f64(unsigned char x) { return (double)x; }

__device__ __forceinline__ long long bg_f64_to_i64(double d) {
    if (d != d) return 0;
    if (d >= 9.2233720368547758e18) return 0x7fffffffffffffffll;
    if (d <= -9.2233720368547758e18) return (long long)0x8000000000000000ull;
    return (long long)d;
}
__device__ __forceinline__ unsigned char bg_f64_to_u8(double d) {
    if (d != d || d <= 0.0) return 0;
    if (d >= 255.0) return 255;
    return (unsigned char)d;
}

// Half formats travel as their bits (unsigned short) through the cast kernels.
#define BG_CAST_FROM(FS, FT, READ)                                                                     \
    extern "C" __global__ void cast_##FS##_f32(long long n, const FT* s, bg_layout ls, float* d) {     \
        BG_FOR_EACH(i, n) { d[i] = (float)READ(s[bg_offset(ls, i)]); }                                 \
    }                                                                                                  \
    extern "C" __global__ void cast_##FS##_f64(long long n, const FT* s, bg_layout ls, double* d) {    \
        BG_FOR_EACH(i, n) { d[i] = READ(s[bg_offset(ls, i)]); }                                        \
    }                                                                                                  \
    extern "C" __global__ void cast_##FS##_f16(long long n, const FT* s, bg_layout ls,                 \
                                                unsigned short* d) {                                   \
        BG_FOR_EACH(i, n) { d[i] = bg_f64_to_small(READ(s[bg_offset(ls, i)]), 10, 15); }               \
    }                                                                                                  \
    extern "C" __global__ void cast_##FS##_bf16(long long n, const FT* s, bg_layout ls,                \
                                                 unsigned short* d) {                                  \
        BG_FOR_EACH(i, n) { d[i] = bg_f64_to_small(READ(s[bg_offset(ls, i)]), 7, 127); }               \
    }                                                                                                  \
    extern "C" __global__ void cast_##FS##_i64(long long n, const FT* s, bg_layout ls, long long* d) { \
        BG_FOR_EACH(i, n) { d[i] = bg_f64_to_i64(READ(s[bg_offset(ls, i)])); }                         \
    }                                                                                                  \
    extern "C" __global__ void cast_##FS##_u8(long long n, const FT* s, bg_layout ls,                  \
                                               unsigned char* d) {                                     \
        BG_FOR_EACH(i, n) { d[i] = bg_f64_to_u8(READ(s[bg_offset(ls, i)])); }                          \
    }

#define BG_READ_PLAIN(x) bg_to_f64(x)
#define BG_READ_F16(x) bg_f16_bits_to_f64(x)
#define BG_READ_BF16(x) bg_bf16_bits_to_f64(x)

BG_CAST_FROM(f32, float, BG_READ_PLAIN)
BG_CAST_FROM(f64, double, BG_READ_PLAIN)
BG_CAST_FROM(f16, unsigned short, BG_READ_F16)
BG_CAST_FROM(bf16, unsigned short, BG_READ_BF16)
BG_CAST_FROM(i64, long long, BG_READ_PLAIN)
BG_CAST_FROM(u8, unsigned char, BG_READ_PLAIN)

// start + i · step in f64 (the host casts to the requested dtype, as the CPU does).
extern "C" __global__ void arange_f64(long long n, double start, double step, double* __restrict__ out) {
    BG_FOR_EACH(i, n) { out[i] = start + (double)i * step; }
}
