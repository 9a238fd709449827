use bitgrad_engine::{DType, Device, FloatElem, Tensor, WithDType};

use super::*;

const CPU: Device = Device::Cpu;
const W0: [f64; 3] = [0.5, -1.25, 2.0];
const GRADS: [[f64; 3]; 4] = [[1.0, -2.0, 0.5], [0.25, 0.75, -1.5], [-0.5, 1.0, 2.0], [3.0, -0.125, 0.0]];

fn param<T: bitgrad_engine::CpuElement>(v: Vec<T>) -> Tensor {
    let n = v.len();
    Tensor::from_vec(v, [n], CPU).unwrap().requires_grad_(true)
}

/// Sets `p.grad()` to `g`, as a backward pass would.
fn set_grad(p: &Tensor, g: &[f64]) {
    p.zero_grad();
    p.accumulate_grad(&Tensor::from_f64_vec(g.to_vec(), [g.len()], p.dtype(), CPU).unwrap()).unwrap();
}

/// PyTorch's SGD, written out for one parameter in the arithmetic of `T` (dampening 0), returned
/// as f64. `x.add(y, alpha=a)` is `fma(a, y, x)` in PyTorch's CPU kernels; `mul_` + `add_` is not.
fn hand_sgd_in<T: FloatElem>(lr: f64, mu: f64, wd: f64, nesterov: bool) -> Vec<f64> {
    let c = <T as WithDType>::from_f64;
    let (neg_lr, mu_t, wd) = (c(-lr), c(mu), c(wd));
    let mut w: Vec<T> = W0.iter().map(|&v| c(v)).collect();
    let mut buf: Option<Vec<T>> = None;
    for g in GRADS {
        let d: Vec<T> = g.iter().zip(&w).map(|(&g, &w)| wd.mul_add(w, c(g))).collect();
        let step: Vec<T> = if mu == 0.0 {
            d
        } else {
            let b: Vec<T> = match buf.take() {
                None => d.clone(),
                Some(b) => b.iter().zip(&d).map(|(&b, &d)| mu_t * b + d).collect(),
            };
            let s = if nesterov { d.iter().zip(&b).map(|(&d, &b)| mu_t.mul_add(b, d)).collect() } else { b.clone() };
            buf = Some(b);
            s
        };
        w = w.iter().zip(&step).map(|(&w, &s)| neg_lr.mul_add(s, w)).collect();
    }
    w.into_iter().map(WithDType::to_f64).collect()
}

fn hand_sgd(lr: f64, mu: f64, wd: f64, nesterov: bool) -> Vec<f64> {
    hand_sgd_in::<f64>(lr, mu, wd, nesterov)
}

fn run_sgd(p: &Tensor, sgd: &mut Sgd) {
    for g in GRADS {
        set_grad(p, &g);
        sgd.step(std::slice::from_ref(p)).unwrap();
    }
}

#[test]
fn matches_the_hand_computed_pytorch_sequence() {
    // (momentum, weight decay, nesterov), and what torch.optim.SGD(lr=0.1) gave for W0 and GRADS
    // in float64 (torch 2.15): the optimizer must agree with both, bit for bit.
    let cases: [(f64, f64, bool, [f64; 3]); 5] = [
        (0.0, 0.0, false, [0.12499999999999997, -1.2125000000000001, 1.9000000000000001]),
        (0.9, 0.0, false, [-0.11664999999999999, -0.94295, 1.8545500000000001]),
        (0.9, 0.1, false, [-0.15178624500000013, -0.8456615875000001, 1.6771241700000001]),
        (0.9, 0.1, true, [-0.4681350612795, -0.81755685294625, 1.5349408441469998]),
        (0.5, 0.0, true, [-0.10312500000000002, -1.159375, 1.834375]),
    ];
    for (mu, wd, nesterov, torch) in cases {
        let hand = hand_sgd(0.1, mu, wd, nesterov);
        let p = param(W0.to_vec());
        run_sgd(&p, &mut Sgd::new(0.1, mu, wd, nesterov).unwrap());
        let got = p.to_vec::<f64>().unwrap();
        assert_eq!(got, hand, "μ {mu}, wd {wd}, nesterov {nesterov}");
        for (g, t) in got.iter().zip(torch) {
            assert_eq!(*g, t, "μ {mu}, wd {wd}, nesterov {nesterov}: {got:?}");
        }
    }
}

#[test]
fn f32_follows_the_same_sequence_in_f32() {
    // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=...) in float32.
    let torch: [(bool, [f32; 3]); 2] =
        [(true, [-0.46813503, -0.8175568, 1.534941]), (false, [-0.15178621, -0.84566164, 1.6771241])];
    for (nesterov, want) in torch {
        let p = param(W0.iter().map(|&v| v as f32).collect());
        run_sgd(&p, &mut Sgd::new(0.1, 0.9, 0.1, nesterov).unwrap());
        assert_eq!(p.to_vec_f64().unwrap(), hand_sgd_in::<f32>(0.1, 0.9, 0.1, nesterov));
        assert_eq!(p.to_vec::<f32>().unwrap(), want, "nesterov {nesterov}");
    }
}

#[test]
fn updates_in_place_without_reallocating_buffers() {
    let p = param(vec![1.0f32; 100_000]); // large enough for the parallel path
    let view = p.narrow(0, 10, 5).unwrap(); // another handle on the same storage
    let ptr = |t: &Tensor| t.with_cpu_slice(|s: &[f32]| s.as_ptr() as usize).unwrap();
    let p_ptr = ptr(&p);
    let mut sgd = Sgd::new(0.5, 0.9, 0.0, false).unwrap();
    set_grad(&p, &vec![1.0; 100_000]);
    sgd.step(std::slice::from_ref(&p)).unwrap();
    let buf = sgd.momentum_buffer(&p).expect("a buffer after the first step").clone();
    let b_ptr = ptr(&buf);
    for _ in 0..3 {
        sgd.step(std::slice::from_ref(&p)).unwrap();
        assert_eq!(ptr(sgd.momentum_buffer(&p).unwrap()), b_ptr, "the buffer never moves");
        assert!(sgd.momentum_buffer(&p).unwrap().same_storage(&buf));
    }
    assert_eq!(ptr(&p), p_ptr, "the parameter is updated in place");
    // buf: 1, 1.9, 2.71, 3.439; w = 1 − 0.5·(1 + 1.9 + 2.71 + 3.439), seen through the view too.
    let want = 1.0 - 0.5 * (1.0 + 1.9 + 2.71 + 3.439);
    assert!(view.to_vec::<f32>().unwrap().iter().all(|&v| (v as f64 - want).abs() < 1e-5));
    assert!((buf.to_vec::<f32>().unwrap()[0] as f64 - 3.439).abs() < 1e-5);
}

#[test]
fn parameters_without_grads_are_skipped_and_zero_grad_clears() {
    let (a, b) = (param(vec![1.0f64, 2.0]), param(vec![3.0f64]));
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    set_grad(&a, &[1.0, 1.0]);
    sgd.step(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(a.to_vec::<f64>().unwrap(), vec![0.9, 1.9]);
    assert_eq!(b.to_vec::<f64>().unwrap(), vec![3.0]);
    assert!(sgd.momentum_buffer(&b).is_none());
    sgd.zero_grad(&[a.clone(), b.clone()]);
    assert!(a.grad().is_none());
    sgd.step(&[a.clone(), b]).unwrap(); // nothing to do
    assert_eq!(a.to_vec::<f64>().unwrap(), vec![0.9, 1.9]);
}

#[test]
fn no_momentum_creates_no_buffer() {
    let p = param(vec![1.0f64]);
    let mut sgd = Sgd::new(0.1, 0.0, 0.5, false).unwrap();
    set_grad(&p, &[1.0]);
    sgd.step(std::slice::from_ref(&p)).unwrap();
    assert!(sgd.momentum_buffer(&p).is_none());
    assert_eq!(p.to_vec::<f64>().unwrap(), vec![1.0 - 0.1 * (1.0 + 0.5)]);
}

#[test]
fn state_round_trip_resumes_exactly() {
    let cfg = || Sgd::new(0.1, 0.9, 0.1, true).unwrap();
    let p = param(W0.to_vec());
    let mut sgd = cfg();
    let (first, rest) = GRADS.split_at(2);
    for g in first {
        set_grad(&p, g);
        sgd.step(std::slice::from_ref(&p)).unwrap();
    }
    // Checkpoint: weights and buffers.
    let saved_w = p.to_vec::<f64>().unwrap();
    let saved = sgd.state(std::slice::from_ref(&p)).unwrap();
    for g in rest {
        set_grad(&p, g);
        sgd.step(std::slice::from_ref(&p)).unwrap();
    }
    // Resume with new handles and a new optimizer.
    let q = param(saved_w);
    let mut resumed = cfg();
    resumed.load_state(std::slice::from_ref(&q), &saved).unwrap();
    for g in rest {
        set_grad(&q, g);
        resumed.step(std::slice::from_ref(&q)).unwrap();
    }
    assert_eq!(q.to_vec::<f64>().unwrap(), p.to_vec::<f64>().unwrap());
    assert_eq!(q.to_vec::<f64>().unwrap(), hand_sgd(0.1, 0.9, 0.1, true));
}

#[test]
fn a_new_handle_is_a_new_parameter() {
    // requires_grad_ returns a new handle (new TensorId) on the same storage: its momentum starts
    // afresh, as documented.
    let p = param(vec![1.0f64]);
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    set_grad(&p, &[1.0]);
    sgd.step(std::slice::from_ref(&p)).unwrap();
    let q = p.requires_grad_(true);
    assert!(q.same_storage(&p) && q.id() != p.id());
    assert!(sgd.momentum_buffer(&p).is_some() && sgd.momentum_buffer(&q).is_none());
    // Carrying the state over to the new handle.
    let s = sgd.state(std::slice::from_ref(&p)).unwrap();
    sgd.load_state(std::slice::from_ref(&q), &s).unwrap();
    assert_eq!(sgd.momentum_buffer(&q).unwrap().to_vec::<f64>().unwrap(), vec![1.0]);
    sgd.clear_state();
    assert!(sgd.momentum_buffer(&p).is_none());
}

#[test]
fn bad_settings_and_parameters_are_errors() {
    assert!(Sgd::new(-0.1, 0.0, 0.0, false).unwrap_err().to_string().contains("learning rate"));
    assert!(Sgd::new(0.1, f64::NAN, 0.0, false).unwrap_err().to_string().contains("momentum"));
    assert!(Sgd::new(0.1, 0.0, -1.0, false).unwrap_err().to_string().contains("weight_decay"));
    assert!(Sgd::new(0.1, 0.0, 0.0, true).unwrap_err().to_string().contains("Nesterov"));
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    sgd.lr = f64::INFINITY;
    assert!(sgd.step(&[]).is_err(), "fields are checked at each step");
    sgd.lr = 0.1;

    let m = Tensor::zeros([2, 3], DType::F32, CPU).unwrap().requires_grad_(true);
    let t = m.t().unwrap();
    t.accumulate_grad(&Tensor::ones([3, 2], DType::F32, CPU).unwrap()).unwrap();
    assert!(sgd.step(&[t]).unwrap_err().to_string().contains("non-contiguous"));

    let h = Tensor::zeros([2], DType::F16, CPU).unwrap().requires_grad_(true);
    h.accumulate_grad(&Tensor::ones([2], DType::F16, CPU).unwrap()).unwrap();
    assert!(sgd.step(&[h]).unwrap_err().to_string().contains("f16"));

    let p = param(vec![1.0f64, 2.0]);
    let e = sgd.load_state(std::slice::from_ref(&p), &[Some(Tensor::zeros([3], DType::F64, CPU).unwrap())]);
    assert!(e.unwrap_err().to_string().contains("[3]"));
    assert!(sgd.load_state(std::slice::from_ref(&p), &[]).is_err());
}
