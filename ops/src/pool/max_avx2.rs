//! The max pool of BiT's stem — 3×3 windows, stride 2, f32 — with AVX2, eight outputs of a row
//! at a time.
//!
//! The plain loop ([`super::cpu::max_forward`]) compares one element at a time, and the
//! comparison goes either way about half the time on real data: the branch mispredicts, and
//! LLVM will not make it a select (x86 has no scalar float select). Here eight outputs run
//! side by side: per input row, their window columns `2·ow − p`, `+1`, `+2` are the even and
//! odd lanes of two loads (deinterleaved by shuffles), and the running maximum and its position
//! are blends. Each output still visits its window row by row, column by column, with the same
//! rule (replace when strictly greater, or NaN), so maxima and positions are the plain loop's,
//! bit for bit (tests in `super::tests`). Outputs whose window is clipped by the padding, or
//! whose loads would pass the row's end, take the plain loop.

use super::PoolGeom;

/// Whether [`max_plane`] applies: f32 (checked by the caller), 3×3, stride 2, AVX2 at the
/// active ISA level.
pub(super) fn applies(g: &PoolGeom) -> bool {
    g.kernel == [3, 3] && g.stride == [2, 2] && crate::group_norm::lanes::has_avx2()
}

/// One plane: `xp` `[h, w]` into `o` and `a` `[out_h, out_w]`. The caller checks [`applies`].
pub(super) fn max_plane(xp: &[f32], g: &PoolGeom, o: &mut [f32], a: &mut [u32]) {
    assert!(applies(g) && xp.len() == g.h * g.w && o.len() == g.out_h * g.out_w && a.len() == o.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: applies() checked AVX2 at the active level; the vector loads stay inside `xp`
    // (see `vector_outputs`) and the stores inside `o` and `a`.
    unsafe {
        avx2::plane(xp, g, o, a)
    }
}

/// The outputs `ow..ow + 8` of a row go vector when all eight windows are whole and the loads
/// (input columns `2·ow − p … 2·ow − p + 17`) stay inside the row.
#[cfg(target_arch = "x86_64")]
fn vector_outputs(g: &PoolGeom, ow: usize) -> bool {
    let c0 = (2 * ow) as isize - g.padding[1] as isize;
    ow + 8 <= g.out_w && c0 >= 0 && c0 as usize + 18 <= g.w
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::cpu::{max_output, window};
    use super::{vector_outputs, PoolGeom};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn plane(xp: &[f32], g: &PoolGeom, o: &mut [f32], a: &mut [u32]) {
        let w = g.w;
        for oh in 0..g.out_h {
            let (h0, h1, _) = window(oh, 3, 2, g.padding[0], g.h);
            let (orow, arow) = (&mut o[oh * g.out_w..][..g.out_w], &mut a[oh * g.out_w..][..g.out_w]);
            let mut ow = 0;
            while ow < g.out_w {
                if !vector_outputs(g, ow) {
                    (orow[ow], arow[ow]) = max_output(xp, g, oh, ow);
                    ow += 1;
                    continue;
                }
                let c0 = 2 * ow - g.padding[1];
                let lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
                let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
                let mut at = _mm256_add_epi32(_mm256_set1_epi32((h0 * w + c0) as i32), lanes);
                for i in h0..h1 {
                    let row = xp.as_ptr().add(i * w + c0);
                    let (lo, hi) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
                    let (lo2, hi2) = (_mm256_loadu_ps(row.add(2)), _mm256_loadu_ps(row.add(10)));
                    let base = _mm256_add_epi32(_mm256_set1_epi32((i * w + c0) as i32), lanes);
                    // Columns 2·lane, 2·lane + 1 and 2·lane + 2 of the eight windows, in order.
                    for (v, off) in [(evens(lo, hi), 0), (odds(lo, hi), 1), (evens(lo2, hi2), 2)] {
                        let take =
                            _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, best), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                        best = _mm256_blendv_ps(best, v, take);
                        let pos = _mm256_add_epi32(base, _mm256_set1_epi32(off));
                        at = _mm256_castps_si256(_mm256_blendv_ps(
                            _mm256_castsi256_ps(at),
                            _mm256_castsi256_ps(pos),
                            take,
                        ));
                    }
                }
                _mm256_storeu_ps(orow[ow..].as_mut_ptr(), best);
                _mm256_storeu_si256(arow[ow..].as_mut_ptr().cast(), at);
                ow += 8;
            }
        }
    }

    /// Elements 0, 2, …, 14 of the sixteen in `lo`, `hi`.
    #[inline(always)]
    unsafe fn evens(lo: __m256, hi: __m256) -> __m256 {
        let s = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
    }

    /// Elements 1, 3, …, 15.
    #[inline(always)]
    unsafe fn odds(lo: __m256, hi: __m256) -> __m256 {
        let s = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
    }
}
