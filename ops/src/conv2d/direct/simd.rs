//! The vector operations the direct convolution's micro-kernel is written in, one
//! implementation per instruction set.
//!
//! The kernel body ([`super::kernel`]) is generic over [`Simd`]; each ISA's entry point
//! instantiates it inside a `#[target_feature]` function, so the same code compiles to AVX-512,
//! AVX2+FMA, NEON (aarch64) or plain scalar Rust. Loads and stores take a length: a full vector
//! uses the plain instruction, a shorter one a masked one that touches no memory past `len` (the
//! rows of a feature map are rarely a multiple of the vector width).
//!
//! [`Scalar`] is an 8-lane array: the same blocking as AVX2, so the blocking and tail logic
//! run on every machine, with `a·b + c` rounded twice (no fused multiply-add in plain Rust
//! without a slow libm call) — results differ from the FMA levels in the last bits only.

/// One vector ISA: its register type and the handful of operations the kernel needs.
pub(crate) trait Simd: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` values from `p`, or the first `len < LANES` and zeros.
    unsafe fn load(p: *const f32, len: usize) -> Self::V;
    /// `a·b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Writes the first `len` lanes to `p`.
    unsafe fn store(p: *mut f32, v: Self::V, len: usize);
    /// Stores `rows` (at most 16) transposed: lane `k` of `rows[p]` to `out[k·16 + p]`, for
    /// every `k < LANES` (what the channel-blocked kernel needs to hand its pixel-major tile
    /// back as runs of pixels per channel). Lanes `p ≥ rows.len()` of each run are left as
    /// they were, or zero.
    #[inline(always)]
    unsafe fn store_transposed(rows: &[Self::V], out: *mut f32) {
        let mut lanes = [0.0f32; 16];
        for (p, &v) in rows.iter().enumerate() {
            Self::store(lanes.as_mut_ptr(), v, Self::LANES);
            for (k, &x) in lanes.iter().enumerate().take(Self::LANES) {
                *out.add(k * 16 + p) = x;
            }
        }
    }
}

/// Plain Rust, 8 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 8;
    type V = [f32; 8];
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, len: usize) -> Self::V {
        let mut v = [0.0; 8];
        for (i, e) in v.iter_mut().enumerate().take(len) {
            *e = *p.add(i);
        }
        v
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V, len: usize) {
        for (i, e) in v.iter().enumerate().take(len) {
            *p.add(i) = *e;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Simd;

    /// AVX2 + FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    /// The `_mm256_maskload_ps` mask for the first `len` lanes.
    #[inline(always)]
    unsafe fn mask8(len: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), idx)
    }

    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, len: usize) -> __m256 {
            if len >= 8 {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, mask8(len))
            }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256, len: usize) {
            if len >= 8 {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, mask8(len), v)
            }
        }
    }

    /// AVX-512F, 16 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, len: usize) -> __m512 {
            if len >= 16 {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(((1u32 << len) - 1) as __mmask16, p)
            }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512, len: usize) {
            if len >= 16 {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, ((1u32 << len) - 1) as __mmask16, v)
            }
        }
        /// A 16 × 16 transpose in registers (rows past `rows.len()` zero): 32-bit, then 64-bit
        /// interleaves within 128-bit lanes, then two rounds of 128-bit lane shuffles.
        #[inline(always)]
        unsafe fn store_transposed(rows: &[__m512], out: *mut f32) {
            // Plain loops, no closures: intrinsics inline only into this `target_feature` context.
            let mut r = [_mm512_setzero_ps(); 16];
            r[..rows.len()].copy_from_slice(rows);
            // t[2i] = a0 b0 a1 b1 | a4 b4 a5 b5 | …, t[2i+1] = a2 b2 a3 b3 | … (a, b = rows 2i, 2i+1).
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            // u[4i+k]: rows 4i..4i+3 of columns k, k+4, k+8, k+12 (one per 128-bit lane).
            let mut u = [_mm512_setzero_ps(); 16];
            for i in 0..4 {
                let (a0, a1) = (_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 1]));
                let (b0, b1) = (_mm512_castps_pd(t[4 * i + 2]), _mm512_castps_pd(t[4 * i + 3]));
                u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
                u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
                u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
                u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
            }
            for k in 0..4 {
                let v0 = _mm512_shuffle_f32x4::<0x44>(u[k], u[4 + k]);
                let v1 = _mm512_shuffle_f32x4::<0xEE>(u[k], u[4 + k]);
                let w0 = _mm512_shuffle_f32x4::<0x44>(u[8 + k], u[12 + k]);
                let w1 = _mm512_shuffle_f32x4::<0xEE>(u[8 + k], u[12 + k]);
                _mm512_storeu_ps(out.add(k * 16), _mm512_shuffle_f32x4::<0x88>(v0, w0));
                _mm512_storeu_ps(out.add((k + 4) * 16), _mm512_shuffle_f32x4::<0xDD>(v0, w0));
                _mm512_storeu_ps(out.add((k + 8) * 16), _mm512_shuffle_f32x4::<0x88>(v1, w1));
                _mm512_storeu_ps(out.add((k + 12) * 16), _mm512_shuffle_f32x4::<0xDD>(v1, w1));
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::Simd;

    /// NEON, 8 lanes as a pair of 4-lane registers. Eight lanes give it AVX2's tile shapes:
    /// with 32 registers of half AVX2's width it holds the same number of lanes in flight, and
    /// the blocking and tail logic are the ones every x86 machine already tests. NEON has no
    /// masked loads or stores, so a partial vector goes through an 8-lane buffer on the stack
    /// (only at the end of a row).
    #[derive(Clone, Copy)]
    pub(crate) struct Neon;

    impl Simd for Neon {
        const LANES: usize = 8;
        type V = [float32x4_t; 2];
        #[inline(always)]
        unsafe fn zero() -> Self::V {
            [vdupq_n_f32(0.0); 2]
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self::V {
            [vdupq_n_f32(x); 2]
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, len: usize) -> Self::V {
            if len >= 8 {
                [vld1q_f32(p), vld1q_f32(p.add(4))]
            } else {
                let mut buf = [0.0f32; 8];
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), len);
                [vld1q_f32(buf.as_ptr()), vld1q_f32(buf.as_ptr().add(4))]
            }
        }
        #[inline(always)]
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            // vfmaq_f32(c, a, b) = c + a·b, one rounding (FMLA).
            [vfmaq_f32(c[0], a[0], b[0]), vfmaq_f32(c[1], a[1], b[1])]
        }
        #[inline(always)]
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
            [vaddq_f32(a[0], b[0]), vaddq_f32(a[1], b[1])]
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V, len: usize) {
            if len >= 8 {
                vst1q_f32(p, v[0]);
                vst1q_f32(p.add(4), v[1]);
            } else {
                let mut buf = [0.0f32; 8];
                vst1q_f32(buf.as_mut_ptr(), v[0]);
                vst1q_f32(buf.as_mut_ptr().add(4), v[1]);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), p, len);
            }
        }
    }
}
