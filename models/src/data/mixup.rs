//! MixUp as BiT's PyTorch `train.py` does it: λ ~ Beta(α, α) drawn once per optimiser step
//! (shared by its micro-batches), a random permutation of each micro-batch as the partner,
//! `x ← λ·x + (1 − λ)·x[perm]`, and the loss `λ·CE(y_a) + (1 − λ)·CE(y_b)` with
//! `y_a = y, y_b = y[perm]` (computed by the trainer from [`Mixed`]).
//!
//! Beta is sampled as `X / (X + Y)` with X, Y ~ Gamma(α) by Marsaglia–Tsang, kept in log space:
//! at α = 0.1 both gammas are often below f64's range (`u^(1/α)` underflows), and the ratio is
//! still well defined from the logs. All draws come from the engine's counter-based generator,
//! keyed by (seed, step, micro-batch), so a resumed run draws the same λ and permutations.

use bitgrad_engine::rng::{bits, normal, uniform};
use bitgrad_engine::{Device, Tensor};

use crate::{Error, Result};

/// A counter-based stream: draw `i` is a pure function of `(key, i)`.
struct Stream {
    key: u64,
    i: u64,
}

impl Stream {
    fn new(key: u64) -> Self {
        Stream { key, i: 0 }
    }
    /// Uniform in (0, 1] (safe for `ln`).
    fn open_uniform(&mut self) -> f64 {
        self.i += 1;
        1.0 - uniform(self.key, self.i - 1)
    }
    fn normal(&mut self) -> f64 {
        self.i += 1;
        normal(self.key, self.i - 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.i += 1;
        ((bits(self.key, self.i - 1) as u128 * n as u128) >> 64) as usize
    }
}

/// `ln X` for X ~ Gamma(shape, 1), Marsaglia–Tsang (2000); shape < 1 via the boost
/// `Gamma(a) = Gamma(a + 1) · U^(1/a)`.
fn ln_gamma_sample(shape: f64, s: &mut Stream) -> f64 {
    if shape < 1.0 {
        return ln_gamma_sample(shape + 1.0, s) + s.open_uniform().ln() / shape;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = s.normal();
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = s.open_uniform();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d.ln() + v.ln();
        }
    }
}

/// One Gamma(shape, 1) sample from stream `key` (shape > 0).
pub fn sample_gamma(shape: f64, key: u64) -> f64 {
    ln_gamma_sample(shape, &mut Stream::new(key)).exp()
}

/// One Beta(a, b) sample from stream `key` (a, b > 0).
pub fn sample_beta(a: f64, b: f64, key: u64) -> f64 {
    let mut s = Stream::new(key);
    let lx = ln_gamma_sample(a, &mut s);
    let ly = ln_gamma_sample(b, &mut s);
    // X / (X + Y) = 1 / (1 + e^(ln Y − ln X)), finite even when X and Y underflow.
    1.0 / (1.0 + (ly - lx).exp())
}

/// MixUp with parameter `alpha` (0 = off) and its own seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixUp {
    pub alpha: f64,
    pub seed: u64,
}

/// A mixed micro-batch: inputs and the two label sets with their weight λ.
#[derive(Debug)]
pub struct Mixed {
    pub images: Tensor,
    pub labels_a: Vec<i64>,
    pub labels_b: Vec<i64>,
    pub lambda: f64,
}

impl MixUp {
    /// λ for optimiser step `step`: Beta(α, α), or 1 when α = 0 (the reference's `else 1`).
    pub fn lambda(&self, step: u64) -> f64 {
        if self.alpha > 0.0 {
            sample_beta(self.alpha, self.alpha, bits(self.seed, step))
        } else {
            1.0
        }
    }

    /// The partner permutation of micro-batch `micro` (size `n`) in step `step`.
    pub fn permutation(&self, step: u64, micro: u64, n: usize) -> Vec<usize> {
        let mut s = Stream::new(bits(bits(self.seed ^ 0x006d_6978_7570, step), micro));
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, s.below(i + 1));
        }
        p
    }

    /// Mixes an NCHW f32 batch with its permutation partner at weight `lambda`.
    pub fn apply(&self, images: &Tensor, labels: &[i64], step: u64, micro: u64, lambda: f64) -> Result<Mixed> {
        let dims = images.dims().to_vec();
        if dims.is_empty() || dims[0] != labels.len() {
            return Err(Error::Msg(format!("{} labels for a batch of shape {dims:?}", labels.len())));
        }
        if !(0.0..=1.0).contains(&lambda) {
            return Err(Error::Msg(format!("the MixUp λ must be in [0, 1], got {lambda}")));
        }
        let n = labels.len();
        let perm = self.permutation(step, micro, n);
        let x = images.to_vec::<f32>()?;
        let per = x.len().checked_div(n).unwrap_or(0);
        let (l, m) = (lambda as f32, (1.0 - lambda) as f32);
        let mut out = Vec::with_capacity(x.len());
        for (i, &j) in perm.iter().enumerate() {
            let (a, b) = (&x[i * per..(i + 1) * per], &x[j * per..(j + 1) * per]);
            out.extend(a.iter().zip(b).map(|(&a, &b)| l * a + m * b));
        }
        Ok(Mixed {
            images: Tensor::from_vec(out, dims, Device::Cpu)?,
            labels_a: labels.to_vec(),
            labels_b: perm.iter().map(|&j| labels[j]).collect(),
            lambda,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: impl Iterator<Item = f64>) -> (f64, f64) {
        let v: Vec<f64> = xs.collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var)
    }

    #[test]
    fn gamma_and_beta_moments() {
        // Gamma(a, 1): mean a, variance a. 20 000 draws: standard error of the mean √(a/20000).
        for a in [0.1, 0.5, 1.0, 2.5, 9.0] {
            let (m, v) = moments((0..20_000).map(|i| sample_gamma(a, bits(1, i))));
            assert!((m - a).abs() < 5.0 * (a / 20_000f64).sqrt(), "a {a}: mean {m}");
            assert!((v - a).abs() < 0.1 * a, "a {a}: var {v}");
        }
        // Beta(α, α): mean ½, variance 1/(4(2α + 1)); α = 0.1 → 0.2083, α = 1 → 1/12.
        for (a, want_var) in [(0.1, 1.0 / 4.8), (1.0, 1.0 / 12.0), (4.0, 1.0 / 36.0)] {
            let xs: Vec<f64> = (0..20_000).map(|i| sample_beta(a, a, bits(2, i))).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let (m, v) = moments(xs.into_iter());
            assert!((m - 0.5).abs() < 0.01, "α {a}: mean {m}");
            assert!((v - want_var).abs() < 0.05 * want_var, "α {a}: var {v} vs {want_var}");
        }
    }

    #[test]
    fn lambda_permutation_and_mixing() {
        let mix = MixUp { alpha: 0.1, seed: 9 };
        assert_eq!(mix.lambda(3), mix.lambda(3));
        assert_ne!(mix.lambda(3), mix.lambda(4));
        assert_eq!(MixUp { alpha: 0.0, seed: 9 }.lambda(3), 1.0);
        let p = mix.permutation(3, 0, 8);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<_>>());
        assert_ne!(p, mix.permutation(3, 1, 8));
        assert_eq!(p, mix.permutation(3, 0, 8));

        // Two 1×1×2 "images": x = [[1, 2], [3, 4]].
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 1, 1, 2], Device::Cpu).unwrap();
        let labels = [5, 7];
        let m = mix.apply(&x, &labels, 0, 0, 0.25).unwrap();
        let perm = mix.permutation(0, 0, 2);
        let got = m.images.to_vec::<f32>().unwrap();
        let raw = [[1.0f32, 2.0], [3.0, 4.0]];
        for i in 0..2 {
            for k in 0..2 {
                let want = 0.25 * raw[i][k] + 0.75 * raw[perm[i]][k];
                assert!((got[i * 2 + k] - want).abs() < 1e-6);
            }
        }
        assert_eq!(m.labels_a, [5, 7]);
        assert_eq!(m.labels_b, [labels[perm[0]], labels[perm[1]]]);
        assert!(mix.apply(&x, &[1], 0, 0, 0.5).is_err());
        assert!(mix.apply(&x, &labels, 0, 0, 1.5).is_err());
    }
}
