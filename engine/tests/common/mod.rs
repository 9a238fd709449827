//! Helpers shared by the engine's integration tests: a tiny deterministic generator (independent
//! of the engine's own `Rng`), value domains that keep finite differences away from kinks and
//! ties, views that present a tensor of a given logical shape through a non-contiguous layout,
//! and plain row-major index arithmetic for computing expected values by hand.
#![allow(dead_code)]

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{DType, Device, Result, Tensor};
use proptest::prelude::*;

pub const CPU: Device = Device::Cpu;

/// The device the property tests build their tensors on: `BITGRAD_TEST_DEVICE` (`cpu`, `emu`,
/// `cuda`), the CPU by default. scripts/test.sh runs them once more on the emulator.
#[allow(dead_code)] // not every test binary uses it
pub fn dev() -> Device {
    std::env::var("BITGRAD_TEST_DEVICE")
        .ok()
        .map(|d| d.parse().expect("BITGRAD_TEST_DEVICE: cpu, emu or cuda"))
        .unwrap_or(CPU)
}

// ---- a small deterministic generator ---------------------------------------------------------

/// SplitMix64: test-side randomness derived from a proptest-generated seed, so a failing case is
/// reproduced by its (shape, seed) pair.
#[derive(Debug, Clone)]
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    /// A uniformly random permutation of `0..n`.
    pub fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
    /// A random subset of `0..n` (each member with probability 1/2), in increasing order.
    pub fn subset(&mut self, n: usize) -> Vec<usize> {
        (0..n).filter(|_| self.coin()).collect()
    }
    /// `n` values from `domain`.
    pub fn values(&mut self, n: usize, domain: Domain) -> Vec<f64> {
        match domain {
            Domain::Normal => (0..n).map(|_| self.uniform(-2.0, 2.0)).collect(),
            Domain::Positive => (0..n).map(|_| self.uniform(0.5, 2.0)).collect(),
            Domain::AwayFromZero => (0..n)
                .map(|_| {
                    let m = self.uniform(0.3, 2.0);
                    if self.coin() {
                        m
                    } else {
                        -m
                    }
                })
                .collect(),
            // A shuffled ramp: all values differ by at least 0.25 (far more than a finite-difference
            // step), so max/min never see a tie between distinct elements.
            Domain::Distinct => {
                let p = self.perm(n);
                p.iter().map(|&k| k as f64 * 0.25 - n as f64 / 8.0 + self.uniform(0.0, 0.05)).collect()
            }
            // Multiples of 0.5, and multiples of 0.5 shifted by 0.25: a value of one grid never
            // equals a value of the other (for maximum/minimum without ties).
            Domain::Grid => (0..n).map(|_| (self.below(9) as f64 - 4.0) * 0.5).collect(),
            Domain::GridShifted => (0..n).map(|_| (self.below(9) as f64 - 4.0) * 0.5 + 0.25).collect(),
        }
    }
}

/// Where input values are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Uniform in [-2, 2].
    Normal,
    /// Uniform in [0.5, 2] (log, sqrt, rsqrt, fractional powers).
    Positive,
    /// Magnitude in [0.3, 2], either sign (recip, abs, relu, sign).
    AwayFromZero,
    /// Pairwise distinct, separated by at least 0.2.
    Distinct,
    Grid,
    GridShifted,
}

// ---- proptest strategies ---------------------------------------------------------------------

/// `n` cases per property (kept small so the suite runs in seconds on two cores), unless the
/// `PROPTEST_CASES` environment variable asks for more: `PROPTEST_CASES=2000 cargo test`.
pub fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig::with_cases(n)
}

/// Dims of size 1..=4 (size-1 dims included on purpose), rank in `ranks`.
pub fn dims(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=4, ranks)
}

// ---- row-major index arithmetic ---------------------------------------------------------------

pub fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The multi-index of row-major position `i` in `dims`.
pub fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for a in (0..dims.len()).rev() {
        idx[a] = i % dims[a];
        i /= dims[a];
    }
    idx
}

/// The row-major position of multi-index `idx` in `dims`.
pub fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

// ---- views -----------------------------------------------------------------------------------

/// How a tensor of logical shape `dims` is presented to an op: made from a leaf of shape
/// `leaf_dims` by `permute(perm)`, then `narrow(axis, start, dims[axis])`, then `broadcast_to`.
/// The kinds: 0 contiguous, 1 permuted, 2 narrowed, 3 permuted and narrowed, 4 broadcast.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    pub dims: Vec<usize>,
    pub leaf_dims: Vec<usize>,
    pub perm: Option<Vec<usize>>,
    pub narrow: Option<(usize, usize)>, // (axis, start)
    pub broadcast: bool,
}

impl ViewSpec {
    pub fn contiguous(dims: &[usize]) -> Self {
        ViewSpec { dims: dims.to_vec(), leaf_dims: dims.to_vec(), perm: None, narrow: None, broadcast: false }
    }

    /// A random view of kind `kind % 5` (see the type's doc) producing `dims`.
    pub fn random(dims: &[usize], kind: u8, g: &mut Gen) -> Self {
        let rank = dims.len();
        let mut spec = ViewSpec::contiguous(dims);
        if rank == 0 {
            return spec;
        }
        let kind = kind % 5;
        if kind == 4 {
            // A leaf with some axes of size 1 (and maybe fewer leading axes), broadcast up.
            let drop = g.below(rank.min(2) + 1).min(rank - 1);
            spec.leaf_dims = dims[drop..].iter().map(|&d| if g.coin() { 1 } else { d }).collect();
            spec.broadcast = true;
            return spec;
        }
        // Before narrowing, the narrowed axis is longer by `extra`.
        let mut pre = dims.to_vec();
        if kind == 2 || kind == 3 {
            let axis = g.below(rank);
            let extra = 1 + g.below(2);
            pre[axis] += extra;
            spec.narrow = Some((axis, g.below(extra + 1)));
        }
        spec.leaf_dims = pre.clone();
        if kind == 1 || kind == 3 {
            let mut perm = g.perm(rank);
            if rank >= 2 && perm.iter().enumerate().all(|(i, &p)| i == p) {
                perm.swap(0, rank - 1); // make sure the layout really changes
            }
            // After permute(perm), axis i has the leaf's axis perm[i]: leaf[perm[i]] = pre[i].
            let mut leaf = vec![0; rank];
            for (i, &p) in perm.iter().enumerate() {
                leaf[p] = pre[i];
            }
            spec.leaf_dims = leaf;
            spec.perm = Some(perm);
        }
        spec
    }

    /// Builds the view of `leaf` (which has shape `leaf_dims`).
    pub fn apply(&self, leaf: &Tensor) -> Result<Tensor> {
        let mut t = leaf.clone();
        if let Some(p) = &self.perm {
            t = t.permute(p)?;
        }
        if let Some((axis, start)) = self.narrow {
            t = t.narrow(axis as isize, start, self.dims[axis])?;
        }
        if self.broadcast {
            t = t.broadcast_to(self.dims.clone())?;
        }
        debug_assert_eq!(t.dims(), &self.dims[..]);
        Ok(t)
    }

    /// Expected values of the view, given the leaf's row-major values, by index arithmetic.
    pub fn expected<T: Copy>(&self, leaf: &[T]) -> Vec<T> {
        (0..numel(&self.dims))
            .map(|i| {
                let idx = unravel(i, &self.dims);
                // Undo broadcast: align right, size-1 leaf axes read index 0.
                let mut pre: Vec<usize> = if self.broadcast {
                    let lead = self.dims.len() - self.leaf_dims.len();
                    idx[lead..].iter().zip(&self.leaf_dims).map(|(&j, &d)| if d == 1 { 0 } else { j }).collect()
                } else {
                    idx
                };
                if let Some((axis, start)) = self.narrow {
                    pre[axis] += start;
                }
                let leaf_idx = match &self.perm {
                    Some(p) => {
                        let mut l = vec![0; p.len()];
                        for (i, &pi) in p.iter().enumerate() {
                            l[pi] = pre[i];
                        }
                        l
                    }
                    None => pre,
                };
                leaf[ravel(&leaf_idx, &self.leaf_dims)]
            })
            .collect()
    }
}

/// One input of a gradient check: the leaf's values and the view the op sees.
#[derive(Debug, Clone)]
pub struct Arg {
    pub spec: ViewSpec,
    pub values: Vec<f64>,
}

impl Arg {
    /// A random view of kind `kind` with values from `domain`.
    pub fn new(dims: &[usize], kind: u8, domain: Domain, g: &mut Gen) -> Self {
        let spec = ViewSpec::random(dims, kind, g);
        let values = g.values(numel(&spec.leaf_dims), domain);
        Arg { spec, values }
    }
    pub fn contiguous(dims: &[usize], domain: Domain, g: &mut Gen) -> Self {
        let spec = ViewSpec::contiguous(dims);
        let values = g.values(numel(dims), domain);
        Arg { spec, values }
    }
}

/// Gradient-checks `f` applied to the views described by `args` (the leaves are f64 tensors of
/// the specs' leaf shapes), and checks that every leaf element was compared.
pub fn gradcheck(args: &[Arg], opts: GradCheck, f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let leaves = args
        .iter()
        .map(|a| Tensor::from_vec(a.values.clone(), a.spec.leaf_dims.clone(), CPU))
        .collect::<Result<Vec<_>>>()?;
    let report = check_gradients(
        |xs| {
            let views = xs.iter().zip(args).map(|(x, a)| a.spec.apply(x)).collect::<Result<Vec<_>>>()?;
            f(&views)
        },
        &leaves,
        opts,
    )?;
    let total: usize = args.iter().map(|a| a.values.len()).sum();
    assert_eq!(report.checked, total, "every input element must be checked");
    device_check(args, &f)
}

/// The same function on the emulator (and CUDA when visible), in f32, against the CPU in f32: the output and every
/// leaf's gradient (of a weighted sum of the output, so each output element counts differently).
/// This runs every op's forward and backward kernels on `Emu` with the inputs of the gradient
/// checks (views included). Functions that build extra tensors take their device from `v[0]`.
pub fn device_check(args: &[Arg], f: &impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let run = |device: Device| -> Result<Vec<Vec<f64>>> {
        let leaves = args
            .iter()
            .map(|a| {
                let v: Vec<f32> = a.values.iter().map(|&x| x as f32).collect();
                Ok(Tensor::from_vec(v, a.spec.leaf_dims.clone(), device)?.requires_grad_(true))
            })
            .collect::<Result<Vec<_>>>()?;
        let views = leaves.iter().zip(args).map(|(x, a)| a.spec.apply(x)).collect::<Result<Vec<_>>>()?;
        let y = f(&views)?;
        let n = y.numel();
        let w = Tensor::arange(0.0, n as f64, 1.0, DType::F32, device)?.affine(0.37, -1.0)?.tanh()?;
        y.mul(&w.reshape(y.dims().to_vec())?.to_dtype(y.dtype())?)?.sum_all()?.backward()?;
        let mut out = vec![y.to_vec_f64()?];
        for l in &leaves {
            out.push(match l.grad() {
                Some(g) => g.to_vec_f64()?,
                None => vec![0.0; l.numel()],
            });
        }
        Ok(out)
    };
    let want = run(CPU)?;
    for device in gpu_devices() {
        compare(&run(device)?, &want, device)?;
    }
    Ok(())
}

/// The emulator, and CUDA device 0 when it can be opened.
pub fn gpu_devices() -> Vec<Device> {
    let mut d = vec![Device::Emu];
    if bitgrad_engine::gpu::runtime(Device::Cuda(0)).is_ok() {
        d.push(Device::Cuda(0));
    }
    d
}

fn compare(got: &[Vec<f64>], want: &[Vec<f64>], device: Device) -> Result<()> {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            if (a - b).abs() > 2e-5 * scale && !(a.is_nan() && b.is_nan()) {
                let what = if k == 0 { "output".to_string() } else { format!("gradient of input {}", k - 1) };
                return Err(bitgrad_engine::Error::Msg(format!(
                    "{device} vs cpu (f32): {what}[{i}]: {device} {a}, cpu {b}"
                )));
            }
        }
    }
    Ok(())
}

/// `Ok` or a proptest failure naming `what` and the error.
pub fn named<T>(what: impl std::fmt::Display, r: Result<T>) -> std::result::Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}
