//! Test helpers shared by the tests of pad, pool, dropout, linear, softmax_xent, sgd and the
//! mixed-precision ops: seeded f64 inputs, non-contiguous presentations of a leaf, and a gradient
//! check that reports through proptest.
#![allow(dead_code)]

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{DType, Device, Result, Rng, Tensor};
use proptest::test_runner::TestCaseError;

pub const CPU: Device = Device::Cpu;

/// Normal(0, 1) f64 values.
pub fn randn(dims: &[usize], seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), 0.0, 1.0, DType::F64, CPU, &mut Rng::new(seed)).unwrap()
}

/// Pairwise distinct values (a shuffled ramp with steps ≥ 0.2, centred on 0): max-pool windows
/// and relu never sit on a tie or a kink within a finite-difference step.
pub fn distinct(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut rng = Rng::new(seed);
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let v = perm.iter().map(|&k| (k as f64 - n as f64 / 2.0) * 0.25 + 0.1).collect();
    Tensor::from_vec(v, dims.to_vec(), CPU).unwrap()
}

/// How an op sees a leaf: the leaf is stored with its axes in another order and `view` permutes
/// it back, so the op gets a non-contiguous tensor of the logical shape.
#[derive(Debug, Clone)]
pub struct Permuted {
    /// The permutation applied to the leaf (`None`: the leaf is used as is).
    pub perm: Option<Vec<usize>>,
}

impl Permuted {
    /// A permutation derived from `seed` (identity for `seed % 3 == 0`), or none for rank < 2.
    pub fn from_seed(rank: usize, seed: u64) -> Self {
        if rank < 2 || seed.is_multiple_of(3) {
            return Permuted { perm: None };
        }
        let mut rng = Rng::new(seed ^ 0xA5A5);
        let mut p: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            p.swap(i, rng.below(i as u64 + 1) as usize);
        }
        if p.iter().enumerate().all(|(i, &v)| i == v) {
            p.swap(0, rank - 1);
        }
        Permuted { perm: Some(p) }
    }

    /// The stored leaf for a tensor `logical`: its axes reordered so that `view` restores them.
    pub fn leaf(&self, logical: &Tensor) -> Tensor {
        match &self.perm {
            None => logical.clone(),
            Some(p) => {
                let mut inverse = vec![0; p.len()];
                for (i, &a) in p.iter().enumerate() {
                    inverse[a] = i;
                }
                logical.permute(&inverse).unwrap().contiguous().unwrap()
            }
        }
    }

    /// The logical (non-contiguous) view of a stored leaf.
    pub fn view(&self, leaf: &Tensor) -> Result<Tensor> {
        match &self.perm {
            None => Ok(leaf.clone()),
            Some(p) => leaf.permute(p),
        }
    }
}

/// Gradient-checks `f` at `inputs` (f64 leaves), requiring every element to be compared.
pub fn gradcheck(
    what: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> std::result::Result<(), TestCaseError> {
    let report =
        check_gradients(f, inputs, GradCheck::default()).map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
    let total: usize = inputs.iter().map(|t| t.numel()).sum();
    if report.checked != total {
        return Err(TestCaseError::fail(format!("{what}: checked {} of {total} elements", report.checked)));
    }
    Ok(())
}

/// `Ok` or a proptest failure naming `what` and the error.
pub fn named<T>(what: &str, r: Result<T>) -> std::result::Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

/// Normal(0, 1) values drawn in f64 and rounded to `dtype` (bf16 inputs of the mixed-precision
/// tests are exact bf16 values).
pub fn randn_as(dims: &[usize], dtype: DType, seed: u64) -> Tensor {
    randn(dims, seed).to_dtype(dtype).unwrap()
}

/// ‖a − b‖₂ / ‖b‖₂.
pub fn l2_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Largest |a − b| relative to max(1, |b|).
pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max)
}

/// The f32 copy of an f64 tensor.
pub fn to_f32(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

/// Emu against the CPU on the same f32 inputs: runs `f` on each device with the inputs as
/// gradient-collecting leaves (input `k` presented through `perms[k]`, so non-contiguous when
/// that permutes), backpropagates a weighted sum of the output (fixed random weights), and checks
/// that the outputs and every input's gradient agree to `tol` (relative, see [`max_rel_diff`]).
/// `inputs` are f64 CPU tensors in their logical shapes; they are rounded to f32 first.
pub fn emu_parity(
    what: &str,
    inputs: &[Tensor],
    perms: &[Permuted],
    tol: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let run = |d: Device| -> (Vec<f64>, Vec<Vec<f64>>) {
        let leaves: Vec<Tensor> = inputs
            .iter()
            .zip(perms)
            .map(|(x, p)| p.leaf(&to_f32(x)).to_device(d).unwrap().requires_grad_(true))
            .collect();
        let views: Vec<Tensor> = leaves.iter().zip(perms).map(|(l, p)| p.view(l).unwrap()).collect();
        let y = f(&views).unwrap_or_else(|e| panic!("{what} on {d:?}: {e}"));
        let w = to_f32(&randn(y.dims(), 99)).to_device(d).unwrap();
        y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let grads = leaves
            .iter()
            .zip(perms)
            .map(|(l, p)| p.view(&l.grad().expect("a gradient")).unwrap().to_vec_f64().unwrap())
            .collect();
        (y.to_vec_f64().unwrap(), grads)
    };
    let (cy, cg) = run(CPU);
    let (ey, eg) = run(Device::Emu);
    let d = max_rel_diff(&ey, &cy);
    assert!(d <= tol, "{what}: outputs differ by {d:e} (Emu vs CPU)");
    for (k, (e, c)) in eg.iter().zip(&cg).enumerate() {
        let d = max_rel_diff(e, c);
        assert!(d <= tol, "{what}: gradient of input {k} differs by {d:e} (Emu vs CPU)");
    }
}
