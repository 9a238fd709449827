//! One optimiser step through the trainer against a hand-computed SGD step, and gradient
//! accumulation (batch split 4) against one big batch.

mod train_util;

use bitgrad_engine::Tensor;
use bitgrad_models::data::{Loader, LoaderConfig, Order, Position, Transform};
use bitgrad_models::train::{micro_step, train};
use bitgrad_models::{Module, ResNetV2};
use train_util::{config, hyper, synthetic, tiny_config, weights};

/// Two steps: step 0 has lr 0 (warm-up) and only seeds the momentum buffer with g0; step 1 at
/// lr = 0.1 does `buf = 0.9·g0 + g1; w ← w − lr·buf` (PyTorch's form, f32, the lr·buf product
/// fused as PyTorch's CPU kernel does). g0, g1 are computed here at the initial weights (step 0
/// did not move them) on the batches the trainer's loader yields, so the result must match the
/// trainer's exactly.
#[test]
fn two_trainer_steps_equal_hand_computed_momentum_sgd() {
    let ds = synthetic(24, 3, 1);
    let h = hyper(&[1, 4, 5, 6, 7], 0.1, 8, 1);
    let mut cfg = config(h.clone(), 3);
    cfg.stop_after = Some(2);
    let trained = train(&cfg, ds.clone(), None).unwrap();
    assert_eq!(trained.steps, 2);
    assert_eq!(h.lr(0), Some(0.0));
    assert_eq!(h.lr(1), Some(0.1));

    // The same initial model and the same batches.
    let model = ResNetV2::new(&tiny_config(3), cfg.seed).unwrap();
    let lcfg = LoaderConfig {
        batch_size: 8,
        order: Order::Shuffle,
        drop_last: false,
        workers: 1,
        prefetch: 2,
        seed: cfg.seed,
    };
    let loader = Loader::new(ds, Transform::train(h.resolution), lcfg).unwrap();
    let batches: Vec<_> = loader.iter(Position::default(), None).unwrap().take(2).map(|b| b.unwrap()).collect();
    let params = model.parameters();
    let grads = |b| -> Vec<Vec<f32>> {
        micro_step(&model, b, None, 1.0).unwrap();
        let g =
            params.iter().map(|p| p.grad().expect("every parameter has a gradient").to_vec::<f32>().unwrap()).collect();
        params.iter().for_each(Tensor::zero_grad);
        g
    };
    let (g0, g1) = (grads(&batches[0]), grads(&batches[1]));
    let (lr, mu) = (0.1f32, 0.9f32);
    let got = weights(&trained.model);
    let mut moved = 0.0f32;
    for (i, p) in params.iter().enumerate() {
        let w0 = p.to_vec::<f32>().unwrap();
        let want: Vec<f32> = (0..w0.len()).map(|j| (-lr).mul_add(mu * g0[i][j] + g1[i][j], w0[j])).collect();
        assert_eq!(got[i].1, want, "parameter {}", got[i].0);
        moved = moved.max(want.iter().zip(&w0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
    }
    assert!(moved > 1e-3, "the step must move the weights (max |Δw| = {moved})");
}

/// Batch 8 as one batch and as 4 micro-batches of 2 (loss of each scaled by ¼): the same
/// examples (the epoch order and each example's crop do not depend on the batch size), so with
/// GroupNorm the weights after two steps (step 0 seeds the momentum at lr 0, step 1 updates with
/// both steps' gradients) agree to f32 rounding (measured 1.7e-7 of each tensor's largest value;
/// later steps at this large lr amplify the rounding chaotically, so the test stops there).
#[test]
fn batch_split_four_equals_one_big_batch() {
    let ds = synthetic(24, 3, 2);
    let run = |split| {
        let mut cfg = config(hyper(&[1, 4, 5, 6, 7], 0.1, 8, split), 3);
        cfg.stop_after = Some(2);
        weights(&train(&cfg, ds.clone(), None).unwrap().model)
    };
    let (whole, split) = (run(1), run(4));
    let init = weights(&ResNetV2::new(&tiny_config(3), 7).unwrap());
    let (mut worst, mut moved) = (0.0f32, 0.0f32);
    for ((a, b), w0) in whole.iter().zip(&split).zip(&init) {
        let scale = a.1.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for ((x, y), z) in a.1.iter().zip(&b.1).zip(&w0.1) {
            worst = worst.max((x - y).abs() / scale);
            moved = moved.max((x - z).abs() / scale);
        }
    }
    assert!(worst < 1e-5, "split 4 differs from one batch by {worst} (relative to each tensor's max)");
    assert!(moved > 1e-2, "the steps must move the weights ({moved})");
}

/// The trainer on Emu (the GPU code path, emulated on the CPU) does what it does on the CPU:
/// two steps (one update with both steps' gradients) with MixUp and a batch split. The GPU
/// kernels sum in other orders; measured worst difference 4.1e-4 of a tensor's largest value
/// (a GN bias: its gradient is a sum with cancellation), bound 2e-3. A device mix-up (wrong
/// targets, unscaled loss, a missed parameter) gives differences of order 1.
#[test]
fn gpu_run_matches_the_cpu() {
    let device = bitgrad_engine::gpu::test_device();
    let ds = synthetic(12, 3, 9);
    let run = |device| {
        let mut h = hyper(&[1, 4, 5, 6, 7], 0.05, 6, 2);
        h.mixup_alpha = 0.3;
        let mut cfg = config(h, 3);
        cfg.device = device;
        cfg.stop_after = Some(2);
        let s = train(&cfg, ds.clone(), None).unwrap();
        assert_eq!(s.model.device(), device);
        weights(&s.model)
    };
    let (cpu, gpu) = (run(bitgrad_engine::Device::Cpu), run(device));
    for (a, b) in cpu.iter().zip(&gpu) {
        let scale = a.1.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = a.1.iter().zip(&b.1).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f32::max);
        assert!(worst < 2e-3, "{}: {device} differs from the CPU by {worst}", a.0);
    }
}

/// Fine-tuning trains copies: the state dict it starts from is unchanged afterwards, so several
/// runs can start from one set of weights (the built-in demonstration does). Before the fix the
/// model's parameters shared storage with the state dict and SGD updated it in place.
#[test]
fn finetuning_leaves_the_starting_weights_unchanged() {
    use bitgrad_models::train::TrainConfig;
    let arch = bitgrad_models::ResNetV2Config::named("resnetv2_tiny_bit", 3).unwrap();
    let mut start = ResNetV2::new(&arch, 7).unwrap().state_dict();
    start.metadata_mut().extend(arch.to_metadata());
    let before: Vec<Vec<f32>> = start.iter().map(|(_, t)| t.to_vec::<f32>().unwrap()).collect();
    let mut cfg = TrainConfig::finetune(start.clone(), hyper(&[1, 2, 3, 4, 5], 0.1, 8, 1));
    cfg.workers = 1;
    cfg.stop_after = Some(3);
    let trained = train(&cfg, synthetic(24, 3, 2), None).unwrap().model;
    let after: Vec<Vec<f32>> = start.iter().map(|(_, t)| t.to_vec::<f32>().unwrap()).collect();
    assert!(before == after, "the starting state dict was modified by training");
    let moved = trained
        .state_dict()
        .iter()
        .zip(&before)
        .any(|((n, t), b)| !n.starts_with("head") && t.to_vec::<f32>().unwrap() != *b);
    assert!(moved, "training must move the body's weights");
}
