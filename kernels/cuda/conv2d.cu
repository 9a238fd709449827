// conv2d.cu — 2-d convolution (NCHW input, OIHW weight, groups = 1) as implicit GEMMs: the
// column matrix of im2col is never stored; each tile of it is gathered from the image (or from
// the output gradient) straight into shared memory.
//
// Three products of the same shape family, C[M, N] = Σ_k A[m, k] · B[k, n]:
//
//   forward          y  : M = O, N = batch·OH·OW, K = C·KH·KW   A = w,  B = cols(x)
//   backward-data    dx : M = C, N = batch·H·W,   K = O·KH·KW   A = wᵀ, B = dy gathered per pixel
//   backward-weight  dw : M = O, N = C·KH·KW,     K = batch·OH·OW  A = dy, B = cols(x)ᵀ
//
// Backward-data gathers, for input pixel (ih, iw) and kernel tap (i, j), the output pixel
// oh = (ih + pt − i·dh) / sh when that division is exact and in range (zero otherwise), so
// strides need no zero-stuffed buffer.
//
// Geometry: 256 threads per block compute a 64×64 tile of C, 4×4 per thread (rows ty + 16·a,
// columns tx + 16·b, so a warp's shared-memory reads are broadcasts or distinct banks and its
// output writes are coalesced along n). K advances in slices of 16: each thread gathers 4 values
// of A and 4 of B into registers for the next slice while the block multiplies the current one
// out of shared memory. Accumulation is in f32 for f32 (f64 for f64), in a fixed order, and each
// output element is written by exactly one thread: results are deterministic.
//
// Dtypes: T is the storage type, A = bg_acc<T> the arithmetic type (f32 for f16/bf16). Operands
// are converted to A as they are gathered into registers, so the shared-memory tiles and the
// inner product are those of the f32 kernel (no conversion in the inner loop); each output is
// rounded once to T. This matches the CPU, which computes half dtypes in f32 and rounds once.
//
// Backward-weight may split K over blockIdx.z (each split writes its own [M, N] partial sum, in
// A so that half dtypes are not rounded twice); conv2d_sum_splits then adds the partials in split
// order — no atomics — and rounds once to T.
#include "common.cuh"

// Mirrors the argument struct built in ops/src/conv2d/gpu.rs (16 × i64).
struct bg_conv {
    long long batch, c, h, w, o, kh, kw, oh, ow;
    long long sh, sw, pt, pl, dh, dw;
    long long k_chunk;  // K range of one blockIdx.z (a multiple of CONV_BK); K when not split
};

#define CONV_BM 64
#define CONV_BN 64
#define CONV_BK 16
#define CONV_THREADS 256

// Loop unrolling for NVRTC; the emulator's g++ does not know the pragma (and needs no hint).
#ifdef BITGRAD_EMU
#define CONV_UNROLL
#else
#define CONV_UNROLL _Pragma("unroll")
#endif

#define CONV_FWD 0
#define CONV_BWD_DATA 1
#define CONV_BWD_WEIGHT 2

// Where one thread gathers its share of a K slice from. A is staged "k-fast" (consecutive
// threads take consecutive k: the contiguous direction of the weight and of dy's pixels): the
// thread takes column k0 + tx of rows m0 + ty + 16r. B of forward and backward-data is staged
// "n-fast" (consecutive output/input pixels, contiguous in the image): column n0 + (tid & 63),
// rows k0 + (tid >> 6) + 4r. B of backward-weight is k-fast like A: row k0 + tx, columns
// n0 + ty + 16r. Everything that does not depend on k is decoded once, here.
template <int MODE, typename T>
struct conv_gather {
    typedef typename bg_acc<T>::type A;
    const T* __restrict__ pa;
    const T* __restrict__ pb;
    int C, H, W, O, KW, KK, OH, OW, SH, SW, DH, DW, P, HW, M, N, K, kend;
    int tid, tx, ty, m0, n_fixed;
    long long b_base;      // n-fast modes: offset of n_fixed's image in B's tensor
    int anchor_h, anchor_w;  // n-fast modes: where n_fixed's pixel sits before the kernel tap
    int bw_c[4], bw_i[4], bw_j[4];  // backward-weight: the 4 columns (c, i·dh − pt, j·dw − pl)

    __device__ void init(const bg_conv& g, int kbeg) {
        C = (int)g.c; H = (int)g.h; W = (int)g.w; O = (int)g.o; KW = (int)g.kw; KK = (int)g.kh * KW;
        OH = (int)g.oh; OW = (int)g.ow; SH = (int)g.sh; SW = (int)g.sw; DH = (int)g.dh; DW = (int)g.dw;
        P = OH * OW; HW = H * W;
        M = MODE == CONV_BWD_DATA ? C : O;
        N = MODE == CONV_FWD ? (int)g.batch * P : MODE == CONV_BWD_DATA ? (int)g.batch * HW : C * KK;
        K = MODE == CONV_FWD ? C * KK : MODE == CONV_BWD_DATA ? O * KK : (int)g.batch * P;
        kend = (int)min((long long)K, kbeg + g.k_chunk);
        tid = threadIdx.x; tx = tid & 15; ty = tid >> 4;
        m0 = blockIdx.y * CONV_BM;
        const int n0 = blockIdx.x * CONV_BN;
        n_fixed = n0 + (tid & 63);
        b_base = 0; anchor_h = 0; anchor_w = 0;
        if (MODE == CONV_FWD && n_fixed < N) {
            const int bb = n_fixed / P, p = n_fixed - bb * P, oh = p / OW, ow = p - oh * OW;
            b_base = (long long)bb * C * HW;
            anchor_h = oh * SH - (int)g.pt;
            anchor_w = ow * SW - (int)g.pl;
        }
        if (MODE == CONV_BWD_DATA && n_fixed < N) {
            const int bb = n_fixed / HW, hw = n_fixed - bb * HW, ih = hw / W, iw = hw - ih * W;
            b_base = (long long)bb * O * P;
            anchor_h = ih + (int)g.pt;
            anchor_w = iw + (int)g.pl;
        }
CONV_UNROLL
        for (int r = 0; r < 4; ++r) {
            const int n = n0 + ty + 16 * r;
            const int c = n / KK, rem = n - c * KK, i = rem / KW;
            bw_c[r] = n < N ? c : -1;
            bw_i[r] = i * DH - (int)g.pt;
            bw_j[r] = (rem - i * KW) * DW - (int)g.pl;
        }
    }

    // The slice starting at k0 into ra / rb, converted to A (zeros outside the matrices and the
    // image).
    __device__ void load(int k0, A* ra, A* rb) const {
        const int ka = k0 + tx;
        if (MODE == CONV_FWD) {
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                const int m = m0 + ty + 16 * r;
                ra[r] = (m < M && ka < kend) ? bg_load(pa[(long long)m * K + ka]) : A(0);
            }
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                const int k = k0 + (tid >> 6) + 4 * r;
                const int c = k / KK, rem = k - c * KK, i = rem / KW, j = rem - i * KW;
                const int ih = anchor_h + i * DH, iw = anchor_w + j * DW;
                const bool ok = n_fixed < N && k < kend && ih >= 0 && ih < H && iw >= 0 && iw < W;
                rb[r] = ok ? bg_load(pb[b_base + (long long)c * HW + ih * W + iw]) : A(0);
            }
        } else if (MODE == CONV_BWD_DATA) {
            const int o = ka / KK, rem = ka - o * KK;
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                const int m = m0 + ty + 16 * r;
                ra[r] = (m < M && ka < kend) ? bg_load(pa[((long long)o * C + m) * KK + rem]) : A(0);
            }
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                const int k = k0 + (tid >> 6) + 4 * r;
                const int o2 = k / KK, rem2 = k - o2 * KK, i = rem2 / KW, j = rem2 - i * KW;
                // dy pixel (oh, ow) meets this input pixel through tap (i, j) when
                // oh·sh = ih + pt − i·dh exactly (and likewise for w).
                const int th = anchor_h - i * DH, tw = anchor_w - j * DW;
                const int oh = th / SH, ow = tw / SW;
                const bool ok = n_fixed < N && k < kend && th >= 0 && tw >= 0 && oh * SH == th && ow * SW == tw &&
                                oh < OH && ow < OW;
                rb[r] = ok ? bg_load(pb[b_base + (long long)o2 * P + oh * OW + ow]) : A(0);
            }
        } else {
            const int bb = ka / P, p = ka - bb * P, oh = p / OW, ow = p - oh * OW;
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                const int m = m0 + ty + 16 * r;
                ra[r] = (m < M && ka < kend) ? bg_load(pa[((long long)bb * O + m) * P + p]) : A(0);
            }
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                const int ih = oh * SH + bw_i[r], iw = ow * SW + bw_j[r];
                const bool ok = bw_c[r] >= 0 && ka < kend && ih >= 0 && ih < H && iw >= 0 && iw < W;
                rb[r] = ok ? bg_load(pb[((long long)bb * C + bw_c[r]) * HW + ih * W + iw]) : A(0);
            }
        }
    }
};

// C = A·B for one 64×64 tile and one K range (blockIdx.z), then the epilogue of MODE: the tile
// rounded to T into `out`, or, when `part` is not null (backward-weight split over K), this
// split's partial sums in A into `part`.
template <int MODE, typename T>
__device__ void conv_gemm(const T* __restrict__ pa, const T* __restrict__ pb, const T* __restrict__ bias,
                          T* __restrict__ out, typename bg_acc<T>::type* __restrict__ part, const bg_conv& g) {
    typedef typename bg_acc<T>::type A;
    // +1 column: a k-fast store (16 consecutive threads writing one column) hits 16 banks.
    __shared__ A sa[CONV_BK][CONV_BM + 1];
    __shared__ A sb[CONV_BK][CONV_BN + 1];

    const int kbeg = (int)(blockIdx.z * g.k_chunk);
    conv_gather<MODE, T> ga;
    ga.pa = pa;
    ga.pb = pb;
    ga.init(g, kbeg);
    const int tid = ga.tid, tx = ga.tx, ty = ga.ty, kend = ga.kend, M = ga.M, N = ga.N;

    A acc[4][4];
CONV_UNROLL
    for (int a = 0; a < 4; ++a)
CONV_UNROLL
        for (int b = 0; b < 4; ++b) acc[a][b] = A(0);

    A ra[4], rb[4];
    if (kbeg < kend) ga.load(kbeg, ra, rb);
    for (int k0 = kbeg; k0 < kend; k0 += CONV_BK) {
CONV_UNROLL
        for (int r = 0; r < 4; ++r) {
            sa[tx][ty + 16 * r] = ra[r];
            if (MODE == CONV_BWD_WEIGHT) sb[tx][ty + 16 * r] = rb[r];
            else sb[(tid >> 6) + 4 * r][tid & 63] = rb[r];
        }
        __syncthreads();
        // The next slice's global loads are in flight while this one is multiplied.
        if (k0 + CONV_BK < kend) ga.load(k0 + CONV_BK, ra, rb);
CONV_UNROLL
        for (int kk = 0; kk < CONV_BK; ++kk) {
            A av[4], bv[4];
CONV_UNROLL
            for (int r = 0; r < 4; ++r) {
                av[r] = sa[kk][ty + 16 * r];
                bv[r] = sb[kk][tx + 16 * r];
            }
CONV_UNROLL
            for (int a = 0; a < 4; ++a)
CONV_UNROLL
                for (int b = 0; b < 4; ++b) acc[a][b] += av[a] * bv[b];
        }
        __syncthreads();
    }

    // Epilogue: each (m, n) to its tensor position.
    const int n0 = blockIdx.x * CONV_BN, m0 = ga.m0;
CONV_UNROLL
    for (int b = 0; b < 4; ++b) {
        const int n = n0 + tx + 16 * b;
        if (n < N) {
            long long col, row;  // offset of (m = 0, n) in the output, and of one row step
            if (MODE == CONV_FWD) {
                const int bb = n / ga.P;
                col = (long long)bb * ga.O * ga.P + (n - bb * ga.P);
                row = ga.P;
            } else if (MODE == CONV_BWD_DATA) {
                const int bb = n / ga.HW;
                col = (long long)bb * ga.C * ga.HW + (n - bb * ga.HW);
                row = ga.HW;
            } else {
                col = (part ? (long long)blockIdx.z * M * N : 0) + n;
                row = N;
            }
CONV_UNROLL
            for (int a = 0; a < 4; ++a) {
                const int m = m0 + ty + 16 * a;
                if (m < M) {
                    A v = acc[a][b];
                    if (MODE == CONV_FWD && bias) v += bg_load(bias[m]);
                    if (MODE == CONV_BWD_WEIGHT && part) part[col + (long long)m * row] = v;
                    else out[col + (long long)m * row] = bg_store<T>(v);
                }
            }
        }
    }
}

// out[i] = Σ_z part[z·mn + i], in split order (the deterministic second half of split-K), rounded
// once to T.
template <typename T>
__device__ void conv_sum_splits(const typename bg_acc<T>::type* __restrict__ part, T* __restrict__ out,
                                long long splits, long long mn) {
    typedef typename bg_acc<T>::type A;
    BG_FOR_EACH(i, mn) {
        A s = A(0);
        for (long long z = 0; z < splits; ++z) s += part[z * mn + i];
        out[i] = bg_store<T>(s);
    }
}

// y[i] += bias[(i / p) % o] — the bias of the 1×1 convolutions that go through the GEMM (f32 and
// f64 only: the runtime's GEMM has no half dtypes, so half 1×1 convolutions run the tiled kernel).
template <typename T>
__device__ void conv_add_bias(T* __restrict__ y, const T* __restrict__ bias, long long n, long long o, long long p) {
    BG_FOR_EACH(i, n) y[i] = y[i] + bias[(i / p) % o];
}

// Grid: (⌈N/64⌉, ⌈M/64⌉, splits), 256 threads, no dynamic shared memory. `bias` may be null;
// `part` (backward-weight) is null unless splits > 1, and then holds splits·M·N values of A.
#define BG_CONV_KERNELS(SUF, T, A)                                                                         \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS)                                             \
        conv2d_fwd_##SUF(const T* x, const T* w, const T* bias, T* y, bg_conv g) {                          \
        conv_gemm<CONV_FWD, T>(w, x, bias, y, (A*)0, g);                                                   \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS)                                             \
        conv2d_bwd_data_##SUF(const T* dy, const T* w, T* dx, bg_conv g) {                                  \
        conv_gemm<CONV_BWD_DATA, T>(w, dy, (const T*)0, dx, (A*)0, g);                                     \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS)                                             \
        conv2d_bwd_weight_##SUF(const T* x, const T* dy, T* dw, A* part, bg_conv g) {                       \
        conv_gemm<CONV_BWD_WEIGHT, T>(dy, x, (const T*)0, dw, part, g);                                    \
    }                                                                                                      \
    extern "C" __global__ void conv2d_sum_splits_##SUF(const A* part, T* out, long long splits, long long mn) { \
        conv_sum_splits<T>(part, out, splits, mn);                                                         \
    }

// The bias kernel of the GEMM path, for the dtypes the runtime's GEMM has.
#define BG_CONV_BIAS_KERNEL(SUF, T)                                                                        \
    extern "C" __global__ void conv2d_add_bias_##SUF(T* y, const T* bias, long long n, long long o, long long p) { \
        conv_add_bias<T>(y, bias, n, o, p);                                                                \
    }

BG_CONV_KERNELS(f32, float, float)
BG_CONV_KERNELS(f64, double, double)
BG_CONV_KERNELS(f16, __half, float)
BG_CONV_KERNELS(bf16, __nv_bfloat16, float)
BG_CONV_BIAS_KERNEL(f32, float)
BG_CONV_BIAS_KERNEL(f64, double)
