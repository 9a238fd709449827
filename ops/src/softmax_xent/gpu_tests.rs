//! Cross-entropy on Emu against the CPU twin: hard and soft targets, label smoothing, odd class
//! counts, non-contiguous logits, loss and gradients (logits and soft target).

use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{DType, Device, Rng, Tensor};

use super::*;
use crate::testing::{emu_parity, max_rel_diff, randn, Permuted};

/// Seeded labels in `0..k` on `device`.
fn labels(n: usize, k: usize, seed: u64, device: Device) -> Tensor {
    let mut rng = Rng::new(seed);
    let v: Vec<i64> = (0..n).map(|_| rng.below(k as u64) as i64).collect();
    Tensor::from_vec(v, [n], device).unwrap()
}

/// `(N, K)`: one row, K below / above a block, K not a multiple of 32, a BiT-like head.
const SHAPES: [(usize, usize); 5] = [(1, 1), (3, 7), (5, 33), (4, 300), (2, 1000)];

#[test]
fn hard_targets_match_the_cpu() {
    for (i, &(n, k)) in SHAPES.iter().enumerate() {
        let x = randn(&[n, k], i as u64).mul_scalar(3.0).unwrap();
        let perm = Permuted::from_seed(2, i as u64 + 1);
        for eps in [0.0, 0.1] {
            // Labels on the CPU for both runs: the GPU path uploads them.
            let y = labels(n, k, i as u64, Device::Cpu);
            emu_parity(
                &format!("xent hard {n}×{k} ε={eps}"),
                std::slice::from_ref(&x),
                std::slice::from_ref(&perm),
                1e-6,
                |t| cross_entropy(&t[0], Target::Hard(&y), eps),
            );
        }
    }
}

#[test]
fn soft_targets_match_the_cpu_with_target_gradients() {
    for (i, &(n, k)) in SHAPES.iter().enumerate() {
        let x = randn(&[n, k], i as u64 + 10);
        // Rows that do not sum to 1 exercise the general s·p − q form.
        let t = randn(&[n, k], i as u64 + 20).abs().unwrap();
        let perms = [Permuted::from_seed(2, i as u64 + 1), Permuted::from_seed(2, i as u64 + 2)];
        for eps in [0.0, 0.2] {
            emu_parity(&format!("xent soft {n}×{k} ε={eps}"), &[x.clone(), t.clone()], &perms, 1e-6, |v| {
                cross_entropy(&v[0], Target::Soft(&v[1]), eps)
            });
        }
    }
}

#[test]
fn device_labels_f64_and_half_logits_run_on_emu() {
    let (n, k) = (6, 11);
    let x = randn(&[n, k], 3);
    for d in [DType::F64, DType::F32, DType::BF16] {
        let xd = x.to_dtype(d).unwrap();
        let xe = xd.to_device(test_device()).unwrap().requires_grad_(true);
        let want = cross_entropy(&xd, Target::Hard(&labels(n, k, 1, Device::Cpu)), 0.1).unwrap();
        let got = cross_entropy(&xe, Target::Hard(&labels(n, k, 1, test_device())), 0.1).unwrap();
        assert_eq!((got.device(), got.dtype()), (test_device(), want.dtype()));
        let diff = max_rel_diff(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
        assert!(diff <= 1e-6, "{d}: {diff:e}");
        got.backward().unwrap();
        assert_eq!(xe.grad().unwrap().dims(), &[n, k]);
    }
}

#[test]
fn errors_match_the_cpu() {
    let x = Tensor::zeros([2, 3], DType::F32, test_device()).unwrap();
    let bad = Tensor::from_vec(vec![0i64, 3], [2], test_device()).unwrap();
    let e = cross_entropy(&x, Target::Hard(&bad), 0.0).unwrap_err().to_string();
    assert!(e.contains("label 3 (row 1) is out of range"), "{e}");
    let t_cpu = Tensor::zeros([2, 3], DType::F32, Device::Cpu).unwrap();
    assert!(matches!(cross_entropy(&x, Target::Soft(&t_cpu), 0.0), Err(Error::DeviceMismatch { .. })));
}
