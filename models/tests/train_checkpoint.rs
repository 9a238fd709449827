//! Checkpoints: an interrupted and resumed run ends bit-identical to an uninterrupted one; a
//! NaN/Inf loss stops the run and keeps the last checkpoint; corrupt or foreign files give clear
//! errors.

mod train_util;

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use bitgrad_engine::Device;
use bitgrad_models::io::{save_safetensors, StateDict};
use bitgrad_models::train::{train, Checkpoint, ModelSource};
use bitgrad_models::{Module, ResNetV2};
use train_util::{config, hyper, synthetic, tiny_config, tmp_dir, weights};

/// 7 steps of batch 6 in micro-batches of 3 over 10 examples (epochs end mid-step, short
/// batches), MixUp α = 0.4, evaluation every 2 steps (best checkpoints), a checkpoint every 3.
/// Interrupted after step 4 (`stop_after`, the Ctrl-C path) and resumed from `last.safetensors`,
/// the run ends with the same weights, momentum buffers and best accuracy, bit for bit.
#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    resume_check(Device::Cpu, "cpu");
}

/// The same on the GPU device under test (the emulator, or CUDA under `BITGRAD_GPU_TEST_DEVICE`):
/// the checkpoint brings the weights and momentum back from the device and the resumed run puts
/// them there again.
#[test]
fn resumed_run_on_the_gpu_device_is_bit_identical_to_an_uninterrupted_one() {
    resume_check(bitgrad_engine::gpu::test_device(), "gpu");
}

fn resume_check(device: Device, tag: &str) {
    let (ds, val) = (synthetic(10, 2, 3), synthetic(8, 2, 4));
    let mut h = hyper(&[2, 3, 5, 6, 7], 0.05, 6, 2);
    h.mixup_alpha = 0.4;
    let base = |dir| {
        let mut cfg = config(h.clone(), 2);
        cfg.device = device;
        cfg.eval_every = 2;
        cfg.checkpoint_every = 3;
        cfg.out_dir = Some(dir);
        cfg
    };
    let full_dir = tmp_dir(&format!("resume-full-{tag}"));
    let full = train(&base(full_dir.clone()), ds.clone(), Some(val.clone())).unwrap();
    assert!(!full.interrupted);
    assert_eq!(full.steps, 7);

    let dir = tmp_dir(&format!("resume-parts-{tag}"));
    let mut first = base(dir.clone());
    first.stop_after = Some(4);
    let part = train(&first, ds.clone(), Some(val.clone())).unwrap();
    assert!(part.interrupted);
    assert_eq!(part.steps, 4);
    assert_eq!(part.model.device(), device);
    assert_ne!(weights(&part.model), weights(&full.model));
    let mut second = base(dir.clone());
    second.model = ModelSource::Resume(dir.join("last.safetensors"));
    second.seed = 999; // ignored: the checkpoint's seed rules
    let resumed = train(&second, ds, Some(val)).unwrap();
    assert_eq!(resumed.steps, 7);
    assert_eq!(resumed.steps_this_run, 3);
    assert_eq!(weights(&resumed.model), weights(&full.model));
    assert_eq!(resumed.best, full.best);
    assert_eq!(resumed.final_eval, full.final_eval);

    let (a, b) = (
        Checkpoint::load(&full_dir.join("last.safetensors")).unwrap(),
        Checkpoint::load(&dir.join("last.safetensors")).unwrap(),
    );
    assert_eq!(a.state, b.state);
    assert_eq!(a.momentum.len(), full.model.parameters().len());
    for (name, t) in &a.momentum {
        assert_eq!(t.to_vec::<f32>().unwrap(), b.momentum[name].to_vec::<f32>().unwrap(), "momentum of {name}");
    }
    assert!(full_dir.join("best.safetensors").exists());
    assert!(full_dir.join("chart.png").exists());
    let metrics = std::fs::read_to_string(full_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"kind\":\"step\"")).count(), 7);
    // Evaluations after steps 2, 4, 6 and at the end (7).
    assert_eq!(metrics.lines().filter(|l| l.contains("\"kind\":\"eval\"")).count(), 4);
}

/// A base lr of 1e39 is finite in f64 but infinite in f32: step 1's update makes the weights
/// non-finite, step 2's loss is NaN. The run stops with a message naming step 2, the
/// checkpoint written after step 1 (`checkpoint_every` 1) is left untouched, and it loads.
#[test]
fn non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tmp_dir("nan");
    let mut cfg = config(hyper(&[2, 4, 5, 6, 8], 1e39, 4, 1), 2);
    cfg.checkpoint_every = 1;
    cfg.out_dir = Some(dir.clone());
    let err = train(&cfg, synthetic(8, 2, 5), None).err().expect("the run must stop").to_string();
    assert!(err.contains("step 2") && err.contains("NaN"), "{err}");
    assert!(err.contains("last.safetensors"), "{err}");
    let ck = Checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert_eq!(ck.state.step, 2, "the checkpoint after step 1 (two steps done) is the one kept");
}

/// The stop flag set before the first step: a checkpoint of step 0 and a clean return.
#[test]
fn stop_flag_writes_a_checkpoint_and_returns() {
    let dir = tmp_dir("stop");
    let mut cfg = config(hyper(&[2, 4, 5, 6, 8], 0.01, 4, 1), 2);
    cfg.out_dir = Some(dir.clone());
    cfg.stop.store(true, Ordering::Relaxed);
    let s = train(&cfg, synthetic(8, 2, 6), None).unwrap();
    assert!(s.interrupted);
    assert_eq!(s.steps, 0);
    assert_eq!(Checkpoint::load(&dir.join("last.safetensors")).unwrap().state.step, 0);
}

/// Truncated, garbage and plain-weights files are refused with the file named.
#[test]
fn corrupt_or_foreign_checkpoints_give_clear_errors() {
    let dir = tmp_dir("corrupt");
    let mut cfg = config(hyper(&[1, 2, 3, 4, 5], 0.01, 4, 1), 2);
    cfg.out_dir = Some(dir.clone());
    cfg.stop_after = Some(1);
    train(&cfg, synthetic(8, 2, 7), None).unwrap();
    let good = std::fs::read(dir.join("last.safetensors")).unwrap();
    let resume = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let mut c = config(hyper(&[1, 2, 3, 4, 5], 0.01, 4, 1), 2);
        c.model = ModelSource::Resume(p);
        train(&c, synthetic(8, 2, 7), None).err().expect("must fail").to_string()
    };
    for (name, bytes) in
        [("truncated.safetensors", &good[..good.len() / 2]), ("garbage.safetensors", &b"not a checkpoint"[..])]
    {
        let msg = resume(name, bytes);
        assert!(msg.contains(name), "{msg}");
    }
    // Weights without the training metadata.
    let plain = dir.join("plain.safetensors");
    let model = ResNetV2::new(&tiny_config(2), 1).unwrap();
    let mut sd = StateDict::new();
    for (n, t) in model.state_dict().iter() {
        sd.insert(n, t.clone());
    }
    save_safetensors(&plain, &sd).unwrap();
    let mut c = config(hyper(&[1, 2, 3, 4, 5], 0.01, 4, 1), 2);
    c.model = ModelSource::Resume(plain);
    let msg = train(&c, synthetic(8, 2, 7), None).err().expect("must fail").to_string();
    assert!(msg.contains("plain.safetensors") && msg.contains("not a bitgrad training checkpoint"), "{msg}");
    // A checkpoint of other classes.
    let mut c = config(hyper(&[1, 2, 3, 4, 5], 0.01, 4, 1), 3);
    c.model = ModelSource::Resume(dir.join("last.safetensors"));
    let msg = train(&c, synthetic(9, 3, 7), None).err().expect("must fail").to_string();
    assert!(msg.contains("classes"), "{msg}");
}

/// Every tensor of the model, buffers (BN's running statistics) included, by name.
fn all_tensors(model: &ResNetV2) -> Vec<(String, Vec<f32>)> {
    model.state_dict().iter().map(|(n, t)| (n.to_string(), t.to_vec::<f32>().unwrap())).collect()
}

/// A BatchNorm model: the running statistics are checkpointed buffers, so an interrupted and
/// resumed run ends bit-identical to an uninterrupted one, statistics included; and evaluation
/// runs in eval mode and hands back train mode (a run evaluating every 2 steps ends exactly
/// like one that never evaluates: eval changed no statistic and the steps after it updated them
/// with batch statistics).
#[test]
fn batch_norm_run_resumes_bit_identical_running_stats_included() {
    // 12 examples in batches of 6 (micro-batches of 3): no 1-example micro-batch, which BN in
    // train mode cannot normalize at the 1×1 layers.
    let (ds, val) = (synthetic(12, 2, 3), synthetic(8, 2, 4));
    let h = hyper(&[2, 3, 5, 6, 7], 0.05, 6, 2);
    let base = |dir: PathBuf, eval_every| {
        let mut cfg = config(h.clone(), 2);
        let bn = tiny_config(2).with_norm("bn_ws").unwrap();
        cfg.model = ModelSource::Scratch { config: bn, zero_head: false };
        cfg.eval_every = eval_every;
        cfg.out_dir = Some(dir);
        cfg
    };
    let quiet = train(&base(tmp_dir("bn-noeval"), 0), ds.clone(), None).unwrap();
    let full = train(&base(tmp_dir("bn-full"), 2), ds.clone(), Some(val.clone())).unwrap();
    assert!(full.model.is_training(), "train mode after the final evaluation");
    let stats = all_tensors(&full.model);
    let rv = stats.iter().find(|(n, _)| n == "norm.running_var").unwrap();
    assert!(rv.1.iter().any(|&v| v != 1.0), "the running variance was updated");
    assert_eq!(all_tensors(&quiet.model), stats, "evaluations leave training unchanged");

    let dir = tmp_dir("bn-parts");
    let mut first = base(dir.clone(), 2);
    first.stop_after = Some(3);
    let part = train(&first, ds.clone(), Some(val.clone())).unwrap();
    assert_eq!(part.steps, 3);
    let saved = Checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert!(saved.model.contains("stages.2.blocks.0.norm2.running_mean"));
    let mut second = base(dir.clone(), 2);
    second.model = ModelSource::Resume(dir.join("last.safetensors"));
    let resumed = train(&second, ds, Some(val)).unwrap();
    assert_eq!(resumed.steps, 7);
    assert_eq!(all_tensors(&resumed.model), stats);
    assert_eq!(resumed.final_eval, full.final_eval);
}
