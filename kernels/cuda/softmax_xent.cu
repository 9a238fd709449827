// softmax_xent.cu — softmax cross-entropy with hard or soft targets and label smoothing
// (ops/src/softmax_xent): a fused per-row forward (max, log-sum-exp, loss), the batch mean, and
// a fused backward (s·softmax − q)·scale. Logits and soft targets are contiguous [n, k].
//
// One block per row (grid-stride over rows; block size a multiple of 32). Row arithmetic is in
// f64, as on the CPU; the row sums go through fixed block trees (deterministic, and equal to the
// CPU's sequential sums up to the last bits of f64). The batch mean adds the per-row losses in
// row order on one thread, exactly as the CPU does.
#include "common.cuh"

// The maximum over a block (NaN ignored, as f64::max); every thread gets it.
__device__ double bg_block_max(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        double w = __shfl_xor_sync(0xffffffffu, v, o);
        if (w > v) v = w;
    }
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double t = lane < nwarps ? scratch[lane] : -(double)BG_INF;
    for (int o = 16; o > 0; o >>= 1) {
        double w = __shfl_xor_sync(0xffffffffu, t, o);
        if (w > t) t = w;
    }
    __syncthreads();
    return t;
}

// The target probability of class c before smoothing: one-hot of the label, or the soft target.
template <typename T>
__device__ __forceinline__ double bg_target(const long long* labels, const T* t, long long row, long long k,
                                            long long c) {
    return labels ? (double)(labels[row] == c) : (double)bg_load(t[row * k + c]);
}

// Per row: loss_rows[row] = Σ_c q_c·(lse − x_c) and lse_out[row] = lse. `labels` is null for soft
// targets (then `t` is read).
template <typename T>
__device__ void xent_fwd(long long n, long long k, double eps, const T* __restrict__ x,
                         const long long* __restrict__ labels, const T* __restrict__ t, double* __restrict__ loss_rows,
                         double* __restrict__ lse_out) {
    __shared__ double scratch[32];
    for (long long row = blockIdx.x; row < n; row += gridDim.x) {
        const T* xr = x + row * k;
        double m = -(double)BG_INF;
        for (long long c = threadIdx.x; c < k; c += blockDim.x) {
            double v = (double)bg_load(xr[c]);
            if (v > m) m = v;
        }
        m = bg_block_max(m, scratch);
        double s = 0.0;
        for (long long c = threadIdx.x; c < k; c += blockDim.x) s += exp((double)bg_load(xr[c]) - m);
        const double ln_sum = log(bg_block_sum(s, scratch));
        // Σ_c q_c·nll_c with nll_c = ln_sum − (x_c − m); for hard targets only the ε/K part here.
        double part = 0.0;
        for (long long c = threadIdx.x; c < k; c += blockDim.x) {
            const double nll = ln_sum - ((double)bg_load(xr[c]) - m);
            part += labels ? nll : ((1.0 - eps) * bg_target(labels, t, row, k, c) + eps / (double)k) * nll;
        }
        const double total = bg_block_sum(part, scratch);
        if (threadIdx.x == 0) {
            double loss = total;
            if (labels) {
                const double nll_y = ln_sum - ((double)bg_load(xr[labels[row]]) - m);
                loss = (1.0 - eps) * nll_y + eps * (eps > 0.0 ? total / (double)k : 0.0);
            }
            loss_rows[row] = loss;
            lse_out[row] = m + ln_sum;
        }
    }
}

// The batch mean, summed in row order by one thread (the CPU's order); written in the dtype.
template <typename T>
__device__ void xent_mean(long long n, const double* __restrict__ loss_rows, T* __restrict__ out) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        double total = 0.0;
        for (long long i = 0; i < n; ++i) total += loss_rows[i];
        out[0] = bg_store<T>((typename bg_acc<T>::type)(total / (double)n));
    }
}

// gx = (s·p − q)·scale with p = exp(x − lse), s = Σ_c q_c, scale = g / n (g read on the device);
// gt = −(1 − ε)·(x − lse)·scale when `gt` is not null (soft targets).
template <typename T>
__device__ void xent_bwd(long long n, long long k, double eps, const T* __restrict__ g, const T* __restrict__ x,
                         const long long* __restrict__ labels, const T* __restrict__ t,
                         const double* __restrict__ lse, T* __restrict__ gx, T* __restrict__ gt) {
    __shared__ double scratch[32];
    const double scale = (double)bg_load(g[0]) / (double)n;
    for (long long row = blockIdx.x; row < n; row += gridDim.x) {
        const T* xr = x + row * k;
        double s = 1.0;
        if (!labels) {
            double part = 0.0;
            for (long long c = threadIdx.x; c < k; c += blockDim.x)
                part += (1.0 - eps) * bg_target(labels, t, row, k, c) + eps / (double)k;
            s = bg_block_sum(part, scratch);
        }
        for (long long c = threadIdx.x; c < k; c += blockDim.x) {
            const double q = (1.0 - eps) * bg_target(labels, t, row, k, c) + eps / (double)k;
            const double lp = (double)bg_load(xr[c]) - lse[row];
            gx[row * k + c] = bg_store<T>((typename bg_acc<T>::type)((s * exp(lp) - q) * scale));
            if (gt) gt[row * k + c] = bg_store<T>((typename bg_acc<T>::type)(-(1.0 - eps) * lp * scale));
        }
    }
}

#define BG_XENT_KERNELS(SUF, T)                                                                               \
    extern "C" __global__ void xent_fwd_##SUF(long long n, long long k, double eps, const T* x,              \
                                              const long long* labels, const T* t, double* loss_rows,        \
                                              double* lse) {                                                  \
        xent_fwd<T>(n, k, eps, x, labels, t, loss_rows, lse);                                                 \
    }                                                                                                         \
    extern "C" __global__ void xent_mean_##SUF(long long n, const double* loss_rows, T* out) {              \
        xent_mean<T>(n, loss_rows, out);                                                                      \
    }                                                                                                         \
    extern "C" __global__ void xent_bwd_##SUF(long long n, long long k, double eps, const T* g, const T* x,  \
                                              const long long* labels, const T* t, const double* lse, T* gx, \
                                              T* gt) {                                                        \
        xent_bwd<T>(n, k, eps, g, x, labels, t, lse, gx, gt);                                                 \
    }

BG_XENT_KERNELS(f32, float)
BG_XENT_KERNELS(f64, double)
