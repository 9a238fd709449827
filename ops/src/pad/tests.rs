use bitgrad_engine::{DType, Tensor};
use proptest::prelude::*;

use super::*;
use crate::testing::{gradcheck, named, randn, to_f32, Permuted, CPU};

/// The padded value at `[p, i, j]` by index arithmetic.
fn expected(x: &[f64], planes: usize, h: usize, w: usize, pads: Pads, value: f64) -> Vec<f64> {
    let (oh, ow) = (pads[0] + h + pads[1], pads[2] + w + pads[3]);
    let mut out = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let inside = i >= pads[0] && i < pads[0] + h && j >= pads[2] && j < pads[2] + w;
                out.push(if inside { x[(p * h + i - pads[0]) * w + j - pads[2]] } else { value });
            }
        }
    }
    out
}

fn shape_strategy() -> impl Strategy<Value = (Vec<usize>, Pads, u64)> {
    // Rank 2..=4, dims 1..=4 (coincident and size-1 dims are frequent), pads 0..=2.
    (prop::collection::vec(1usize..=4, 2..=4), prop::array::uniform4(0usize..=2), any::<u64>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn values_and_gradients((dims, pads, seed) in shape_strategy()) {
        let x = randn(&dims, seed);
        let r = dims.len();
        let planes: usize = dims[..r - 2].iter().product();
        let y = named("pad2d", pad2d(&x, pads, -1.5))?;
        let want = expected(&x.to_vec::<f64>().unwrap(), planes, dims[r - 2], dims[r - 1], pads, -1.5);
        prop_assert_eq!(y.to_vec::<f64>().unwrap(), want);

        let view = Permuted::from_seed(r, seed);
        let leaf = view.leaf(&x);
        gradcheck("pad2d", &[leaf], |t| pad2d(&view.view(&t[0])?, pads, 0.25))?;

        // f32 agrees with f64 (padding is exact).
        let y32 = named("pad2d f32", pad2d(&to_f32(&x), pads, -1.5))?;
        prop_assert_eq!(y32.to_vec_f64().unwrap(), to_f32(&y).to_vec_f64().unwrap());
    }
}

#[test]
fn backward_is_the_interior_slice() {
    let x = randn(&[2, 3, 4, 5], 7).requires_grad_(true);
    let y = pad2d(&x, [1, 2, 3, 0], 0.0).unwrap();
    let g = randn(y.dims(), 8);
    y.backward_with(&g).unwrap();
    let want = g.narrow(-2, 1, 4).unwrap().narrow(-1, 3, 5).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), want);
}

#[test]
fn every_dtype_pads() {
    let x = Tensor::from_vec(vec![1i64, 2, 3, 4], [2, 2], CPU).unwrap();
    assert_eq!(pad2d(&x, [0, 1, 1, 0], 9.0).unwrap().to_vec::<i64>().unwrap(), vec![9, 1, 2, 9, 3, 4, 9, 9, 9]);
    let h = Tensor::from_vec(vec![1.5f32, -2.0], [1, 2], CPU).unwrap().to_dtype(DType::F16).unwrap();
    let y = pad2d(&h, [1, 0, 0, 0], 0.5).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(y.to_vec_f64().unwrap(), vec![0.5, 0.5, 1.5, -2.0]);
}

#[test]
fn zero_pads_copy_and_empty_planes_work() {
    let x = randn(&[3, 2], 1);
    assert_eq!(pad2d(&x, [0; 4], 0.0).unwrap().to_vec::<f64>().unwrap(), x.to_vec::<f64>().unwrap());
    let e = Tensor::zeros([2, 0, 3], DType::F32, CPU).unwrap();
    let y = pad2d(&e, [1, 1, 0, 0], 4.0).unwrap();
    assert_eq!(y.dims(), &[2, 2, 3]);
    assert!(y.to_vec::<f32>().unwrap().iter().all(|&v| v == 4.0));
}

#[test]
fn bad_inputs_are_errors() {
    let e = pad2d(&randn(&[4], 0), [1, 1, 1, 1], 0.0).unwrap_err().to_string();
    assert!(e.contains("[4]"), "{e}");
    let e = pad2d(&randn(&[2, 2], 0), [usize::MAX, 1, 0, 0], 0.0).unwrap_err().to_string();
    assert!(e.contains("overflow"), "{e}");
}
