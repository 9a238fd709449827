//! group_norm on the emulated GPU (`Device::Emu`) against the CPU twin: forward, dx, dgamma and
//! dbeta (through `.backward()` of a weighted sum) on BiT shapes at small spatial sizes and odd
//! ones (H/W of 1, 3, 7; 1 and 3 channels per group; batch 1 and 3), a channels-last input seen
//! through a permutation, ReLU fused or not, with and without the affine, f64, f16 and bf16
//! (native kernels on Emu, f32 with one rounding on the CPU; and that the half kernels ran).
//! Also the test helpers of the weight_std and batch_norm GPU tests.

use super::*;
use bitgrad_engine::gpu::launch_count;
use bitgrad_engine::gpu::test_device;
use bitgrad_engine::Rng;

/// Random normal values of `dtype` on the CPU.
pub(crate) fn randn(dims: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), 0.0, 1.0, DType::F64, Device::Cpu, &mut Rng::new(seed))
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// A differentiable leaf on `dev` holding `t`'s values, stored in the axis order `store` (a
/// permutation of t's axes), and the logical (possibly non-contiguous) view the op sees.
pub(crate) fn leaf(t: &Tensor, dev: Device, store: Option<&[usize]>) -> (Tensor, Tensor) {
    let Some(p) = store else {
        let l = t.to_device(dev).unwrap().requires_grad_(true);
        return (l.clone(), l);
    };
    let mut inverse = vec![0; p.len()];
    for (i, &a) in p.iter().enumerate() {
        inverse[a] = i;
    }
    let l = t.permute(p).unwrap().contiguous().unwrap().to_device(dev).unwrap().requires_grad_(true);
    let view = l.permute(&inverse).unwrap();
    assert!(!view.is_contiguous());
    (l, view)
}

/// Backpropagates Σ y·w (a fixed random weight per element) and returns y's values.
pub(crate) fn backprop_weighted(y: &Tensor, seed: u64) -> Vec<f64> {
    let w = randn(y.dims(), y.dtype(), seed).to_device(y.device()).unwrap();
    y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    y.to_vec_f64().unwrap()
}

/// The gradient a leaf collected, as f64 (on the CPU).
pub(crate) fn grad_of(t: &Tensor) -> Vec<f64> {
    t.grad().expect("the leaf got a gradient").to_vec_f64().unwrap()
}

/// Elementwise |a − b| ≤ tol·(|b| + 1e-2·max|b|) (the second term covers values that cancel
/// down to almost nothing, such as the sums of a normalized gradient).
pub(crate) fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (y.abs() + 1e-2 * scale), "{what}[{i}]: gpu {x} vs cpu {y} (max |cpu| {scale})");
    }
}

/// The tolerance of [`assert_close`] for results of `dtype`. The half dtypes compute in f32 on
/// both devices and round once, so they differ by at most one rounding: an ulp is at most 2⁻¹⁰
/// (f16) or 2⁻⁷ (bf16) relative; allow two.
pub(crate) fn tol_for(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        _ => 1e-5,
    }
}

/// One case: forward values and every gradient, on `dev`.
#[allow(clippy::too_many_arguments)]
fn run(
    dev: Device,
    x: &Tensor,
    store: Option<&[usize]>,
    groups: usize,
    affine: (bool, bool),
    act: Activation,
    seed: u64,
) -> Vec<(String, Vec<f64>)> {
    let c = x.dims()[1];
    let (xl, xv) = leaf(x, dev, store);
    let gamma = affine.0.then(|| randn(&[c], x.dtype(), seed + 1).to_device(dev).unwrap().requires_grad_(true));
    let beta = affine.1.then(|| randn(&[c], x.dtype(), seed + 2).to_device(dev).unwrap().requires_grad_(true));
    let y = group_norm(&xv, groups, gamma.as_ref(), beta.as_ref(), GN_EPS, act).unwrap();
    assert_eq!((y.device(), y.dtype(), y.dims()), (dev, x.dtype(), x.dims()));
    let mut out = vec![("y".to_string(), backprop_weighted(&y, seed + 3)), ("dx".to_string(), grad_of(&xl))];
    out.extend(gamma.map(|g| ("dgamma".to_string(), grad_of(&g))));
    out.extend(beta.map(|b| ("dbeta".to_string(), grad_of(&b))));
    out
}

fn check(dims: &[usize], groups: usize, store: Option<&[usize]>, affine: (bool, bool), act: Activation, dtype: DType) {
    let seed = dims.iter().product::<usize>() as u64 + groups as u64;
    let x = randn(dims, dtype, seed).mul_scalar(1.5).unwrap().add_scalar(0.3).unwrap();
    let cpu = run(Device::Cpu, &x, store, groups, affine, act, seed);
    let emu = run(test_device(), &x, store, groups, affine, act, seed);
    let tol = tol_for(dtype);
    for ((name, a), (_, b)) in emu.iter().zip(&cpu) {
        assert_close(&format!("{dims:?} G={groups} {act:?} {affine:?} {dtype} {name}"), a, b, tol);
    }
}

const BOTH: (bool, bool) = (true, true);

#[test]
fn bit_shapes_match_the_cpu() {
    check(&[1, 64, 3, 3], 32, None, BOTH, Activation::None, DType::F32);
    check(&[3, 128, 4, 4], 32, None, BOTH, Activation::Relu, DType::F32);
    check(&[3, 32, 7, 7], 8, None, BOTH, Activation::Relu, DType::F32);
}

#[test]
fn odd_shapes_match_the_cpu() {
    // 3 channels per group, H/W of 1 and 7; 1 channel per group (instance norm); no spatial dims.
    check(&[3, 96, 1, 7], 32, None, BOTH, Activation::Relu, DType::F32);
    check(&[1, 32, 7, 3], 32, None, BOTH, Activation::None, DType::F32);
    check(&[3, 32, 1, 1], 8, None, BOTH, Activation::None, DType::F32);
    check(&[3, 12], 4, None, BOTH, Activation::Relu, DType::F32);
    // A group longer than a block (4·300 > 256 threads) with 4 channels per group.
    check(&[1, 8, 300], 2, None, BOTH, Activation::Relu, DType::F32);
}

#[test]
fn non_contiguous_input_and_optional_affine() {
    // The leaf is NHWC; the op sees the NCHW permutation.
    check(&[3, 64, 3, 3], 32, Some(&[0, 2, 3, 1]), BOTH, Activation::Relu, DType::F32);
    check(&[1, 32, 3, 7], 8, Some(&[0, 2, 3, 1]), (true, false), Activation::None, DType::F32);
    check(&[3, 32, 3, 3], 8, None, (false, true), Activation::Relu, DType::F32);
    check(&[3, 32, 3, 3], 8, None, (false, false), Activation::None, DType::F32);
}

#[test]
fn f64_matches_the_cpu() {
    check(&[3, 64, 3, 3], 32, None, BOTH, Activation::Relu, DType::F64);
}

/// f16 and bf16 on BiT and odd shapes, a permuted input, without the affine; the half kernels
/// themselves ran (no f32 round trip on the device).
#[test]
fn half_types_match_the_cpu_natively() {
    for (dtype, sfx) in [(DType::F16, "f16"), (DType::BF16, "bf16")] {
        let names = ["gn_forward", "gn_backward", "gn_param_grads"].map(|k| format!("{k}_{sfx}"));
        let before = names.each_ref().map(|n| launch_count(n));
        check(&[3, 64, 3, 3], 32, None, BOTH, Activation::Relu, dtype);
        check(&[3, 96, 1, 7], 32, None, BOTH, Activation::None, dtype);
        check(&[1, 8, 300], 2, None, BOTH, Activation::Relu, dtype);
        check(&[3, 64, 3, 3], 32, Some(&[0, 2, 3, 1]), (true, false), Activation::Relu, dtype);
        check(&[3, 32, 1, 1], 8, None, (false, false), Activation::None, dtype);
        for (n, b) in names.iter().zip(before) {
            assert!(launch_count(n) > b, "{n} was not launched");
        }
    }
}

/// Saved statistics stay on the device, and an input that does not require a gradient gets none.
#[test]
fn saved_tensors_on_device_and_only_requested_grads() {
    let x = randn(&[2, 32, 3, 3], DType::F32, 5).to_device(test_device()).unwrap();
    let gamma = randn(&[32], DType::F32, 6).to_device(test_device()).unwrap().requires_grad_(true);
    let y = group_norm(&x, 8, Some(&gamma), None, GN_EPS, Activation::None).unwrap();
    y.sum_all().unwrap().backward().unwrap();
    let dg = gamma.grad().unwrap();
    assert_eq!(dg.device(), test_device());
    assert!(x.grad().is_none());
}

/// Empty inputs (no spatial elements, batch 0) give empty results and zero parameter gradients.
#[test]
fn empty_inputs() {
    for dims in [[2usize, 8, 0], [0, 8, 3]] {
        let x = Tensor::zeros(dims, DType::F32, test_device()).unwrap().requires_grad_(true);
        let gamma = Tensor::ones([8], DType::F32, test_device()).unwrap().requires_grad_(true);
        let y = group_norm(&x, 4, Some(&gamma), None, GN_EPS, Activation::Relu).unwrap();
        assert_eq!(y.dims(), dims);
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(gamma.grad().unwrap().to_vec::<f32>().unwrap(), vec![0.0; 8]);
    }
}
