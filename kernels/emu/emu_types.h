// emu_types.h — CUDA's built-in vector types (uint3, dim3, float4, …) with CUDA's alignments.
#pragma once

// Vector types: the alignment matters, kernels use float4/int4 loads that assume 16 bytes.
#define EMU_VEC1(T, N, A)                                                                       \
    struct __attribute__((aligned(A))) N##1 { T x; };                                           \
    static inline N##1 make_##N##1(T x) { return N##1{x}; }
#define EMU_VEC2(T, N, A)                                                                       \
    struct __attribute__((aligned(A))) N##2 { T x, y; };                                        \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define EMU_VEC3(T, N)                                                                          \
    struct N##3 { T x, y, z; };                                                                 \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define EMU_VEC4(T, N, A)                                                                       \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; };                                  \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
#define EMU_VECS(T, N, A1, A2, A4) EMU_VEC1(T, N, A1) EMU_VEC2(T, N, A2) EMU_VEC3(T, N) EMU_VEC4(T, N, A4)

EMU_VECS(signed char, char, 1, 2, 4)
EMU_VECS(unsigned char, uchar, 1, 2, 4)
EMU_VECS(short, short, 2, 4, 8)
EMU_VECS(unsigned short, ushort, 2, 4, 8)
EMU_VECS(int, int, 4, 8, 16)
EMU_VECS(unsigned int, uint, 4, 8, 16)
EMU_VECS(long long, longlong, 8, 16, 16)
EMU_VECS(unsigned long long, ulonglong, 8, 16, 16)
EMU_VECS(float, float, 4, 8, 16)
EMU_VECS(double, double, 8, 16, 16)

#undef EMU_VEC1
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4
#undef EMU_VECS

// dim3 converts to and from uint3 like CUDA's.
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// A variable in CUDA, a constant here (there is exactly one warp size).
static constexpr int warpSize = 32;
