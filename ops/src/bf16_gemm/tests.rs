//! The bf16 products through every backend: against an f64 reference within bf16's
//! tolerance, and the emulations against the instructions bit for bit where the CPU has them.

use super::*;

fn rand_bf16(n: usize, seed: u64) -> Vec<u16> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            to_bf16(((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
        })
        .collect()
}

/// Shapes with every kind of edge: partial tiles in m and n, k not a multiple of 32 or of 2.
const SHAPES: [(usize, usize, usize); 5] = [(1, 1, 1), (16, 16, 32), (17, 33, 45), (40, 7, 64), (5, 20, 101)];

fn reference(a: &[u16], b: &[u16], c0: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut want = vec![0.0; m * n];
    let mut scale = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut sa) = (c0[i * n + j] as f64, (c0[i * n + j] as f64).abs());
            for p in 0..k {
                let t = from_bf16(a[i * k + p]) as f64 * from_bf16(b[p * n + j]) as f64;
                s += t;
                sa += t.abs();
            }
            want[i * n + j] = s;
            scale[i * n + j] = sa;
        }
    }
    (want, scale)
}

#[test]
fn every_available_backend_matches_f64_within_f32_accumulation_error() {
    let backends = [Backend::DotEmulated, Backend::DotHardware, Backend::AmxEmulated, Backend::AmxHardware];
    for backend in backends.into_iter().filter(|b| b.available()) {
        for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
            let (a, b) = (rand_bf16(m * k, 1 + si as u64), rand_bf16(k * n, 100 + si as u64));
            let c0: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 * 0.25).collect();
            let mut c = c0.clone();
            gemm(backend, &a, &b, &mut c, m, n, k);
            let (want, scale) = reference(&a, &b, &c0, m, n, k);
            for i in 0..m * n {
                // Products are exact in f32; only the k + 1 additions round (2⁻²⁴ each).
                let tol = (k as f64 + 2.0) * f32::EPSILON as f64 * scale[i];
                assert!((c[i] as f64 - want[i]).abs() <= tol, "{backend:?} shape {si} [{i}]: {} vs {}", c[i], want[i]);
            }
        }
    }
}

/// Values that exercise the rounding rules: denormal inputs (bf16 exponent 0), products that
/// underflow, cancellation, large and tiny magnitudes.
fn adversarial(n: usize, seed: u64) -> Vec<u16> {
    let specials = [0x0001u16, 0x8001, 0x007f, 0x0080, 0x3f80, 0xbf80, 0x7f00, 0x0100, 0x3c00, 0xc2f7, 0x1f80, 0x2000];
    rand_bf16(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i % 3 == 0 { specials[i % specials.len()] } else { v })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn emulation_equals_hardware(emulated: Backend, hardware: Backend) {
    if !hardware.available() {
        eprintln!("skipped: this CPU cannot run {hardware:?} (no such instructions, or BITGRAD_CPU_ISA is lower)");
        return;
    }
    for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
        for data in [0u64, 1] {
            let gen = |len: usize, seed: u64| if data == 0 { rand_bf16(len, seed) } else { adversarial(len, seed) };
            let (a, b) = (gen(m * k, 7 + si as u64), gen(k * n, 70 + si as u64));
            let c0: Vec<f32> = (0..m * n).map(|i| if i % 5 == 0 { 1e-39 } else { (i % 3) as f32 - 1.0 }).collect();
            let (mut ce, mut ch) = (c0.clone(), c0.clone());
            gemm(emulated, &a, &b, &mut ce, m, n, k);
            gemm(hardware, &a, &b, &mut ch, m, n, k);
            assert_eq!(bits(&ce), bits(&ch), "{emulated:?} vs {hardware:?}, shape {si}, data {data}");
        }
    }
}

#[test]
fn vdpbf16ps_emulation_is_exact() {
    emulation_equals_hardware(Backend::DotEmulated, Backend::DotHardware);
}

#[test]
fn tdpbf16ps_emulation_is_exact() {
    emulation_equals_hardware(Backend::AmxEmulated, Backend::AmxHardware);
}

#[test]
fn to_bf16_rounds_to_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3f80);
    // 1 + 2⁻⁸ is halfway between two bf16 values: ties to even (down).
    assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
}
