//! Pooling on Emu against the CPU twin: values and gradients (the kernels reproduce the CPU's
//! order of operations, so f32 results are compared exactly), odd shapes, overlapping windows,
//! non-contiguous inputs, and the BiT stem.

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Device, Tensor};

use super::*;
use crate::pad::pad2d;
use crate::testing::{distinct, emu_parity, max_rel_diff, randn, Permuted};

/// `[dims, kernel, stride, padding]` cases: BiT's stem and odd shapes (H/W of 1, 3, 7, 33; C not
/// a multiple of 32), overlapping (s < k) and gapped (s > k) windows.
/// `(dims, kernel, stride, padding)`.
type Case = (&'static [usize], [usize; 2], [usize; 2], [usize; 2]);

const CASES: [Case; 6] = [
    (&[2, 3, 9, 9], [3, 3], [2, 2], [1, 1]),
    (&[1, 5, 7, 7], [3, 3], [1, 1], [1, 1]),
    (&[2, 33, 3, 1], [2, 1], [1, 1], [1, 0]),
    (&[1, 2, 33, 7], [3, 2], [3, 2], [0, 1]),
    (&[1, 1, 1, 1], [1, 1], [1, 1], [0, 0]),
    (&[3, 6, 5], [2, 3], [3, 1], [1, 1]),
];

#[test]
fn max_pool_matches_the_cpu() {
    for (i, (dims, k, s, p)) in CASES.iter().enumerate() {
        let perm = Permuted::from_seed(dims.len(), i as u64 + 1);
        // Ties decide the argmax: distinct values, and a rounded input full of ties.
        let ties = randn(dims, i as u64).to_vec_f64().unwrap().iter().map(|v| (v * 2.0).round()).collect();
        let ties = Tensor::from_vec(ties, dims.to_vec(), Device::Cpu).unwrap();
        for x in [distinct(dims, i as u64), ties] {
            emu_parity(&format!("max_pool2d {dims:?}"), &[x], std::slice::from_ref(&perm), 0.0, |t| {
                max_pool2d(&t[0], *k, *s, *p)
            });
        }
    }
}

#[test]
fn avg_pool_matches_the_cpu() {
    for (i, (dims, k, s, p)) in CASES.iter().enumerate() {
        let perm = Permuted::from_seed(dims.len(), i as u64 + 2);
        for cip in [true, false] {
            emu_parity(
                &format!("avg_pool2d {dims:?} {cip}"),
                &[randn(dims, i as u64)],
                std::slice::from_ref(&perm),
                0.0,
                |t| avg_pool2d(&t[0], *k, *s, *p, cip),
            );
        }
    }
}

#[test]
fn global_avg_pool_matches_the_cpu() {
    for (i, dims) in [&[2, 35, 7, 7][..], &[1, 64, 1, 1], &[3, 3, 33, 3], &[4, 5]].iter().enumerate() {
        let perm = Permuted::from_seed(dims.len(), i as u64 + 1);
        // Sums in f64 in another order than the CPU: equal after rounding to f32 but for ties.
        emu_parity(&format!("global_avg_pool {dims:?}"), &[randn(dims, i as u64)], &[perm], 1e-6, |t| {
            global_avg_pool(&t[0])
        });
    }
}

#[test]
fn bit_stem_zero_pad_then_valid_max_pool_matches_the_cpu() {
    let x = randn(&[2, 64, 16, 16], 5);
    emu_parity("BiT stem", &[x], &[Permuted { perm: Some(vec![0, 2, 3, 1]) }], 0.0, |t| {
        max_pool2d(&pad2d(&t[0], [1, 1, 1, 1], 0.0)?, [3, 3], [2, 2], [0, 0])
    });
}

#[test]
fn f64_and_half_precision_run_on_emu() {
    let x = randn(&[1, 3, 7, 7], 3);
    for d in [DType::F64, DType::F16, DType::BF16] {
        let xd = x.to_dtype(d).unwrap();
        let xe = xd.to_device(test_device()).unwrap();
        let pairs = [
            (max_pool2d(&xd, [3, 3], [2, 2], [1, 1]), max_pool2d(&xe, [3, 3], [2, 2], [1, 1])),
            (avg_pool2d(&xd, [3, 3], [2, 2], [1, 1], false), avg_pool2d(&xe, [3, 3], [2, 2], [1, 1], false)),
            (global_avg_pool(&xd), global_avg_pool(&xe)),
        ];
        for (c, e) in pairs {
            let (c, e) = (c.unwrap(), e.unwrap());
            assert_eq!((e.device(), e.dtype()), (test_device(), d));
            // Exact but for the f64 plane sums of global_avg_pool (another summation order).
            let diff = max_rel_diff(&e.to_vec_f64().unwrap(), &c.to_vec_f64().unwrap());
            assert!(diff <= 1e-15, "{d}: {diff:e}");
        }
    }
    let i = Tensor::zeros([1, 1, 2, 2], DType::I64, test_device()).unwrap();
    assert!(matches!(max_pool2d(&i, [1, 1], [1, 1], [0, 0]), Err(Error::UnsupportedDType { .. })));
}
