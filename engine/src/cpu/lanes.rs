//! The elementwise maps' contiguous inner loops, compiled once per instruction-set level.
//!
//! The loops are plain Rust; each level's copy is the same loop inside a `#[target_feature]`
//! function, into which the op's closure inlines, so LLVM vectorises it with that level's
//! registers (the crate's baseline is SSE2: 4 f32 lanes; AVX2 gives 8, AVX-512 16 — and 8 or 16
//! lanes for the integer arithmetic of bf16 rounding). Every op is the same per-element
//! expression in each copy (Rust never contracts `a·b + c` into a fused multiply-add), so all
//! levels give the same bits; the tests check it. The level is [`level`]: the active one
//! (`BITGRAD_CPU_ISA` lowers it), at most AVX-512.

use crate::cpu::isa::{self, Family, Isa};

/// The level the maps run with now (recorded for `bitgrad info` and the benchmarks).
pub(crate) fn level() -> Isa {
    let isa = isa::active().min(Family::Elementwise.top());
    isa::record(Family::Elementwise, isa);
    isa
}

/// Defines `$name(isa, …)`: `$body` at the baseline, with AVX2 or with AVX-512.
macro_rules! per_level {
    ($(#[$m:meta])* fn $name:ident<$($g:ident),*>($($arg:ident: $ty:ty),*) where [$($bounds:tt)*] $body:block) => {
        $(#[$m])*
        pub(crate) fn $name<$($g),*>(isa: Isa, $($arg: $ty),*) where $($bounds)* {
            #[inline(always)]
            fn plain<$($g),*>($($arg: $ty),*) where $($bounds)* $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<$($g),*>($($arg: $ty),*) where $($bounds)* {
                plain($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            unsafe fn avx512<$($g),*>($($arg: $ty),*) where $($bounds)* {
                plain($($arg),*)
            }

            match isa {
                // SAFETY: `isa` never exceeds what the CPU has (`isa::active`, or a level the
                // tests take from `Isa::available`).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => plain($($arg),*),
            }
        }
    };
}

per_level! {
    /// `dst[i] = f(src[i])`.
    fn map1<T, U, F>(dst: &mut [U], src: &[T], f: &F) where [T: Copy, F: Fn(T) -> U] {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = f(x);
        }
    }
}

per_level! {
    /// `dst[i] = f(a[i], b[i])`.
    fn map2<A, B, U, F>(dst: &mut [U], a: &[A], b: &[B], f: &F) where [A: Copy, B: Copy, F: Fn(A, B) -> U] {
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d = f(x, y);
        }
    }
}

per_level! {
    /// `dst[i] = f(a[i], y)`.
    fn map2_right<A, B, U, F>(dst: &mut [U], a: &[A], y: B, f: &F) where [A: Copy, B: Copy, F: Fn(A, B) -> U] {
        for (d, &x) in dst.iter_mut().zip(a) {
            *d = f(x, y);
        }
    }
}

per_level! {
    /// `dst[i] = f(x, b[i])`.
    fn map2_left<A, B, U, F>(dst: &mut [U], x: A, b: &[B], f: &F) where [A: Copy, B: Copy, F: Fn(A, B) -> U] {
        for (d, &y) in dst.iter_mut().zip(b) {
            *d = f(x, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // Normal-ish values with exact ties for bf16 rounding, zeros, a NaN and infinities.
        let mut v: Vec<f32> = (0..n as u32)
            .map(|i| {
                let h = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503));
                (h % 20_001) as f32 / 997.0 - 10.0
            })
            .collect();
        for (i, s) in [f32::NAN, f32::INFINITY, -0.0, f32::from_bits(0x3f80_8000)].into_iter().enumerate() {
            if i * 7 < n {
                v[i * 7] = s;
            }
        }
        v
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every level gives the baseline's bits: unary, binary, a broadcast operand on either
    /// side, bf16 rounding; lengths with and without vector tails.
    #[test]
    fn every_level_gives_the_same_bits() {
        let bf16 = |x: f32| half::bf16::from_bits(crate::bf16_bits(x)).to_f32();
        for n in [0, 1, 3, 8, 15, 16, 17, 33, 1000] {
            let (a, b) = (values(n, 1), values(n, 2));
            let run = |isa: Isa| {
                let mut out = vec![vec![0f32; n]; 6];
                map1(isa, &mut out[0], &a, &|x: f32| if x > 0.0 { x } else { 0.0 });
                map1(isa, &mut out[1], &a, &|x: f32| x * 0.5 + 0.25);
                map2(isa, &mut out[2], &a, &b, &|x: f32, y: f32| x / y);
                map2(isa, &mut out[3], &a, &b, &|x: f32, y: f32| bf16(x + y));
                map2_right(isa, &mut out[4], &a, 3.0f32, &|x: f32, y: f32| x * y);
                map2_left(isa, &mut out[5], -2.0f32, &b, &|x: f32, y: f32| x - y);
                out.iter().map(|o| bits(o)).collect::<Vec<_>>()
            };
            let want = run(Isa::Scalar);
            for isa in Isa::available() {
                assert_eq!(run(isa), want, "{isa}, {n} elements");
            }
        }
    }
}
