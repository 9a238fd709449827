// pad.cu — constant padding of the last two axes (pad2d) and its backward (the interior crop).
//
// Both kernels only move elements, so they are instantiated per element size (b1/b2/b4/b8), as
// copy.cu does: the same kernels serve every dtype. Input and output are contiguous
// [planes, h, w] and [planes, oh, ow]; one thread per output element (grid-stride).
#include "common.cuh"

// Output element i of the padded tensor: the input element it covers, or the fill value.
template <typename T>
__device__ void pad_fwd(long long n, long long h, long long w, long long top, long long left, long long oh,
                        long long ow, const T* __restrict__ x, T* __restrict__ y, T value) {
    BG_FOR_EACH(i, n) {
        long long j = i % ow, r = i / ow;
        long long k = r % oh, p = r / oh;
        long long xi = k - top, xj = j - left;
        y[i] = (xi >= 0 && xi < h && xj >= 0 && xj < w) ? x[(p * h + xi) * w + xj] : value;
    }
}

// Input-gradient element i: the output-gradient element at the same position of the interior.
template <typename T>
__device__ void pad_crop(long long n, long long h, long long w, long long top, long long left, long long oh,
                         long long ow, const T* __restrict__ g, T* __restrict__ gx) {
    BG_FOR_EACH(i, n) {
        long long j = i % w, r = i / w;
        long long k = r % h, p = r / h;
        gx[i] = g[(p * oh + k + top) * ow + j + left];
    }
}

// `value` arrives as the dtype's bit pattern in the low bytes of a 64-bit word (little-endian):
// the conversion to the unsigned element type keeps exactly those bytes.
#define BG_PAD_KERNELS(SUF, T)                                                                              \
    extern "C" __global__ void pad2d_##SUF(long long n, long long h, long long w, long long top,            \
                                           long long left, long long oh, long long ow, const T* x, T* y,    \
                                           unsigned long long value) {                                      \
        pad_fwd<T>(n, h, w, top, left, oh, ow, x, y, (T)value);                                             \
    }                                                                                                       \
    extern "C" __global__ void pad2d_crop_##SUF(long long n, long long h, long long w, long long top,       \
                                                long long left, long long oh, long long ow, const T* g,     \
                                                T* gx) {                                                    \
        pad_crop<T>(n, h, w, top, left, oh, ow, g, gx);                                                     \
    }

BG_PAD_KERNELS(b1, unsigned char)
BG_PAD_KERNELS(b2, unsigned short)
BG_PAD_KERNELS(b4, unsigned int)
BG_PAD_KERNELS(b8, unsigned long long)
