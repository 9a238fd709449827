//! weight_std on the emulated GPU (`Device::Emu`) against the CPU twin: ŵ and ∂w (through
//! `.backward()` of a weighted sum) on BiT filters, O not a multiple of 32, rows longer than a
//! block (2700 > 256 threads), one-element rows, rank 2, a permuted HWIO leaf, f64, f16 and bf16
//! (native kernels on Emu, f32 with one rounding on the CPU; and that the half kernels ran), and
//! a constant filter (exactly zero on both).

use super::*;
use crate::group_norm::gpu_tests::{assert_close, backprop_weighted, grad_of, leaf, randn, tol_for};
use bitgrad_engine::gpu::launch_count;
use bitgrad_engine::gpu::test_device;

fn run(dev: Device, w: &Tensor, store: Option<&[usize]>, eps: f64, seed: u64) -> [Vec<f64>; 2] {
    let (wl, wv) = leaf(w, dev, store);
    let y = weight_std(&wv, eps).unwrap();
    assert_eq!((y.device(), y.dims()), (dev, w.dims()));
    [backprop_weighted(&y, seed), grad_of(&wl)]
}

fn check(w: &Tensor, store: Option<&[usize]>, eps: f64) {
    let seed = w.numel() as u64;
    let (cpu, emu) = (run(Device::Cpu, w, store, eps, seed), run(test_device(), w, store, eps, seed));
    let tol = tol_for(w.dtype());
    for (name, (a, b)) in ["w_hat", "dw"].iter().zip(emu.iter().zip(&cpu)) {
        assert_close(&format!("{:?} {} {name}", w.dims(), w.dtype()), a, b, tol);
    }
}

#[test]
fn filters_match_the_cpu() {
    for (dims, eps) in [
        (vec![40usize, 300, 3, 3], WS_EPS_BIT), // O = 40, rows of 2700 > block
        (vec![64, 3, 7, 7], WS_EPS_TIMM),       // the stem
        (vec![33, 1, 1, 1], WS_EPS_BIT),        // one-element rows: ŵ = 0, ∂w = 0
        (vec![5, 7], WS_EPS_BIT),               // a linear weight
    ] {
        check(&randn(&dims, DType::F32, dims[0] as u64).mul_scalar(0.05).unwrap(), None, eps);
    }
    check(&randn(&[7, 5, 3, 3], DType::F64, 3), None, WS_EPS_BIT);
}

/// The leaf is HWIO (the checkpoint layout); the op sees the OIHW permutation.
#[test]
fn permuted_leaf_matches_the_cpu() {
    check(&randn(&[48, 16, 3, 3], DType::F32, 9), Some(&[2, 3, 1, 0]), WS_EPS_BIT);
}

/// A constant filter standardizes to exactly zero on the device too, next to ordinary rows.
#[test]
fn constant_filter_is_exactly_zero() {
    let mut v = randn(&[3, 4, 3, 3], DType::F32, 1).to_vec::<f32>().unwrap();
    v[36..72].iter_mut().for_each(|x| *x = 0.1);
    let w = Tensor::from_vec(v, [3, 4, 3, 3], Device::Cpu).unwrap();
    check(&w, None, WS_EPS_BIT);
    let y = weight_std(&w.to_device(test_device()).unwrap(), WS_EPS_BIT).unwrap().to_vec::<f32>().unwrap();
    assert!(y[36..72].iter().all(|&x| x == 0.0));
}

/// f16 and bf16 filters (a long row, the stem, one-element rows, a permuted leaf) against the
/// CPU, and the half kernels themselves ran (no f32 round trip on the device).
#[test]
fn half_filters_match_the_cpu_natively() {
    for (dtype, sfx) in [(DType::F16, "f16"), (DType::BF16, "bf16")] {
        let names = [format!("ws_forward_{sfx}"), format!("ws_backward_{sfx}")];
        let before = names.each_ref().map(|n| launch_count(n));
        for dims in [vec![40usize, 300, 3, 3], vec![64, 3, 7, 7], vec![33, 1, 1, 1]] {
            check(&randn(&dims, dtype, dims[0] as u64).mul_scalar(0.05).unwrap(), None, WS_EPS_TIMM);
        }
        check(&randn(&[48, 16, 3, 3], dtype, 9), Some(&[2, 3, 1, 0]), WS_EPS_BIT);
        for (n, b) in names.iter().zip(before) {
            assert!(launch_count(n) > b, "{n} was not launched");
        }
    }
}

#[test]
fn empty_weights() {
    for dims in [[0usize, 3], [3, 0]] {
        let w = Tensor::zeros(dims, DType::F32, test_device()).unwrap().requires_grad_(true);
        let y = weight_std(&w, WS_EPS_BIT).unwrap();
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().dims(), dims);
    }
}
