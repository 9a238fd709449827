// sgd.cu — the fused SGD step (ops/src/sgd): weight decay, momentum in PyTorch's form (dampening
// 0) and Nesterov, updating the parameter and its momentum buffer in place in one pass.
//
// Per element, in the parameter's dtype and with PyTorch's roundings (as ops/src/sgd/cpu.rs):
//   d = fma(wd, w, g)                      if weight decay
//   b = first ? d : μ·b + d                (buf.mul_(μ).add_(d): two roundings, never fused)
//   d = nesterov ? fma(μ, b, d) : b        if momentum (b == null: no buffer)
//   w = fma(−lr, d, w)
// so Emu equals the CPU bit for bit, and a GPU too (IEEE fma, the product rounded explicitly).
//
// sgd_step_* updates one tensor (grid-stride); sgd_multi_* updates a list of tensors in one
// launch: blockIdx.y picks the tensor's record, blockIdx.x grid-strides over its elements.
// sgd_multi_f32_bf16 is sgd_multi_f32 that also writes each updated f32 master weight, rounded
// to bf16 (RNE), to the record's bf16 copy: the bf16 training path's weights in the same pass.
#include "common.cuh"

// Mirrors `Hyper` in ops/src/sgd/gpu.rs; converted to the dtype in the kernel, as the CPU does.
struct bg_sgd_hyper {
    double neg_lr, momentum, weight_decay;
    int decay, nesterov;
};

// Mirrors `Record` in ops/src/sgd/gpu.rs: one parameter of a multi-tensor step.
struct bg_sgd_record {
    unsigned long long w, g, b;  // element pointers; b = 0 without momentum
    long long n;
    int first;  // 1 on the parameter's first step: the buffer starts as d
    int pad;
};

__device__ __forceinline__ float bg_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double bg_fma(double a, double b, double c) { return fma(a, b, c); }
// Mirrors `RecordBf16` in ops/src/sgd/bf16.rs: bg_sgd_record plus the bf16 copy's pointer.
struct bg_sgd_record_bf16 {
    unsigned long long w, g, b, wb;  // wb: the bf16 copy of w (n elements)
    long long n;
    int first;
    int pad;
};

// A product that the compiler may not fuse with the following addition.
__device__ __forceinline__ float bg_mul_rn(float a, float b) { return __fmul_rn(a, b); }
#ifdef BITGRAD_EMU
__device__ __forceinline__ double bg_mul_rn(double a, double b) { return a * b; }  // g++ does not contract here
#else
__device__ __forceinline__ double bg_mul_rn(double a, double b) { return __dmul_rn(a, b); }
#endif

// Returns the updated weight.
template <typename T>
__device__ __forceinline__ T sgd_elem(T* __restrict__ w, const T* __restrict__ g, T* __restrict__ b, int first,
                                         const bg_sgd_hyper& h, long long i) {
    const T wi = w[i];
    T d = h.decay ? bg_fma((T)h.weight_decay, wi, g[i]) : g[i];
    if (b) {
        const T mu = (T)h.momentum;
        const T bi = first ? d : bg_mul_rn(mu, b[i]) + d;
        b[i] = bi;
        d = h.nesterov ? bg_fma(mu, bi, d) : bi;
    }
    const T nw = bg_fma((T)h.neg_lr, d, wi);
    w[i] = nw;
    return nw;
}

template <typename T>
__device__ void sgd_step(long long n, T* w, const T* g, T* b, int first, bg_sgd_hyper h) {
    BG_FOR_EACH(i, n) sgd_elem<T>(w, g, b, first, h, i);
}

template <typename T>
__device__ void sgd_multi(const bg_sgd_record* __restrict__ list, bg_sgd_hyper h) {
    const bg_sgd_record r = list[blockIdx.y];
    T* w = (T*)r.w;
    const T* g = (const T*)r.g;
    T* b = (T*)r.b;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < r.n; i += (long long)blockDim.x * gridDim.x)
        sgd_elem<T>(w, g, b, r.first, h, i);
}

extern "C" __global__ void sgd_multi_f32_bf16(const bg_sgd_record_bf16* list, bg_sgd_hyper h) {
    const bg_sgd_record_bf16 r = list[blockIdx.y];
    float* w = (float*)r.w;
    __nv_bfloat16* wb = (__nv_bfloat16*)r.wb;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < r.n; i += (long long)blockDim.x * gridDim.x)
        wb[i] = __float2bfloat16_rn(sgd_elem<float>(w, (const float*)r.g, (float*)r.b, r.first, h, i));
}

#define BG_SGD_KERNELS(SUF, T)                                                                               \
    extern "C" __global__ void sgd_step_##SUF(long long n, T* w, const T* g, T* b, int first,               \
                                              bg_sgd_hyper h) {                                              \
        sgd_step<T>(n, w, g, b, first, h);                                                                   \
    }                                                                                                        \
    extern "C" __global__ void sgd_multi_##SUF(const bg_sgd_record* list, bg_sgd_hyper h) {                 \
        sgd_multi<T>(list, h);                                                                               \
    }

BG_SGD_KERNELS(f32, float)
BG_SGD_KERNELS(f64, double)
