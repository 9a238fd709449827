//! The model's fusions (bitgrad_ops::fusion) on and off: the demonstration's pre-trained tiny
//! BiT model on Fashion-MNIST images gives the same logits and parameter gradients either way,
//! to the rounding each fusion changes, in f32 and bf16, on the CPU and on the GPU test device
//! (Emu, or Cuda(0) under the CUDA shim); and the fused run really has fewer nodes. WS folded
//! into the CPU's bf16 weight packing changes no bit.
//!
//! Stated tolerances (relative L2, same weights and batch):
//! * f32, fused against unfused: logits ≤ 1e-5, gradients ≤ 1e-4 — the residual fusion adds the
//!   same terms in another order (f32 unit roundoff 6e-8, amplified through the layers and
//!   ReLU's kinks);
//! * bf16: the fused sum is rounded to bf16 once instead of twice, a change of the size of
//!   bf16's own error, which moves the gradients as much as bf16 itself does (12 % measured
//!   between the two bf16 runs on the CPU: ReLU masks and max-pool choices flip). So each bf16
//!   run is held to the f32 model instead: fused no further from it than 1.25× the unfused
//!   run's distance + 1 % (logits and gradients).

use bitgrad_engine::autograd;
use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Device, Rng, Tensor};
use bitgrad_models::ops::fusion::{self, Fusion, Fusions};
use bitgrad_models::ops::softmax_xent::{cross_entropy, Target};
use bitgrad_models::{Module, Precision, ResNetV2};

mod demo;
use demo::{batch, l2_rel, upstream, values};

/// One test at a time: the backward profile is process-wide.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Logits, all parameter gradients (concatenated) and the backward's "add" nodes of the
/// upstream model on 8 images, with `fusions` on.
fn run(device: Device, precision: Precision, fusions: Fusions) -> (Vec<f64>, Vec<f64>, usize) {
    let mut model = upstream(device);
    model.set_precision(precision).unwrap();
    let (x, y) = batch(8, 0, device);
    profiled(&model, &x, &y, fusions, "add")
}

/// `model`'s logits on `x`, all parameter gradients of its loss against the labels `y`
/// (concatenated), and how many `node` ops the backward ran, with `fusions` on.
fn profiled(model: &ResNetV2, x: &Tensor, y: &Tensor, fusions: Fusions, node: &str) -> (Vec<f64>, Vec<f64>, usize) {
    autograd::profile::enable(true);
    let logits = fusion::with(fusions, || model.forward(x)).unwrap();
    cross_entropy(&logits, Target::Hard(y), 0.0).unwrap().backward().unwrap();
    let report = autograd::profile::report();
    autograd::profile::enable(false);
    let count = report.iter().find(|r| r.0 == node).map_or(0, |r| r.1);
    let grads = model.named_parameters().iter().flat_map(|(_, p)| values(&p.grad().unwrap())).collect();
    (values(&logits), grads, count)
}

fn on_and_off(device: Device, precision: Precision) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (l_off, g_off, adds_off) = run(device, precision, Fusions::NONE);
    let (l_on, g_on, adds_on) = run(device, precision, Fusions::ALL);
    // The tiny model has 4 residual units: each one's add is inside its last convolution.
    assert_eq!(adds_off - adds_on, 4, "{device} {precision:?}: adds {adds_off} unfused, {adds_on} fused");
    let (el, eg) = (l2_rel(&l_on, &l_off), l2_rel(&g_on, &g_off));
    eprintln!("{device} {precision:?}: fused vs unfused relative L2: logits {el:.2e}, gradients {eg:.2e}");
    if precision == Precision::F32 {
        assert!(el <= 1e-5, "{device}: f32 logits {el:e} apart (bound 1e-5)");
        assert!(eg <= 1e-4, "{device}: f32 gradients {eg:e} apart (bound 1e-4)");
        return;
    }
    let (l32, g32, _) = run(device, Precision::F32, Fusions::NONE);
    for (what, on, off, f32) in [("logits", &l_on, &l_off, &l32), ("gradients", &g_on, &g_off, &g32)] {
        let (e_on, e_off) = (l2_rel(on, f32), l2_rel(off, f32));
        eprintln!("{device} bf16 {what} vs f32: fused {e_on:.2e}, unfused {e_off:.2e}");
        assert!(e_on <= 1.25 * e_off + 0.01, "{device} bf16 {what}: fused {e_on:e} from f32, unfused {e_off:e}");
    }
}

#[test]
fn f32_on_the_cpu() {
    on_and_off(Device::Cpu, Precision::F32);
}

#[test]
fn bf16_on_the_cpu() {
    on_and_off(Device::Cpu, Precision::Bf16);
}

/// WS folded into the CPU's bf16 weight packing changes no bit of the model's logits or
/// gradients (on a CPU without AMX or AVX512-BF16 the bf16 model runs f32 kernels, which do not
/// fold, and the test holds trivially).
#[test]
fn ws_packing_changes_no_bit() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let on = run(Device::Cpu, Precision::Bf16, Fusions::ALL);
    let off = run(Device::Cpu, Precision::Bf16, Fusions::only(Fusion::Residual));
    assert!(on.0 == off.0 && on.1 == off.1, "logits or gradients differ");
}

#[test]
fn bf16_on_the_gpu_test_device() {
    on_and_off(test_device(), Precision::Bf16);
}

/// `steps` optimiser steps of two micro-batches (`accumulate_step`, momentum and weight decay
/// as BiT's) with `fusions` on; the parameters' and momentum buffers' bits afterwards, and
/// whether each step was applied. `poison` makes one image of that step's last micro-batch NaN.
/// Also: how many parameter updates ran inside backward.
fn train_steps(
    device: Device,
    fusions: Fusions,
    steps: u64,
    poison: Option<u64>,
) -> (Vec<u64>, Vec<u64>, Vec<bool>, usize) {
    use bitgrad_models::data::{Batch, Position};
    use bitgrad_models::ops::sgd::Sgd;
    let mut model = upstream(device);
    model.set_training(true);
    let params = model.parameters();
    let mut sgd = Sgd::new(0.003, 0.9, 1e-4, false).unwrap();
    let mut applied = Vec::new();
    for step in 0..steps {
        let micro: Vec<Batch> = (0..2)
            .map(|m| {
                let (x, y) = batch(4, (step * 8 + m * 4) as usize, Device::Cpu);
                let mut v = values(&x);
                if poison == Some(step) && m == 1 {
                    v[5] = f64::NAN;
                }
                let images = Tensor::from_f64_vec(v, x.shape(), x.dtype(), Device::Cpu).unwrap();
                let labels = values(&y).into_iter().map(|l| l as i64).collect();
                Batch { images, labels, indices: vec![0; 4], position: Position::default() }
            })
            .collect();
        let out = fusion::with(fusions, || {
            bitgrad_models::train::accumulate_step(&model, &params, &mut sgd, &micro, step, 0.003, None)
        })
        .unwrap();
        applied.push(out.applied);
    }
    let bits = |t: &Tensor| values(t).into_iter().map(f64::to_bits).collect::<Vec<_>>();
    let weights = params.iter().flat_map(bits).collect();
    let buffers = params.iter().flat_map(|p| sgd.momentum_buffer(p).map(bits).unwrap_or_default()).collect();
    (weights, buffers, applied, sgd.updates_in_backward())
}

#[test]
fn ws_sgd_updates_the_same_bits_as_the_step_after_backward() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let without = Fusions::ALL.without(Fusion::WsSgd);
    for device in [Device::Cpu, test_device()] {
        let fused = train_steps(device, Fusions::ALL, 3, None);
        let plain = train_steps(device, without, 3, None);
        assert_eq!(fused.2, [true; 3]);
        // Each of the model's WS convolutions, each step, on the CPU; never on a GPU device.
        let convs = upstream(Device::Cpu).named_parameters().iter().filter(|(n, _)| n.contains("conv")).count();
        let expected = if device == Device::Cpu { 3 * convs } else { 0 };
        assert_eq!((fused.3, plain.3), (expected, 0), "{device}: updates inside backward");
        assert!(fused.0 == plain.0, "{device}: the weights differ");
        assert!(fused.1 == plain.1, "{device}: the momentum buffers differ");
        // A NaN loss in the last micro-batch: no update at all, fused or not (the fusion only
        // runs for a finite loss), and the next step goes on from the same state.
        let start = train_steps(device, Fusions::ALL, 1, None);
        let nan = train_steps(device, Fusions::ALL, 2, Some(1));
        assert_eq!(nan.2, [true, false]);
        assert_eq!(nan.3, start.3, "{device}: the NaN step updated nothing inside backward");
        assert!(nan.0 == start.0 && nan.1 == start.1, "{device}: a NaN step changed the state");
    }
}

/// `gn-conv` on and off on the CPU at 64 px (maps of 16 × 16 and 8 × 8, which the direct
/// kernels take): logits and every parameter gradient bit for bit the same, and the fused run
/// really ran the fused node.
#[test]
fn gn_conv_changes_no_bit() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::randn([2, 3, 64, 64], 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(3)).unwrap();
    let y = Tensor::from_vec(vec![1i64, 3], [2], Device::Cpu).unwrap();
    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    let run = |fusions| {
        let (logits, grads, fused) = profiled(&upstream(Device::Cpu), &x, &y, fusions, "group_norm_conv2d");
        (bits(logits), bits(grads), fused)
    };
    let on = run(Fusions::ALL);
    let off = run(Fusions::ALL.without(Fusion::GnConv));
    assert!(on.2 >= 1 && off.2 == 0, "fused nodes: {} on, {} off", on.2, off.2);
    assert!(on.0 == off.0, "logits differ");
    assert!(on.1 == off.1, "gradients differ");
}
