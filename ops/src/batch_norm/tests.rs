//! batch_norm: gradient checks in training and eval mode (x, γ, β; channels-last leaves seen
//! through a permutation) over random shapes; PyTorch's running-statistics rule on hand-computed
//! values; eval mode against engine tensor ops; per-channel invariants; f32 vs f64; errors.

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

/// [C] → [C, 1, …, 1], broadcastable against an input of rank `rank`.
fn per_channel(p: &Tensor, rank: usize) -> Tensor {
    p.reshape([vec![p.numel()], vec![1; rank - 2]].concat()).unwrap()
}

/// Batch norm with engine ops, given the per-channel mean and variance to normalize with.
fn reference(x: &Tensor, mean: &Tensor, var: &Tensor, gamma: &Tensor, beta: &Tensor) -> Tensor {
    let r = x.rank();
    let xhat =
        x.sub(&per_channel(mean, r)).unwrap().div(&per_channel(&var.add_scalar(BN_EPS).unwrap(), r).sqrt().unwrap());
    xhat.unwrap().mul(&per_channel(gamma, r)).unwrap().add(&per_channel(beta, r)).unwrap()
}

/// Random running statistics for `c` channels (variances in [0.5, 2)).
fn running(c: usize, seed: u64) -> RunningStats {
    let var = Tensor::rand([c], 0.5, 2.0, DType::F64, CPU, &mut Rng::new(seed)).unwrap();
    RunningStats::from_tensors(randn(&[c], seed + 1), var).unwrap()
}

/// Shapes [N, C, spatial…] with 0–2 spatial dims and at least two values per channel.
fn bn_dims() -> impl Strategy<Value = Vec<usize>> {
    (1usize..4, 1usize..4, prop::collection::vec(1usize..4, 0..3))
        .prop_map(|(n, c, sp)| [vec![n, c], sp].concat())
        .prop_filter("training needs > 1 value per channel", |d| d[0] * d[2..].iter().product::<usize>() > 1)
}

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(24)
}

fn opts() -> GradCheck {
    GradCheck { atol: 1e-6, rtol: 1e-4, ..GradCheck::default() }
}

proptest! {
    #![proptest_config(cfg())]

    /// Both modes, with and without γ and β. Training mode also updates the running statistics
    /// on every evaluation, which must not disturb the gradients.
    #[test]
    fn gradcheck_random_shapes(dims in bn_dims(), training in any::<bool>(), with_gamma in any::<bool>(), with_beta in any::<bool>(), seed in 0u64..1000) {
        let c = dims[1];
        let stats = running(c, seed + 5);
        let inputs = vec![randn(&dims, seed), randn(&[c], seed + 1), randn(&[c], seed + 2)];
        let f = |t: &[Tensor]| {
            batch_norm(&t[0], with_gamma.then_some(&t[1]), with_beta.then_some(&t[2]), Some(&stats), training, BN_MOMENTUM, BN_EPS)
        };
        check_gradients(f, &inputs, opts()).unwrap();
    }

    /// C == H == W, and a channels-last leaf [N, H, W, C] that the op sees permuted to NCHW.
    #[test]
    fn gradcheck_square_and_permuted(n in 1usize..3, k in 2usize..4, training in any::<bool>(), seed in 0u64..1000) {
        let stats = running(k, seed + 5);
        let inputs = vec![randn(&[n, k, k, k], seed), randn(&[k], seed + 1), randn(&[k], seed + 2)];
        let nhwc = |t: &[Tensor]| {
            batch_norm(&t[0].permute(&[0, 3, 1, 2])?, Some(&t[1]), Some(&t[2]), Some(&stats), training, BN_MOMENTUM, BN_EPS)
        };
        check_gradients(nhwc, &inputs, opts()).unwrap();
        let no_stats = |t: &[Tensor]| batch_norm(&t[0], Some(&t[1]), Some(&t[2]), None, true, BN_MOMENTUM, BN_EPS);
        check_gradients(no_stats, &inputs, opts()).unwrap();
    }

    /// Training mode: each channel of the output (no affine) has mean 0 and variance σ²/(σ²+ε),
    /// and the values equal the engine-ops formula with the batch's own biased statistics.
    #[test]
    fn training_normalizes_each_channel(dims in bn_dims(), seed in 0u64..1000) {
        let c = dims[1];
        let x = randn(&dims, seed).affine(3.0, 1.5).unwrap();
        let y = batch_norm(&x, None, None, None, true, BN_MOMENTUM, BN_EPS).unwrap();
        let axes: Vec<isize> = [0].into_iter().chain(2..dims.len() as isize).collect();
        let mean = x.mean(&axes, false).unwrap();
        let var = x.var(&axes, false, false).unwrap();
        let (ones, zeros) = (Tensor::ones([c], DType::F64, CPU).unwrap(), Tensor::zeros([c], DType::F64, CPU).unwrap());
        prop_assert!(max_abs_diff(&y, &reference(&x, &mean, &var, &ones, &zeros)) < 1e-12);
        let ym = y.mean(&axes, false).unwrap().to_vec::<f64>().unwrap();
        let yv = y.var(&axes, false, false).unwrap().to_vec::<f64>().unwrap();
        for (ch, v) in var.to_vec::<f64>().unwrap().into_iter().enumerate() {
            prop_assert!(ym[ch].abs() < 1e-12);
            prop_assert!((yv[ch] - v / (v + BN_EPS)).abs() < 1e-12);
        }
    }

    /// Eval mode is the per-channel affine map with the running statistics (engine-ops
    /// reference, values and gradients), and leaves the statistics untouched.
    #[test]
    fn eval_uses_running_statistics(dims in bn_dims(), seed in 0u64..1000) {
        let c = dims[1];
        let stats = running(c, seed + 5);
        let before = (stats.mean().to_vec::<f64>().unwrap(), stats.var().to_vec::<f64>().unwrap());
        let x = randn(&dims, seed).requires_grad_(true);
        let gamma = randn(&[c], seed + 1).requires_grad_(true);
        let beta = randn(&[c], seed + 2).requires_grad_(true);
        let ours = batch_norm(&x, Some(&gamma), Some(&beta), Some(&stats), false, BN_MOMENTUM, BN_EPS).unwrap();
        let theirs = reference(&x, stats.mean(), stats.var(), &gamma, &beta);
        prop_assert!(max_abs_diff(&ours, &theirs) < 1e-12);
        let up = randn(&dims, seed + 3);
        let (go, gt) = (autograd::grad(&ours, &up).unwrap(), autograd::grad(&theirs, &up).unwrap());
        for p in [&x, &gamma, &beta] {
            prop_assert!(max_abs_diff(go.get(p).unwrap(), gt.get(p).unwrap()) < 1e-10);
        }
        prop_assert_eq!(before, (stats.mean().to_vec::<f64>().unwrap(), stats.var().to_vec::<f64>().unwrap()));
    }

    /// f32 agrees with f64 in both modes, forward and backward.
    #[test]
    fn f32_matches_f64(n in 2usize..4, c in 1usize..5, s in 2usize..5, training in any::<bool>(), seed in 0u64..1000) {
        let dims = [n, c, s, s];
        let (x, gamma, beta, up) = (randn(&dims, seed), randn(&[c], seed + 1), randn(&[c], seed + 2), randn(&dims, seed + 3));
        let stats64 = running(c, seed + 5);
        let run = |dtype: DType| {
            let cast = |t: &Tensor| t.to_dtype(dtype).unwrap().requires_grad_(true);
            let stats = RunningStats::from_tensors(stats64.mean().to_dtype(dtype).unwrap(), stats64.var().to_dtype(dtype).unwrap()).unwrap();
            let (x, g, b) = (cast(&x), cast(&gamma), cast(&beta));
            let y = batch_norm(&x, Some(&g), Some(&b), Some(&stats), training, BN_MOMENTUM, BN_EPS).unwrap();
            let store = autograd::grad(&y, &up.to_dtype(dtype).unwrap()).unwrap();
            let mut out: Vec<Tensor> = [&x, &g, &b].iter().map(|p| store.get(p).unwrap().clone()).collect();
            out.extend([y, stats.mean().clone(), stats.var().clone()]);
            out
        };
        for (a, b) in run(DType::F32).iter().zip(&run(DType::F64)) {
            let scale = b.to_vec_f64().unwrap().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            prop_assert!(max_abs_diff(a, b) < 2e-5 * scale);
        }
    }
}

/// PyTorch's rule on numbers worked out by hand. x = [[1, 2], [3, 6]] as [N = 2, C = 2]:
/// channel 0 holds {1, 3} (mean 2, biased var 1, unbiased var 2), channel 1 {2, 6} (mean 4,
/// biased var 4, unbiased var 8). With momentum 0.1 from (mean 0, var 1):
///   step 1: mean = 0.1·(2, 4) = (0.2, 0.4); var = 0.9·1 + 0.1·(2, 8) = (1.1, 1.7)
///   step 2: mean = 0.9·(0.2, 0.4) + 0.1·(2, 4) = (0.38, 0.76)
///           var  = 0.9·(1.1, 1.7) + 0.1·(2, 8) = (1.19, 2.33)
/// The normalization itself uses the biased variance: y(channel 0) = (∓1)/sqrt(1 + ε).
#[test]
fn running_statistics_follow_pytorch() {
    for dtype in [DType::F64, DType::F32] {
        let stats = RunningStats::new(2, dtype, CPU).unwrap();
        let x = Tensor::from_f64_vec(vec![1.0, 2.0, 3.0, 6.0], [2, 2], dtype, CPU).unwrap();
        let close = |t: &Tensor, want: &[f64]| {
            let v = t.to_vec_f64().unwrap();
            v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6)
        };
        let y = batch_norm(&x, None, None, Some(&stats), true, 0.1, BN_EPS).unwrap();
        let r0 = 1.0 / (1.0 + BN_EPS).sqrt();
        let r1 = 2.0 / (4.0 + BN_EPS).sqrt();
        assert!(close(&y, &[-r0, -r1, r0, r1]), "{y:?}");
        assert!(close(stats.mean(), &[0.2, 0.4]) && close(stats.var(), &[1.1, 1.7]), "{stats:?}");
        batch_norm(&x, None, None, Some(&stats), true, 0.1, BN_EPS).unwrap();
        assert!(close(stats.mean(), &[0.38, 0.76]) && close(stats.var(), &[1.19, 2.33]), "{stats:?}");
    }
    // A 4-d input: channel 0 of [2, 1, 1, 2] holds {0, 2, 4, 10}: mean 4, unbiased var 56/3.
    let stats = RunningStats::new(1, DType::F64, CPU).unwrap();
    let x = Tensor::from_vec(vec![0.0, 2.0, 4.0, 10.0], [2, 1, 1, 2], CPU).unwrap();
    batch_norm(&x, None, None, Some(&stats), true, 0.25, BN_EPS).unwrap();
    assert!((stats.mean().to_scalar().unwrap() - 1.0).abs() < 1e-12);
    assert!((stats.var().to_scalar().unwrap() - (0.75 + 0.25 * 56.0 / 3.0)).abs() < 1e-12);
}

/// Views of the running statistics see the in-place updates (they share storage).
#[test]
fn running_statistics_are_updated_in_place() {
    let mean = Tensor::zeros([3], DType::F32, CPU).unwrap();
    let stats = RunningStats::from_tensors(mean.clone(), Tensor::ones([3], DType::F32, CPU).unwrap()).unwrap();
    let x = Tensor::ones([2, 3, 2], DType::F32, CPU).unwrap();
    batch_norm(&x, None, None, Some(&stats), true, 0.5, BN_EPS).unwrap();
    assert_eq!(mean.to_vec::<f32>().unwrap(), vec![0.5; 3]);
}

#[test]
fn bad_arguments_are_errors() {
    let x = randn(&[2, 3, 4], 0);
    let stats = RunningStats::new(3, DType::F64, CPU).unwrap();
    let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert!(msg(batch_norm(&x, None, None, None, false, BN_MOMENTUM, BN_EPS)).contains("needs running statistics"));
    let one = randn(&[1, 3], 0);
    assert!(msg(batch_norm(&one, None, None, Some(&stats), true, BN_MOMENTUM, BN_EPS)).contains("more than 1 value"));
    let e = msg(batch_norm(&x, Some(&randn(&[4], 0)), None, Some(&stats), true, BN_MOMENTUM, BN_EPS));
    assert!(e.contains("gamma must have shape [3]") && e.contains("[2, 3, 4]"), "{e}");
    let e = msg(batch_norm(&x, None, None, Some(&RunningStats::new(5, DType::F64, CPU).unwrap()), true, 0.1, BN_EPS));
    assert!(e.contains("5 channels"), "{e}");
    let e = msg(batch_norm(&x, None, None, Some(&RunningStats::new(3, DType::F32, CPU).unwrap()), true, 0.1, BN_EPS));
    assert!(e.contains("running statistics are f32"), "{e}");
    assert!(msg(batch_norm(&x, None, None, None, true, f64::NAN, BN_EPS)).contains("momentum"));
    assert!(msg(batch_norm(&randn(&[3], 0), None, None, None, true, 0.1, BN_EPS)).contains("[N, C, ...]"));
    assert!(RunningStats::from_tensors(randn(&[3], 0), randn(&[4], 0)).is_err());
}

/// f16 inputs run in f32 with f32 running statistics, as in mixed-precision PyTorch.
#[test]
fn half_inputs_use_f32_statistics() {
    let stats = RunningStats::new(4, DType::F32, CPU).unwrap();
    let x = randn(&[3, 4, 2, 2], 1).to_dtype(DType::F16).unwrap().requires_grad_(true);
    let y = batch_norm(&x, None, None, Some(&stats), true, BN_MOMENTUM, BN_EPS).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    let dx = autograd::grad(&y, &Tensor::ones_like(&y).unwrap()).unwrap().get(&x).unwrap().clone();
    assert_eq!(dx.dtype(), DType::F16);
    assert_ne!(stats.mean().to_vec::<f32>().unwrap(), vec![0.0; 4]);
}

/// Channel runs longer than one f64-accumulation block (2400 > 2048) and odd sizes, both modes:
/// f32 agrees with f64.
#[test]
fn long_and_odd_sizes_f32_match_f64() {
    for dims in [[3usize, 5, 40, 60], [5, 3, 1, 7]] {
        let c = dims[1];
        let (x, gamma, up) = (randn(&dims, 1).affine(2.0, -1.0).unwrap(), randn(&[c], 2), randn(&dims, 3));
        for training in [true, false] {
            let run = |dtype: DType| {
                let stats = RunningStats::new(c, dtype, CPU).unwrap();
                let (x, g) = (
                    x.to_dtype(dtype).unwrap().requires_grad_(true),
                    gamma.to_dtype(dtype).unwrap().requires_grad_(true),
                );
                let y = batch_norm(&x, Some(&g), None, Some(&stats), training, BN_MOMENTUM, BN_EPS).unwrap();
                let store = autograd::grad(&y, &up.to_dtype(dtype).unwrap()).unwrap();
                [y, store.get(&x).unwrap().clone(), store.get(&g).unwrap().clone(), stats.var().clone()]
            };
            for (a, b) in run(DType::F32).iter().zip(&run(DType::F64)) {
                let scale = b.to_vec_f64().unwrap().iter().fold(1.0f64, |m, v| m.max(v.abs()));
                assert!(max_abs_diff(a, b) < 1e-5 * scale, "{dims:?} training {training}: {}", max_abs_diff(a, b));
            }
        }
    }
}
