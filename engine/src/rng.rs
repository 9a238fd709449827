//! Seeded random numbers that do not depend on the thread count.
//!
//! The generator is counter-based: element `i` of a draw is a pure function of `(seed, offset + i)`
//! (a SplitMix64 mix), so any thread may compute any element, and a GPU kernel can reproduce the
//! same numbers. Each draw advances `offset` by the number of elements drawn, as PyTorch's Philox
//! generator does.

use rayon::prelude::*;

/// The SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits for counter `i` of stream `seed`.
#[inline]
pub fn bits(seed: u64, i: u64) -> u64 {
    mix64(mix64(seed.wrapping_add(0x9E37_79B9_7F4A_7C15)) ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Uniform in [0, 1) with 53 random bits.
#[inline]
pub fn uniform(seed: u64, i: u64) -> f64 {
    (bits(seed, i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal by Box–Muller on the two 32-bit halves of one draw.
#[inline]
pub fn normal(seed: u64, i: u64) -> f64 {
    let b = bits(seed, i);
    let u1 = ((b >> 32) as f64 + 1.0) * (1.0 / 4_294_967_296.0); // (0, 1]: log is finite
    let u2 = (b & 0xFFFF_FFFF) as f64 * (1.0 / 4_294_967_296.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A seeded stream of random numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    seed: u64,
    offset: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { seed, offset: 0 }
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// How many numbers have been drawn so far (the state to save for an exact resume).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// Fills a vector of `n` values `f(seed, counter)`, in parallel when large, and advances.
    pub(crate) fn draw(&mut self, n: usize, f: impl Fn(u64, u64) -> f64 + Sync) -> Vec<f64> {
        let (seed, base) = (self.seed, self.offset);
        self.offset += n as u64;
        if n < 1 << 15 {
            (0..n as u64).map(|i| f(seed, base + i)).collect()
        } else {
            (0..n as u64).into_par_iter().map(|i| f(seed, base + i)).collect()
        }
    }

    /// A uniform integer in `0..n` (for shuffles and sampling on the host).
    pub fn below(&mut self, n: u64) -> u64 {
        let v = bits(self.seed, self.offset);
        self.offset += 1;
        ((v as u128 * n as u128) >> 64) as u64
    }
}
