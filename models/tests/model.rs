//! ResNetV2 beyond parity: strict loading (all problems in one error, nothing changed on
//! error), storage sharing and dtype conversion when loading, head replacement, the BN / LN /
//! no-norm / no-WS variants (forward + backward, BN train/eval), a finite-difference check of
//! the f64 model's gradients, and timm's random init.

use bitgrad_engine::{DType, Device, Rng, Tensor};
use bitgrad_models::ops::softmax_xent::{cross_entropy, Target};
use bitgrad_models::{Error, HeadInit, Module, NormKind, ResNetV2, ResNetV2Config, StateDict};

fn tiny(classes: usize) -> ResNetV2Config {
    ResNetV2Config::named("resnetv2_tiny_bit", classes).unwrap()
}

fn input(n: usize, size: usize, dtype: DType, seed: u64) -> Tensor {
    Tensor::randn([n, 3, size, size], 0.0, 1.0, dtype, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

fn labels(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()], Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

#[test]
fn strict_load_lists_every_problem_and_changes_nothing() {
    let mut model = ResNetV2::new(&tiny(10), 1).unwrap();
    let before = values(&model.state_dict().get("norm.bias").unwrap().clone());
    let mut sd = ResNetV2::new(&tiny(10), 2).unwrap().state_dict();
    sd.remove("stages.1.blocks.0.conv2.weight");
    sd.remove("head.fc.bias");
    sd.insert("stages.9.blocks.0.conv1.weight", Tensor::zeros([1], DType::F32, Device::Cpu).unwrap());
    sd.insert("stages.0.blocks.0.norm1.weight", Tensor::ones([17], DType::F32, Device::Cpu).unwrap());
    match model.load_state_dict(&sd, true) {
        Err(Error::Keys { missing, unexpected, mismatched }) => {
            assert_eq!(missing, ["stages.1.blocks.0.conv2.weight", "head.fc.bias"]);
            assert_eq!(unexpected, ["stages.9.blocks.0.conv1.weight"]);
            assert_eq!(mismatched.len(), 1);
            assert_eq!(mismatched[0].name, "stages.0.blocks.0.norm1.weight");
            assert_eq!((mismatched[0].expected.clone(), mismatched[0].found.clone()), (vec![16], vec![17]));
            let msg = Error::Keys { missing, unexpected, mismatched }.to_string();
            assert!(msg.contains("head.fc.bias") && msg.contains("stages.9") && msg.contains("[17]"), "{msg}");
        }
        other => panic!("expected Error::Keys, got {:?}", other.err()),
    }
    // Not strict: wrong shapes are still an error, and nothing was loaded.
    assert!(matches!(model.load_state_dict(&sd, false), Err(Error::Keys { ref missing, ref mismatched, .. })
        if missing.is_empty() && mismatched.len() == 1));
    assert_eq!(values(model.state_dict().get("norm.bias").unwrap()), before);
    // Not strict without the wrong shape: loads what is there, keeps the rest.
    sd.remove("stages.0.blocks.0.norm1.weight");
    let kept = values(model.state_dict().get("head.fc.bias").unwrap());
    model.load_state_dict(&sd, false).unwrap();
    assert_eq!(values(model.state_dict().get("norm.bias").unwrap()), values(sd.get("norm.bias").unwrap()));
    assert_eq!(values(model.state_dict().get("head.fc.bias").unwrap()), kept);
    // Building from a broken state dict lists the problems too.
    match ResNetV2::from_state_dict(&sd) {
        Err(Error::Config(m)) => assert!(m.contains("groups"), "{m}"), // tiny needs its GN metadata
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    sd.metadata_mut().extend(tiny(10).to_metadata().into_iter().filter(|(k, _)| k.starts_with("bitgrad.norm")));
    match ResNetV2::from_state_dict(&sd) {
        Err(Error::Keys { missing, unexpected, mismatched }) => {
            assert_eq!(missing.len(), 3, "{missing:?}");
            assert_eq!(unexpected, ["stages.9.blocks.0.conv1.weight"]);
            assert!(mismatched.is_empty());
        }
        other => panic!("expected Error::Keys, got {:?}", other.err()),
    }
}

#[test]
fn state_dict_round_trip_and_sharing() {
    let a = ResNetV2::new(&tiny(4), 1).unwrap();
    let mut b = ResNetV2::new(&tiny(4), 2).unwrap();
    let x = input(2, 32, DType::F32, 5);
    assert_ne!(values(&a.forward(&x).unwrap()), values(&b.forward(&x).unwrap()));
    b.load_state_dict(&a.state_dict(), true).unwrap();
    assert_eq!(values(&a.forward(&x).unwrap()), values(&b.forward(&x).unwrap()));
    // Loading f32 on the CPU into an f32 CPU model copies nothing; parameters stay trainable leaves.
    let sd = a.state_dict();
    let mut meta = sd.clone();
    meta.metadata_mut().extend(a.config().to_metadata());
    let c = ResNetV2::from_state_dict(&meta).unwrap();
    for (name, p) in c.named_parameters() {
        assert!(p.same_storage(sd.get(&name).unwrap()), "{name} was copied");
        assert!(p.requires_grad() && p.is_leaf(), "{name}");
    }
    assert_eq!(c.config(), a.config());
    // f64 files are converted to the model's dtype.
    let sd64: StateDict = sd.iter().map(|(n, t)| (n.to_string(), t.to_dtype(DType::F64).unwrap())).collect();
    b.load_state_dict(&sd64, true).unwrap();
    assert!(b.parameters().iter().all(|p| p.dtype() == DType::F32));
    assert_eq!(values(&a.forward(&x).unwrap()), values(&b.forward(&x).unwrap()));
}

#[test]
fn replace_head_zero_and_normal() {
    let mut model = ResNetV2::new(&tiny(10), 1).unwrap();
    let x = input(3, 32, DType::F32, 2);
    model.replace_head(5, HeadInit::Zero, 0).unwrap();
    assert_eq!(model.config().num_classes, 5);
    assert_eq!(model.num_parameters(), model.config().param_count());
    let logits = model.forward(&x).unwrap();
    assert_eq!(logits.dims(), [3, 5]);
    assert!(values(&logits).iter().all(|&v| v == 0.0));
    // A zero head still learns: its weight gradient is the pooled features times (p − y).
    cross_entropy(&logits, Target::Hard(&labels(&[0, 4, 2])), 0.0).unwrap().backward().unwrap();
    assert!(values(&model.head.weight.grad().unwrap()).iter().any(|&v| v != 0.0));
    let stem_grad = values(&model.stem.conv.weight.grad().unwrap());
    assert!(stem_grad.iter().all(|&v| v == 0.0), "no gradient reaches through a zero head");

    model.replace_head(2000, HeadInit::Normal { std: 0.01 }, 7).unwrap();
    let w = values(&model.head.weight);
    assert_eq!(model.head.weight.dims(), [2000, 256, 1, 1]);
    let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std - 0.01).abs() < 0.0005, "head std {std}");
    assert!(values(&model.head.bias).iter().all(|&v| v == 0.0));
    assert_eq!(model.state_dict().get("head.fc.weight").unwrap().dims(), [2000, 256, 1, 1]);
    assert!(model.replace_head(0, HeadInit::Zero, 0).is_err());
}

#[test]
fn timm_random_init() {
    let model = ResNetV2::new(&ResNetV2Config::named("resnetv2_small_bit", 1000).unwrap(), 3).unwrap();
    let sd = model.state_dict();
    let std = |name: &str| {
        let v = values(sd.get(name).unwrap());
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
    };
    // Kaiming normal, fan_out = O·kh·kw.
    let conv2 = "stages.3.blocks.0.conv2.weight"; // [128, 128, 3, 3]
    assert!((std(conv2) / (2.0f64 / (128.0 * 9.0)).sqrt() - 1.0).abs() < 0.02, "{}", std(conv2));
    let conv1 = "stages.2.blocks.1.conv1.weight"; // [64, 256, 1, 1]
    assert!((std(conv1) / (2.0f64 / 64.0).sqrt() - 1.0).abs() < 0.02, "{}", std(conv1));
    assert!((std("head.fc.weight") / 0.01 - 1.0).abs() < 0.02);
    assert!(values(sd.get("norm.weight").unwrap()).iter().all(|&v| v == 1.0));
    assert!(values(sd.get("stages.1.blocks.1.norm2.bias").unwrap()).iter().all(|&v| v == 0.0));
    // Seeded: the same seed gives the same model.
    let again = ResNetV2::new(model.config(), 3).unwrap().state_dict();
    assert_eq!(values(again.get(conv2).unwrap()), values(sd.get(conv2).unwrap()));
}

/// Forward + backward of a variant: logits finite, every parameter gets a finite, non-zero gradient.
fn train_step(model: &ResNetV2) -> Tensor {
    let logits = model.forward(&input(4, 32, DType::F32, 9)).unwrap();
    assert_eq!(logits.dims(), [4, model.config().num_classes]);
    assert!(values(&logits).iter().all(|v| v.is_finite()));
    cross_entropy(&logits, Target::Hard(&labels(&[0, 1, 2, 1])), 0.0).unwrap().backward().unwrap();
    for (name, p) in model.named_parameters() {
        let g = values(&p.grad().unwrap_or_else(|| panic!("no gradient for {name}")));
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0), "{name}: {g:?}");
    }
    logits
}

#[test]
fn norm_and_ws_variants_train() {
    let base = tiny(3);
    for cfg in [
        ResNetV2Config { norm: NormKind::layer(), ..base.clone() },
        ResNetV2Config { norm: NormKind::None, ..base.clone() },
        ResNetV2Config { ws: false, ..base.clone() },
        ResNetV2Config { norm: NormKind::group(8), ws: false, in_chans: 3, ..base.clone() },
    ] {
        let model = ResNetV2::new(&cfg, 4).unwrap();
        let names: Vec<String> = model.state_dict().names().map(String::from).collect();
        let has_norm = names.iter().any(|n| n.contains("norm"));
        assert_eq!(has_norm, cfg.norm != NormKind::None, "{cfg:?}");
        train_step(&model);
    }
    // WS on vs off give different numbers from the same weights.
    let ws = ResNetV2::new(&base, 4).unwrap();
    let mut plain = ResNetV2::new(&ResNetV2Config { ws: false, ..base.clone() }, 0).unwrap();
    plain.load_state_dict(&ws.state_dict(), true).unwrap();
    let x = input(1, 32, DType::F32, 1);
    assert_ne!(values(&ws.forward(&x).unwrap()), values(&plain.forward(&x).unwrap()));
}

#[test]
fn batch_norm_train_and_eval() {
    let mut model = ResNetV2::new(&ResNetV2Config { norm: NormKind::batch(), ..tiny(3) }, 4).unwrap();
    let names: Vec<String> = model.state_dict().names().map(String::from).collect();
    assert!(names.starts_with(&[
        "stem.conv.weight".into(),
        "stages.0.blocks.0.downsample.conv.weight".into(),
        "stages.0.blocks.0.norm1.weight".into(),
        "stages.0.blocks.0.norm1.bias".into(),
        "stages.0.blocks.0.norm1.running_mean".into(),
        "stages.0.blocks.0.norm1.running_var".into(),
    ]));
    assert_eq!(model.named_parameters().len() + 2 * 13, names.len(), "13 BN layers with 2 buffers each");
    let rm = |m: &ResNetV2| values(m.state_dict().get("norm.running_mean").unwrap());
    let fresh = rm(&model);
    assert!(fresh.iter().all(|&v| v == 0.0));
    let train_logits = train_step(&model);
    let after_train = rm(&model);
    assert!(after_train.iter().any(|&v| v != 0.0), "training updates the running mean");
    model.set_training(false);
    assert!(!model.is_training());
    let x = input(4, 32, DType::F32, 9);
    let eval_logits = model.forward(&x).unwrap();
    assert_eq!(rm(&model), after_train, "eval leaves the running statistics alone");
    assert_ne!(values(&eval_logits), values(&train_logits));
    assert_eq!(values(&model.forward(&x).unwrap()), values(&eval_logits));
}

/// Central differences of the f64 model's loss against backward, on a few elements of the stem
/// conv, a projection, a GN γ and β, the final GN and the head.
#[test]
fn f64_gradients_match_finite_differences() {
    let cfg = tiny(3);
    let model = ResNetV2::new_in(&cfg, 8, DType::F64, Device::Cpu).unwrap();
    let x = input(2, 32, DType::F64, 3);
    let y = labels(&[2, 0]);
    let loss = || cross_entropy(&model.forward(&x).unwrap(), Target::Hard(&y), 0.0).unwrap().to_scalar().unwrap();
    cross_entropy(&model.forward(&x).unwrap(), Target::Hard(&y), 0.0).unwrap().backward().unwrap();
    let params: std::collections::HashMap<String, Tensor> = model.named_parameters().into_iter().collect();
    let cases = [
        ("stem.conv.weight", [0, 77, 500]),
        ("stages.1.blocks.0.downsample.conv.weight", [3, 100, 2000]),
        ("stages.0.blocks.0.norm2.weight", [0, 3, 7]),
        ("stages.2.blocks.0.norm3.bias", [1, 10, 31]),
        ("norm.weight", [0, 100, 255]),
        ("head.fc.bias", [0, 1, 2]),
    ];
    let h = 1e-6;
    for (name, idx) in cases {
        let p = &params[name];
        let g = values(&p.grad().unwrap());
        for i in idx {
            let bump = |d: f64| p.with_cpu_slice_mut::<f64, _>(|s| s[i] += d).unwrap();
            bump(h);
            let up = loss();
            bump(-2.0 * h);
            let down = loss();
            bump(h);
            let numeric = (up - down) / (2.0 * h);
            let tol = 1e-6 + 1e-4 * numeric.abs().max(g[i].abs());
            assert!((numeric - g[i]).abs() <= tol, "{name}[{i}]: backward {} vs numeric {numeric}", g[i]);
        }
    }
}

#[test]
fn move_to_emu_and_f64() {
    let mut model = ResNetV2::new(&tiny(4), 6).unwrap();
    let x = input(2, 32, DType::F32, 1);
    let cpu = values(&model.forward(&x).unwrap());
    model.to(DType::F32, Device::Emu).unwrap();
    assert_eq!(model.device(), Device::Emu);
    assert!(model.parameters().iter().all(|p| p.device() == Device::Emu && p.requires_grad()));
    let emu = model.forward(&x.to_device(Device::Emu).unwrap()).unwrap();
    let scale = cpu.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (a, b) in values(&emu.to_device(Device::Cpu).unwrap()).iter().zip(&cpu) {
        assert!((a - b).abs() <= 1e-5 * scale, "Emu {a} vs CPU {b}");
    }
    model.to(DType::F64, Device::Cpu).unwrap();
    assert!(model.parameters().iter().all(|p| p.dtype() == DType::F64 && p.device() == Device::Cpu));
    let f64_logits = values(&model.forward(&x.to_dtype(DType::F64).unwrap()).unwrap());
    for (a, b) in f64_logits.iter().zip(&cpu) {
        assert!((a - b).abs() <= 1e-5 * scale, "f64 {a} vs f32 {b}");
    }
}

/// The extension point for other norms: an InstanceNorm defined outside the crate, plugged in
/// through `NormKind::Custom`, builds, names its tensors like the others and trains.
mod custom_norm {
    use super::*;
    use bitgrad_models::nn::{join, Fill, Init, NormFactory, NormLayer, ParamKind};
    use bitgrad_models::ops::group_norm::{group_norm, Activation};
    use std::sync::Arc;

    struct InstanceNormAct {
        weight: Tensor,
        bias: Tensor,
    }
    impl NormLayer for InstanceNormAct {
        fn forward(&self, x: &Tensor) -> bitgrad_models::Result<Tensor> {
            let c = x.dims()[1];
            Ok(group_norm(x, c, Some(&self.weight), Some(&self.bias), 1e-5, Activation::Relu)?)
        }
    }
    impl Module for InstanceNormAct {
        fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
            f(&join(prefix, "weight"), &self.weight, ParamKind::Parameter);
            f(&join(prefix, "bias"), &self.bias, ParamKind::Parameter);
        }
        fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, ParamKind)) {
            f(&join(prefix, "weight"), &mut self.weight, ParamKind::Parameter);
            f(&join(prefix, "bias"), &mut self.bias, ParamKind::Parameter);
        }
        fn set_training(&mut self, _training: bool) {}
    }
    struct InstanceNorm;
    impl NormFactory for InstanceNorm {
        fn name(&self) -> String {
            "instance_norm".into()
        }
        fn check(&self, _channels: usize) -> bitgrad_models::Result<()> {
            Ok(())
        }
        fn param_count(&self, channels: usize) -> usize {
            2 * channels
        }
        fn build(&self, init: &mut Init, prefix: &str, c: usize) -> bitgrad_models::Result<Box<dyn NormLayer>> {
            Ok(Box::new(InstanceNormAct {
                weight: init.tensor(&join(prefix, "weight"), &[c], Fill::Ones, ParamKind::Parameter)?,
                bias: init.tensor(&join(prefix, "bias"), &[c], Fill::Zeros, ParamKind::Parameter)?,
            }))
        }
    }

    #[test]
    fn instance_norm_plugs_in() {
        let norm = NormKind::Custom(Arc::new(InstanceNorm));
        let cfg = ResNetV2Config { norm: norm.clone(), ..tiny(3) };
        let model = ResNetV2::new(&cfg, 2).unwrap();
        let gn = ResNetV2::new(&tiny(3), 2).unwrap();
        let names = |m: &ResNetV2| m.state_dict().names().map(String::from).collect::<Vec<_>>();
        assert_eq!(names(&model), names(&gn), "same tensor names as the GN model");
        assert_eq!(model.num_parameters(), cfg.param_count());
        assert_eq!(format!("{norm:?}"), "Custom(instance_norm)");
        assert_ne!(
            values(&model.forward(&input(1, 32, DType::F32, 0)).unwrap()),
            values(&gn.forward(&input(1, 32, DType::F32, 0)).unwrap())
        );
        train_step(&model);
    }
}
