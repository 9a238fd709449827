//! Parity with timm: ResNetV2 (BiT) models built by tests/fixtures/gen_models.py in timm 1.0
//! (torch 2.15, CPU, f32) with random weights — GN affine and head bias away from 1 and 0 — are
//! loaded from the fixture's safetensors, and the forward (stem, each stage, features, pooled
//! features, logits), the mean softmax cross-entropy and the gradient of every parameter are
//! compared with timm's. Tolerances (issue 6): logits within 1e-4 · max|logit|, activations the
//! same, gradients within 1e-3 · max|grad| of each tensor.
//!
//! `r50x1_{128,224}` are generated on demand (`gen_fixtures.py --only models --large`); their
//! test prints why it skips when they are absent. For them the gradients are compared in f64
//! (1e-6 · max|grad|): timm's own f32 gradients of R50 are off the f64 ones by up to ~5%.

mod common;

use std::path::Path;

use bitgrad_engine::{DType, Device};
use bitgrad_models::ops::softmax_xent::{cross_entropy, Target};
use bitgrad_models::{Module, ResNetV2, ResNetV2Config};
use common::{assert_close, fixture_dir, read_safetensors, read_weights, rel_err};

const LOGIT_TOL: f64 = 1e-4;
const GRAD_TOL: f64 = 1e-3;

/// Runs fixture `name` from `dir` on `device`: forward vs timm; with `f32_grads`, also the f32
/// gradients vs timm's. Returns (worst logit ratio, the model's parameters after backward).
fn check_fixture(dir: &Path, name: &str, device: Device) -> (f64, f64) {
    check_fixture_with(dir, name, device, true)
}

fn check_fixture_with(dir: &Path, name: &str, device: Device, f32_grads: bool) -> (f64, f64) {
    let sd = read_weights(&dir.join(format!("{name}.safetensors")));
    let io = read_safetensors(&dir.join(format!("{name}_io.safetensors")));
    let model = ResNetV2::from_state_dict_in(&sd, DType::F32, device).unwrap();

    // Names and order are timm's.
    let keys: Vec<&str> = sd.names().collect();
    let ours = model.state_dict();
    assert_eq!(ours.names().collect::<Vec<_>>(), keys, "{name}: state_dict names/order");
    assert_eq!(model.named_parameters().len(), keys.len());
    assert_eq!(model.num_parameters(), model.config().param_count());

    let x = io.get("input").unwrap().to_device(device).unwrap();
    let act = model.forward_with_activations(&x).unwrap();
    let want = |k: &str| io.get(k).unwrap().clone();
    let cpu = |t: &bitgrad_engine::Tensor| t.to_device(Device::Cpu).unwrap();
    assert_close(&cpu(&act.stem), &want("stem"), LOGIT_TOL, &format!("{name} stem"));
    for (i, s) in act.stages.iter().enumerate() {
        assert_close(&cpu(s), &want(&format!("stage{i}")), LOGIT_TOL, &format!("{name} stage{i}"));
    }
    assert_close(&cpu(&act.features), &want("features"), LOGIT_TOL, &format!("{name} features"));
    assert_close(&cpu(&act.pre_logits), &want("pre_logits"), LOGIT_TOL, &format!("{name} pre_logits"));
    let logit_err = assert_close(&cpu(&act.logits), &want("logits"), LOGIT_TOL, &format!("{name} logits"));

    let labels = io.get("labels").unwrap().to_device(device).unwrap();
    let loss = cross_entropy(&act.logits, Target::Hard(&labels), 0.0).unwrap();
    assert_close(&cpu(&loss).reshape([1]).unwrap(), &want("loss"), LOGIT_TOL, &format!("{name} loss"));
    loss.backward().unwrap();
    let mut grad_err = 0f64;
    for (pname, p) in model.named_parameters().into_iter().filter(|_| f32_grads) {
        let g = p.grad().unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
        let r = assert_close(&cpu(&g), &want(&format!("grad.{pname}")), GRAD_TOL, &format!("{name} grad {pname}"));
        grad_err = grad_err.max(r);
    }
    let grads = if f32_grads { format!("{grad_err:.2e}·max|grad|") } else { "not compared in f32".into() };
    println!("{name} on {device:?}: logits max err {logit_err:.2e}·max|logit|, grads {grads}");
    (logit_err, grad_err)
}

#[test]
fn tiny_matches_timm() {
    check_fixture(&fixture_dir(), "tiny", Device::Cpu);
}

#[test]
fn mini2_matches_timm() {
    check_fixture(&fixture_dir(), "mini2", Device::Cpu);
}

#[test]
fn tiny_fixture_is_the_named_tiny_config() {
    let sd = read_weights(&fixture_dir().join("tiny.safetensors"));
    let cfg = ResNetV2Config::infer(&sd).unwrap();
    assert_eq!(cfg, ResNetV2Config::named("resnetv2_tiny_bit", 10).unwrap());
    assert_eq!(cfg.name(), Some("resnetv2_tiny_bit"));
}

/// The same forward and backward on the GPU device under test (the emulator, or CUDA under
/// `BITGRAD_GPU_TEST_DEVICE`) as on the CPU (and so as timm).
#[test]
fn mini2_on_the_gpu_device_matches_timm_and_cpu() {
    let device = bitgrad_engine::gpu::test_device();
    let dir = fixture_dir();
    let sd = read_weights(&dir.join("mini2.safetensors"));
    let io = read_safetensors(&dir.join("mini2_io.safetensors"));
    let x = io.get("input").unwrap();
    let cpu = ResNetV2::from_state_dict(&sd).unwrap().forward(x).unwrap();
    let gpu =
        ResNetV2::from_state_dict_in(&sd, DType::F32, device).unwrap().forward(&x.to_device(device).unwrap()).unwrap();
    assert_eq!(gpu.device(), device);
    assert_close(&gpu.to_device(Device::Cpu).unwrap(), &cpu, 1e-5, &format!("mini2 logits, {device} vs CPU"));
    check_fixture(&dir, "mini2", device);
}

/// R50x1 (resnetv2_50x1_bit, 1000 classes) at 128 and 224 px, when generated.
#[test]
fn r50x1_matches_timm_when_generated() {
    let dir = fixture_dir().join("large");
    for size in [128, 224] {
        let name = format!("r50x1_{size}");
        if !dir.join(format!("{name}_io.safetensors")).exists() {
            println!(
                "skipped {name}: {} absent (python3 tests/fixtures/gen_fixtures.py --only models --large)",
                dir.join(format!("{name}_io.safetensors")).display()
            );
            continue;
        }
        let sd = read_weights(&dir.join(format!("{name}.safetensors")));
        assert_eq!(ResNetV2Config::infer(&sd).unwrap().name(), Some("resnetv2_50x1_bit"));
        // f32: the forward against timm's f32 (gradients: see below).
        check_fixture_with(&dir, &name, Device::Cpu, false);
        // f64: logits and every gradient against timm in f64. In f32, timm's own gradients are
        // off the f64 ones by up to ~5% of a tensor's max (see gen_models.py), so an f32
        // comparison at 1e-3 cannot hold for R50; the f64 one checks the backward exactly.
        let io = read_safetensors(&dir.join(format!("{name}_io.safetensors")));
        let model = ResNetV2::from_state_dict_in(&sd, DType::F64, Device::Cpu).unwrap();
        let x = io.get("input").unwrap().to_dtype(DType::F64).unwrap();
        let logits = model.forward(&x).unwrap();
        let logit_err = assert_close(&logits, io.get("logits64").unwrap(), 1e-9, &format!("{name} f64 logits"));
        let labels = io.get("labels").unwrap();
        cross_entropy(&logits, Target::Hard(labels), 0.0).unwrap().backward().unwrap();
        let mut grad_err = 0f64;
        for (pname, p) in model.named_parameters() {
            let want = io.get(&format!("grad64.{pname}")).unwrap();
            grad_err = grad_err.max(assert_close(&p.grad().unwrap(), want, 1e-6, &format!("{name} f64 grad {pname}")));
        }
        // For the record: how far f32 gradients (timm's and ours) are from the f64 ones.
        let model32 = ResNetV2::from_state_dict(&sd).unwrap();
        let loss = cross_entropy(&model32.forward(io.get("input").unwrap()).unwrap(), Target::Hard(labels), 0.0);
        loss.unwrap().backward().unwrap();
        let (mut ours32, mut timm32) = (0f64, 0f64);
        for (pname, p) in model32.named_parameters() {
            let truth = io.get(&format!("grad64.{pname}")).unwrap();
            ours32 = ours32.max(rel_err(&p.grad().unwrap(), truth));
            timm32 = timm32.max(rel_err(io.get(&format!("grad.{pname}")).unwrap(), truth));
        }
        println!(
            "{name} f64: logits {logit_err:.1e}, grads {grad_err:.1e}; f32 grads vs f64: bitgrad {ours32:.1e}, timm {timm32:.1e}"
        );
        // bitgrad's f32 gradients are no less accurate than timm's.
        assert!(ours32 <= 2.0 * timm32, "{name}: f32 gradient error {ours32:e}, timm's {timm32:e}");
    }
}

/// The same weights in BiT's original `.npz` (HWIO, `resnet/…` names; written by the fixture
/// script and read back exactly by timm's own `.npz` loader) and in timm's safetensors give
/// bit-identical logits. The `.npz` has no place for the GN group count of a small model, so the
/// architecture comes from the safetensors' metadata; BiT-sized models infer it (32 groups).
#[test]
fn npz_and_safetensors_give_identical_outputs() {
    use bitgrad_models::io::{load_weights, LoadOptions};
    let dir = fixture_dir();
    let st = load_weights(dir.join("mini2.safetensors"), &LoadOptions::new()).unwrap();
    let npz = load_weights(dir.join("mini2.npz"), &LoadOptions::new()).unwrap();
    assert_eq!(npz.len(), st.len());
    let config = ResNetV2Config::infer(&st).unwrap();
    let from_st = ResNetV2::from_state_dict(&st).unwrap();
    let mut from_npz = ResNetV2::new(&config, 99).unwrap();
    from_npz.load_state_dict(&npz, true).unwrap();
    let x = read_safetensors(&dir.join("mini2_io.safetensors")).get("input").unwrap().clone();
    let (a, b) =
        (from_st.forward(&x).unwrap().to_vec::<f32>().unwrap(), from_npz.forward(&x).unwrap().to_vec::<f32>().unwrap());
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{a:?}\n{b:?}");

    let large = dir.join("large");
    for size in [128, 224] {
        let (st_path, npz_path) =
            (large.join(format!("r50x1_{size}.safetensors")), large.join(format!("r50x1_{size}.npz")));
        if !npz_path.exists() {
            println!("skipped r50x1_{size}: {} absent (gen_fixtures.py --only models --large)", npz_path.display());
            continue;
        }
        let io = read_safetensors(&large.join(format!("r50x1_{size}_io.safetensors")));
        let x = io.get("input").unwrap();
        let logits = |p: &std::path::Path| {
            let sd = load_weights(p, &LoadOptions::new()).unwrap();
            ResNetV2::from_state_dict(&sd).unwrap().forward(x).unwrap().to_vec::<f32>().unwrap()
        };
        let (a, b) = (logits(&st_path), logits(&npz_path));
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "r50x1_{size}: .npz and safetensors differ");
    }
}
