//! The bf16-copy SGD step (`bf16.rs`) on the GPU test device against [`Sgd::step`] on the CPU:
//! three steps of every flavour (momentum, Nesterov, weight decay, no momentum) over parameters
//! of odd sizes in one launch, the f32 weights bit for bit, the bf16 copies equal to the f32
//! weights rounded to bf16, the momentum buffers equal to the CPU optimizer's; and the errors.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Device, Tensor};

use super::*;

/// f32 normal values on the CPU.
fn randn(dims: &[usize], seed: u64) -> Tensor {
    crate::testing::randn(dims, seed).to_dtype(DType::F32).unwrap()
}

const SHAPES: [&[usize]; 4] = [&[1], &[33], &[33, 3, 3, 3], &[300]];

#[test]
fn the_bf16_step_matches_sgd_on_the_cpu() {
    let dev = test_device();
    for (lr, mu, wd, nesterov) in [(0.1, 0.9, 1e-4, false), (0.03, 0.9, 0.0, true), (0.5, 0.0, 1e-3, false)] {
        let mut cpu_opt = Sgd::new(lr, mu, wd, nesterov).unwrap();
        let opt = Sgd::new(lr, mu, wd, nesterov).unwrap();
        let init: Vec<Tensor> = SHAPES.iter().enumerate().map(|(i, d)| randn(d, i as u64)).collect();
        let cpu: Vec<Tensor> = init.iter().map(|t| t.clone().requires_grad_(true)).collect();
        let w: Vec<Tensor> = init.iter().map(|t| t.to_device(dev).unwrap()).collect();
        let zeros = |dt: DType| -> Vec<Tensor> {
            w.iter().map(|t| Tensor::zeros(t.dims().to_vec(), dt, dev).unwrap()).collect()
        };
        let (bufs, copies) = (zeros(DType::F32), zeros(DType::BF16));
        for step in 0..3u64 {
            let grads: Vec<Tensor> =
                init.iter().enumerate().map(|(i, t)| randn(t.dims(), 100 * step + i as u64)).collect();
            for (p, g) in cpu.iter().zip(&grads) {
                p.zero_grad();
                p.accumulate_grad(g).unwrap();
            }
            cpu_opt.step(&cpu).unwrap();
            let gdev: Vec<Tensor> = grads.iter().map(|g| g.to_device(dev).unwrap()).collect();
            let list: Vec<SgdBf16Param> = (0..w.len())
                .map(|i| SgdBf16Param {
                    w: &w[i],
                    grad: &gdev[i],
                    momentum_buffer: (mu != 0.0).then_some(&bufs[i]),
                    w_bf16: &copies[i],
                })
                .collect();
            sgd_step_f32_bf16(&opt, &list, step == 0).unwrap();
            for i in 0..w.len() {
                let what = format!("lr {lr} μ {mu} wd {wd} nesterov {nesterov} step {step} param {i}");
                let want = cpu[i].to_vec_f64().unwrap();
                assert_eq!(w[i].to_vec_f64().unwrap(), want, "{what}: w");
                let rounded = cpu[i].to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap();
                assert_eq!(copies[i].to_vec_f64().unwrap(), rounded, "{what}: bf16 copy");
                if let Some(b) = cpu_opt.momentum_buffer(&cpu[i]) {
                    assert_eq!(bufs[i].to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "{what}: buffer");
                }
            }
        }
    }
}

#[test]
fn the_bf16_step_errors() {
    let dev = test_device();
    let opt = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    let z = |d: &[usize], dt: DType, dev: Device| Tensor::zeros(d.to_vec(), dt, dev).unwrap();
    let (w, g, b, c) = (
        z(&[4, 3], DType::F32, dev),
        z(&[4, 3], DType::F32, dev),
        z(&[4, 3], DType::F32, dev),
        z(&[4, 3], DType::BF16, dev),
    );
    let p = SgdBf16Param { w: &w, grad: &g, momentum_buffer: Some(&b), w_bf16: &c };
    assert!(sgd_step_f32_bf16(&opt, &[p], true).is_ok());
    let e = |p: SgdBf16Param, o: &Sgd| sgd_step_f32_bf16(o, &[p], true).unwrap_err().to_string();
    assert!(e(SgdBf16Param { w_bf16: &w, ..p }, &opt).contains("w_bf16"));
    assert!(e(SgdBf16Param { momentum_buffer: None, ..p }, &opt).contains("buffer"));
    assert!(e(p, &Sgd::new(0.1, 0.0, 0.0, false).unwrap()).contains("without momentum"));
    let short = z(&[4, 2], DType::F32, dev);
    assert!(e(SgdBf16Param { grad: &short, ..p }, &opt).contains("grad"));
    let t = z(&[3, 4], DType::F32, dev).transpose(0, 1).unwrap();
    assert!(e(
        SgdBf16Param { w: &t, grad: &t, momentum_buffer: None, w_bf16: &c },
        &Sgd::new(0.1, 0.0, 0.0, false).unwrap()
    )
    .contains("contiguous"));
    let (wc, gc, cc) = (
        z(&[4, 3], DType::F32, Device::Cpu),
        z(&[4, 3], DType::F32, Device::Cpu),
        z(&[4, 3], DType::BF16, Device::Cpu),
    );
    assert!(e(
        SgdBf16Param { w: &wc, grad: &gc, momentum_buffer: None, w_bf16: &cc },
        &Sgd::new(0.1, 0.0, 0.0, false).unwrap()
    )
    .contains("GPU"));
}
