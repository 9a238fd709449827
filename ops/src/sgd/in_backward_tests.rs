//! The `ws-sgd` fusion against `backward(); step()`: the same weights and momentum buffers bit
//! for bit, over several steps of two micro-batches each, for every form of the update and both
//! dtypes; only the parameters whose gradient WS's backward finishes are updated early.

use bitgrad_engine::{DType, Device, Rng, Tensor};

use super::Sgd;
use crate::conv2d::{conv2d, Conv2dParams};
use crate::fusion::{self, Fusion, Fusions};
use crate::weight_std::{weight_std, WS_EPS_BIT};

const CPU: Device = Device::Cpu;

/// A two-layer WS net and a plain scale: `w1` and `w2` reach the loss through WS only; `shared`
/// also appears in the loss on its own, so WS's backward does not finish its gradient; `scale`
/// has no WS.
struct Net {
    w1: Tensor,
    w2: Tensor,
    shared: Tensor,
    scale: Tensor,
}

impl Net {
    fn new(dtype: DType) -> Net {
        let mut rng = Rng::new(7);
        let mut p = |dims: &[usize]| Tensor::randn(dims, 0.0, 0.5, dtype, CPU, &mut rng).unwrap().requires_grad_(true);
        Net { w1: p(&[4, 3, 3, 3]), w2: p(&[6, 4, 1, 1]), shared: p(&[6, 6, 1, 1]), scale: p(&[1]) }
    }
    fn params(&self) -> Vec<Tensor> {
        vec![self.w1.clone(), self.w2.clone(), self.shared.clone(), self.scale.clone()]
    }
    fn loss(&self, x: &Tensor) -> Tensor {
        let same = Conv2dParams::new(1, 1);
        let h = conv2d(x, &weight_std(&self.w1, WS_EPS_BIT).unwrap(), None, &same).unwrap().relu().unwrap();
        let h = conv2d(&h, &weight_std(&self.w2, WS_EPS_BIT).unwrap(), None, &Conv2dParams::new(1, 0)).unwrap();
        let h = conv2d(&h, &weight_std(&self.shared, WS_EPS_BIT).unwrap(), None, &Conv2dParams::new(1, 0)).unwrap();
        let h = h.mul(&self.scale).unwrap();
        let loss = h.mul(&h).unwrap().mean_all().unwrap();
        loss.add(&self.shared.sum_all().unwrap().mul_scalar(0.01).unwrap()).unwrap()
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().into_iter().map(f64::to_bits).collect()
}

/// Three steps of two micro-batches: the first backward plain, the last under
/// `update_in_backward`, then `step` for the rest. Returns the parameters' and buffers' bits.
fn train(dtype: DType, sgd: &mut Sgd, fused: bool) -> (Vec<Vec<u64>>, Vec<Vec<u64>>) {
    let net = Net::new(dtype);
    let params = net.params();
    let mut rng = Rng::new(11);
    let set = if fused { Fusions::ALL } else { Fusions::NONE };
    for step in 0..3 {
        let xs: Vec<Tensor> =
            (0..2).map(|_| Tensor::randn([2, 3, 6, 5], 0.0, 1.0, dtype, CPU, &mut rng).unwrap()).collect();
        fusion::with(set, || {
            net.loss(&xs[0]).mul_scalar(0.5).unwrap().backward().unwrap();
            let last = net.loss(&xs[1]).mul_scalar(0.5).unwrap();
            sgd.update_in_backward(&params, || last.backward()).unwrap();
            if fused {
                // WS's backward finished w1's and w2's gradients and updated them; shared's
                // gradient also comes from the loss's own term, and scale has no WS.
                assert!(net.w1.grad().is_none() && net.w2.grad().is_none(), "step {step}");
                assert!(net.shared.grad().is_some() && net.scale.grad().is_some(), "step {step}");
            } else {
                assert!(params.iter().all(|p| p.grad().is_some()), "step {step}");
            }
            sgd.step(&params).unwrap();
            crate::sgd::zero_grad(&params);
        });
    }
    let buffers = params.iter().map(|p| sgd.momentum_buffer(p).map(bits).unwrap_or_default()).collect();
    (params.iter().map(bits).collect(), buffers)
}

#[test]
fn the_fused_update_gives_the_unfused_weights_and_buffers_bit_for_bit() {
    for dtype in [DType::F32, DType::F64] {
        for (lr, momentum, wd, nesterov) in [(0.1, 0.0, 0.0, false), (0.05, 0.9, 1e-3, false), (0.05, 0.9, 1e-3, true)]
        {
            let mk = || Sgd::new(lr, momentum, wd, nesterov).unwrap();
            let plain = train(dtype, &mut mk(), false);
            let fused = train(dtype, &mut mk(), true);
            let case = format!("{dtype} lr {lr} momentum {momentum} wd {wd} nesterov {nesterov}");
            assert_eq!(plain.0, fused.0, "weights, {case}");
            assert_eq!(plain.1, fused.1, "momentum buffers, {case}");
            // And the updates did something: the weights moved from their start.
            let start: Vec<Vec<u64>> = Net::new(dtype).params().iter().map(bits).collect();
            assert!(start.iter().zip(&fused.0).all(|(a, b)| a != b), "{case}");
        }
    }
}

#[test]
fn without_the_fusion_or_a_registration_backward_only_collects_gradients() {
    let net = Net::new(DType::F32);
    let params = net.params();
    let before: Vec<Vec<u64>> = params.iter().map(bits).collect();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    let x = Tensor::randn([1, 3, 4, 4], 0.0, 1.0, DType::F32, CPU, &mut Rng::new(3)).unwrap();
    let without = Fusions::ALL.without(Fusion::WsSgd);
    fusion::with(without, || sgd.update_in_backward(&params, || net.loss(&x).backward())).unwrap();
    assert!(params.iter().all(|p| p.grad().is_some()));
    assert_eq!(before, params.iter().map(bits).collect::<Vec<_>>(), "nothing updated");
    crate::sgd::zero_grad(&params);
    // A plain backward with the fusion on updates nothing either: no optimizer is registered.
    net.loss(&x).backward().unwrap();
    assert!(params.iter().all(|p| p.grad().is_some()));
    assert_eq!(before, params.iter().map(bits).collect::<Vec<_>>());
    // Registered for other parameters only: w1 keeps its gradient.
    crate::sgd::zero_grad(&params);
    fusion::with(Fusions::ALL, || sgd.update_in_backward(&params[1..], || net.loss(&x).backward())).unwrap();
    assert!(net.w1.grad().is_some() && net.w2.grad().is_none());
}

#[test]
fn bad_hyper_parameters_and_nested_registrations_are_errors() {
    let net = Net::new(DType::F32);
    let params = net.params();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    sgd.lr = f64::NAN;
    let ran = std::cell::Cell::new(false);
    let e = sgd
        .update_in_backward(&params, || {
            ran.set(true);
            Ok(())
        })
        .unwrap_err();
    assert!(e.to_string().contains("learning rate") && !ran.get(), "{e}");
    sgd.lr = 0.1;
    let mut inner = Sgd::new(0.1, 0.0, 0.0, false).unwrap();
    let e =
        fusion::with(Fusions::ALL, || sgd.update_in_backward(&params, || inner.update_in_backward(&params, || Ok(()))))
            .unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
    // The outer registration ended with its call: a new one works, and the buffers came back.
    let x = Tensor::randn([1, 3, 4, 4], 0.0, 1.0, DType::F32, CPU, &mut Rng::new(3)).unwrap();
    fusion::with(Fusions::ALL, || sgd.update_in_backward(&params, || net.loss(&x).backward())).unwrap();
    assert!(sgd.momentum_buffer(&net.w1).is_some(), "the first step's buffer is the optimizer's");
}

/// WS's fused backward updates the weight rows in parallel tasks: on 1, 2 and 3 threads the
/// weights and momentum buffers come out with the same bits (two steps, momentum and Nesterov).
#[test]
fn thread_count_does_not_change_the_fused_update() {
    let mut rng = Rng::new(3);
    let w0 = Tensor::randn([256, 64, 3, 3], 0.0, 0.5, DType::F32, CPU, &mut rng).unwrap();
    let r = Tensor::randn([256, 64, 3, 3], 0.0, 1.0, DType::F32, CPU, &mut rng).unwrap();
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let w = w0.mul_scalar(1.0).unwrap().requires_grad_(true);
            let mut sgd = Sgd::new(0.05, 0.9, 1e-3, true).unwrap();
            for _ in 0..2 {
                let loss = weight_std(&w, WS_EPS_BIT).unwrap().mul(&r).unwrap().sum_all().unwrap();
                fusion::with(Fusions::ALL, || sgd.update_in_backward(std::slice::from_ref(&w), || loss.backward()))
                    .unwrap();
                assert!(w.grad().is_none(), "{threads} threads: the update ran inside backward");
            }
            (bits(&w), bits(sgd.momentum_buffer(&w).unwrap()))
        })
    };
    let one = on(1);
    assert_ne!(one.0, bits(&w0), "the weights moved");
    for threads in [2, 3] {
        assert!(on(threads) == one, "{threads} threads differ from 1");
    }
}
