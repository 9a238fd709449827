// random.cu — the engine's counter-based random numbers (engine/src/rng.rs) on the device.
//
// Element i of a draw is a pure function of (seed, offset + i): a SplitMix64 mix, then uniform
// (53 bits) or Box–Muller normal, in f64, exactly as the CPU computes it; the host casts to the
// tensor's dtype. On Emu the numbers are bit-identical to the CPU's. On a GPU, log/sqrt/cos of
// f64 may differ from the host's libm in the last bit before that cast (documented in
// docs/kernels.md).
#include "common.cuh"

__device__ __forceinline__ unsigned long long bg_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned long long bg_bits(unsigned long long seed, unsigned long long i) {
    return bg_mix64(bg_mix64(seed + 0x9E3779B97F4A7C15ull) ^ (i * 0xD6E8FEB86659FD93ull));
}

// lo + (hi - lo) · U[0, 1)
extern "C" __global__ void rand_uniform_f64(long long n, unsigned long long seed, unsigned long long offset, double lo,
                                            double hi, double* __restrict__ out) {
    BG_FOR_EACH(i, n) {
        double u = (double)(bg_bits(seed, offset + (unsigned long long)i) >> 11) * (1.0 / 9007199254740992.0);
        out[i] = lo + (hi - lo) * u;
    }
}

// mean + std · N(0, 1)
extern "C" __global__ void rand_normal_f64(long long n, unsigned long long seed, unsigned long long offset,
                                           double mean, double std, double* __restrict__ out) {
    const double tau = 6.283185307179586;
    BG_FOR_EACH(i, n) {
        unsigned long long b = bg_bits(seed, offset + (unsigned long long)i);
        double u1 = ((double)(b >> 32) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]: log is finite
        double u2 = (double)(b & 0xffffffffull) * (1.0 / 4294967296.0);
        out[i] = mean + std * (sqrt(-2.0 * log(u1)) * cos(tau * u2));
    }
}
