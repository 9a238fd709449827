//! pad2d on Emu against the CPU twin: values and gradients, every dtype the kernels move.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Tensor};

use super::*;
use crate::testing::{emu_parity, randn, Permuted};

#[test]
fn f32_values_and_gradients_match_the_cpu() {
    let cases: [(&[usize], Pads); 5] = [
        (&[2, 3, 7, 7], [1, 1, 1, 1]),
        (&[1, 5, 1, 1], [0, 2, 3, 0]),
        (&[2, 33, 3, 33], [2, 0, 1, 1]),
        (&[3, 4], [1, 2, 0, 3]),
        (&[1, 35, 3, 3], [0, 0, 0, 0]),
    ];
    for (i, (dims, pads)) in cases.iter().enumerate() {
        let x = randn(dims, i as u64);
        let perm = Permuted::from_seed(dims.len(), i as u64 + 1);
        emu_parity(&format!("pad2d {dims:?} {pads:?}"), &[x], &[perm], 0.0, |t| pad2d(&t[0], *pads, -0.5));
    }
}

#[test]
fn every_dtype_pads_like_the_cpu() {
    let x = randn(&[2, 3, 5], 7).mul_scalar(3.0).unwrap();
    for d in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::U8] {
        let xd = x.abs().unwrap().to_dtype(d).unwrap();
        let want = pad2d(&xd, [1, 2, 2, 1], 2.75).unwrap().to_vec_f64().unwrap();
        let got = pad2d(&xd.to_device(test_device()).unwrap(), [1, 2, 2, 1], 2.75).unwrap();
        assert_eq!(got.device(), test_device());
        assert_eq!(got.to_vec_f64().unwrap(), want, "{d}");
    }
}

#[test]
fn gpu_gradient_of_an_unsupported_dtype_is_an_error_as_on_the_cpu() {
    let g = Tensor::zeros([1, 4, 4], DType::I64, test_device()).unwrap();
    let op = Pad2dBackward { geom: PadGeom { planes: 1, h: 2, w: 2, pads: [1, 1, 1, 1] } };
    let x = Tensor::zeros([1, 2, 2], DType::I64, test_device()).unwrap();
    assert!(matches!(op.backward(&[x], &g, &g), Err(Error::UnsupportedDType { .. })));
}
