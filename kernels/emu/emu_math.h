// emu_math.h — CUDA's device math beyond <math.h>: intrinsics (mapped to the exact libm/IEEE
// operation: the emulator is at least as accurate as the GPU), min/max overloads, bit casts, __ldg.
#pragma once

// rsqrt has no libm counterpart.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

// Fast-math intrinsics: the GPU's are approximations; the exact operation is a valid stand-in.
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; } // NaN -> 0

// min/max as CUDA's device code has them: one overload per type, no mixed-type ones (those are
// ambiguous here and fail to compile, instead of silently picking a conversion).
#define EMU_MINMAX(T)                                \
    inline T min(T a, T b) { return a < b ? a : b; } \
    inline T max(T a, T b) { return a > b ? a : b; }
EMU_MINMAX(int)
EMU_MINMAX(unsigned int)
EMU_MINMAX(long long)
EMU_MINMAX(unsigned long long)
#undef EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Bit casts.
template <class To, class From>
inline To emu_bit_cast(From f) {
    static_assert(sizeof(To) == sizeof(From), "bit cast between different sizes");
    To t;
    memcpy(&t, &f, sizeof(To));
    return t;
}
inline float __int_as_float(int x) { return emu_bit_cast<float>(x); }
inline int __float_as_int(float x) { return emu_bit_cast<int>(x); }
inline float __uint_as_float(unsigned int x) { return emu_bit_cast<float>(x); }
inline unsigned int __float_as_uint(float x) { return emu_bit_cast<unsigned int>(x); }
inline double __longlong_as_double(long long x) { return emu_bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return emu_bit_cast<long long>(x); }

// Integer intrinsics.
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }

// Read-only cache load: a plain load on the CPU.
template <class T>
inline T __ldg(const T* p) { return *p; }
