//! CPU kernels of group norm, generic over f32/f64.
//!
//! The input is viewed as `[N, C, S]` (S = product of the spatial dims). With contiguous NC…
//! data the `Cg·S` elements of one (n, g) group are one contiguous block, so each group is one
//! task: its block is read from memory once and stays in cache for the remaining passes.
//! Groups run in parallel; each group's arithmetic is sequential, so results do not depend on
//! the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::lanes::{assume_init, f64_of, filled_vec, map1, map2, of_f64, run_sums, sum, sum_dev_sq};
use bitgrad_engine::FloatElem;

/// Sizes of one group norm call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub n: usize,
    pub c: usize,
    /// Product of the spatial dims (1 when there are none).
    pub s: usize,
    pub groups: usize,
}

impl Dims {
    /// Channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Elements per (n, g) group.
    fn m(&self) -> usize {
        self.cg() * self.s
    }
}

/// Groups per rayon task: enough that a task holds ~16k elements, so tiny groups (instance norm
/// on small maps) do not drown in scheduling overhead.
fn min_groups_per_task(m: usize) -> usize {
    (16 * 1024 / m.max(1)).max(1)
}

/// The forward result: output, and per (n, g) mean and 1/sqrt(var + eps) for the backward.
pub(crate) struct Forward<T> {
    pub y: Vec<T>,
    pub mean: Vec<T>,
    pub rstd: Vec<T>,
}

pub(crate) fn forward<T: FloatElem>(
    x: &[T],
    d: Dims,
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    eps: f64,
    relu: bool,
) -> Forward<T> {
    super::lanes::level(bitgrad_engine::cpu::isa::Family::GroupNorm);
    let (m, cg, units) = (d.m(), d.cg(), d.n * d.groups);
    let (mut mean, mut rstd) = (vec![T::zero(); units], vec![T::zero(); units]);
    if m == 0 {
        return Forward { y: Vec::new(), mean, rstd };
    }
    let y = filled_vec(x.len(), |y| {
        y.par_chunks_mut(m)
            .zip(x.par_chunks(m))
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .enumerate()
            .with_min_len(min_groups_per_task(m))
            .for_each(|(u, ((y, x), (mean, rstd)))| {
                let c0 = (u % d.groups) * cg;
                let (gamma, beta) = (gamma.map(|g| &g[c0..c0 + cg]), beta.map(|b| &b[c0..c0 + cg]));
                (*mean, *rstd) = forward_group(x, y, d.s, gamma, beta, eps, relu);
            })
    });
    Forward { y, mean, rstd }
}

crate::multiversion! {
    /// One (n, g) group: mean, corrected two-pass variance, then `y = x·scale_c + shift_c` per
    /// channel (the normalization and the affine folded into one multiply-add), ReLU'd if asked.
    fn forward_group<T: FloatElem>(
        x: &[T],
        y: &mut [MaybeUninit<T>],
        s: usize,
        gamma: Option<&[T]>,
        beta: Option<&[T]>,
        eps: f64,
        relu: bool,
    ) -> (T, T) {
        let (mean, rstd) = group_stats(x, eps);
        for (ch, (yc, xc)) in y.chunks_mut(s).zip(x.chunks(s)).enumerate() {
            let (scale, shift) = channel_affine(mean, rstd, gamma, beta, ch);
            apply_channel(yc, xc, scale, shift, relu);
        }
        (of_f64(mean), of_f64(rstd))
    }
}

/// One group's μ and r = 1/sqrt(σ² + ε) in f64: the mean, then the corrected two-pass variance.
#[inline(always)]
fn group_stats<T: FloatElem>(x: &[T], eps: f64) -> (f64, f64) {
    let m = x.len() as f64;
    // Deviations are taken from the first estimate rounded to T; their mean corrects it.
    let mean0: T = of_f64(sum(x) / m);
    let (dev, sq) = sum_dev_sq(x, mean0);
    let mean = f64_of(mean0) + dev / m;
    let var = ((sq - dev * dev / m) / m).max(0.0);
    (mean, 1.0 / (var + eps).sqrt())
}

/// Channel `ch` of a group as `y = x·scale + shift`: the normalization and the affine folded
/// into one multiply-add, `(scale, shift)` rounded to T from f64.
#[inline(always)]
fn channel_affine<T: FloatElem>(mean: f64, rstd: f64, gamma: Option<&[T]>, beta: Option<&[T]>, ch: usize) -> (T, T) {
    let g = gamma.map_or(1.0, |g| f64_of(g[ch]));
    let b = beta.map_or(0.0, |b| f64_of(b[ch]));
    let scale = rstd * g;
    (of_f64(scale), of_f64(b - mean * scale))
}

/// `max(0, v·scale + shift)`, as the forward computes it (two roundings, no fused multiply-add).
#[inline(always)]
pub(crate) fn affine_relu<T: FloatElem>(v: T, scale: T, shift: T) -> T {
    let t = v * scale + shift;
    if t < T::zero() {
        T::zero()
    } else {
        t
    }
}

/// The forward's statistics without its output: μ and r per (n, g) (rounded to T, as saved for
/// the backward) and each (n, c) channel's `(scale, shift)` (`[N·C]` each), with which
/// `x·scale + shift` (ReLU'd: [`affine_relu`]) gives [`forward`]'s output bit for bit. For a
/// consumer that normalizes as it reads (`crate::group_norm_conv2d`).
pub(crate) fn affine<T: FloatElem>(x: &[T], d: Dims, gamma: Option<&[T]>, beta: Option<&[T]>, eps: f64) -> Affine<T> {
    super::lanes::level(bitgrad_engine::cpu::isa::Family::GroupNorm);
    let (m, cg, units) = (d.m(), d.cg(), d.n * d.groups);
    let mut a = Affine {
        mean: vec![T::zero(); units],
        rstd: vec![T::zero(); units],
        scale: vec![T::zero(); d.n * d.c],
        shift: vec![T::zero(); d.n * d.c],
    };
    if m == 0 {
        return a;
    }
    x.par_chunks(m)
        .zip(a.mean.par_iter_mut().zip(a.rstd.par_iter_mut()))
        .zip(a.scale.par_chunks_mut(cg).zip(a.shift.par_chunks_mut(cg)))
        .enumerate()
        .with_min_len(min_groups_per_task(m))
        .for_each(|(u, ((x, (mean, rstd)), (scale, shift)))| {
            let c0 = (u % d.groups) * cg;
            let (gamma, beta) = (gamma.map(|g| &g[c0..c0 + cg]), beta.map(|b| &b[c0..c0 + cg]));
            let (mu, r) = stats_group(x, eps);
            for ch in 0..cg {
                (scale[ch], shift[ch]) = channel_affine(mu, r, gamma, beta, ch);
            }
            (*mean, *rstd) = (of_f64(mu), of_f64(r));
        });
    a
}

crate::multiversion! {
    fn stats_group<T: FloatElem>(x: &[T], eps: f64) -> (f64, f64) {
        group_stats(x, eps)
    }
}

/// [`affine`]'s result.
pub(crate) struct Affine<T> {
    pub mean: Vec<T>,
    pub rstd: Vec<T>,
    pub scale: Vec<T>,
    pub shift: Vec<T>,
}

/// `y = act(x·scale + shift)` per (n, c) plane of `s` elements: [`forward`]'s output from
/// [`affine`]'s scale and shift, bit for bit.
pub(crate) fn apply<T: FloatElem>(x: &[T], s: usize, scale: &[T], shift: &[T], relu: bool) -> Vec<T> {
    filled_vec(x.len(), |y| {
        if s == 0 {
            return;
        }
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .zip(scale.par_iter().zip(shift.par_iter()))
            .with_min_len(min_groups_per_task(s))
            .for_each(|((y, x), (&scale, &shift))| apply_plane(y, x, scale, shift, relu));
    })
}

crate::multiversion! {
    fn apply_plane<T: FloatElem>(y: &mut [MaybeUninit<T>], x: &[T], scale: T, shift: T, relu: bool) {
        apply_channel(y, x, scale, shift, relu)
    }
}

/// One channel's `y = act(x·scale + shift)`.
#[inline(always)]
fn apply_channel<T: FloatElem>(y: &mut [MaybeUninit<T>], x: &[T], scale: T, shift: T, relu: bool) {
    if relu {
        // A plain loop: in `map1`'s blocks the select becomes per-lane branches.
        for (o, &v) in y.iter_mut().zip(x) {
            o.write(affine_relu(v, scale, shift));
        }
    } else {
        map1(y, x, |v| v * scale + shift);
    }
}

/// The backward result: dx, and dgamma / dbeta per channel (both always computed: they are
/// by-products of the sums dx needs).
pub(crate) struct Backward<T> {
    pub dx: Vec<T>,
    pub dgamma: Vec<T>,
    pub dbeta: Vec<T>,
}

/// One fused backward for x, gamma and beta. `y` is the forward output, read only for the ReLU
/// mask (`Some` exactly when the forward applied a ReLU).
pub(crate) fn backward<T: FloatElem>(
    x: &[T],
    g: &[T],
    y: Option<&[T]>,
    d: Dims,
    gamma: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
) -> Backward<T> {
    super::lanes::level(bitgrad_engine::cpu::isa::Family::GroupNorm);
    let (m, cg) = (d.m(), d.cg());
    // Per (n, c) partial sums Σ g' and Σ g'·x̂; reduced over n below, in order.
    let mut sum_g = vec![0f64; d.n * d.c];
    let mut sum_gx = vec![0f64; d.n * d.c];
    // m == 0: no elements (x is empty), and cg may be 0, which chunks cannot take.
    let dx = filled_vec(x.len(), |dx| {
        if m == 0 {
            return;
        }
        dx.par_chunks_mut(m)
            .zip(sum_g.par_chunks_mut(cg).zip(sum_gx.par_chunks_mut(cg)))
            .enumerate()
            .with_min_len(min_groups_per_task(m))
            .for_each(|(u, (dx, (sg, sgx)))| {
                let c0 = (u % d.groups) * cg;
                let span = u * m..(u + 1) * m;
                backward_group(
                    &x[span.clone()],
                    &g[span.clone()],
                    y.map(|y| &y[span]),
                    dx,
                    d.s,
                    gamma.map(|g| &g[c0..c0 + cg]),
                    mean[u],
                    rstd[u],
                    sg,
                    sgx,
                );
            })
    });
    let per_channel = |partials: &[f64]| -> Vec<T> {
        (0..d.c).map(|c| of_f64((0..d.n).map(|n| partials[n * d.c + c]).sum::<f64>())).collect()
    };
    Backward { dx, dgamma: per_channel(&sum_gx), dbeta: per_channel(&sum_g) }
}

crate::multiversion! {
    /// One (n, g) group of the backward. With g' the upstream gradient (masked by y > 0 after a
    /// ReLU), x̂ = (x − μ)·r and dx̂ = γ_c·g':
    ///   dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)),
    /// written per channel as `dx = A_c·g' + B·x + C` so that the last pass is one fused loop.
    /// After a ReLU, g' is first written into `dx` (a plain elementwise select, which
    /// vectorizes; folding the mask into the sums did not) and the last pass updates it in place.
    /// The sums pass collects, per channel, a_c = Σ g' and b_c = Σ g'·x; from them
    /// Σ g'·x̂ = r·(b_c − μ·a_c), which is also the channel's dgamma partial (a_c is dbeta's).
    fn backward_group<T: FloatElem>(
        x: &[T],
        g: &[T],
        y: Option<&[T]>,
        dx: &mut [MaybeUninit<T>],
        s: usize,
        gamma: Option<&[T]>,
        mean: T,
        rstd: T,
        sum_g: &mut [f64],
        sum_gxhat: &mut [f64],
    ) {
        if let Some(y) = y {
            for ((o, &gv), &yv) in dx.iter_mut().zip(g).zip(y) {
                o.write(if yv > T::zero() { gv } else { T::zero() });
            }
        }
        let (mu, r, m) = (f64_of(mean), f64_of(rstd), x.len() as f64);
        let (mut m1, mut m2) = (0.0, 0.0);
        {
            // SAFETY: with a ReLU, the loop above has just written all of dx.
            let gm: &[T] = if y.is_some() { unsafe { assume_init(dx) } } else { g };
            run_sums(gm, x, s, sum_g, sum_gxhat); // sum_gxhat holds Σ g'·x until rewritten below
        }
        for ch in 0..sum_g.len() {
            let (a, b) = (sum_g[ch], sum_gxhat[ch]);
            let gxhat = r * (b - mu * a);
            let gc = gamma.map_or(1.0, |g| f64_of(g[ch]));
            sum_gxhat[ch] = gxhat;
            m1 += gc * a;
            m2 += gc * gxhat;
        }
        let (m1, m2) = (m1 / m, m2 / m);
        let bx: T = of_f64(-r * r * m2);
        let c: T = of_f64(r * (r * m2 * mu - m1));
        for ch in 0..sum_g.len() {
            let span = ch * s..(ch + 1) * s;
            let a: T = of_f64(r * gamma.map_or(1.0, |g| f64_of(g[ch])));
            let (dxc, xc) = (&mut dx[span.clone()], &x[span.clone()]);
            if y.is_some() {
                for (o, &xv) in dxc.iter_mut().zip(xc) {
                    // SAFETY: written with g' by the first loop.
                    let gm = unsafe { o.assume_init() };
                    o.write(a * gm + (bx * xv + c));
                }
            } else {
                map2(dxc, xc, &g[span], |xv, gv| a * gv + (bx * xv + c));
            }
        }
    }
}
