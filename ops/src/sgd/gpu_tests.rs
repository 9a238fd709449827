//! SGD on Emu against the CPU: three steps of every flavour (momentum, Nesterov, weight decay),
//! the multi-tensor launch (several parameters of odd sizes) and the single-tensor kernel (a list
//! mixing devices), bit for bit, plus in-place updates and state save / load across devices.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Device, Tensor};

use super::*;
use crate::testing::{randn, CPU};

/// The GPU device under test (`BITGRAD_GPU_TEST_DEVICE`).
fn gpu() -> Device {
    test_device()
}

/// Odd sizes: a scalar-like bias, sizes below / above a block, a conv weight.
const SHAPES: [&[usize]; 5] = [&[1], &[7], &[3, 5], &[33, 3, 3, 3], &[300]];

/// f32 parameters of [`SHAPES`] on `devices[i % len]`.
fn params(devices: &[Device], dtype: DType) -> Vec<Tensor> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let t = randn(d, i as u64).to_dtype(dtype).unwrap();
            t.to_device(devices[i % devices.len()]).unwrap().requires_grad_(true)
        })
        .collect()
}

/// Gives every parameter the gradient of step `step` (the same numbers on every device).
fn set_grads(ps: &[Tensor], step: u64) {
    for (i, p) in ps.iter().enumerate() {
        p.zero_grad();
        let g = randn(p.dims(), 100 * step + i as u64).to_dtype(p.dtype()).unwrap();
        p.accumulate_grad(&g.to_device(p.device()).unwrap()).unwrap();
    }
}

fn values(ts: &[Tensor]) -> Vec<Vec<f64>> {
    ts.iter().map(|t| t.to_vec_f64().unwrap()).collect()
}

fn buffers(sgd: &Sgd, ps: &[Tensor]) -> Vec<Option<Vec<f64>>> {
    ps.iter().map(|p| sgd.momentum_buffer(p).map(|b| b.to_vec_f64().unwrap())).collect()
}

/// `(lr, momentum, weight_decay, nesterov)`.
const CONFIGS: [(f64, f64, f64, bool); 4] =
    [(0.1, 0.9, 0.0, false), (0.1, 0.9, 1e-2, true), (0.05, 0.0, 0.1, false), (0.3, 0.5, 1e-4, false)];

#[test]
fn three_steps_equal_the_cpu_bit_for_bit() {
    for dtype in [DType::F32, DType::F64] {
        for (lr, mu, wd, nesterov) in CONFIGS {
            let reference = params(&[CPU], dtype);
            // All on Emu: the multi-tensor launch. CPU and Emu interleaved: per-tensor kernels.
            let multi = params(&[gpu()], dtype);
            let mixed = params(&[gpu(), CPU], dtype);
            let mut opts: Vec<Sgd> = (0..3).map(|_| Sgd::new(lr, mu, wd, nesterov).unwrap()).collect();
            for step in 0..3 {
                for (ps, sgd) in [&reference, &multi, &mixed].into_iter().zip(opts.iter_mut()) {
                    set_grads(ps, step);
                    sgd.step(ps).unwrap();
                }
            }
            let what = format!("{dtype} lr={lr} μ={mu} wd={wd} nesterov={nesterov}");
            assert_eq!(values(&multi), values(&reference), "multi-tensor, {what}");
            assert_eq!(values(&mixed), values(&reference), "per-tensor, {what}");
            assert_eq!(buffers(&opts[1], &multi), buffers(&opts[0], &reference), "buffers, {what}");
            assert_eq!(buffers(&opts[2], &mixed), buffers(&opts[0], &reference), "buffers, {what}");
            for (p, q) in multi.iter().zip(&mixed) {
                if let Some(b) = opts[1].momentum_buffer(p) {
                    assert_eq!(b.device(), gpu());
                }
                if let Some(b) = opts[2].momentum_buffer(q) {
                    assert_eq!(b.device(), q.device());
                }
            }
        }
    }
}

#[test]
fn updates_in_place_and_views_see_them() {
    let ps = params(&[gpu()], DType::F32);
    let view = ps[3].narrow(0, 1, 2).unwrap();
    let before = view.to_vec_f64().unwrap();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    set_grads(&ps, 0);
    sgd.step(&ps).unwrap();
    let buf = sgd.momentum_buffer(&ps[3]).unwrap().clone();
    set_grads(&ps, 1);
    sgd.step(&ps).unwrap();
    assert_ne!(view.to_vec_f64().unwrap(), before);
    assert!(sgd.momentum_buffer(&ps[3]).unwrap().same_storage(&buf), "the buffer is updated in place");
}

#[test]
fn state_moves_between_devices_and_resumes_exactly() {
    let (lr, mu, wd, nesterov) = CONFIGS[1];
    let reference = params(&[CPU], DType::F32);
    let mut sgd = Sgd::new(lr, mu, wd, nesterov).unwrap();
    for step in 0..3 {
        set_grads(&reference, step);
        sgd.step(&reference).unwrap();
    }
    // Two steps on Emu, a checkpoint, and the last step resumed from it on fresh Emu handles.
    let emu = params(&[gpu()], DType::F32);
    let mut first = Sgd::new(lr, mu, wd, nesterov).unwrap();
    for step in 0..2 {
        set_grads(&emu, step);
        first.step(&emu).unwrap();
    }
    let saved = first.state(&emu).unwrap();
    assert!(saved.iter().all(|b| b.as_ref().unwrap().device() == gpu()));
    // The checkpoint goes through the host, as a file would.
    let host: Vec<Option<Tensor>> = saved.iter().map(|b| b.as_ref().map(|b| b.to_device(CPU).unwrap())).collect();
    let resumed: Vec<Tensor> = emu.iter().map(|p| p.detach().requires_grad_(true)).collect();
    let mut second = Sgd::new(lr, mu, wd, nesterov).unwrap();
    second.load_state(&resumed, &host).unwrap();
    assert!(resumed.iter().all(|p| second.momentum_buffer(p).unwrap().device() == gpu()));
    set_grads(&resumed, 2);
    second.step(&resumed).unwrap();
    assert_eq!(values(&resumed), values(&reference));
}

#[test]
fn unsupported_dtypes_are_errors_and_one_parameter_steps() {
    let p = Tensor::zeros([3], DType::F32, gpu()).unwrap().requires_grad_(true);
    p.accumulate_grad(&Tensor::ones([3], DType::F32, gpu()).unwrap()).unwrap();
    let q = Tensor::zeros([3], DType::F16, gpu()).unwrap().requires_grad_(true);
    q.accumulate_grad(&Tensor::ones([3], DType::F16, gpu()).unwrap()).unwrap();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    assert!(matches!(sgd.step(std::slice::from_ref(&q)), Err(Error::UnsupportedDType { .. })));
    sgd.step(std::slice::from_ref(&p)).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![-0.1; 3]);
}
