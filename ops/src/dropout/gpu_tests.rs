//! Dropout on Emu against the CPU twin: the same mask for a seed and offset (so equal values and
//! gradients), the generator advanced the same way, non-contiguous inputs, every float dtype.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Rng, Tensor};

use super::*;
use crate::testing::{emu_parity, randn, Permuted};

#[test]
fn values_and_gradients_equal_the_cpu() {
    for (i, dims) in [&[2, 3, 7, 7][..], &[1, 35, 1, 1], &[4, 33], &[1000]].iter().enumerate() {
        let perm = Permuted::from_seed(dims.len(), i as u64 + 1);
        for p in [0.1, 0.5] {
            // Each run starts from the same generator state, a non-zero offset.
            emu_parity(
                &format!("dropout {dims:?} p={p}"),
                &[randn(dims, i as u64)],
                std::slice::from_ref(&perm),
                0.0,
                |t| {
                    let mut rng = Rng::new(42 + i as u64);
                    rng.set_offset(1234);
                    let y = dropout(&t[0], p, true, &mut rng)?;
                    assert_eq!(rng.offset(), 1234 + t[0].numel() as u64);
                    Ok(y)
                },
            );
        }
    }
}

#[test]
fn every_float_dtype_and_eval_mode_on_emu() {
    let x = randn(&[3, 50], 9);
    for d in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let xd = x.to_dtype(d).unwrap();
        let want = dropout(&xd, 0.3, true, &mut Rng::new(5)).unwrap();
        let got = dropout(&xd.to_device(test_device()).unwrap(), 0.3, true, &mut Rng::new(5)).unwrap();
        assert_eq!((got.device(), got.dtype()), (test_device(), d));
        assert_eq!(got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap(), "{d}");
    }
    let xe = x.to_device(test_device()).unwrap();
    let same = dropout(&xe, 0.3, false, &mut Rng::new(5)).unwrap();
    assert!(same.same_storage(&xe));
    let i = Tensor::zeros([4], DType::I64, test_device()).unwrap();
    assert!(matches!(dropout(&i, 0.3, true, &mut Rng::new(5)), Err(Error::UnsupportedDType { .. })));
}
