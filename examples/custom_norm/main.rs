//! A new normalization from outside bitgrad: Filter Response Normalization (FRN + TLU, Singh &
//! Krishnan 2020) as an op with its own CPU forward and backward (`frn.rs`), plugged into the
//! BiT ResNetV2 through `NormKind::Custom` — no model code edited — and trained a few steps.
//!
//! Run: `cargo run --release --example custom_norm` (a few seconds on 2 cores). The op's
//! gradient check runs with `cargo test --example custom_norm` (and in CI's `cargo test`).
//!
//! The recipe for any norm:
//! 1. the op: a function computing the forward that calls `out.record(&inputs, MyBackward)`,
//!    and a [`BackwardOp`](bitgrad::engine::BackwardOp) whose `backward` turns ∂L/∂out into
//!    ∂L/∂input for each input (docs/autograd.md explains the contract);
//! 2. a layer: a type implementing `NormLayer` (forward = norm + activation) and `Module`
//!    (visits its tensors under `<prefix>.<name>`, so state dicts and loading just work);
//! 3. a factory implementing `NormFactory` (name, width check, parameter count, build);
//! 4. `ResNetV2Config { norm: NormKind::Custom(Arc::new(factory)), .. }`.
//!
//! FRN runs anywhere: on the CPU with its own forward and backward, on a GPU device (Cuda, Emu)
//! composed of the engine's primitives with autograd's backward (see frn.rs).

// `cargo test` builds this file with the test harness as entry point, where only `frn`'s tests run.
#![cfg_attr(test, allow(dead_code))]

mod frn;

use std::sync::Arc;

use bitgrad::models::ops::sgd::Sgd;
use bitgrad::models::ops::softmax_xent::{cross_entropy, Target};
use bitgrad::models::{Module, NormKind, ResNetV2, ResNetV2Config};
use bitgrad::{DType, Device, Result, Rng, Tensor};
use frn::Frn;

const SIZE: usize = 16;

/// `n` images of two classes: a bright band in the upper (class 0) or lower (class 1) half, on noise.
fn data(n: usize, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    let mut x = Tensor::randn([n, 3, SIZE, SIZE], 0.0, 0.5, DType::F32, Device::Cpu, rng)?.to_vec::<f32>()?;
    let labels: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
    for (i, &label) in labels.iter().enumerate() {
        let rows = if label == 0 { 2..6 } else { 10..14 };
        for c in 0..3 {
            for r in rows.clone() {
                for col in 0..SIZE {
                    x[((i * 3 + c) * SIZE + r) * SIZE + col] += 1.0;
                }
            }
        }
    }
    Ok((Tensor::from_vec(x, [n, 3, SIZE, SIZE], Device::Cpu)?, Tensor::from_vec(labels, [n], Device::Cpu)?))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let config = ResNetV2Config {
        norm: NormKind::Custom(Arc::new(Frn::default())),
        ..ResNetV2Config::named("resnetv2_tiny_bit", 2)?
    };
    let model = ResNetV2::new(&config, 0)?;
    let sd = model.state_dict();
    let taus = sd.names().filter(|n| n.ends_with(".tau")).count();
    println!(
        "resnetv2_tiny_bit with {:?}: {} parameters, {taus} FRN layers (e.g. {})",
        config.norm,
        model.num_parameters(),
        sd.names().find(|n| n.ends_with(".tau")).unwrap_or("?")
    );

    let (x, y) = data(16, &mut Rng::new(1))?;
    let params = model.parameters();
    let mut sgd = Sgd::new(0.03, 0.0, 0.0, false)?;
    let mut first = None;
    for step in 0..=20 {
        let loss = cross_entropy(&model.forward(&x)?, Target::Hard(&y), 0.0)?;
        let value = loss.to_scalar()?;
        first.get_or_insert(value);
        if step % 4 == 0 {
            println!("step {step:2}  loss {value:.4}");
        }
        loss.backward()?;
        sgd.step(&params)?;
        sgd.zero_grad(&params);
    }
    let last = cross_entropy(&model.forward(&x)?, Target::Hard(&y), 0.0)?.to_scalar()?;
    let first = first.ok_or("no step was run")?;
    println!("loss {first:.4} → {last:.4}");
    if last.is_nan() || last >= first {
        return Err("the loss did not go down".into());
    }
    Ok(())
}
