//! 01 — autograd from the ground up: a two-layer network learns to tell three interleaved
//! spirals apart, with nothing but tensor ops, `backward()` and a hand-written SGD step.
//!
//! Run: `cargo run --release --example 01_autograd`
//!
//! What to look at (docs/autograd.md walks through it):
//! * parameters are leaves made with `requires_grad_(true)`;
//! * the forward pass records a graph as a side effect of ordinary tensor calls;
//! * `loss.backward()` fills `.grad()` of every parameter and frees the graph;
//! * the update runs under `no_grad()`, so it is not recorded.

use bitgrad::{no_grad, DType, Device, Result, Rng, Tensor};

const CLASSES: usize = 3;
const PER_CLASS: usize = 100;
const HIDDEN: usize = 64;

/// Three spiral arms in the plane, with a little noise: not linearly separable.
fn spirals(rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    let noise = Tensor::randn([CLASSES * PER_CLASS, 2], 0.0, 0.2, DType::F64, Device::Cpu, rng)?.to_vec::<f64>()?;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for c in 0..CLASSES {
        for i in 0..PER_CLASS {
            let r = i as f64 / PER_CLASS as f64;
            let theta = c as f64 * 4.0 + r * 4.0;
            let k = c * PER_CLASS + i;
            xs.push((r * theta.sin() + noise[2 * k] * r) as f32);
            xs.push((r * theta.cos() + noise[2 * k + 1] * r) as f32);
            ys.push(c as i64);
        }
    }
    Ok((
        Tensor::from_vec(xs, [CLASSES * PER_CLASS, 2], Device::Cpu)?,
        Tensor::from_vec(ys, [CLASSES * PER_CLASS], Device::Cpu)?,
    ))
}

/// A parameter: a leaf tensor that collects gradients.
fn param(shape: [usize; 2], std: f64, rng: &mut Rng) -> Result<Tensor> {
    Ok(Tensor::randn(shape, 0.0, std, DType::F32, Device::Cpu, rng)?.requires_grad_(true))
}

fn main() -> Result<()> {
    let mut rng = Rng::new(0);
    let (x, y) = spirals(&mut rng)?;
    // He initialisation for the ReLU layer, small weights for the logits.
    let mut params = vec![
        param([2, HIDDEN], 1.0, &mut rng)?, // sqrt(2 / fan_in) with fan_in = 2
        Tensor::zeros([HIDDEN], DType::F32, Device::Cpu)?.requires_grad_(true),
        param([HIDDEN, CLASSES], 0.01, &mut rng)?,
        Tensor::zeros([CLASSES], DType::F32, Device::Cpu)?.requires_grad_(true),
    ];
    let labels = y.unsqueeze(1)?; // [N, 1] indices for gather
    let lr = 1.0;

    for step in 0..=400 {
        let [w1, b1, w2, b2] = [&params[0], &params[1], &params[2], &params[3]];
        // Forward: logits = relu(x·W1 + b1)·W2 + b2; loss = mean cross-entropy.
        let hidden = x.matmul(w1)?.add(b1)?.relu()?;
        let logits = hidden.matmul(w2)?.add(b2)?;
        let log_probs = logits.log_softmax(-1)?;
        let loss = log_probs.gather(1, &labels)?.mean_all()?.neg()?;

        // Backward: fills w.grad() for every parameter, then frees the graph.
        loss.backward()?;

        if step % 50 == 0 {
            let predicted = logits.argmax(-1, false)?;
            let correct = predicted.eq(&y)?.to_dtype(DType::F32)?.mean_all()?.to_scalar()?;
            println!("step {step:>3}  loss {:.4}  accuracy {:.1}%", loss.to_scalar()?, 100.0 * correct);
        }

        // SGD: w ← w − lr·∂loss/∂w, outside the graph. The new tensors are fresh leaves.
        let _guard = no_grad();
        params = params
            .iter()
            .map(|w| {
                let g = w.grad().expect("every parameter takes part in the loss");
                Ok(w.sub(&g.mul_scalar(lr)?)?.requires_grad_(true))
            })
            .collect::<Result<_>>()?;
    }
    Ok(())
}
