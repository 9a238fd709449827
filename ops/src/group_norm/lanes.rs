//! Kernel helpers shared by the normalization ops (weight_std, group_norm, batch_norm): the
//! reductions, output allocation, short elementwise maps, and x86 multiversioning.
//!
//! * Sums run over [`LANES`] independent accumulators (Rust never reassociates float additions,
//!   so one accumulator would be one long dependency chain), merged by a fixed tree: the result
//!   depends only on the data, never on the vector width or the thread count. For f32 on AVX2
//!   the sums are hand-written intrinsics (module `avx`) with exactly that lane layout and tree;
//!   a test checks that both give the same bits.
//! * Long runs are cut into blocks of [`BLOCK`] elements whose partial sums are added in f64: the
//!   working precision of an f32 sum stays that of a [`BLOCK`]-element sum, whatever the size of
//!   the group being normalized.
//! * Outputs are allocated without zero-filling ([`filled_vec`]): every kernel writes each
//!   output element exactly once, and the memset of a fresh 8 MB buffer cost ~40% of a group
//!   norm forward.
//! * [`multiversion!`](crate::multiversion) compiles a kernel twice, for the baseline x86-64 target
//!   and for AVX2+FMA, and picks the second at run time when the CPU has it. The generated code
//!   does the same operations in the same order on both paths (no `mul_add`, no fast-math), so
//!   the two agree bit for bit.

use std::mem::MaybeUninit;

use bitgrad_engine::{FloatElem, WithDType};

/// Independent accumulators per sum: two AVX2 registers of f32, four of f64.
pub(crate) const LANES: usize = 16;
/// Elements summed in the working precision before the partial sum is moved to f64.
pub(crate) const BLOCK: usize = 2048;

/// A vector of `n` elements that `fill` writes, allocated without zeroing.
///
/// Contract: `fill` writes every element of the slice it is given. All callers pass it to a
/// kernel whose loops cover the slice exactly (parallel chunks of it, each written by a `zip`
/// over the same-length input).
pub(crate) fn filled_vec<T: Copy>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` initialized all `n` elements (the contract above); T is Copy (no drop).
    unsafe { v.set_len(n) };
    v
}

/// Reads back elements that the caller has already written.
///
/// # Safety
/// Every element of `s` must have been initialized.
#[inline(always)]
pub(crate) unsafe fn assume_init<T>(s: &[MaybeUninit<T>]) -> &[T] {
    // SAFETY: MaybeUninit<T> has T's layout; the caller guarantees initialization.
    unsafe { &*(s as *const [MaybeUninit<T>] as *const [T]) }
}

/// Elements per block of [`map1`]/[`map2`]: one AVX register of f32.
const MAP_BLOCK: usize = 8;

/// `out[i] = f(a[i])`, in fixed blocks of [`MAP_BLOCK`] that compile to whole-register
/// operations even for short rows (a plain zip loop over a 16-element row runs in its 4-wide
/// epilogue), then the tail.
#[inline(always)]
pub(crate) fn map1<T: Copy>(out: &mut [MaybeUninit<T>], a: &[T], f: impl Fn(T) -> T) {
    assert_eq!(out.len(), a.len());
    let body = a.len() / MAP_BLOCK * MAP_BLOCK;
    let (ob, ot) = out.split_at_mut(body);
    for (o, a) in ob.chunks_exact_mut(MAP_BLOCK).zip(a[..body].chunks_exact(MAP_BLOCK)) {
        for k in 0..MAP_BLOCK {
            o[k].write(f(a[k]));
        }
    }
    for (o, &v) in ot.iter_mut().zip(&a[body..]) {
        o.write(f(v));
    }
}

/// `out[i] = f(a[i], b[i])`, blocked as [`map1`].
#[inline(always)]
pub(crate) fn map2<T: Copy>(out: &mut [MaybeUninit<T>], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    assert!(out.len() == a.len() && b.len() == a.len());
    let body = a.len() / MAP_BLOCK * MAP_BLOCK;
    let (ob, ot) = out.split_at_mut(body);
    let blocks =
        ob.chunks_exact_mut(MAP_BLOCK).zip(a[..body].chunks_exact(MAP_BLOCK)).zip(b[..body].chunks_exact(MAP_BLOCK));
    for ((o, a), b) in blocks {
        for k in 0..MAP_BLOCK {
            o[k].write(f(a[k], b[k]));
        }
    }
    for ((o, &u), &v) in ot.iter_mut().zip(&a[body..]).zip(&b[body..]) {
        o.write(f(u, v));
    }
}

/// `x` as f64 (named to avoid the clash between `WithDType::to_f64` and `ToPrimitive::to_f64`).
#[inline(always)]
pub(crate) fn f64_of<T: FloatElem>(x: T) -> f64 {
    <T as WithDType>::to_f64(x)
}

/// `v` rounded to `T`.
#[inline(always)]
pub(crate) fn of_f64<T: FloatElem>(v: f64) -> T {
    <T as WithDType>::from_f64(v)
}

#[inline(always)]
fn merge<T: FloatElem>(a: [T; LANES]) -> T {
    let mut w = a;
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            w[i] = w[i] + w[i + half];
        }
        half /= 2;
    }
    w[0]
}

/// `x` (a whole number of [`LANES`]) as `[T; LANES]` arrays.
#[inline(always)]
fn arrays<T>(x: &[T]) -> impl Iterator<Item = &[T; LANES]> {
    x.chunks_exact(LANES).map(|c| c.try_into().expect("exact chunk"))
}

// The portable sums over a whole number of LANES; `avx` below has the same arithmetic.

#[inline(always)]
pub(crate) fn portable_sum<T: FloatElem>(x: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    for c in arrays(x) {
        for k in 0..LANES {
            acc[k] = acc[k] + c[k];
        }
    }
    merge(acc)
}

#[inline(always)]
pub(crate) fn portable_dev_sq<T: FloatElem>(x: &[T], m: T) -> (T, T) {
    let (mut ad, mut aq) = ([T::zero(); LANES], [T::zero(); LANES]);
    for c in arrays(x) {
        for k in 0..LANES {
            let v = c[k] - m;
            ad[k] = ad[k] + v;
            aq[k] = aq[k] + v * v;
        }
    }
    (merge(ad), merge(aq))
}

#[inline(always)]
pub(crate) fn portable_dot<T: FloatElem>(g: &[T], x: &[T]) -> (T, T) {
    let (mut aa, mut ab) = ([T::zero(); LANES], [T::zero(); LANES]);
    for (gc, xc) in arrays(g).zip(arrays(x)) {
        for k in 0..LANES {
            aa[k] = aa[k] + gc[k];
            ab[k] = ab[k] + gc[k] * xc[k];
        }
    }
    (merge(aa), merge(ab))
}

/// Σ x in f64 (blocks of [`BLOCK`] summed in `T`).
#[inline(always)]
pub(crate) fn sum<T: FloatElem>(x: &[T]) -> f64 {
    let mut total = 0.0;
    for b in x.chunks(BLOCK) {
        let body = b.len() / LANES * LANES;
        let head = match as_f32(&b[..body]) {
            // SAFETY: AVX2 is present (checked); the slice is a whole number of LANES.
            Some(b32) if has_avx2() => of_f64::<T>(unsafe { avx::sum(b32) } as f64),
            _ => portable_sum(&b[..body]),
        };
        total += f64_of(b[body..].iter().fold(head, |s, &v| s + v));
    }
    total
}

/// (Σ (x − m), Σ (x − m)²) in f64, in one pass. The first is the correction term of the
/// corrected two-pass variance: zero in exact arithmetic, it absorbs the rounding of `m`.
#[inline(always)]
pub(crate) fn sum_dev_sq<T: FloatElem>(x: &[T], m: T) -> (f64, f64) {
    let (mut d, mut q) = (0.0, 0.0);
    for b in x.chunks(BLOCK) {
        let body = b.len() / LANES * LANES;
        let (mut sd, mut sq) = match as_f32(&b[..body]) {
            Some(b32) if has_avx2() => {
                // SAFETY: AVX2 is present (checked); the slice is a whole number of LANES.
                let (sd, sq) = unsafe { avx::dev_sq(b32, f64_of(m) as f32) };
                (of_f64::<T>(sd as f64), of_f64::<T>(sq as f64))
            }
            _ => portable_dev_sq(&b[..body], m),
        };
        for &v in &b[body..] {
            sd = sd + (v - m);
            sq = sq + (v - m) * (v - m);
        }
        d += f64_of(sd);
        q += f64_of(sq);
    }
    (d, q)
}

/// (Σ g, Σ g·x) in f64, in one pass.
#[inline(always)]
pub(crate) fn sum_dot<T: FloatElem>(g: &[T], x: &[T]) -> (f64, f64) {
    assert_eq!(x.len(), g.len());
    let (mut a, mut b) = (0.0, 0.0);
    for (gb, xb) in g.chunks(BLOCK).zip(x.chunks(BLOCK)) {
        let body = gb.len() / LANES * LANES;
        let (mut sa, mut sb) = match (as_f32(&gb[..body]), as_f32(&xb[..body])) {
            (Some(g32), Some(x32)) if has_avx2() => {
                // SAFETY: AVX2 is present (checked); both slices are the same whole number of LANES.
                let (sa, sb) = unsafe { avx::dot(g32, x32) };
                (of_f64::<T>(sa as f64), of_f64::<T>(sb as f64))
            }
            _ => portable_dot(&gb[..body], &xb[..body]),
        };
        for (&gv, &xv) in gb[body..].iter().zip(&xb[body..]) {
            sa = sa + gv;
            sb = sb + gv * xv;
        }
        a += f64_of(sa);
        b += f64_of(sb);
    }
    (a, b)
}

/// Per run of `s` elements (a channel's spatial plane): `a[c] = Σ g`, `b[c] = Σ g·x` over run c,
/// in f64. The same sums as [`sum_dot`] per run, with the dispatch hoisted out of the loop over
/// runs, which matters when runs are short (4×4 maps: 16 elements per channel).
#[inline(always)]
pub(crate) fn run_sums<T: FloatElem>(g: &[T], x: &[T], s: usize, a: &mut [f64], b: &mut [f64]) {
    assert!(g.len() == x.len() && g.len() == s * a.len() && a.len() == b.len());
    if s > BLOCK {
        for (c, (a, b)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
            (*a, *b) = sum_dot(&g[c * s..(c + 1) * s], &x[c * s..(c + 1) * s]);
        }
        return;
    }
    let body = s / LANES * LANES;
    let avx = has_avx2();
    for (c, (a, b)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
        let (gr, xr) = (&g[c * s..(c + 1) * s], &x[c * s..(c + 1) * s]);
        let (mut sa, mut sb) = match (as_f32(&gr[..body]), as_f32(&xr[..body])) {
            (Some(g32), Some(x32)) if avx => {
                // SAFETY: AVX2 is present (checked); both slices are the same whole number of LANES.
                let (sa, sb) = unsafe { avx::dot(g32, x32) };
                (of_f64::<T>(sa as f64), of_f64::<T>(sb as f64))
            }
            _ => portable_dot(&gr[..body], &xr[..body]),
        };
        for (&gv, &xv) in gr[body..].iter().zip(&xr[body..]) {
            sa = sa + gv;
            sb = sb + gv * xv;
        }
        (*a, *b) = (f64_of(sa), f64_of(sb));
    }
}

/// `x` as `&[f32]` when `T` is f32 (the type the hand-vectorized sums are written for).
#[inline(always)]
fn as_f32<T: FloatElem>(x: &[T]) -> Option<&[f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32, so the slice is reinterpreted as itself.
        Some(unsafe { &*(x as *const [T] as *const [f32]) })
    } else {
        None
    }
}

/// The f32 sums with AVX2 intrinsics. LLVM's SLP vectorizer does not keep the `[T; LANES]`
/// accumulators above in whole registers (it pairs the two accumulators of one element instead,
/// and spills), so these are written by hand. They follow exactly the lane layout and merge tree
/// of the portable code (element i in lane i % 16, lanes 0–7 in the first register, 8–15 in the
/// second; then lanes k and k + 8, k + 4, k + 2, k + 1 added in turn), so both give the same
/// bits. Inputs are whole multiples of [`LANES`]; the callers add the tail.
#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn merge(lo: __m256, hi: __m256) -> f32 {
        let s8 = _mm256_add_ps(lo, hi);
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
        _mm_cvtss_f32(s1)
    }

    /// Σ x.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum(x: &[f32]) -> f32 {
        assert!(x.len().is_multiple_of(16));
        let p = x.as_ptr();
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..x.len()).step_by(16) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p.add(i)));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p.add(i + 8)));
        }
        merge(a0, a1)
    }

    /// (Σ (x − m), Σ (x − m)²).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dev_sq(x: &[f32], m: f32) -> (f32, f32) {
        assert!(x.len().is_multiple_of(16));
        let (p, mv) = (x.as_ptr(), _mm256_set1_ps(m));
        let (mut d0, mut d1, mut q0, mut q1) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..x.len()).step_by(16) {
            let v0 = _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv);
            let v1 = _mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), mv);
            d0 = _mm256_add_ps(d0, v0);
            d1 = _mm256_add_ps(d1, v1);
            q0 = _mm256_add_ps(q0, _mm256_mul_ps(v0, v0));
            q1 = _mm256_add_ps(q1, _mm256_mul_ps(v1, v1));
        }
        (merge(d0, d1), merge(q0, q1))
    }

    /// (Σ g, Σ g·x); `x` is at least as long as `g`.
    ///
    /// # Safety
    /// The CPU must support AVX2 (as for every function here).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(g: &[f32], x: &[f32]) -> (f32, f32) {
        assert!(g.len().is_multiple_of(16) && x.len() >= g.len());
        let (pg, px) = (g.as_ptr(), x.as_ptr());
        let (mut a0, mut a1, mut b0, mut b1) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..g.len()).step_by(16) {
            let (g0, g1) = (_mm256_loadu_ps(pg.add(i)), _mm256_loadu_ps(pg.add(i + 8)));
            a0 = _mm256_add_ps(a0, g0);
            a1 = _mm256_add_ps(a1, g1);
            b0 = _mm256_add_ps(b0, _mm256_mul_ps(g0, _mm256_loadu_ps(px.add(i))));
            b1 = _mm256_add_ps(b1, _mm256_mul_ps(g1, _mm256_loadu_ps(px.add(i + 8))));
        }
        (merge(a0, a1), merge(b0, b1))
    }
}

/// Stand-ins so that the calls above compile on other targets (never reached: `has_avx2` is
/// false there).
#[cfg(not(target_arch = "x86_64"))]
mod avx {
    pub(super) unsafe fn sum(_: &[f32]) -> f32 {
        unreachable!()
    }
    pub(super) unsafe fn dev_sq(_: &[f32], _: f32) -> (f32, f32) {
        unreachable!()
    }
    pub(super) unsafe fn dot(_: &[f32], _: &[f32]) -> (f32, f32) {
        unreachable!()
    }
}

/// True when the AVX2+FMA build of a kernel may run: the CPU has it and the active level
/// (`BITGRAD_CPU_ISA`, see `bitgrad_engine::cpu::isa`) is not forced below it.
#[inline]
pub(crate) fn has_avx2() -> bool {
    cfg!(target_arch = "x86_64") && bitgrad_engine::cpu::isa::active() >= bitgrad_engine::cpu::isa::Isa::Avx2
}

/// The level the multiversioned kernels run with now (AVX2 is their top on x86-64; on aarch64
/// their one build is NEON-vectorised, NEON being in its baseline), and notes it for `family`'s
/// report.
pub(crate) fn level(family: bitgrad_engine::cpu::isa::Family) -> bitgrad_engine::cpu::isa::Isa {
    use bitgrad_engine::cpu::isa::{active, record, Isa};
    let isa = if has_avx2() { Isa::Avx2 } else { active().min(Isa::Neon) };
    record(family, isa);
    isa
}

/// Defines `fn name<T: FloatElem>(args) -> R` whose body is compiled for the baseline target and,
/// on x86-64, for AVX2+FMA; the AVX2 build runs when the CPU supports it and the active ISA
/// level is not forced lower. Kernels call it once
/// per row or group, so the check costs nothing next to the work.
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident: FloatElem>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: FloatElem>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner<$T: FloatElem>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<$T: FloatElem>($($arg: $ty),*) $(-> $ret)? {
                inner($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            if $crate::group_norm::lanes::has_avx2() {
                // SAFETY: the CPU supports every feature `avx2` was compiled for.
                return unsafe { avx2($($arg),*) };
            }
            inner($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 sums give the same bits as the portable ones (where the CPU has AVX2).
    #[test]
    fn avx_matches_portable() {
        if !has_avx2() {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        let v: Vec<f32> = (0..LANES * 37).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.37e-3).collect();
        let w: Vec<f32> = (0..LANES * 37).map(|i| ((i * 104729 % 997) as f32 - 498.0) * 2.1e-3).collect();
        unsafe {
            assert_eq!(avx::sum(&v).to_bits(), portable_sum(&v).to_bits());
            let (a, b) = (avx::dev_sq(&v, 0.0123), portable_dev_sq(&v, 0.0123f32));
            assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()));
            let (a, b) = (avx::dot(&v, &w), portable_dot(&v, &w));
            assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()));
        }
    }
}
