use bitgrad_engine::DType;
use proptest::prelude::*;

use super::*;
use crate::testing::{gradcheck, max_rel_diff, named, randn, to_f32, Permuted};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn values_and_gradients(
        lead in prop::collection::vec(1usize..=3, 0..=2),
        inp in 1usize..=5,
        out in 1usize..=5,
        bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut xd = lead.clone();
        xd.push(inp);
        let (x, w, b) = (randn(&xd, seed), randn(&[out, inp], seed ^ 1), randn(&[out], seed ^ 2));
        let (xv, wv) = (Permuted::from_seed(xd.len(), seed), Permuted::from_seed(2, seed / 3));

        // Reference by index arithmetic.
        let (xs, ws, bs) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        let rows = xs.len() / inp;
        let want: Vec<f64> = (0..rows * out)
            .map(|i| {
                let (r, o) = (i / out, i % out);
                (0..inp).map(|k| xs[r * inp + k] * ws[o * inp + k]).sum::<f64>() + if bias { bs[o] } else { 0.0 }
            })
            .collect();
        let y = named("linear", linear(&x, &w, bias.then_some(&b)))?;
        let mut yd = lead.clone();
        yd.push(out);
        prop_assert_eq!(y.dims(), &yd[..]);
        prop_assert!(max_rel_diff(&y.to_vec::<f64>().unwrap(), &want) < 1e-14);

        let mut leaves = vec![xv.leaf(&x), wv.leaf(&w)];
        if bias {
            leaves.push(b.clone());
        }
        gradcheck("linear", &leaves, |t| linear(&xv.view(&t[0])?, &wv.view(&t[1])?, t.get(2)))?;

        let b32 = to_f32(&b);
        let y32 = named("linear f32", linear(&to_f32(&x), &to_f32(&w), bias.then_some(&b32)))?;
        prop_assert!(max_rel_diff(&y32.to_vec_f64().unwrap(), &want) < 1e-5);
    }
}

#[test]
fn one_dimensional_input() {
    let (x, w, b) = (randn(&[4], 0), randn(&[3, 4], 1), randn(&[3], 2));
    let y = linear(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.dims(), &[3]);
    let want = linear(&x.unsqueeze(0).unwrap(), &w, Some(&b)).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
}

#[test]
fn bad_shapes_and_dtypes_are_errors() {
    let (x, w) = (randn(&[2, 4], 0), randn(&[3, 4], 1));
    let e = linear(&x, &randn(&[4, 3], 1), None).unwrap_err().to_string();
    assert!(e.contains("[2, 4]") && e.contains("[4, 3]"), "{e}");
    let e = linear(&x, &w, Some(&randn(&[4], 2))).unwrap_err().to_string();
    assert!(e.contains("bias") && e.contains("[4]"), "{e}");
    assert!(linear(&randn(&[2, 4], 0), &randn(&[3, 4, 1], 0), None).is_err());
    let e = linear(&x, &w.to_dtype(DType::F32).unwrap(), None).unwrap_err().to_string();
    assert!(e.contains("f32"), "{e}");
}
