// emu_half.h — __half and __nv_bfloat16: 16-bit storage types whose conversions round to nearest
// even exactly like the Rust `half` crate (f16::from_f32 / bf16::from_f32 and back), NaN, Inf and
// subnormals included. Arithmetic converts to float, computes, and rounds back: for a single
// + - * / that equals the correctly rounded 16-bit result (float has more than 2p+2 bits).
//
// Only what is defined here exists; other cuda_fp16.h functions (hexp, __hadd2, …) fail to
// compile rather than behave differently.
#pragma once

namespace emu {

inline unsigned f32_bits(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float bits_f32(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// The `half` crate's f32_to_f16_fallback, bit for bit.
inline unsigned short f32_to_f16(float value) {
    unsigned x = f32_bits(value);
    unsigned sign = x & 0x80000000u, exp = x & 0x7F800000u, man = x & 0x007FFFFFu;
    if (exp == 0x7F800000u) { // Inf or NaN: NaN keeps its top payload bits and becomes quiet
        unsigned nan_bit = man == 0 ? 0 : 0x0200u;
        return (unsigned short)((sign >> 16) | 0x7C00u | nan_bit | (man >> 13));
    }
    unsigned half_sign = sign >> 16;
    int half_exp = (int)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1F) return (unsigned short)(half_sign | 0x7C00u); // overflow to Inf
    if (half_exp <= 0) {                                                  // subnormal or zero
        if (14 - half_exp > 24) return (unsigned short)half_sign;
        unsigned m = man | 0x00800000u;
        unsigned half_man = m >> (14 - half_exp);
        unsigned round_bit = 1u << (13 - half_exp);
        if ((m & round_bit) != 0 && (m & (3 * round_bit - 1)) != 0) half_man += 1;
        return (unsigned short)(half_sign | half_man);
    }
    unsigned bits = half_sign | ((unsigned)half_exp << 10) | (man >> 13);
    unsigned round_bit = 0x00001000u;
    if ((man & round_bit) != 0 && (man & (3 * round_bit - 1)) != 0) bits += 1; // may carry into Inf
    return (unsigned short)bits;
}

// The `half` crate's f16_to_f32_fallback: exact, NaN made quiet.
inline float f16_to_f32(unsigned short i) {
    if ((i & 0x7FFFu) == 0) return bits_f32((unsigned)i << 16);
    unsigned sign = (unsigned)(i & 0x8000u) << 16, exp = i & 0x7C00u, man = i & 0x03FFu;
    if (exp == 0x7C00u) return bits_f32(man == 0 ? (sign | 0x7F800000u) : (sign | 0x7FC00000u | (man << 13)));
    if (exp == 0) { // subnormal: normalise
        int e = __builtin_clz(man) - 22; // leading zeros of the 10-bit mantissa
        unsigned exp32 = (unsigned)(127 - 15 - e) << 23;
        unsigned man32 = (man << (14 + e)) & 0x7FFFFFu;
        return bits_f32(sign | exp32 | man32);
    }
    return bits_f32(sign | (((exp >> 10) + 127 - 15) << 23) | (man << 13));
}

// The `half` crate's bf16 conversions.
inline unsigned short f32_to_bf16(float value) {
    unsigned x = f32_bits(value);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((x >> 16) | 0x0040u);
    unsigned round_bit = 0x00008000u;
    if ((x & round_bit) != 0 && (x & (3 * round_bit - 1)) != 0) return (unsigned short)((x >> 16) + 1);
    return (unsigned short)(x >> 16);
}
inline float bf16_to_f32(unsigned short i) {
    if ((i & 0x7FFFu) > 0x7F80u) return bits_f32(((unsigned)i | 0x0040u) << 16);
    return bits_f32((unsigned)i << 16);
}

} // namespace emu

// One 16-bit float type: storage plus CUDA's implicit conversions and operators.
#define EMU_HALF_TYPE(H, TO16, TO32)                                                             \
    struct H {                                                                                  \
        unsigned short __x;                                                                     \
        H() = default; /* trivial, so it can live in __shared__ arrays */                       \
        H(float f) : __x(::emu::TO16(f)) {}                                                     \
        H(double f) : __x(::emu::TO16((float)f)) {}                                             \
        operator float() const { return ::emu::TO32(__x); }                                     \
    };                                                                                          \
    inline H operator+(H a, H b) { return H((float)a + (float)b); }                             \
    inline H operator-(H a, H b) { return H((float)a - (float)b); }                             \
    inline H operator*(H a, H b) { return H((float)a * (float)b); }                             \
    inline H operator/(H a, H b) { return H((float)a / (float)b); }                             \
    inline H operator-(H a) { H r; r.__x = (unsigned short)(a.__x ^ 0x8000u); return r; }       \
    inline H& operator+=(H& a, H b) { return a = a + b; }                                       \
    inline H& operator-=(H& a, H b) { return a = a - b; }                                       \
    inline H& operator*=(H& a, H b) { return a = a * b; }                                       \
    inline H& operator/=(H& a, H b) { return a = a / b; }                                       \
    inline bool operator==(H a, H b) { return (float)a == (float)b; }                           \
    inline bool operator!=(H a, H b) { return (float)a != (float)b; }                           \
    inline bool operator<(H a, H b) { return (float)a < (float)b; }                             \
    inline bool operator<=(H a, H b) { return (float)a <= (float)b; }                           \
    inline bool operator>(H a, H b) { return (float)a > (float)b; }                             \
    inline bool operator>=(H a, H b) { return (float)a >= (float)b; }

EMU_HALF_TYPE(__half, f32_to_f16, f16_to_f32)
EMU_HALF_TYPE(__nv_bfloat16, f32_to_bf16, bf16_to_f32)
#undef EMU_HALF_TYPE

static_assert(sizeof(__half) == 2 && std::is_trivially_copyable<__half>::value, "__half must be 2 plain bytes");
static_assert(sizeof(__nv_bfloat16) == 2, "__nv_bfloat16 must be 2 bytes");

struct __attribute__((aligned(4))) __half2 { __half x, y; };
struct __attribute__((aligned(4))) __nv_bfloat162 { __nv_bfloat16 x, y; };

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return (float)h; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }
inline float2 __half22float2(__half2 h) { return float2{(float)h.x, (float)h.y}; }
inline float __low2float(__half2 h) { return (float)h.x; }
inline float __high2float(__half2 h) { return (float)h.y; }

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return (float)h; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{(float)h.x, (float)h.y}; }
inline float __low2float(__nv_bfloat162 h) { return (float)h.x; }
inline float __high2float(__nv_bfloat162 h) { return (float)h.y; }
