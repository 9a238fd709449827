// dropout.cu — inverted dropout with the engine's counter-based mask (ops/src/dropout).
//
// Element i is kept when uniform(seed, offset + i) ≥ p, uniform being engine/src/rng.rs's
// SplitMix64-based draw (the same integer mixing as random.cu, repeated here because every .cu is
// compiled on its own). Only integer arithmetic and one exact int→f64 conversion decide the mask,
// so it is bit-identical to the CPU's on every device. Kept elements are multiplied by
// scale = 1 / (1 − p) (rounded to the dtype on the host side's rule), dropped ones by 0 (so NaN
// inputs give NaN, as on the CPU). Used for the forward (x → y) and the backward (g → gx).
#include "common.cuh"

__device__ __forceinline__ unsigned long long bg_drop_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T>
__device__ void dropout_apply(long long n, unsigned long long seed, unsigned long long offset, double p, double scale,
                              const T* __restrict__ x, T* __restrict__ y) {
    const unsigned long long key = bg_drop_mix64(seed + 0x9E3779B97F4A7C15ull);
    const T keep_scale = (T)scale;
    BG_FOR_EACH(i, n) {
        unsigned long long bits = bg_drop_mix64(key ^ ((offset + (unsigned long long)i) * 0xD6E8FEB86659FD93ull));
        double u = (double)(bits >> 11) * (1.0 / 9007199254740992.0);
        y[i] = x[i] * (u >= p ? keep_scale : T(0));
    }
}

#define BG_DROPOUT_KERNEL(SUF, T)                                                                            \
    extern "C" __global__ void dropout_##SUF(long long n, unsigned long long seed, unsigned long long offset, \
                                             double p, double scale, const T* x, T* y) {                     \
        dropout_apply<T>(n, seed, offset, p, scale, x, y);                                                   \
    }

BG_DROPOUT_KERNEL(f32, float)
BG_DROPOUT_KERNEL(f64, double)
