//! batch_norm on the emulated GPU (`Device::Emu`) against the CPU twin: forward, dx, dgamma,
//! dbeta (through `.backward()` of a weighted sum) and the running statistics after the update,
//! in training (with and without running statistics) and eval mode, on BiT-like shapes, odd
//! spatial sizes, rank 2, batch 1, a channels-last input seen through a permutation, f64.

use super::*;
use crate::group_norm::gpu_tests::{assert_close, backprop_weighted, grad_of, leaf, randn};
use bitgrad_engine::gpu::test_device;

struct Case<'a> {
    dims: &'a [usize],
    store: Option<&'a [usize]>,
    affine: bool,
    running: bool,
    training: bool,
}

fn run(dev: Device, x: &Tensor, k: &Case, dtype: DType) -> Vec<(&'static str, Vec<f64>)> {
    let (c, seed) = (k.dims[1], k.dims.iter().product::<usize>() as u64);
    let (xl, xv) = leaf(x, dev, k.store);
    let param = |s: u64| randn(&[c], dtype, s).to_device(dev).unwrap().requires_grad_(true);
    let (gamma, beta) = if k.affine { (Some(param(seed + 1)), Some(param(seed + 2))) } else { (None, None) };
    let running = k.running.then(|| {
        let var = randn(&[c], dtype, seed + 4).abs().unwrap().add_scalar(0.5).unwrap();
        RunningStats::from_tensors(randn(&[c], dtype, seed + 3).to_device(dev).unwrap(), var.to_device(dev).unwrap())
            .unwrap()
    });
    let y = batch_norm(&xv, gamma.as_ref(), beta.as_ref(), running.as_ref(), k.training, 0.3, BN_EPS).unwrap();
    assert_eq!((y.device(), y.dims()), (dev, k.dims));
    let mut out = vec![("y", backprop_weighted(&y, seed + 5)), ("dx", grad_of(&xl))];
    if let (Some(g), Some(b)) = (gamma, beta) {
        out.extend([("dgamma", grad_of(&g)), ("dbeta", grad_of(&b))]);
    }
    if let Some(r) = running {
        assert_eq!(r.mean().device(), dev);
        out.extend([("running mean", r.mean().to_vec_f64().unwrap()), ("running var", r.var().to_vec_f64().unwrap())]);
    }
    out
}

fn check(k: Case, dtype: DType) {
    let x = randn(k.dims, dtype, 7).mul_scalar(2.0).unwrap().add_scalar(-0.4).unwrap();
    let (cpu, emu) = (run(Device::Cpu, &x, &k, dtype), run(test_device(), &x, &k, dtype));
    let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
    for ((name, a), (_, b)) in emu.iter().zip(&cpu) {
        assert_close(&format!("{:?} training={} {dtype} {name}", k.dims, k.training), a, b, tol);
    }
}

fn case(dims: &[usize], training: bool) -> Case<'_> {
    Case { dims, store: None, affine: true, running: true, training }
}

#[test]
fn training_matches_the_cpu_with_the_running_update() {
    check(case(&[3, 64, 3, 3], true), DType::F32);
    check(case(&[1, 32, 7, 1], true), DType::F32);
    check(case(&[3, 16], true), DType::F32); // rank 2: S = 1
    check(case(&[2, 8, 20, 20], true), DType::F32); // a channel longer than a block
    check(Case { running: false, affine: false, ..case(&[3, 32, 3, 3], true) }, DType::F32);
    check(case(&[3, 8, 3, 3], true), DType::F64);
}

#[test]
fn eval_matches_the_cpu() {
    check(case(&[3, 64, 3, 3], false), DType::F32);
    check(case(&[1, 32, 1, 1], false), DType::F32);
    check(Case { affine: false, ..case(&[3, 16, 7, 3], false) }, DType::F32);
    check(case(&[2, 8, 3, 3], false), DType::F64);
}

#[test]
fn non_contiguous_input_matches_the_cpu() {
    for training in [true, false] {
        check(Case { store: Some(&[0, 2, 3, 1]), ..case(&[3, 32, 3, 7], training) }, DType::F32);
    }
}

/// An empty batch in eval mode gives an empty result; a channel-free input, empty everything.
#[test]
fn empty_inputs() {
    for dims in [[0usize, 4, 3], [2, 0, 3]] {
        let x = Tensor::zeros(dims, DType::F32, test_device()).unwrap().requires_grad_(true);
        let running = RunningStats::new(dims[1], DType::F32, test_device()).unwrap();
        let y = batch_norm(&x, None, None, Some(&running), false, BN_MOMENTUM, BN_EPS).unwrap();
        assert_eq!((y.dims(), y.device()), (&dims[..], test_device()));
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().dims(), dims);
    }
}
