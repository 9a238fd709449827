//! `gnh_forward_bf16`, `gnh_backward_bf16` and `gnh_param_grads_f32` (kernels/cuda/gn_nhwc.cu)
//! on the emulator: bit for bit equal to the CPU twin below (which repeats the kernels' f64
//! summation order through `common::blocksum`), and within bf16 rounding of an f64 reference of
//! group norm, on odd shapes — C not a multiple of 32, one channel per group, one group of many
//! channels (more than a block's threads), N·H·W·C/G not a multiple of the block, H·W of 1 —,
//! with and without the fused ReLU and the affine, and a constant group (normalizes to exactly β).

mod common;

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::gn_nhwc::{GnShape, GN_THREADS};
use common::blocksum::{block_sum, strided_block_sum, warp_sum};
use common::tc::{Half, Rng};
use common::*;

const EPS: f64 = 1e-5;
const T: usize = GN_THREADS as usize;

fn bf(bits: u16) -> f32 {
    Half::Bf16.to_f32(bits)
}
fn rn(x: f32) -> u16 {
    Half::Bf16.round(x)
}

/// The problem's data: x, dy bf16 (bits), γ, β f32 (None: no affine).
struct Data {
    s: GnShape,
    x: Vec<u16>,
    dy: Vec<u16>,
    gamma: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
}

impl Data {
    fn new(s: GnShape, rng: &mut Rng, affine: bool) -> Self {
        // An offset mean (3) with unit spread: the two-pass variance matters.
        let x = (0..s.len()).map(|_| rn(3.0 + rng.unit())).collect();
        let dy = (0..s.len()).map(|_| rn(rng.unit())).collect();
        let gamma = affine.then(|| (0..s.c).map(|_| 1.0 + 0.5 * rng.unit()).collect());
        let beta = affine.then(|| (0..s.c).map(|_| 0.5 * rng.unit()).collect());
        Data { s, x, dy, gamma, beta }
    }
    /// Index of element j of group (n, g).
    fn at(&self, n: usize, g: usize, j: usize) -> usize {
        let cg = self.s.cg();
        (n * self.s.hw + j / cg) * self.s.c + g * cg + j % cg
    }
    fn gamma(&self, c: usize) -> f64 {
        self.gamma.as_ref().map_or(1.0, |v| v[c] as f64)
    }
    fn beta(&self, c: usize) -> f64 {
        self.beta.as_ref().map_or(0.0, |v| v[c] as f64)
    }
}

/// The twin's forward: (y bits, mean, rstd), the kernel's operations in its order.
fn twin_forward(d: &Data, relu: bool) -> (Vec<u16>, Vec<f32>, Vec<f32>) {
    let (s, cg) = (d.s, d.s.cg());
    let m = s.hw * cg;
    let (mut y, mut mean, mut rstd) = (vec![0u16; s.len()], vec![], vec![]);
    for n in 0..s.n {
        for g in 0..s.groups {
            let xv = |j| bf(d.x[d.at(n, g, j)]);
            let mean0 = (strided_block_sum(m, T, |j| xv(j) as f64) / m as f64) as f32;
            let dev = strided_block_sum(m, T, |j| (xv(j) - mean0) as f64);
            let sq = strided_block_sum(m, T, |j| {
                let e = (xv(j) - mean0) as f64;
                e * e
            });
            let var = (sq - dev * dev / m as f64) / m as f64;
            let var = if var > 0.0 { var } else { 0.0 };
            let mu = mean0 as f64 + dev / m as f64;
            let r = 1.0 / (var + EPS).sqrt();
            for j in 0..m {
                let c = g * cg + j % cg;
                let sc = r * d.gamma(c);
                let shift = (-mu).mul_add(sc, d.beta(c)) as f32;
                let mut t = xv(j).mul_add(sc as f32, shift);
                if relu && t < 0.0 {
                    t = 0.0;
                }
                y[d.at(n, g, j)] = rn(t);
            }
            mean.push(mu as f32);
            rstd.push(r as f32);
        }
    }
    (y, mean, rstd)
}

/// The twin's backward from the forward's y, mean and rstd: (dx bits, dγ, dβ).
fn twin_backward(d: &Data, relu: bool, y: &[u16], mean: &[f32], rstd: &[f32]) -> (Vec<u16>, Vec<f32>, Vec<f32>) {
    let (s, cg) = (d.s, d.s.cg());
    let m = s.hw * cg;
    let mut dx = vec![0u16; s.len()];
    let (mut pg, mut pgx) = (vec![0.0f64; s.n * s.c], vec![0.0f64; s.n * s.c]);
    // The kernel masks where !(y > 0): y ≤ 0 or NaN.
    let grad = |i: usize| if relu && (bf(y[i]) <= 0.0 || bf(y[i]).is_nan()) { 0.0f32 } else { bf(d.dy[i]) };
    for n in 0..s.n {
        for g in 0..s.groups {
            let u = n * s.groups + g;
            let (mu, r) = (mean[u] as f64, rstd[u] as f64);
            let c0 = g * cg;
            let idx = |p: usize, ch: usize| (n * s.hw + p) * s.c + c0 + ch;
            let (mut sa, mut sb) = (vec![0.0; cg], vec![0.0; cg]);
            for ch in 0..cg {
                let lanes = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
                    (0..32).map(|l| (l..s.hw).step_by(32).fold(0.0, |acc, p| acc + f(idx(p, ch)))).collect()
                };
                sa[ch] = warp_sum(&lanes(&|i| grad(i) as f64));
                sb[ch] = warp_sum(&lanes(&|i| grad(i) as f64 * bf(d.x[i]) as f64));
            }
            let (mut t1, mut t2) = (vec![0.0; T], vec![0.0; T]);
            let mut coef = vec![0f32; cg];
            for ch in 0..cg {
                let (a, gxhat) = (sa[ch], r * (-mu).mul_add(sa[ch], sb[ch]));
                let gc = d.gamma(c0 + ch);
                pg[n * s.c + c0 + ch] = a;
                pgx[n * s.c + c0 + ch] = gxhat;
                coef[ch] = (r * gc) as f32;
                t1[ch % T] = gc.mul_add(a, t1[ch % T]);
                t2[ch % T] = gc.mul_add(gxhat, t2[ch % T]);
            }
            let m1 = block_sum(&t1) / m as f64;
            let m2 = block_sum(&t2) / m as f64;
            let bx = (-r * r * m2) as f32;
            let cc = (r * (r * m2).mul_add(mu, -m1)) as f32;
            for j in 0..m {
                let i = d.at(n, g, j);
                dx[i] = rn(coef[j % cg].mul_add(grad(i), bx.mul_add(bf(d.x[i]), cc)));
            }
        }
    }
    let sum_n = |p: &[f64], ch: usize| (0..s.n).fold(0.0, |acc, n| acc + p[n * s.c + ch]) as f32;
    let dgamma = (0..s.c).map(|ch| sum_n(&pgx, ch)).collect();
    let dbeta = (0..s.c).map(|ch| sum_n(&pg, ch)).collect();
    (dx, dgamma, dbeta)
}

/// Forward then backward on the emulator (the backward reads the kernel's own y, mean, rstd).
#[allow(clippy::type_complexity)]
fn run_gpu(d: &Data, relu: bool, modes: &Modes) -> ((Vec<u16>, Vec<f32>, Vec<f32>), (Vec<u16>, Vec<f32>, Vec<f32>)) {
    let s = d.s;
    let groups = s.n * s.groups;
    let (x, dy) = (upload(&d.x, modes), upload(&d.dy, modes));
    let gamma = d.gamma.as_ref().map(|v| upload(v, modes));
    let beta = d.beta.as_ref().map(|v| upload(v, modes));
    let opt = |b: &Option<bitgrad_kernels::emu::Buffer>| b.as_ref().map_or(0u64.to_ne_bytes().to_vec(), ptr);
    let y = filled(s.len(), 0x7FC0u16, modes);
    let (mean, rstd) = (filled(groups, f32::NAN, modes), filled(groups, f32::NAN, modes));
    let hw = s.hw as i64;
    let (c, g, relu_i) = (s.c as i32, s.groups as i32, relu as i32);
    let l = s.forward();
    let args = [
        arg(&hw),
        arg(&c),
        arg(&g),
        arg(&EPS),
        arg(&relu_i),
        ptr(&x),
        opt(&gamma),
        opt(&beta),
        ptr(&y),
        ptr(&mean),
        ptr(&rstd),
    ];
    run(l.kernel, l.grid, l.block, l.smem_bytes, &args, modes).unwrap();

    let dx = filled(s.len(), 0x7FC0u16, modes);
    let (pg, pgx) = (filled(s.partials(), f64::NAN, modes), filled(s.partials(), f64::NAN, modes));
    let y_arg = if relu { ptr(&y) } else { 0u64.to_ne_bytes().to_vec() };
    let l = s.backward();
    let args = [
        arg(&hw),
        arg(&c),
        arg(&g),
        arg(&relu_i),
        ptr(&x),
        ptr(&dy),
        y_arg,
        opt(&gamma),
        ptr(&mean),
        ptr(&rstd),
        ptr(&dx),
        ptr(&pg),
        ptr(&pgx),
    ];
    run(l.kernel, l.grid, l.block, l.smem_bytes, &args, modes).unwrap();
    let (dgamma, dbeta) = (filled(s.c, f32::NAN, modes), filled(s.c, f32::NAN, modes));
    let l = s.param_grads();
    let (n64, c64) = (s.n as i64, s.c as i64);
    let args = [arg(&n64), arg(&c64), ptr(&pg), ptr(&pgx), ptr(&dgamma), ptr(&dbeta)];
    run(l.kernel, l.grid, l.block, l.smem_bytes, &args, modes).unwrap();
    ((download(&y), download(&mean), download(&rstd)), (download(&dx), download(&dgamma), download(&dbeta)))
}

fn same_bits<T: Copy + std::fmt::Debug + PartialEq>(what: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}[{i}]");
    }
}

/// f64 group norm: (y, dx, dγ, dβ) from the bf16 inputs (the mask from the f64 y).
fn reference(d: &Data, relu: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (s, cg) = (d.s, d.s.cg());
    let m = s.hw * cg;
    let (mut y, mut dx) = (vec![0.0; s.len()], vec![0.0; s.len()]);
    let (mut dgamma, mut dbeta) = (vec![0.0; s.c], vec![0.0; s.c]);
    for n in 0..s.n {
        for g in 0..s.groups {
            let ix: Vec<usize> = (0..m).map(|j| d.at(n, g, j)).collect();
            let xs: Vec<f64> = ix.iter().map(|&i| bf(d.x[i]) as f64).collect();
            let mu = xs.iter().sum::<f64>() / m as f64;
            let var = xs.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / m as f64;
            let r = 1.0 / (var + EPS).sqrt();
            let mut gp = vec![0.0; m];
            for (j, &i) in ix.iter().enumerate() {
                let c = g * cg + j % cg;
                let v = (xs[j] - mu) * r * d.gamma(c) + d.beta(c);
                y[i] = if relu { v.max(0.0) } else { v };
                gp[j] = if relu && v <= 0.0 { 0.0 } else { bf(d.dy[i]) as f64 };
            }
            let (mut m1, mut m2) = (0.0, 0.0);
            for j in 0..m {
                let c = g * cg + j % cg;
                let xh = (xs[j] - mu) * r;
                m1 += d.gamma(c) * gp[j] / m as f64;
                m2 += d.gamma(c) * gp[j] * xh / m as f64;
                dbeta[c] += gp[j];
                dgamma[c] += gp[j] * xh;
            }
            for (j, &i) in ix.iter().enumerate() {
                let xh = (xs[j] - mu) * r;
                dx[i] = r * (d.gamma(g * cg + j % cg) * gp[j] - m1 - xh * m2);
            }
        }
    }
    (y, dx, dgamma, dbeta)
}

/// |got − want| ≤ rel·|want| + abs·max|want|.
fn near(what: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs() + abs * scale, "{what}[{i}]: {g} vs f64 {w} (max {scale})");
    }
}

/// (N, H·W, C, G) and a name.
const SHAPES: &[(&str, [usize; 4])] = &[
    ("C40 G8 (5 per group)", [2, 5 * 3, 40, 8]),
    ("C24 G1", [1, 7 * 7, 24, 1]),
    ("C36 G36 (1 per group)", [3, 3 * 5, 36, 36]),
    ("C96 G32 HW323", [2, 17 * 19, 96, 32]),
    ("HW1 C8 G2", [3, 1, 8, 2]),
    ("C520 G1 (more channels than threads)", [1, 3 * 3, 520, 1]),
];

#[test]
fn group_norm_nhwc_equals_its_twin_and_the_f64_reference() {
    let mut rng = Rng(0x6E6E);
    for &(name, [n, hw, c, g]) in SHAPES {
        let s = GnShape::new(n, hw, c, g).unwrap();
        for (affine, relu) in [(true, false), (true, true), (false, true)] {
            let d = Data::new(s, &mut rng, affine);
            let what = format!("{name} affine {affine} relu {relu}");
            let (y, mean, rstd) = twin_forward(&d, relu);
            let (dx, dgamma, dbeta) = twin_backward(&d, relu, &y, &mean, &rstd);
            let modes: &[Modes] = if relu { &BOTH } else { &[Modes::FAST] };
            for m in modes {
                let ((gy, gm, gr), (gdx, gdg, gdb)) = run_gpu(&d, relu, m);
                same_bits(&format!("{what} y {m:?}"), &gy, &y);
                same_bits(
                    &format!("{what} mean"),
                    &gm.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    &mean.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                );
                same_bits(
                    &format!("{what} rstd"),
                    &gr.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    &rstd.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                );
                same_bits(&format!("{what} dx {m:?}"), &gdx, &dx);
                same_bits(
                    &format!("{what} dgamma"),
                    &gdg.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    &dgamma.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                );
                same_bits(
                    &format!("{what} dbeta"),
                    &gdb.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    &dbeta.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                );
            }
            // The twin against f64: y and dx are bf16 (half an ulp, 2⁻⁹ relative, plus the f32
            // arithmetic); dγ, dβ are f32 sums of bf16 gradients.
            let (ry, rdx, rdg, rdb) = reference(&d, relu);
            let wide = |v: &[u16]| v.iter().map(|&b| bf(b) as f64).collect::<Vec<_>>();
            let wide32 = |v: &[f32]| v.iter().map(|&b| b as f64).collect::<Vec<_>>();
            near(&format!("{what} y"), &wide(&y), &ry, 1.0 / 256.0, 1e-5);
            // dx cancels (g' minus its group means): an absolute term of 2⁻⁸ of the largest.
            near(&format!("{what} dx"), &wide(&dx), &rdx, 1.0 / 256.0, 1.0 / 256.0);
            near(&format!("{what} dgamma"), &wide32(&dgamma), &rdg, 1e-5, 1e-5);
            near(&format!("{what} dbeta"), &wide32(&dbeta), &rdb, 1e-5, 1e-5);
        }
    }
}

#[test]
fn a_constant_group_normalizes_to_exactly_beta() {
    let s = GnShape::new(2, 5, 12, 3).unwrap();
    let mut d = Data::new(s, &mut Rng(7), true);
    for v in d.x.iter_mut() {
        *v = rn(2.75);
    }
    let ((y, _, _), _) = run_gpu(&d, false, &Modes::CHECKED);
    for (i, &b) in y.iter().enumerate() {
        assert_eq!(b, rn(d.beta.as_ref().unwrap()[i % s.c]), "y[{i}]");
    }
}
