//! The normalization choices of `ResNetV2Config::with_norm` on a tiny model: BN, LN and IN
//! (and GN + WS as the reference) pass an f64 gradient check through the whole model (input
//! and parameters), give the same forward + backward on Cpu and Emu, and BatchNorm in eval mode
//! normalizes with its running statistics, not the batch's.

use std::collections::HashMap;

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{DType, Device, Error, Rng, Tensor};
use bitgrad_models::ops::softmax_xent::{cross_entropy, Target};
use bitgrad_models::{Module, ResNetV2, ResNetV2Config};

const SPECS: [&str; 4] = ["bn_ws", "ln", "in_ws", "gn_ws"];

/// Narrow and shallow (widths 8–16) so that an f64 check over every input element stays fast.
fn small(spec: &str) -> ResNetV2Config {
    ResNetV2Config {
        layers: [1, 1, 1, 1],
        channels: [16, 16, 16, 16],
        stem_chs: 8,
        ..ResNetV2Config::named("resnetv2_tiny_bit", 3).unwrap()
    }
    .with_norm(spec)
    .unwrap()
}

fn input(dims: [usize; 4], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(dims, 0.0, 1.0, dtype, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// d(weighted logits)/d(input) of the f64 model against central differences, every element
/// (BN in train mode: batch statistics, so every sample's gradient reaches the others).
#[test]
fn input_gradients_match_finite_differences() {
    for spec in SPECS {
        let model = ResNetV2::new_in(&small(spec), 5, DType::F64, Device::Cpu).unwrap();
        let x = input([2, 3, 12, 12], DType::F64, 1);
        let opts = GradCheck { atol: 1e-6, rtol: 1e-4, ..GradCheck::default() };
        let r = check_gradients(
            |xs| model.forward(&xs[0]).map_err(|e| Error::invalid("forward", e.to_string())),
            &[x],
            opts,
        )
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(r.checked, 2 * 3 * 12 * 12, "{spec}");
    }
}

/// The loss's gradient with respect to the norm parameters (γ, β of a block norm and the
/// final norm) and a conv weight, against central differences.
#[test]
fn norm_parameter_gradients_match_finite_differences() {
    for spec in SPECS {
        let model = ResNetV2::new_in(&small(spec), 6, DType::F64, Device::Cpu).unwrap();
        let x = input([3, 3, 16, 16], DType::F64, 2);
        let y = Tensor::from_vec(vec![2i64, 0, 1], [3], Device::Cpu).unwrap();
        let loss = || cross_entropy(&model.forward(&x).unwrap(), Target::Hard(&y), 0.0).unwrap();
        loss().backward().unwrap();
        let params: HashMap<String, Tensor> = model.named_parameters().into_iter().collect();
        let cases = [
            ("stages.0.blocks.0.norm1.weight", [0, 5]),
            ("stages.1.blocks.0.norm2.bias", [1, 7]),
            ("stages.2.blocks.0.norm3.weight", [2, 3]),
            ("norm.bias", [0, 15]),
            ("stages.1.blocks.0.conv2.weight", [4, 300]),
        ];
        let h = 1e-6;
        for (name, idx) in cases {
            let p = &params[name];
            let g = values(&p.grad().unwrap());
            for i in idx {
                let at = |d: f64| {
                    p.with_cpu_slice_mut::<f64, _>(|s| s[i] += d).unwrap();
                    loss().to_scalar().unwrap()
                };
                let (up, down) = (at(h), at(-2.0 * h));
                at(h);
                let numeric = (up - down) / (2.0 * h);
                let tol = 1e-7 + 1e-4 * numeric.abs().max(g[i].abs());
                assert!((numeric - g[i]).abs() <= tol, "{spec} {name}[{i}]: backward {} vs numeric {numeric}", g[i]);
            }
        }
    }
}

/// Forward + backward on Cpu and on Emu (the CUDA kernels, emulated) from the same weights:
/// logits, every gradient and BN's updated running statistics agree.
#[test]
fn cpu_and_emu_agree() {
    for spec in SPECS {
        let cfg = small(spec);
        // 48 px: the last stage is 2×2. (At 1×1, InstanceNorm's x − μ is zero up to rounding,
        // so the ReLU's mask at 0, and the gradient through it, depends on the device's roundings.)
        let x = input([2, 3, 48, 48], DType::F32, 3);
        let y = Tensor::from_vec(vec![0i64, 2], [2], Device::Cpu).unwrap();
        let run = |device: Device| {
            let mut model = ResNetV2::new(&cfg, 7).unwrap();
            model.to(DType::F32, device).unwrap();
            let logits = model.forward(&x.to_device(device).unwrap()).unwrap();
            cross_entropy(&logits, Target::Hard(&y.to_device(device).unwrap()), 0.0).unwrap().backward().unwrap();
            let mut out = vec![("logits".to_string(), values(&logits))];
            for (name, p) in model.named_parameters() {
                out.push((format!("grad {name}"), values(&p.grad().unwrap())));
            }
            for (name, t) in model.state_dict().iter() {
                if name.contains("running") {
                    out.push((name.to_string(), values(t)));
                }
            }
            out
        };
        let (cpu, emu) = (run(Device::Cpu), run(Device::Emu));
        assert_eq!(cpu.len(), emu.len());
        assert_eq!(spec.starts_with("bn"), cpu.iter().any(|(n, _)| n.contains("running_var")), "{spec}");
        for ((name, a), (_, b)) in cpu.iter().zip(&emu) {
            let scale = a.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= 2e-4 * scale, "{spec} {name}: Cpu {u} vs Emu {v} (scale {scale})");
            }
        }
    }
}

/// Eval mode normalizes with the running statistics: a sample's logits do not depend on the
/// rest of the batch, and moving one layer's running mean changes them — while in train mode
/// the batch decides and the running mean does not matter.
#[test]
fn batch_norm_eval_uses_the_running_statistics() {
    let mut model = ResNetV2::new(&small("bn_ws"), 8).unwrap();
    // Non-trivial statistics: a few training-mode forwards update them from data.
    for seed in 0..3 {
        model.forward(&input([4, 3, 16, 16], DType::F32, 10 + seed)).unwrap();
    }
    let batch = input([4, 3, 16, 16], DType::F32, 20);
    let first = batch.narrow(0, 0, 1).unwrap().contiguous().unwrap();
    let row0 = |t: &Tensor| values(t)[..3].to_vec();

    model.set_training(false);
    let eval_batch = model.forward(&batch).unwrap();
    let eval_alone = model.forward(&first).unwrap();
    for (a, b) in row0(&eval_batch).iter().zip(row0(&eval_alone)) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "eval: batch {a} vs alone {b}");
    }
    let sd = model.state_dict();
    let rm = sd.get("stages.1.blocks.0.norm2.running_mean").unwrap();
    rm.with_cpu_slice_mut::<f32, _>(|s| s.iter_mut().for_each(|v| *v += 0.5)).unwrap();
    let shifted = model.forward(&batch).unwrap();
    assert_ne!(values(&shifted), values(&eval_batch), "eval output follows the running mean");

    model.set_training(true);
    let train_a = model.forward(&batch).unwrap();
    rm.with_cpu_slice_mut::<f32, _>(|s| s.iter_mut().for_each(|v| *v -= 0.5)).unwrap();
    let train_b = model.forward(&batch).unwrap();
    assert_eq!(values(&train_a), values(&train_b), "train mode ignores the running mean");
    // (Two samples: BN in train mode needs more than one value per channel at 1×1 layers.)
    let pair = model.forward(&batch.narrow(0, 0, 2).unwrap().contiguous().unwrap()).unwrap();
    assert_ne!(row0(&train_a), row0(&pair), "train mode uses the batch's statistics");
}
