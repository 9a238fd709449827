use bitgrad_engine::{DType, Device, Rng, Tensor};
use proptest::prelude::*;

use super::*;
use crate::testing::{gradcheck, max_rel_diff, named, randn, to_f32, Permuted, CPU};

fn labels(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()], CPU).unwrap()
}

/// Seeded labels in `0..k`.
fn random_labels(n: usize, k: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    labels(&(0..n).map(|_| rng.below(k as u64) as i64).collect::<Vec<_>>())
}

/// Positive rows; normalised to sum to 1 when `normalise`.
fn soft_target(n: usize, k: usize, seed: u64, normalise: bool) -> Tensor {
    let t = Tensor::rand([n, k], 0.1, 1.0, DType::F64, CPU, &mut Rng::new(seed)).unwrap();
    if normalise {
        t.div(&t.sum(&[1], true).unwrap()).unwrap()
    } else {
        t
    }
}

/// The loss written with engine ops: `(1 − ε)·mean(−log_softmax gathered) + ε·mean(−log_softmax)`.
fn reference_hard(logits: &Tensor, y: &Tensor, eps: f64) -> f64 {
    let lp = logits.log_softmax(-1).unwrap();
    let nll = lp.gather(1, &y.unsqueeze(1).unwrap()).unwrap().neg().unwrap().mean_all().unwrap();
    let smooth = lp.neg().unwrap().mean_all().unwrap(); // mean over N and K = mean_n mean_k
    (1.0 - eps) * nll.to_scalar().unwrap() + eps * smooth.to_scalar().unwrap()
}

/// `mean_n −Σ_k q_nk log p_nk` with `q = (1 − ε)t + ε/K`, with engine ops.
fn reference_soft(logits: &Tensor, t: &Tensor, eps: f64) -> f64 {
    let k = logits.dims()[1] as f64;
    let q = t.affine(1.0 - eps, eps / k).unwrap();
    let lp = logits.log_softmax(-1).unwrap();
    q.mul(&lp).unwrap().sum(&[1], false).unwrap().neg().unwrap().mean_all().unwrap().to_scalar().unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn hard_targets(n in 1usize..=5, k in 1usize..=5, smooth in any::<bool>(), seed in any::<u64>()) {
        let eps = if smooth { 0.1 + (seed % 7) as f64 * 0.1 } else { 0.0 };
        let (x, y) = (randn(&[n, k], seed), random_labels(n, k, seed ^ 1));
        let loss = named("cross_entropy", cross_entropy(&x, Target::Hard(&y), eps))?;
        prop_assert_eq!(loss.rank(), 0);
        let want = reference_hard(&x, &y, eps);
        prop_assert!(rel(loss.to_scalar().unwrap(), want) < 1e-13, "{} vs {want}", loss.to_scalar().unwrap());

        let view = Permuted::from_seed(2, seed);
        gradcheck("cross_entropy hard", &[view.leaf(&x)], |t| cross_entropy(&view.view(&t[0])?, Target::Hard(&y), eps))?;

        let l32 = named("cross_entropy f32", cross_entropy(&to_f32(&x), Target::Hard(&y), eps))?;
        prop_assert_eq!(l32.dtype(), DType::F32);
        prop_assert!(rel(l32.to_scalar().unwrap(), want) < 1e-6);
    }

    #[test]
    fn soft_targets(
        n in 1usize..=5,
        k in 1usize..=5,
        smooth in any::<bool>(),
        normalise in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let eps = if smooth { 0.05 + (seed % 5) as f64 * 0.2 } else { 0.0 };
        let (x, t) = (randn(&[n, k], seed), soft_target(n, k, seed ^ 1, normalise));
        let loss = named("cross_entropy", cross_entropy(&x, Target::Soft(&t), eps))?;
        let want = reference_soft(&x, &t, eps);
        prop_assert!(rel(loss.to_scalar().unwrap(), want) < 1e-13, "{} vs {want}", loss.to_scalar().unwrap());

        // Gradients for the logits and for the target (as PyTorch gives one for a soft target),
        // with the logits and the target both presented through permuted views.
        let (xv, tv) = (Permuted::from_seed(2, seed), Permuted::from_seed(2, seed / 3));
        gradcheck("cross_entropy soft", &[xv.leaf(&x), tv.leaf(&t)], |a| {
            cross_entropy(&xv.view(&a[0])?, Target::Soft(&tv.view(&a[1])?), eps)
        })?;

        let l32 = named("cross_entropy f32", cross_entropy(&to_f32(&x), Target::Soft(&to_f32(&t)), eps))?;
        prop_assert!(rel(l32.to_scalar().unwrap(), want) < 1e-6);
    }
}

#[test]
fn fused_gradient_is_softmax_minus_target_over_n() {
    let (n, k, eps) = (3, 4, 0.2);
    let x = randn(&[n, k], 3).requires_grad_(true);
    let y = labels(&[3, 0, 1]);
    let loss = cross_entropy(&x, Target::Hard(&y), eps).unwrap();
    loss.backward_with(&Tensor::scalar(2.0, DType::F64, CPU).unwrap()).unwrap();
    let p = x.detach().softmax(-1).unwrap().to_vec::<f64>().unwrap();
    let want: Vec<f64> = (0..n * k)
        .map(|i| {
            let q = (1.0 - eps) * ((i % k) as i64 == [3, 0, 1][i / k]) as u8 as f64 + eps / k as f64;
            (p[i] - q) / n as f64 * 2.0
        })
        .collect();
    assert!(max_rel_diff(&x.grad().unwrap().to_vec::<f64>().unwrap(), &want) < 1e-15);
}

#[test]
fn one_hot_soft_target_equals_hard() {
    let x = randn(&[4, 5], 1);
    let y = [4i64, 0, 2, 2];
    let onehot: Vec<f64> = (0..20).map(|i| ((i % 5) as i64 == y[i / 5]) as u8 as f64).collect();
    let t = Tensor::from_vec(onehot, [4, 5], CPU).unwrap();
    for eps in [0.0, 0.1] {
        let hard = cross_entropy(&x, Target::Hard(&labels(&y)), eps).unwrap().to_scalar().unwrap();
        let soft = cross_entropy(&x, Target::Soft(&t), eps).unwrap().to_scalar().unwrap();
        assert!(rel(hard, soft) < 1e-14, "{hard} vs {soft}");
    }
}

#[test]
fn stable_for_huge_logits() {
    for dtype in [DType::F64, DType::F32] {
        let v = vec![1e4, -1e4, 0.0, -1e4, 1e4, 1e4];
        let x = Tensor::from_f64_vec(v, [2, 3], dtype, CPU).unwrap().requires_grad_(true);
        let loss = cross_entropy(&x, Target::Hard(&labels(&[0, 2])), 0.0).unwrap();
        // Row 0: p(0) = 1, loss 0. Row 1: two equal maxima, loss ln 2. Mean: ln 2 / 2.
        assert!(rel(loss.to_scalar().unwrap(), std::f64::consts::LN_2 / 2.0) < 1e-7, "{dtype}: {loss:?}");
        loss.backward().unwrap();
        let g = x.grad().unwrap().to_vec_f64().unwrap();
        let want = [0.0, 0.0, 0.0, 0.0, 0.25, -0.25];
        assert!(max_rel_diff(&g, &want) < 1e-7, "{dtype}: {g:?}");
        // With smoothing the loss is dominated by the huge gaps but stays finite.
        let l = cross_entropy(&x.detach(), Target::Hard(&labels(&[0, 2])), 0.1).unwrap().to_scalar().unwrap();
        assert!(l.is_finite() && l > 1e2, "{l}");
    }
}

#[test]
fn half_logits_give_an_f32_loss() {
    let x = randn(&[2, 3], 4);
    let y = labels(&[1, 2]);
    let h = x.to_dtype(DType::BF16).unwrap();
    let loss = cross_entropy(&h, Target::Hard(&y), 0.0).unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    let want = cross_entropy(&h.to_dtype(DType::F32).unwrap(), Target::Hard(&y), 0.0).unwrap();
    assert_eq!(loss.to_scalar().unwrap(), want.to_scalar().unwrap());
}

#[test]
fn bad_inputs_are_errors() {
    let x = randn(&[2, 3], 0);
    let err = |r: bitgrad_engine::Result<Tensor>| r.unwrap_err().to_string();
    let e = err(cross_entropy(&x, Target::Hard(&labels(&[0, 3])), 0.0));
    assert!(e.contains("label 3") && e.contains("K = 3"), "{e}");
    let e = err(cross_entropy(&x, Target::Hard(&labels(&[-1, 0])), 0.0));
    assert!(e.contains("label -1") && e.contains("K = 3"), "{e}");
    let e = err(cross_entropy(&x, Target::Hard(&labels(&[0, 1, 2])), 0.0));
    assert!(e.contains("[3]") && e.contains("[2]"), "{e}");
    let f = Tensor::from_vec(vec![0.0f64, 1.0], [2], Device::Cpu).unwrap();
    assert!(err(cross_entropy(&x, Target::Hard(&f), 0.0)).contains("i64"));
    let e = err(cross_entropy(&randn(&[2, 3, 1], 0), Target::Hard(&labels(&[0, 1])), 0.0));
    assert!(e.contains("[2, 3, 1]"), "{e}");
    let e = err(cross_entropy(&x, Target::Soft(&randn(&[3, 2], 0)), 0.0));
    assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    assert!(err(cross_entropy(&x, Target::Soft(&to_f32(&x)), 0.0)).contains("f32"));
    assert!(err(cross_entropy(&x, Target::Hard(&labels(&[0, 1])), 1.5)).contains("label_smoothing"));
    assert!(err(cross_entropy(&randn(&[0, 3], 0), Target::Hard(&labels(&[])), 0.0)).contains("[0, 3]"));
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // 2000 × 40 logits: large enough for the parallel paths.
    let x = randn(&[2000, 40], 6).to_dtype(DType::F32).unwrap();
    let y = random_labels(2000, 40, 7);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let x = x.detach().requires_grad_(true);
            let loss = cross_entropy(&x, Target::Hard(&y), 0.1).unwrap();
            loss.backward().unwrap();
            (loss.to_scalar().unwrap(), x.grad().unwrap().to_vec::<f32>().unwrap())
        })
    };
    assert_eq!(run(1), run(3));
}
