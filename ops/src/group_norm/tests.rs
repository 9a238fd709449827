//! group_norm: gradient checks (x, γ, β; identity and ReLU; with and without affine; channels-last
//! leaves seen through a permutation) over random shapes; the per-group invariants; LayerNorm
//! (G = 1) and InstanceNorm (G = C) against engine tensor ops, values and gradients; f32 vs f64;
//! thread-count independence; argument errors.

use super::*;
use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{autograd, Rng};
use proptest::prelude::*;

const CPU: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape.to_vec(), 0.0, 1.0, DType::F64, CPU, &mut Rng::new(seed)).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Group norm written with engine ops: reshape to [N, G, rest], mean and biased var over the
/// rest, normalize, reshape back, per-channel affine, activation.
fn reference(x: &Tensor, groups: usize, gamma: Option<&Tensor>, beta: Option<&Tensor>, act: Activation) -> Tensor {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let xg = x.reshape(vec![n, groups, x.numel() / (n * groups)]).unwrap();
    let mean = xg.mean(&[2], true).unwrap();
    let var = xg.var(&[2], true, false).unwrap();
    let xhat = xg.sub(&mean).unwrap().div(&var.add_scalar(GN_EPS).unwrap().sqrt().unwrap()).unwrap();
    let mut y = xhat.reshape(x.dims().to_vec()).unwrap();
    // [C] → [C, 1, …, 1] so that it broadcasts against [N, C, spatial…].
    let per_channel = |p: &Tensor| p.reshape([vec![c], vec![1; x.rank() - 2]].concat()).unwrap();
    if let Some(g) = gamma {
        y = y.mul(&per_channel(g)).unwrap();
    }
    if let Some(b) = beta {
        y = y.add(&per_channel(b)).unwrap();
    }
    if act == Activation::Relu {
        y = y.relu().unwrap();
    }
    y
}

/// Random GN cases: x of shape [N, C, spatial…] with 0–2 spatial dims, C = G·Cg.
fn gn_case() -> impl Strategy<Value = (Vec<usize>, usize)> {
    (1usize..3, 1usize..4, 1usize..4, prop::collection::vec(1usize..4, 0..3)).prop_map(|(n, g, cg, sp)| {
        let mut d = vec![n, g * cg];
        d.extend(sp);
        (d, g)
    })
}

fn act_of(relu: bool) -> Activation {
    if relu {
        Activation::Relu
    } else {
        Activation::None
    }
}

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(24)
}

/// Finite differences step over the ReLU kink only when an output is within ~1e-6 of 0; the
/// random data make that rare, and the tolerances below leave room for the curvature of small
/// groups (M = 2 has a large third derivative when its two values are close).
fn opts() -> GradCheck {
    GradCheck { atol: 1e-6, rtol: 1e-4, ..GradCheck::default() }
}

proptest! {
    #![proptest_config(cfg())]

    /// x, γ and β together, for both activations and with or without each affine parameter.
    #[test]
    fn gradcheck_random_shapes((dims, groups) in gn_case(), relu in any::<bool>(), with_gamma in any::<bool>(), with_beta in any::<bool>(), seed in 0u64..1000) {
        let c = dims[1];
        let inputs = vec![randn(&dims, seed), randn(&[c], seed + 1), randn(&[c], seed + 2)];
        let f = |t: &[Tensor]| {
            group_norm(&t[0], groups, with_gamma.then_some(&t[1]), with_beta.then_some(&t[2]), GN_EPS, act_of(relu))
        };
        check_gradients(f, &inputs, opts()).unwrap();
    }

    /// Coincident sizes (C == H == W) and a channels-last leaf [N, H, W, C] that the op sees
    /// permuted to NCHW (a non-contiguous input).
    #[test]
    fn gradcheck_square_and_permuted(n in 1usize..3, k in 1usize..4, instance in any::<bool>(), relu in any::<bool>(), seed in 0u64..1000) {
        let groups = if instance { k } else { 1 };
        let inputs = vec![randn(&[n, k, k, k], seed), randn(&[k], seed + 1), randn(&[k], seed + 2)];
        let plain = |t: &[Tensor]| group_norm(&t[0], groups, Some(&t[1]), Some(&t[2]), GN_EPS, act_of(relu));
        check_gradients(plain, &inputs, opts()).unwrap();
        let nhwc = |t: &[Tensor]| {
            group_norm(&t[0].permute(&[0, 3, 1, 2])?, groups, Some(&t[1]), Some(&t[2]), GN_EPS, act_of(relu))
        };
        check_gradients(nhwc, &inputs, opts()).unwrap();
    }

    /// Without affine and activation, every (n, g) group has mean 0 and variance σ²/(σ² + ε).
    #[test]
    fn groups_are_normalized((dims, groups) in gn_case(), scale in 0.1f64..10.0, shift in -5f64..5.0, seed in 0u64..1000) {
        let x = randn(&dims, seed).affine(scale, shift).unwrap();
        let y = group_norm(&x, groups, None, None, GN_EPS, Activation::None).unwrap();
        let (xv, yv) = (x.to_vec::<f64>().unwrap(), y.to_vec::<f64>().unwrap());
        let m = x.numel() / (dims[0] * groups);
        for (xg, yg) in xv.chunks(m).zip(yv.chunks(m)) {
            let stats = |v: &[f64]| {
                let mean = v.iter().sum::<f64>() / m as f64;
                (mean, v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / m as f64)
            };
            let ((ym, yvar), (_, xvar)) = (stats(yg), stats(xg));
            prop_assert!(ym.abs() < 1e-12, "group mean {ym}");
            prop_assert!((yvar - xvar / (xvar + GN_EPS)).abs() < 1e-12, "group var {yvar}");
        }
        prop_assert!(max_abs_diff(&y, &reference(&x, groups, None, None, Activation::None)) < 1e-12);
    }

    /// LayerNorm over channels (G = 1) and InstanceNorm (G = C) against the engine-ops reference:
    /// the outputs and the gradients of x, γ and β that autograd computes through both.
    #[test]
    fn layer_and_instance_norm_match_engine_ops(n in 1usize..4, c in 1usize..6, h in 1usize..5, w in 1usize..5, relu in any::<bool>(), seed in 0u64..1000) {
        for groups in [1, c] {
            let x = randn(&[n, c, h, w], seed).requires_grad_(true);
            let gamma = randn(&[c], seed + 1).requires_grad_(true);
            let beta = randn(&[c], seed + 2).requires_grad_(true);
            let up = randn(&[n, c, h, w], seed + 3);
            let ours = group_norm(&x, groups, Some(&gamma), Some(&beta), GN_EPS, act_of(relu)).unwrap();
            let theirs = reference(&x, groups, Some(&gamma), Some(&beta), act_of(relu));
            prop_assert!(max_abs_diff(&ours, &theirs) < 1e-12);
            let (go, gt) = (autograd::grad(&ours, &up).unwrap(), autograd::grad(&theirs, &up).unwrap());
            for p in [&x, &gamma, &beta] {
                prop_assert!(max_abs_diff(go.get(p).unwrap(), gt.get(p).unwrap()) < 1e-10);
            }
        }
    }

    /// f32 agrees with f64, forward and backward, on BiT-like sizes (groups of 8–64 values).
    #[test]
    fn f32_matches_f64(n in 1usize..3, cg in 1usize..5, s in 2usize..5, relu in any::<bool>(), seed in 0u64..1000) {
        let (groups, c) = (4, 4 * cg);
        let dims = [n, c, s, s];
        let (x, gamma, beta, up) = (randn(&dims, seed), randn(&[c], seed + 1), randn(&[c], seed + 2), randn(&dims, seed + 3));
        let run = |dtype: DType| {
            let cast = |t: &Tensor| t.to_dtype(dtype).unwrap().requires_grad_(true);
            let (x, g, b) = (cast(&x), cast(&gamma), cast(&beta));
            let y = group_norm(&x, groups, Some(&g), Some(&b), GN_EPS, act_of(relu)).unwrap();
            let store = autograd::grad(&y, &up.to_dtype(dtype).unwrap()).unwrap();
            let grads: Vec<Tensor> = [&x, &g, &b].iter().map(|p| store.get(p).unwrap().clone()).collect();
            (y, grads)
        };
        let ((y64, g64), (y32, g32)) = (run(DType::F64), run(DType::F32));
        prop_assert!(max_abs_diff(&y32, &y64) < 1e-5);
        for (a, b) in g32.iter().zip(&g64) {
            let scale = b.to_vec_f64().unwrap().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            prop_assert!(max_abs_diff(a, b) < 2e-5 * scale);
        }
    }
}

/// A constant group normalizes to β (x̂ = 0 exactly), without NaN, and its gradient is finite.
#[test]
fn constant_groups_give_beta() {
    let x = Tensor::full(0.3, [2, 4, 3, 3], DType::F32, CPU).unwrap().requires_grad_(true);
    let beta = Tensor::from_vec(vec![1f32, -2.0, 3.0, 0.5], [4], CPU).unwrap();
    let gamma = Tensor::ones([4], DType::F32, CPU).unwrap();
    let y = group_norm(&x, 2, Some(&gamma), Some(&beta), GN_EPS, Activation::None).unwrap();
    let yv = y.to_vec::<f32>().unwrap();
    for (i, v) in yv.iter().enumerate() {
        assert!((v - [1.0, -2.0, 3.0, 0.5][(i / 9) % 4]).abs() < 1e-6, "{i}: {v}");
    }
    let g = randn(&[2, 4, 3, 3], 1).to_dtype(DType::F32).unwrap();
    let dx = autograd::grad(&y, &g).unwrap().get(&x).unwrap().to_vec::<f32>().unwrap();
    assert!(dx.iter().all(|v| v.is_finite()));
}

/// BiT-sized tensors take many rayon tasks: 1 and 3 threads give identical bits.
#[test]
fn thread_count_does_not_change_results() {
    let x = randn(&[4, 64, 8, 8], 5).to_dtype(DType::F32).unwrap();
    let up = randn(&[4, 64, 8, 8], 6).to_dtype(DType::F32).unwrap();
    let gamma = randn(&[64], 7).to_dtype(DType::F32).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (x, g) = (x.requires_grad_(true), gamma.requires_grad_(true));
            let y = group_norm(&x, BIT_GROUPS, Some(&g), None, GN_EPS, Activation::Relu).unwrap();
            let store = autograd::grad(&y, &up).unwrap();
            let v = |t: &Tensor| t.to_vec::<f32>().unwrap();
            (v(&y), v(store.get(&x).unwrap()), v(store.get(&g).unwrap()))
        })
    };
    assert_eq!(run(1), run(3));
}

/// Only the inputs that require grad get one; a ReLU output that is all zero passes nothing back.
#[test]
fn gradients_only_where_asked() {
    let x = randn(&[2, 4, 3], 1);
    let gamma = randn(&[4], 2).requires_grad_(true);
    let y = group_norm(&x, 2, Some(&gamma), None, GN_EPS, Activation::None).unwrap();
    let store = autograd::grad(&y, &Tensor::ones_like(&y).unwrap()).unwrap();
    assert!(store.get(&x).is_none());
    assert_eq!(store.get(&gamma).unwrap().dims(), [4]);

    let x = randn(&[2, 4, 3], 1).requires_grad_(true);
    let beta = Tensor::full(-100.0, [4], DType::F64, CPU).unwrap();
    let y = group_norm(&x, 2, None, Some(&beta), GN_EPS, Activation::Relu).unwrap();
    assert!(y.to_vec::<f64>().unwrap().iter().all(|&v| v == 0.0));
    let dx = autograd::grad(&y, &Tensor::ones_like(&y).unwrap()).unwrap().get(&x).unwrap().to_vec::<f64>().unwrap();
    assert!(dx.iter().all(|&v| v == 0.0));
}

/// f16/bf16 inputs are normalized in f32 and come back in their own dtype, with gradients.
#[test]
fn half_types_go_through_f32() {
    for dtype in [DType::F16, DType::BF16] {
        let x = randn(&[2, 8, 4, 4], 2).to_dtype(dtype).unwrap().requires_grad_(true);
        let gamma = Tensor::ones([8], dtype, CPU).unwrap().requires_grad_(true);
        let y = group_norm(&x, 4, Some(&gamma), None, GN_EPS, Activation::Relu).unwrap();
        assert_eq!(y.dtype(), dtype);
        let want = reference(&x.to_dtype(DType::F64).unwrap(), 4, None, None, Activation::Relu);
        assert!(max_abs_diff(&y, &want) < 3e-2);
        let store = autograd::grad(&y, &Tensor::ones_like(&y).unwrap()).unwrap();
        assert_eq!(store.get(&x).unwrap().dtype(), dtype);
        assert_eq!(store.get(&gamma).unwrap().dtype(), dtype);
    }
}

/// Empty batches and empty spatial dims give empty outputs and zero parameter gradients.
#[test]
fn empty_inputs() {
    for dims in [vec![0usize, 4, 3], vec![2, 4, 0]] {
        let x = Tensor::zeros(dims.clone(), DType::F32, CPU).unwrap().requires_grad_(true);
        let beta = Tensor::zeros([4], DType::F32, CPU).unwrap().requires_grad_(true);
        let y = group_norm(&x, 2, None, Some(&beta), GN_EPS, Activation::None).unwrap();
        assert_eq!(y.dims(), dims);
        let store = autograd::grad(&y, &Tensor::zeros_like(&y).unwrap()).unwrap();
        assert_eq!(store.get(&beta).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 4]);
    }
}

#[test]
fn bad_arguments_are_errors() {
    let x = randn(&[2, 6, 3, 3], 0);
    let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
    let e = msg(group_norm(&x, 4, None, None, GN_EPS, Activation::None));
    assert!(e.contains("6 channels") && e.contains("4 groups") && e.contains("[2, 6, 3, 3]"), "{e}");
    assert!(msg(group_norm(&x, 0, None, None, GN_EPS, Activation::None)).contains("0 groups"));
    let e = msg(group_norm(&x, 3, Some(&randn(&[3], 0)), None, GN_EPS, Activation::None));
    assert!(e.contains("gamma must have shape [6]") && e.contains("[3]"), "{e}");
    let e = msg(group_norm(&x, 3, None, Some(&randn(&[6, 1], 0)), GN_EPS, Activation::None));
    assert!(e.contains("beta must have shape [6]"), "{e}");
    let g32 = Tensor::ones([6], DType::F32, CPU).unwrap();
    assert!(msg(group_norm(&x, 3, Some(&g32), None, GN_EPS, Activation::None)).contains("dtype mismatch"));
    assert!(msg(group_norm(&randn(&[6], 0), 3, None, None, GN_EPS, Activation::None)).contains("[N, C, ...]"));
    assert!(msg(group_norm(&x, 3, None, None, -1.0, Activation::None)).contains("eps"));
    let ints = Tensor::zeros([2, 6], DType::I64, CPU).unwrap();
    assert!(msg(group_norm(&ints, 3, None, None, GN_EPS, Activation::None)).contains("i64"));
}

/// Sizes that take every path of the f32 kernels: groups and channel planes longer than one
/// f64-accumulation block (s = 2500 > 2048), odd plane sizes (17), planes shorter than one
/// SIMD block (3): f32 forward and backward agree with f64.
#[test]
fn long_and_odd_sizes_f32_match_f64() {
    for (dims, groups) in [([2usize, 4, 50, 50], 2usize), ([3, 6, 17, 1], 3), ([2, 64, 3, 1], 32)] {
        let c = dims[1];
        let (x, gamma, up) = (randn(&dims, 1).affine(2.0, 3.0).unwrap(), randn(&[c], 2), randn(&dims, 3));
        let run = |dtype: DType| {
            let (x, g) =
                (x.to_dtype(dtype).unwrap().requires_grad_(true), gamma.to_dtype(dtype).unwrap().requires_grad_(true));
            let y = group_norm(&x, groups, Some(&g), None, GN_EPS, Activation::Relu).unwrap();
            let store = autograd::grad(&y, &up.to_dtype(dtype).unwrap()).unwrap();
            [y, store.get(&x).unwrap().clone(), store.get(&g).unwrap().clone()]
        };
        for (a, b) in run(DType::F32).iter().zip(&run(DType::F64)) {
            let scale = b.to_vec_f64().unwrap().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(max_abs_diff(a, b) < 1e-5 * scale, "{dims:?}: {}", max_abs_diff(a, b));
        }
    }
}
