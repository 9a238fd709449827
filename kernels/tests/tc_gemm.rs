//! `tc_gemm_bf16` (kernels/cuda/tc_gemm.cu) on the emulator: bit for bit equal to its CPU twin
//! (the emulator's summation order, below), and within the stated error bounds of an f64
//! reference, on shapes that leave partial tiles in every dimension and wrap the 3-stage ring,
//! under the plain and the fully checked modes (shuffled threads, random cp.async landing,
//! guard pages after every operand).

mod common;

use bitgrad_kernels::emu::Modes;
use bitgrad_kernels::tc::TC_GEMM_BF16;
use common::tc::{Half, Rng};
use common::*;

/// The CPU twin: C[i][j] summed from +0 over k = 0 .. 32·ceil(K/32) in order, one f32 rounding
/// per product added, the products beyond K being (+0)·(+0) as the kernel's zero-filled tiles
/// give them. This is exactly the emulator's mma order chained over the kernel's k loop.
fn twin(a: &[u16], b: &[u16], m: usize, n: usize, k: usize) -> Vec<f32> {
    let f = |x: u16| Half::Bf16.to_f32(x);
    let k_padded = k.div_ceil(TC_GEMM_BF16.tile_k as usize) * TC_GEMM_BF16.tile_k as usize;
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for kk in 0..k_padded {
                let (x, y) = if kk < k { (f(a[i * k + kk]), f(b[kk * n + j])) } else { (0.0, 0.0) };
                acc += x * y;
            }
            c[i * n + j] = acc;
        }
    }
    c
}

fn gemm(a: &[u16], b: &[u16], m: usize, n: usize, k: usize, modes: &Modes) -> Vec<f32> {
    let g = TC_GEMM_BF16;
    g.check_shape(m, n, k).unwrap();
    let (ab, bb) = (upload(a, modes), upload(b, modes));
    let c = filled(m * n, f32::NAN, modes);
    let dims = [m as i32, n as i32, k as i32];
    run(
        g.kernel,
        g.grid(m, n),
        [g.threads, 1, 1],
        g.smem_bytes,
        &[ptr(&ab), ptr(&bb), ptr(&c), arg(&dims[0]), arg(&dims[1]), arg(&dims[2])],
        modes,
    )
    .unwrap();
    download::<f32>(&c)
}

/// Random operands: f32 values in [-1, 1) and their bf16 roundings.
fn operands(rng: &mut Rng, len: usize) -> (Vec<f32>, Vec<u16>) {
    let x: Vec<f32> = (0..len).map(|_| rng.unit()).collect();
    let h = x.iter().map(|&v| Half::Bf16.round(v)).collect();
    (x, h)
}

#[test]
fn tc_gemm_bf16_equals_its_twin_and_meets_the_error_bounds() {
    let u = 2f64.powi(-24); // f32 unit roundoff
    let shapes = [(1, 8, 8), (37, 24, 40), (128, 128, 32), (200, 136, 264), (129, 264, 96), (64, 8, 520)];
    let mut rng = Rng(0x7C6E);
    for (m, n, k) in shapes {
        let (af, a) = operands(&mut rng, m * k);
        let (bf, b) = operands(&mut rng, k * n);
        let want = twin(&a, &b, m, n, k);
        for modes in [Modes::FAST, Modes::CHECKED, Modes { seed: 42, ..Modes::CHECKED }] {
            let got = gemm(&a, &b, m, n, k, &modes);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{m}x{n}x{k} {modes:?}: C[{}][{}] = {g} vs twin {w}",
                    i / n,
                    i % n
                );
            }
        }
        // Against f64: of the bf16 operands, only the f32 summation errs, by at most
        // γ_K·Σ|ab| (γ_K = K·u / (1 - K·u)); of the unrounded f32 operands, add the bf16
        // rounding of both factors, 2·2⁻⁹ relative per product (the bf16 tolerance a GPU result is
        // held to as well, where the tensor cores' truncated sums add about as much as γ_K).
        let gamma = k as f64 * u / (1.0 - k as f64 * u);
        let f = |x: u16| Half::Bf16.to_f32(x) as f64;
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut abs, mut orig) = (0f64, 0f64, 0f64);
                for kk in 0..k {
                    let p = f(a[i * k + kk]) * f(b[kk * n + j]);
                    exact += p;
                    abs += p.abs();
                    orig += af[i * k + kk] as f64 * bf[kk * n + j] as f64;
                }
                let got = want[i * n + j] as f64;
                assert!((got - exact).abs() <= gamma * abs, "{m}x{n}x{k} C[{i}][{j}]: {got} vs {exact}");
                let bf16_tol = (2.0 * 2f64.powi(-9) + 2f64.powi(-18) + gamma) * abs.max(f64::MIN_POSITIVE);
                assert!((got - orig).abs() <= bf16_tol, "{m}x{n}x{k} C[{i}][{j}]: {got} vs f32-operand {orig}");
            }
        }
    }
}

#[test]
fn a_shape_the_kernel_cannot_take_is_refused_and_would_fault() {
    let g = TC_GEMM_BF16;
    // K = 12: row 1 of A starts 24 bytes in, not on a 16-byte boundary.
    assert!(g.check_shape(4, 8, 12).is_err());
    let modes = Modes::FAST;
    let (a, b) = (filled(4 * 12, 0u16, &modes), filled(12 * 8, 0u16, &modes));
    let c = filled(4 * 8, 0f32, &modes);
    let dims = [4i32, 8, 12];
    let err = run(
        g.kernel,
        g.grid(4, 8),
        [g.threads, 1, 1],
        g.smem_bytes,
        &[ptr(&a), ptr(&b), ptr(&c), arg(&dims[0]), arg(&dims[1]), arg(&dims[2])],
        &modes,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cp.async.cg.shared.global at tc_gemm.cu:") && msg.contains("aligned"), "{msg}");
}
