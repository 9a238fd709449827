// norm_stats.cuh — the per-block statistics that group_norm.cu (one block per (n, group)) and
// weight_std.cu (one block per output channel) share, computed as their CPU twins do
// (ops/src/group_norm/lanes.rs `sum` and `sum_dev_sq`, used by both ops' cpu.rs).
#pragma once
#include "common.cuh"

// Mean and 1/sqrt(biased variance + ε) of one block's values, in f64.
struct bg_moments {
    double mean;
    double rstd;
};

// The statistics of v[0, n) over the whole block (a multiple of 32 threads; every thread must
// call it, as it holds barriers, and every thread gets the result). `scratch` holds 32 doubles.
//
// As the CPU: μ₀ = Σv/n rounded to F, the arithmetic type (f32 for f32, f16 and bf16 storage,
// f64 for f64: the half dtypes reach the CPU op as f32); the deviations d = v − μ₀ in F; then
// μ = μ₀ + Σd/n (the correction makes μ exact for constant data, so constant rows and groups
// normalize to exactly 0) and the corrected two-pass variance (Σd² − (Σd)²/n)/n, clamped at 0
// (NaN too, as f64::max). Sums run in f64 per thread and meet in a fixed tree: deterministic
// run to run; they may differ from the CPU's blocked order in the last bits of f64 only.
template <typename T>
__device__ bg_moments bg_block_moments(const T* __restrict__ v, long long n, double eps, double* scratch) {
    typedef typename bg_acc<T>::type F;
    const double dn = (double)n;
    double sum = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) sum += (double)bg_load(v[j]);
    sum = bg_block_sum(sum, scratch);
    const F mean0 = (F)(sum / dn);
    double dev = 0.0, sq = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        const F d = bg_load(v[j]) - mean0;
        dev += (double)d;
        sq += (double)(d * d);
    }
    dev = bg_block_sum(dev, scratch);
    sq = bg_block_sum(sq, scratch);
    double var = (sq - dev * dev / dn) / dn;
    if (!(var > 0.0)) var = 0.0;
    bg_moments m;
    m.mean = (double)mean0 + dev / dn;
    m.rstd = 1.0 / sqrt(var + eps);
    return m;
}
