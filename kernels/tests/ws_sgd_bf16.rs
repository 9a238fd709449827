//! The bf16 training path's weight kernels on the emulator:
//! * `ws_forward_f32_bf16` (kernels/cuda/ws_bf16.cu) against a CPU twin that repeats
//!   `bg_block_moments` (norm_stats.cuh) bit for bit, and against `ws_forward_f32` on the same
//!   values (the same μ, r, and ŵ before its bf16 rounding); `ws_backward_f32` on the plan
//!   `gn_nhwc::ws_launch` gives, within f32 rounding of an f64 reference;
//! * `sgd_multi_f32_bf16` (sgd.cu) against a CPU twin of PyTorch's SGD step with the kernel's
//!   roundings (bit for bit: w, the momentum buffer and the bf16 copy), on a list of tensors of
//!   odd sizes in one launch, with and without momentum, weight decay and Nesterov.

mod common;

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::gn_nhwc::{ws_launch, WS_THREADS};
use common::blocksum::strided_block_sum;
use common::tc::{Half, Rng};
use common::*;

const EPS: f64 = 1e-5;

fn rn(x: f32) -> u16 {
    Half::Bf16.round(x)
}

/// The twin of `ws_forward_f32_bf16` on one row: (ŵ in f32 before the bf16 rounding, μ, r).
fn ws_twin_row(w: &[f32]) -> (Vec<f32>, f32, f32) {
    let (n, t) = (w.len(), WS_THREADS as usize);
    let dn = n as f64;
    let mean0 = (strided_block_sum(n, t, |j| w[j] as f64) / dn) as f32;
    let dev = strided_block_sum(n, t, |j| (w[j] - mean0) as f64);
    let sq = strided_block_sum(n, t, |j| {
        let d = w[j] - mean0;
        (d * d) as f64 // an f32 product, as bg_block_moments
    });
    let var = (sq - dev * dev / dn) / dn;
    let var = if var > 0.0 { var } else { 0.0 };
    let (mt, rt) = ((mean0 as f64 + dev / dn) as f32, (1.0 / (var + EPS).sqrt()) as f32);
    (w.iter().map(|&v| (v - mt) * rt).collect(), mt, rt)
}

/// (K, R·S·C): BiT's stem (3 channels), a 1×1 of 13 channels, a 3×3 of 40, one row.
const WS_SHAPES: &[[usize; 2]] = &[[8, 7 * 7 * 3], [24, 13], [16, 3 * 3 * 40], [1, 1000]];

fn launch_ws(kernel_args: &[Vec<u8>], k: usize, per_row: usize, backward: bool, modes: &Modes) {
    let l = ws_launch(k, per_row, backward).unwrap();
    run(l.kernel, l.grid, l.block, l.smem_bytes, kernel_args, modes).unwrap();
}

#[test]
fn ws_bf16_equals_its_twin_and_the_f32_kernel() {
    let mut rng = Rng(0x5717);
    for &[k, n] in WS_SHAPES {
        // Rows with a large common offset (the two-pass variance matters) and a constant row.
        let mut w: Vec<f32> = (0..k * n).map(|i| 100.0 * (i / n) as f32 + 0.01 * rng.unit()).collect();
        if k > 1 {
            w[n..2 * n].fill(0.375);
        }
        let n64 = n as i64;
        for modes in BOTH {
            let wb = upload(&w, &modes);
            let out = filled(k * n, 0x7FC0u16, &modes);
            let (mean, rstd) = (filled(k, f32::NAN, &modes), filled(k, f32::NAN, &modes));
            launch_ws(&[arg(&n64), arg(&EPS), ptr(&wb), ptr(&out), ptr(&mean), ptr(&rstd)], k, n, false, &modes);
            // The f32 kernel on the same values and block size.
            let out32 = filled(k * n, f32::NAN, &modes);
            let (mean32, rstd32) = (filled(k, f32::NAN, &modes), filled(k, f32::NAN, &modes));
            let args = [arg(&n64), arg(&EPS), ptr(&wb), ptr(&out32), ptr(&mean32), ptr(&rstd32)];
            run("ws_forward_f32", [k as u32, 1, 1], [WS_THREADS, 1, 1], 0, &args, &modes).unwrap();
            let (got, m, r) = (download::<u16>(&out), download::<f32>(&mean), download::<f32>(&rstd));
            let (got32, m32, r32) = (download::<f32>(&out32), download::<f32>(&mean32), download::<f32>(&rstd32));
            for row in 0..k {
                let (what, mt, rt) = ws_twin_row(&w[row * n..(row + 1) * n]);
                let tag = format!("[{k}, {n}] row {row} {modes:?}");
                assert_eq!((m[row].to_bits(), r[row].to_bits()), (mt.to_bits(), rt.to_bits()), "{tag}: μ, r");
                assert_eq!((m32[row].to_bits(), r32[row].to_bits()), (mt.to_bits(), rt.to_bits()), "{tag}: f32 μ, r");
                for (j, &v) in what.iter().enumerate() {
                    let i = row * n + j;
                    assert_eq!(got[i], rn(v), "{tag}: ŵ[{j}]");
                    assert_eq!(got[i], rn(got32[i]), "{tag}: ŵ[{j}] vs the f32 kernel's");
                }
            }
            if k > 1 {
                assert!(got[n..2 * n].iter().all(|&b| b == 0), "a constant row standardizes to exactly 0");
            }
        }
    }
}

#[test]
fn ws_backward_in_f32_meets_the_f64_formula() {
    let mut rng = Rng(0xB5);
    for &[k, n] in WS_SHAPES {
        let w: Vec<f32> = (0..k * n).map(|_| 0.01 * rng.unit()).collect();
        let g: Vec<f32> = (0..k * n).map(|_| rng.unit()).collect();
        let modes = Modes::CHECKED;
        let n64 = n as i64;
        let (wb, gb) = (upload(&w, &modes), upload(&g, &modes));
        let out = filled(k * n, 0u16, &modes);
        let (mean, rstd) = (filled(k, f32::NAN, &modes), filled(k, f32::NAN, &modes));
        launch_ws(&[arg(&n64), arg(&EPS), ptr(&wb), ptr(&out), ptr(&mean), ptr(&rstd)], k, n, false, &modes);
        let dw = filled(k * n, f32::NAN, &modes);
        launch_ws(&[arg(&n64), ptr(&gb), ptr(&wb), ptr(&mean), ptr(&rstd), ptr(&dw)], k, n, true, &modes);
        let dw = download::<f32>(&dw);
        for row in 0..k {
            let (ws, gs) = (&w[row * n..(row + 1) * n], &g[row * n..(row + 1) * n]);
            let mu = ws.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = ws.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / n as f64;
            let r = 1.0 / (var + EPS).sqrt();
            let what: Vec<f64> = ws.iter().map(|&v| (v as f64 - mu) * r).collect();
            let mg = gs.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let mgw = gs.iter().zip(&what).map(|(&a, b)| a as f64 * b).sum::<f64>() / n as f64;
            let want: Vec<f64> = gs.iter().zip(&what).map(|(&a, b)| r * (a as f64 - mg - b * mgw)).collect();
            let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            for j in 0..n {
                let got = dw[row * n + j] as f64;
                // f32 arithmetic on values of size r·|g|: a few ulps of the row's largest.
                assert!((got - want[j]).abs() <= 1e-5 * scale, "[{k}, {n}] row {row}: dw[{j}] {got} vs {}", want[j]);
            }
        }
    }
}

/// `bg_sgd_hyper`: neg_lr, momentum, weight_decay (f64), decay, nesterov (i32).
fn hyper(lr: f64, mu: f64, wd: f64, nesterov: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [-lr, mu, wd] {
        b.extend(v.to_ne_bytes());
    }
    b.extend(((wd != 0.0) as i32).to_ne_bytes());
    b.extend((nesterov as i32).to_ne_bytes());
    b
}

/// The step's hyper-parameters: lr, momentum, weight decay, Nesterov.
#[derive(Clone, Copy)]
struct Hyper(f64, f64, f64, bool);

/// The twin of one element's step (sgd.cu `sgd_elem` in f32): the new (w, buffer).
fn sgd_twin(w: f32, g: f32, b: Option<f32>, first: bool, Hyper(lr, mu, wd, nesterov): Hyper) -> (f32, Option<f32>) {
    let d = if wd != 0.0 { (wd as f32).mul_add(w, g) } else { g };
    let (d, b) = match b {
        Some(b) => {
            let mu = mu as f32;
            let nb = if first { d } else { mu * b + d };
            (if nesterov { mu.mul_add(nb, d) } else { nb }, Some(nb))
        }
        None => (d, None),
    };
    ((-lr as f32).mul_add(d, w), b)
}

#[test]
fn sgd_multi_f32_bf16_equals_its_twin() {
    let mut rng = Rng(0x56D);
    let sizes = [1usize, 33, 1000, 257, 4099];
    let configs = [(0.1, 0.9, 1e-4, false), (0.03, 0.9, 0.0, true), (0.5, 0.0, 1e-3, false)];
    for &(lr, mu, wd, nesterov) in &configs {
        for first in [true, false] {
            let modes = Modes::CHECKED;
            let data: Vec<[Vec<f32>; 3]> = sizes
                .iter()
                .map(|&n| {
                    std::array::from_fn(|k| {
                        (0..n).map(|_| if k == 0 { 3.0 * rng.unit() } else { rng.unit() }).collect()
                    })
                })
                .collect();
            let bufs: Vec<_> = data
                .iter()
                .map(|[w, g, b]| {
                    (upload(w, &modes), upload(g, &modes), upload(b, &modes), filled(w.len(), 0x7FC0u16, &modes))
                })
                .collect();
            let momentum = mu != 0.0;
            let mut records = Vec::new();
            for ((w, g, b, wb), n) in bufs.iter().zip(sizes) {
                for p in [ptr(w), ptr(g), if momentum { ptr(b) } else { vec![0; 8] }, ptr(wb)] {
                    records.extend(p);
                }
                records.extend((n as i64).to_ne_bytes());
                records.extend((first as i32).to_ne_bytes());
                records.extend(0i32.to_ne_bytes());
            }
            assert_eq!(records.len(), 48 * sizes.len());
            let list = upload(&records, &modes);
            // 2 blocks of 256 per tensor: the larger ones grid-stride.
            let grid = [2, sizes.len() as u32, 1];
            run("sgd_multi_f32_bf16", grid, [256, 1, 1], 0, &[ptr(&list), hyper(lr, mu, wd, nesterov)], &modes)
                .unwrap();
            for (t, ((w, _, b, wb), [w0, g0, b0])) in bufs.iter().zip(&data).enumerate() {
                let (w, b, wb) = (download::<f32>(w), download::<f32>(b), download::<u16>(wb));
                for i in 0..w0.len() {
                    let (nw, nb) =
                        sgd_twin(w0[i], g0[i], momentum.then_some(b0[i]), first, Hyper(lr, mu, wd, nesterov));
                    let tag = format!("lr {lr} μ {mu} wd {wd} nesterov {nesterov} first {first}: tensor {t} [{i}]");
                    assert_eq!(w[i].to_bits(), nw.to_bits(), "{tag}: w");
                    assert_eq!(b[i].to_bits(), nb.unwrap_or(b0[i]).to_bits(), "{tag}: buffer");
                    assert_eq!(wb[i], rn(nw), "{tag}: bf16 copy");
                }
            }
        }
    }
}
