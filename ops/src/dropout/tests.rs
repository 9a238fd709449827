use bitgrad_engine::{DType, Rng, Tensor};
use proptest::prelude::*;

use super::*;
use crate::testing::{gradcheck, max_rel_diff, named, randn, to_f32, Permuted};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn values_and_gradients(
        dims in prop::collection::vec(1usize..=4, 1..=4),
        p in 0.05f64..0.9,
        seed in any::<u64>(),
        offset in 0u64..1000,
    ) {
        let rng = { let mut r = Rng::new(seed); r.set_offset(offset); r };
        let x = randn(&dims, seed ^ 1);
        let view = Permuted::from_seed(dims.len(), seed);
        let leaf = view.leaf(&x);

        // Forward: x · m / (1 − p), the mask in row-major order of the logical shape.
        let y = named("dropout", dropout(&view.view(&leaf).unwrap(), p, true, &mut rng.clone()))?;
        let m = dropout_mask(x.numel(), p, &rng);
        let want: Vec<f64> =
            x.to_vec::<f64>().unwrap().iter().zip(&m).map(|(&v, &k)| v * k as f64 / (1.0 - p)).collect();
        prop_assert!(max_rel_diff(&y.to_vec::<f64>().unwrap(), &want) < 1e-15);

        // The same generator state each evaluation: the same mask, so the op is a fixed linear map.
        gradcheck("dropout", &[leaf], |t| dropout(&view.view(&t[0])?, p, true, &mut rng.clone()))?;

        let y32 = named("dropout f32", dropout(&to_f32(&x), p, true, &mut rng.clone()))?;
        prop_assert!(max_rel_diff(&y32.to_vec_f64().unwrap(), &want) < 1e-6);
    }
}

#[test]
fn gradient_is_mask_times_scale() {
    let p = 0.3;
    let rng = Rng::new(42);
    let x = randn(&[3, 5, 7], 1).requires_grad_(true);
    dropout(&x, p, true, &mut rng.clone()).unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f64> = dropout_mask(x.numel(), p, &rng).iter().map(|&k| k as f64 / (1.0 - p)).collect();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), want);
}

#[test]
fn keeps_about_one_minus_p_and_the_seed_fixes_the_mask() {
    let n = 100_000;
    for p in [0.1, 0.5, 0.9] {
        let m = dropout_mask(n, p, &Rng::new(7));
        let kept = m.iter().filter(|&&k| k == 1).count() as f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((kept - n as f64 * (1.0 - p)).abs() < 5.0 * sigma, "p = {p}: kept {kept} of {n}");
        assert_eq!(m, dropout_mask(n, p, &Rng::new(7)), "same seed, same mask");
        assert_ne!(m, dropout_mask(n, p, &Rng::new(8)), "another seed, another mask");
    }
}

#[test]
fn each_call_advances_the_generator() {
    let x = Tensor::ones([4, 50], DType::F32, bitgrad_engine::Device::Cpu).unwrap();
    let mut rng = Rng::new(3);
    let a = dropout(&x, 0.5, true, &mut rng).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(rng.offset(), 200);
    let b = dropout(&x, 0.5, true, &mut rng).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(rng.offset(), 400);
    assert_ne!(a, b, "consecutive calls draw fresh masks");
    // Resuming from a saved (seed, offset) reproduces the second call.
    let mut resumed = Rng::new(3);
    resumed.set_offset(200);
    assert_eq!(dropout(&x, 0.5, true, &mut resumed).unwrap().to_vec::<f32>().unwrap(), b);
}

#[test]
fn eval_mode_and_p_zero_are_the_identity() {
    let x = randn(&[2, 3], 0).requires_grad_(true);
    let mut rng = Rng::new(1);
    for (p, training) in [(0.5, false), (0.0, true)] {
        let y = dropout(&x, p, training, &mut rng).unwrap();
        assert!(y.same_storage(&x) && y.id() == x.id());
    }
    assert_eq!(rng.offset(), 0, "no random numbers drawn");
}

#[test]
fn half_precision_runs_in_f32() {
    let x = randn(&[64], 2);
    let h = x.to_dtype(DType::F16).unwrap();
    let y = dropout(&h, 0.5, true, &mut Rng::new(5)).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    let y32 = dropout(&h.to_dtype(DType::F32).unwrap(), 0.5, true, &mut Rng::new(5)).unwrap();
    assert_eq!(y.to_vec_f64().unwrap(), y32.to_dtype(DType::F16).unwrap().to_vec_f64().unwrap());
}

#[test]
fn masks_do_not_depend_on_the_thread_count() {
    let x = randn(&[300_000], 9).to_dtype(DType::F32).unwrap().requires_grad_(true);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let x = x.detach().requires_grad_(true);
            let y = dropout(&x, 0.2, true, &mut Rng::new(11)).unwrap();
            y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (y.to_vec::<f32>().unwrap(), x.grad().unwrap().to_vec::<f32>().unwrap())
        })
    };
    assert_eq!(run(1), run(4));
}

#[test]
fn bad_p_and_dtypes_are_errors() {
    let x = randn(&[2, 2], 0);
    for p in [1.0, -0.1, f64::NAN, 1.5] {
        let e = dropout(&x, p, true, &mut Rng::new(0)).unwrap_err().to_string();
        assert!(e.contains("[0, 1)") && e.contains("[2, 2]"), "{e}");
    }
    let ints = Tensor::zeros([2], DType::I64, bitgrad_engine::Device::Cpu).unwrap();
    assert!(dropout(&ints, 0.5, true, &mut Rng::new(0)).unwrap_err().to_string().contains("i64"));
}
