//! The CPU twin of the NHWC bf16 group norm (`nhwc.rs`): channels-last bf16 x, y, dx
//! `[N, H·W, C]`, f32 γ, β, dγ, dβ `[C]`, f32 statistics μ, r `[N, G]`, the ReLU fused. What a
//! model trained in bf16 on the CPU runs between its AMX convolutions, so the activations stay
//! bf16 and channels-last from one convolution to the next.
//!
//! The loops run along the channels, which are contiguous in NHWC, so they vectorize: the
//! statistics accumulate per channel over pixels — f32 partial sums over blocks of
//! [`PIXEL_BLOCK`] pixels, added in f64 — and are then combined per group; the variance is
//! E[x²] − μ² in f64 (clamped at 0). The normalization and the backward become per-channel
//! affine maps (`y = x·a_c + b_c`; `dx = dy·k1_c + x·k2_c + k3_c`). Images run on rayon's
//! threads, each element's sums in one fixed order, and dγ, dβ add the per-image sums in image
//! order: the results do not depend on the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::lanes::filled_vec;

/// Pixels whose per-channel sums stay in f32 before they are added in f64.
const PIXEL_BLOCK: usize = 64;

/// Pixel `p`'s `c` channels.
#[inline(always)]
fn row(t: &[u16], p: usize, c: usize) -> &[u16] {
    &t[p * c..][..c]
}

#[inline(always)]
fn bf(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// f32 → bf16 bits (the engine's branch-free rounding).
#[inline(always)]
fn round(v: f32) -> u16 {
    bitgrad_engine::bf16_bits(v)
}

/// `$name(args)` compiled for AVX-512 or AVX2+FMA when the active ISA level has it, else for the
/// baseline target (same operations in the same order, no fused multiply-adds: the same bits).
macro_rules! dispatch {
    ($name:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if bitgrad_engine::cpu::isa::active() >= bitgrad_engine::cpu::isa::Isa::Avx512 {
                // SAFETY: the active level is at most what the CPU has (AVX-512 F/BW/DQ/VL).
                unsafe { avx512::$name($($arg),*) }
            } else if super::lanes::has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                unsafe { avx2::$name($($arg),*) }
            } else {
                $name($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $name($($arg),*)
        }
    }};
}

/// A module of the per-image kernels compiled with `$features` (the same code; the wrappers only
/// carry the target features).
macro_rules! per_image_kernels {
    ($module:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use std::mem::MaybeUninit;

            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn forward_image(
                x: &[u16],
                y: &mut [MaybeUninit<u16>],
                c: usize,
                groups: usize,
                gamma: Option<&[f32]>,
                beta: Option<&[f32]>,
                eps: f64,
                relu: bool,
            ) -> (Vec<f32>, Vec<f32>) {
                super::forward_image(x, y, c, groups, gamma, beta, eps, relu)
            }

            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn backward_image(
                dy: &[u16],
                x: &[u16],
                y: Option<&[u16]>,
                dx: &mut [MaybeUninit<u16>],
                c: usize,
                gamma: Option<&[f32]>,
                mean: &[f32],
                rstd: &[f32],
            ) -> (Vec<f64>, Vec<f64>) {
                super::backward_image(dy, x, y, dx, c, gamma, mean, rstd)
            }
        }
    };
}

per_image_kernels!(avx2, "avx2,fma");
per_image_kernels!(avx512, "avx512f,avx512bw,avx512vl,avx2,fma");

/// Per-channel sums of two terms over an image's `$pixels` pixels: `$body` adds pixel `$p`'s
/// terms into the f32 block sums `$s1`, `$s2` (length `$c`), which are added in f64 every
/// [`PIXEL_BLOCK`] pixels. A macro, not a function taking a closure, so that the loop body is
/// compiled inside the caller's AVX build (a closure is a function of its own, built for the
/// baseline target).
macro_rules! channel_sums {
    ($pixels:expr, $c:expr, |$p:ident, $s1:ident, $s2:ident| $body:block) => {{
        let (pixels, c) = ($pixels, $c);
        let (mut t1, mut t2) = (vec![0f64; c], vec![0f64; c]);
        let (mut $s1, mut $s2) = (vec![0f32; c], vec![0f32; c]);
        for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
            $s1.fill(0.0);
            $s2.fill(0.0);
            for $p in p0..(p0 + PIXEL_BLOCK).min(pixels) {
                $body
            }
            for i in 0..c {
                t1[i] += $s1[i] as f64;
                t2[i] += $s2[i] as f64;
            }
        }
        (t1, t2)
    }};
}

/// The forward of one image: y, and μ, r per group.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_image(
    x: &[u16],
    y: &mut [MaybeUninit<u16>],
    c: usize,
    groups: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>) {
    let pixels = x.len() / c;
    let (sum, sq) = channel_sums!(pixels, c, |p, s1, s2| {
        for ((a, b), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(&x[p * c..][..c]) {
            let v = bf(v);
            *a += v;
            *b += v * v;
        }
    });
    let cg = c / groups;
    let m = (pixels * cg) as f64;
    let (mut mean, mut rstd) = (vec![0f32; groups], vec![0f32; groups]);
    for g in 0..groups {
        let mu = sum[g * cg..][..cg].iter().sum::<f64>() / m;
        let var = (sq[g * cg..][..cg].iter().sum::<f64>() / m - mu * mu).max(0.0);
        mean[g] = mu as f32;
        rstd[g] = (1.0 / (var + eps).sqrt()) as f32;
    }
    // y = γ·(x − μ)·r + β = x·a + b per channel.
    let a: Vec<f32> = (0..c).map(|i| gamma.map_or(1.0, |g| g[i]) * rstd[i / cg]).collect();
    let b: Vec<f32> = (0..c).map(|i| beta.map_or(0.0, |b| b[i]) - mean[i / cg] * a[i]).collect();
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for (((o, &v), &a), &b) in yr.iter_mut().zip(xr).zip(&a).zip(&b) {
            let t = bf(v) * a + b;
            o.write(round(if relu { t.max(0.0) } else { t }));
        }
    }
    (mean, rstd)
}

/// The forward over `n` images of `x` (`[n, pixels, c]` bf16 bits): y (bf16 bits), μ and r
/// (`[n, groups]`).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    x: &[u16],
    n: usize,
    c: usize,
    groups: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f64,
    relu: bool,
) -> (Vec<u16>, Vec<f32>, Vec<f32>) {
    let per = x.len() / n.max(1);
    let mut stats: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    // Every element of y is written once (each image's pixel rows, all channels).
    let y = filled_vec(x.len(), |y| {
        stats = y
            .par_chunks_mut(per.max(1))
            .zip(x.par_chunks(per.max(1)))
            .map(|(y, x)| dispatch!(forward_image(x, y, c, groups, gamma, beta, eps, relu)))
            .collect();
    });
    let mean = stats.iter().flat_map(|s| s.0.iter().copied()).collect();
    let rstd = stats.iter().flat_map(|s| s.1.iter().copied()).collect();
    (y, mean, rstd)
}

/// The upstream gradient of one pixel row through the ReLU (zero where the output was not
/// positive), as f32.
#[inline(always)]
fn masked(dy: &[u16], y: Option<&[u16]>, out: &mut [f32]) {
    match y {
        Some(y) => {
            for ((o, &d), &v) in out.iter_mut().zip(dy).zip(y) {
                *o = if bf(v) > 0.0 { bf(d) } else { 0.0 };
            }
        }
        None => {
            for (o, &d) in out.iter_mut().zip(dy) {
                *o = bf(d);
            }
        }
    }
}

/// The backward of one image: dx, and this image's dγ, dβ terms.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_image(
    dy: &[u16],
    x: &[u16],
    y: Option<&[u16]>,
    dx: &mut [MaybeUninit<u16>],
    c: usize,
    gamma: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let (pixels, groups) = (x.len() / c, mean.len());
    let cg = c / groups;
    let mu: Vec<f32> = (0..c).map(|i| mean[i / cg]).collect();
    let r: Vec<f32> = (0..c).map(|i| rstd[i / cg]).collect();
    let mut d = vec![0f32; c];
    // Per channel: Σ dy and Σ dy·x̂ (x̂ = (x − μ)·r).
    let (sd, sdx) = channel_sums!(pixels, c, |p, s1, s2| {
        masked(row(dy, p, c), y.map(|y| row(y, p, c)), &mut d);
        let xr = row(x, p, c);
        for ((((a, b), &dv), &xv), (&m, &rv)) in s1.iter_mut().zip(s2.iter_mut()).zip(&d).zip(xr).zip(mu.iter().zip(&r))
        {
            *a += dv;
            *b += dv * ((bf(xv) - m) * rv);
        }
    });
    // Per group: A = Σ γ·Σdy, B = Σ γ·Σdy·x̂; dx = r·(γ·dy − A/M − x̂·B/M) = dy·k1 + x·k2 + k3.
    let m = (pixels * cg) as f64;
    let gam = |i: usize| gamma.map_or(1.0, |g| g[i]) as f64;
    let (mut k1, mut k2, mut k3) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
    for g in 0..groups {
        let chans = g * cg..(g + 1) * cg;
        let a: f64 = chans.clone().map(|i| gam(i) * sd[i]).sum::<f64>() / m;
        let b: f64 = chans.clone().map(|i| gam(i) * sdx[i]).sum::<f64>() / m;
        let (rg, mg) = (rstd[g] as f64, mean[g] as f64);
        for i in chans {
            k1[i] = (rg * gam(i)) as f32;
            k2[i] = (-rg * rg * b) as f32;
            k3[i] = (rg * rg * mg * b - rg * a) as f32;
        }
    }
    for (p, out) in dx.chunks_exact_mut(c).enumerate() {
        masked(row(dy, p, c), y.map(|y| row(y, p, c)), &mut d);
        let xr = row(x, p, c);
        for ((((o, &dv), &xv), &a), (&b, &k)) in out.iter_mut().zip(&d).zip(xr).zip(&k1).zip(k2.iter().zip(&k3)) {
            o.write(round(dv * a + bf(xv) * b + k));
        }
    }
    (sdx, sd)
}

/// The backward over `n` images: dx (bf16 bits), dγ and dβ (f32 `[c]`, the images' sums added
/// in order).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    dy: &[u16],
    x: &[u16],
    y: Option<&[u16]>,
    n: usize,
    c: usize,
    gamma: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
) -> (Vec<u16>, Vec<f32>, Vec<f32>) {
    let per = (x.len() / n.max(1)).max(1);
    let groups = mean.len() / n.max(1);
    let mut parts: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    // Every element of dx is written once (each image's pixel rows, all channels).
    let dx = filled_vec(x.len(), |dx| {
        parts = dx
            .par_chunks_mut(per)
            .enumerate()
            .map(|(i, dx)| {
                let rows = i * per..(i + 1) * per;
                let stats = i * groups..(i + 1) * groups;
                let y = y.map(|y| &y[rows.clone()]);
                dispatch!(backward_image(
                    &dy[rows.clone()],
                    &x[rows.clone()],
                    y,
                    dx,
                    c,
                    gamma,
                    &mean[stats.clone()],
                    &rstd[stats.clone()]
                ))
            })
            .collect();
    });
    let (mut dgamma, mut dbeta) = (vec![0f64; c], vec![0f64; c]);
    for (g, b) in &parts {
        for i in 0..c {
            dgamma[i] += g[i];
            dbeta[i] += b[i];
        }
    }
    (dx, dgamma.into_iter().map(|v| v as f32).collect(), dbeta.into_iter().map(|v| v as f32).collect())
}
