// batch_norm.cu — batch norm over a contiguous [N, C, S] input, one block per channel c: its
// elements are N runs of S, C·S apart; element j ∈ [0, N·S) of the channel is
// x[((j / S)·C + c)·S + j % S]. Formulas and roundings are the CPU twin's
// (ops/src/batch_norm/{mod,cpu}.rs); sums accumulate in f64 per thread and meet in a fixed tree.
//
// Forward, training: μ₀ = Σx/M rounded to T, corrected two-pass biased variance (M = N·S);
// when running statistics are given, thread 0 updates them with PyTorch's rule
// running = (1 − momentum)·running + momentum·batch, the variance unbiased (σ²·M/(M − 1)).
// Eval: μ and σ² are the running statistics. Then r = 1/sqrt(σ² + ε),
// y = x·T(γ·r) + T(β − μ·γ·r), and T(μ), T(r) are saved per channel.
// Backward: Σg, Σg·x per channel; dbeta = Σg, dgamma = Σg·x̂ = r·(Σg·x − μ·Σg);
// dx = A·g + (B·x + K) with A = r·γ and, in training, B = −r²·m2, K = r·(r·m2·μ − m1),
// m1 = γ·Σg/M, m2 = γ·Σg·x̂/M (eval: B = K = 0, μ and r being constants).
#include "common.cuh"

// Storage index of channel element j (the host checks N·S < 2³², so the division is 32-bit).
__device__ __forceinline__ long long bn_index(unsigned j, unsigned s, long long c, long long ch) {
    return ((long long)(j / s) * c + ch) * s + j % s;
}

template <typename T>
__device__ void bn_forward_channel(unsigned count, unsigned s, int c, int training, double momentum, double eps,
                                   const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                   T* __restrict__ rmean, T* __restrict__ rvar, T* __restrict__ y,
                                   T* __restrict__ mean_out, T* __restrict__ rstd_out) {
    __shared__ double scratch[32];
    const long long ch = blockIdx.x;
    const double dm = (double)count;
    double mean, var;
    if (training) {
        double sum = 0.0;
        for (unsigned j = threadIdx.x; j < count; j += blockDim.x) sum += (double)x[bn_index(j, s, c, ch)];
        sum = bg_block_sum(sum, scratch);
        const T mean0 = (T)(sum / dm);
        double dev = 0.0, sq = 0.0;
        for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
            T v = x[bn_index(j, s, c, ch)] - mean0;
            dev += (double)v;
            sq += (double)(v * v);
        }
        dev = bg_block_sum(dev, scratch);
        sq = bg_block_sum(sq, scratch);
        mean = (double)mean0 + dev / dm;
        var = (sq - dev * dev / dm) / dm;
        if (!(var > 0.0)) var = 0.0;  // the CPU's f64::max(var, 0): NaN gives 0 too
        if (rmean && threadIdx.x == 0) {
            const double unbias = dm / (dm - 1.0);
            rmean[ch] = (T)((1.0 - momentum) * (double)rmean[ch] + momentum * mean);
            rvar[ch] = (T)((1.0 - momentum) * (double)rvar[ch] + momentum * (var * unbias));
        }
    } else {
        mean = (double)rmean[ch];
        var = (double)rvar[ch];
    }
    const double r = 1.0 / sqrt(var + eps);
    const double gc = gamma ? (double)gamma[ch] : 1.0, bc = beta ? (double)beta[ch] : 0.0;
    const T scale = (T)(gc * r), shift = (T)(bc - mean * gc * r);
    for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
        long long i = bn_index(j, s, c, ch);
        y[i] = scale * x[i] + shift;
    }
    if (threadIdx.x == 0) {
        mean_out[ch] = (T)mean;
        rstd_out[ch] = (T)r;
    }
}

template <typename T>
__device__ void bn_backward_channel(unsigned count, unsigned s, int c, int training, int write_dx,
                                    const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ gamma,
                                    const T* __restrict__ mean, const T* __restrict__ rstd, T* __restrict__ dx,
                                    T* __restrict__ dgamma, T* __restrict__ dbeta) {
    __shared__ double scratch[32];
    const long long ch = blockIdx.x;
    double sg = 0.0, sgx = 0.0;
    for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
        long long i = bn_index(j, s, c, ch);
        T gv = g[i];
        sg += (double)gv;
        sgx += (double)(gv * x[i]);
    }
    sg = bg_block_sum(sg, scratch);
    sgx = bg_block_sum(sgx, scratch);
    const double mu = (double)mean[ch], r = (double)rstd[ch];
    const double gxhat = r * (sgx - mu * sg);
    if (threadIdx.x == 0) {
        dgamma[ch] = (T)gxhat;
        dbeta[ch] = (T)sg;
    }
    if (write_dx) {
        const double gc = gamma ? (double)gamma[ch] : 1.0, dm = (double)count;
        const double m1 = training ? gc * sg / dm : 0.0, m2 = training ? gc * gxhat / dm : 0.0;
        const T a = (T)(r * gc), b = (T)(-r * r * m2), k = (T)(r * (r * m2 * mu - m1));
        for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
            long long i = bn_index(j, s, c, ch);
            dx[i] = a * g[i] + (b * x[i] + k);
        }
    }
}

// Grid: one block per channel (C); block a multiple of 32 (≤ 1024); count = N·S. gamma/beta
// may be null; rmean/rvar null in training means "no running statistics".
#define BG_BN_KERNELS(SUF, T)                                                                                  \
    extern "C" __global__ void bn_forward_##SUF(unsigned count, unsigned s, int c, int training,              \
                                                double momentum, double eps, const T* x, const T* gamma,       \
                                                const T* beta, T* rmean, T* rvar, T* y, T* mean, T* rstd) {    \
        bn_forward_channel<T>(count, s, c, training, momentum, eps, x, gamma, beta, rmean, rvar, y, mean,      \
                              rstd);                                                                           \
    }                                                                                                          \
    extern "C" __global__ void bn_backward_##SUF(unsigned count, unsigned s, int c, int training,             \
                                                 int write_dx, const T* x, const T* g, const T* gamma,         \
                                                 const T* mean, const T* rstd, T* dx, T* dgamma, T* dbeta) {   \
        bn_backward_channel<T>(count, s, c, training, write_dx, x, g, gamma, mean, rstd, dx, dgamma, dbeta);  \
    }

BG_BN_KERNELS(f32, float)
BG_BN_KERNELS(f64, double)
