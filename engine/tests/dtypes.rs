//! Dtypes: f16/bf16 are stored in half precision and computed in f32; i64 holds indices; u8
//! holds masks.
//!
//! * `to_dtype` round trips (every f16/bf16 bit pattern through f32 and f64 and back; f32 →
//!   f16/bf16 rounds to nearest even, as the `half` crate does; float → int truncates);
//! * an op on f16/bf16 (unary, broadcasting binary, matmul, softmax, max) gives exactly the f32
//!   op on the upcast values, rounded to the half type; sums accumulate wider and round once;
//! * argmax/argmin return i64 for every input dtype; comparisons return u8 0/1 masks (NaN
//!   compares false except `ne`) that drive `where_cond`/`masked_fill`;
//! * i64 arithmetic, and gradients that keep their leaf's dtype through casts and half types.

mod common;

use bitgrad_engine::{DType, Tensor};
use common::{dims, numel, Gen, ViewSpec, CPU};
use half::{bf16, f16};
use proptest::prelude::*;

const HALVES: [DType; 2] = [DType::F16, DType::BF16];

/// Random values exactly representable in `dt` (f32 values rounded through it), in ±`scale`.
fn half_values(n: usize, dt: DType, scale: f64, g: &mut Gen) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = g.uniform(-scale, scale) as f32;
            match dt {
                DType::F16 => f16::from_f32(v).to_f32(),
                DType::BF16 => bf16::from_f32(v).to_f32(),
                _ => v,
            }
        })
        .collect()
}

/// A tensor of dtype `dt` holding `vals` (exact), presented through `spec`.
fn half_tensor(vals: &[f32], spec: &ViewSpec, dt: DType) -> Tensor {
    let t = Tensor::from_vec(vals.to_vec(), spec.leaf_dims.clone(), CPU).unwrap().to_dtype(dt).unwrap();
    spec.apply(&t).unwrap()
}

/// The bits of every element (as f64; exact for all float dtypes).
fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// `op` on the half tensor(s) must equal `op` on their f32 upcasts, rounded back.
fn same_as_f32_rounded(what: &str, inputs: &[Tensor], op: impl Fn(&[Tensor]) -> bitgrad_engine::Result<Tensor>) {
    let dt = inputs[0].dtype();
    let got = op(inputs).unwrap();
    assert_eq!(got.dtype(), dt, "{what}: the result keeps the storage dtype");
    let up: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
    let want = op(&up).unwrap().to_dtype(dt).unwrap();
    assert_eq!(got.dims(), want.dims(), "{what}");
    let (g, w) = (bits(&got), bits(&want));
    if let Some(i) = g.iter().zip(&w).position(|(a, b)| a != b) {
        let (gv, wv) = (got.to_vec_f64().unwrap()[i], want.to_vec_f64().unwrap()[i]);
        panic!("{what} ({dt}): element {i} is {gv}, the f32 op rounded gives {wv}");
    }
}

proptest! {
    #![proptest_config(common::cases(24))]

    #[test]
    fn half_ops_equal_the_f32_op_rounded(shape in dims(1..=4), kinds in (0u8..5, 0u8..5), seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        for dt in HALVES {
            let sa = ViewSpec::random(&shape, kinds.0, &mut g);
            let sb_dims: Vec<usize> = shape.iter().map(|&d| if g.coin() { 1 } else { d }).collect();
            let sb = ViewSpec::random(&sb_dims, kinds.1, &mut g);
            let a = half_tensor(&half_values(numel(&sa.leaf_dims), dt, 3.0, &mut g), &sa, dt);
            let b = half_tensor(&half_values(numel(&sb.leaf_dims), dt, 3.0, &mut g), &sb, dt);
            let pos = a.abs().unwrap().add_scalar(0.25).unwrap();
            type Op = fn(&[Tensor]) -> bitgrad_engine::Result<Tensor>;
            let unary: [(&str, Op); 11] = [
                ("neg", |x| x[0].neg()),
                ("exp", |x| x[0].exp()),
                ("tanh", |x| x[0].tanh()),
                ("sigmoid", |x| x[0].sigmoid()),
                ("relu", |x| x[0].relu()),
                ("sqr", |x| x[0].sqr()),
                ("abs", |x| x[0].abs()),
                ("affine", |x| x[0].affine(0.3, -1.1)),
                ("log", |x| x[0].log()),
                ("sqrt", |x| x[0].sqrt()),
                ("powf", |x| x[0].powf(1.7)),
            ];
            for (name, op) in unary {
                let input = if matches!(name, "log" | "sqrt" | "powf") { &pos } else { &a };
                same_as_f32_rounded(name, std::slice::from_ref(input), op);
            }
            let binary: [(&str, Op); 6] = [
                ("add", |x| x[0].add(&x[1])),
                ("sub", |x| x[0].sub(&x[1])),
                ("mul", |x| x[0].mul(&x[1])),
                ("div", |x| x[0].div(&x[1])),
                ("maximum", |x| x[0].maximum(&x[1])),
                ("minimum", |x| x[1].minimum(&x[0])),
            ];
            for (name, op) in binary {
                same_as_f32_rounded(name, &[a.clone(), b.clone()], op);
            }
            let axis = g.below(shape.len()) as isize;
            same_as_f32_rounded("softmax", std::slice::from_ref(&a), |x| x[0].softmax(axis));
            same_as_f32_rounded("log_softmax", std::slice::from_ref(&a), |x| x[0].log_softmax(axis));
            same_as_f32_rounded("max", std::slice::from_ref(&a), |x| x[0].max(&[axis], false));
            same_as_f32_rounded("min", std::slice::from_ref(&a), |x| x[0].min(&[axis], true));
            same_as_f32_rounded("where_cond", &[a.clone(), b.clone()], |x| Tensor::where_cond(&x[0].gt(&x[1])?, &x[0], &x[1]));
            same_as_f32_rounded("masked_fill", std::slice::from_ref(&a), |x| x[0].masked_fill(&x[0].lt(&x[0].mul_scalar(0.0)?)?, 0.5));
            same_as_f32_rounded("cat", &[a.clone(), a.clone()], |x| Tensor::cat(&[&x[0], &x[1]], axis));

            // Sums accumulate in f64 and round once to the half type: the correctly rounded sum of
            // the stored values, and within one half-ulp-step of the f32 sum rounded.
            let s = a.sum(&[axis], false)?;
            prop_assert_eq!(s.dtype(), dt);
            let exact = a.to_dtype(DType::F64)?.sum(&[axis], false)?.to_vec::<f64>()?;
            let via32 = a.to_dtype(DType::F32)?.sum(&[axis], false)?.to_dtype(dt)?.to_vec_f64()?;
            for ((got, e), w32) in s.to_vec_f64()?.iter().zip(&exact).zip(&via32) {
                let want = match dt { DType::F16 => f16::from_f64(*e).to_f64(), _ => bf16::from_f64(*e).to_f64() };
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{} sum", dt);
                let ulp = match dt { DType::F16 => 2f64.powi(-10), _ => 2f64.powi(-7) } * w32.abs().max(1e-3);
                prop_assert!((got - w32).abs() <= ulp, "{} sum {} vs f32-rounded {}", dt, got, w32);
            }
        }
    }

    #[test]
    fn half_matmul_equals_the_f32_matmul_rounded(
        (m, k, n, b) in (1usize..=9, 1usize..=9, 1usize..=9, 1usize..=3),
        kinds in (0u8..4, 0u8..4),
        seed in any::<u64>(),
    ) {
        let mut g = Gen::new(seed);
        for dt in HALVES {
            let (sa, sb) = (ViewSpec::random(&[b, m, k], kinds.0, &mut g), ViewSpec::random(&[k, n], kinds.1, &mut g));
            let x = half_tensor(&half_values(numel(&sa.leaf_dims), dt, 2.0, &mut g), &sa, dt);
            let y = half_tensor(&half_values(numel(&sb.leaf_dims), dt, 2.0, &mut g), &sb, dt);
            same_as_f32_rounded("matmul", &[x.clone(), y.clone()], |v| v[0].matmul(&v[1]));
            same_as_f32_rounded("matmul (1-d rhs)", &[x.clone(), y.narrow(1, 0, 1)?.squeeze(1)?], |v| v[0].matmul(&v[1]));
        }
    }

    #[test]
    fn casts_round_to_nearest_and_round_trip(shape in dims(1..=3), kind in 0u8..5, seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let spec = ViewSpec::random(&shape, kind, &mut g);
        // Arbitrary f32 values over a wide range (some overflow f16, some are subnormal in it).
        let vals: Vec<f32> = (0..numel(&spec.leaf_dims)).map(|_| (g.uniform(-1.0, 1.0) * 2f64.powf(g.uniform(-26.0, 18.0))) as f32).collect();
        let x = spec.apply(&Tensor::from_vec(vals.clone(), spec.leaf_dims.clone(), CPU)?)?;
        let seen: Vec<f32> = spec.expected(&vals);
        let h = x.to_dtype(DType::F16)?;
        prop_assert_eq!(h.to_vec::<f16>()?, seen.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>());
        let bh = x.to_dtype(DType::BF16)?;
        prop_assert_eq!(bh.to_vec::<bf16>()?, seen.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>());
        // f64 → half goes straight from f64 (one rounding).
        let x64 = x.to_dtype(DType::F64)?;
        prop_assert_eq!(x64.to_dtype(DType::F16)?.to_vec::<f16>()?, seen.iter().map(|&v| f16::from_f64(v as f64)).collect::<Vec<_>>());
        // Widening is exact, so half → f32/f64 → half is the identity.
        for t in [&h, &bh] {
            prop_assert_eq!(bits(&t.to_dtype(DType::F32)?.to_dtype(t.dtype())?), bits(t));
            prop_assert_eq!(bits(&t.to_dtype(DType::F64)?.to_dtype(t.dtype())?), bits(t));
        }
        prop_assert_eq!(x64.to_dtype(DType::F32)?.to_vec::<f32>()?, seen);
    }
}

#[test]
fn every_half_bit_pattern_round_trips_through_f32_and_f64() {
    let pats: Vec<u16> = (0..=u16::MAX).collect();
    for dt in HALVES {
        let t = match dt {
            DType::F16 => {
                Tensor::from_vec(pats.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>(), [pats.len()], CPU)
            }
            _ => Tensor::from_vec(pats.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>(), [pats.len()], CPU),
        }
        .unwrap();
        for wide in [DType::F32, DType::F64] {
            let back = t.to_dtype(wide).unwrap().to_dtype(dt).unwrap();
            let (a, b) = (t.to_vec_f64().unwrap(), back.to_vec_f64().unwrap());
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                // NaN payloads may change; NaN must stay NaN and everything else must be exact.
                assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()), "{dt} pattern {i:#06x}: {x} -> {y}");
            }
        }
    }
}

#[test]
fn float_to_int_casts_truncate() {
    let x = Tensor::from_vec(vec![-1.7f32, -0.5, 0.0, 0.5, 2.9, 1e3], [6], CPU).unwrap();
    assert_eq!(x.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(), vec![-1, 0, 0, 0, 2, 1000]);
    assert_eq!(x.to_dtype(DType::U8).unwrap().to_vec::<u8>().unwrap()[3..5], [0, 2]);
    let i = Tensor::from_vec(vec![-3i64, 7], [2], CPU).unwrap();
    assert_eq!(i.to_dtype(DType::F16).unwrap().to_vec_f64().unwrap(), vec![-3.0, 7.0]);
    // Casting to the same dtype is the same tensor.
    assert_eq!(i.to_dtype(DType::I64).unwrap().id(), i.id());
}

#[test]
fn argmax_and_argmin_are_i64_for_every_dtype() {
    // Ties at the maximum: the first index wins.
    let v = [1.0, 5.0, -2.0, 5.0, 0.0, -2.0];
    let want_max = vec![1i64, 0];
    let want_min = vec![2i64, 2];
    for dt in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64] {
        let x = Tensor::from_f64_vec(v.to_vec(), [2, 3], dt, CPU).unwrap();
        let am = x.argmax(1, false).unwrap();
        assert_eq!(am.dtype(), DType::I64, "{dt}");
        assert_eq!(am.to_vec::<i64>().unwrap(), want_max, "{dt}");
        assert_eq!(x.argmin(-1, false).unwrap().to_vec::<i64>().unwrap(), want_min, "{dt}");
        assert_eq!(x.argmax(0, true).unwrap().dims(), &[1, 3]);
        assert_eq!(x.argmax(0, true).unwrap().to_vec::<i64>().unwrap(), vec![1, 0, 0], "{dt}");
        // The indices work as indices.
        let picked = x.gather(1, &x.argmax(1, true).unwrap()).unwrap();
        assert_eq!(picked.to_vec_f64().unwrap(), vec![5.0, 5.0]);
    }
    // NaN counts as the maximum (as in PyTorch).
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], [3], CPU).unwrap();
    assert_eq!(x.argmax(0, false).unwrap().to_vec::<i64>().unwrap(), vec![1]);
    assert!(x.max(&[0], false).unwrap().to_scalar().unwrap().is_nan());
}

#[test]
fn comparisons_make_u8_masks() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, f32::NAN], [2, 2], CPU).unwrap();
    let b = Tensor::from_vec(vec![2.0f32, 2.0], [2], CPU).unwrap(); // broadcast over rows
    let cases: [(&str, Tensor, [u8; 4]); 6] = [
        ("eq", a.eq(&b).unwrap(), [0, 1, 0, 0]),
        ("ne", a.ne(&b).unwrap(), [1, 0, 1, 1]),
        ("lt", a.lt(&b).unwrap(), [1, 0, 0, 0]),
        ("le", a.le(&b).unwrap(), [1, 1, 0, 0]),
        ("gt", a.gt(&b).unwrap(), [0, 0, 1, 0]),
        ("ge", a.ge(&b).unwrap(), [0, 1, 1, 0]),
    ];
    for (name, m, want) in cases {
        assert_eq!(m.dtype(), DType::U8, "{name}");
        assert!(!m.requires_grad());
        assert_eq!(m.to_vec::<u8>().unwrap(), want.to_vec(), "{name}");
    }
    // Every dtype compares, and within its own type (f16 rounding happens before comparing).
    for dt in [DType::F64, DType::F16, DType::BF16, DType::I64, DType::U8] {
        let x = Tensor::from_f64_vec(vec![0.0, 1.0, 2.0], [3], dt, CPU).unwrap();
        let y = Tensor::from_f64_vec(vec![1.0], [1], dt, CPU).unwrap();
        assert_eq!(x.ge(&y).unwrap().to_vec::<u8>().unwrap(), vec![0, 1, 1], "{dt}");
    }
    // A mask selects with where_cond and masked_fill, counts when cast, and is not reducible as u8.
    let m = a.gt(&b).unwrap();
    let filled = a.masked_fill(&m, -1.0).unwrap();
    assert_eq!(filled.to_vec::<f32>().unwrap()[..3], [1.0, 2.0, -1.0]);
    let zeros = Tensor::zeros_like(&a).unwrap();
    let w = Tensor::where_cond(&a.le(&b).unwrap(), &a, &zeros).unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 0.0, 0.0]);
    assert_eq!(m.to_dtype(DType::I64).unwrap().sum_all().unwrap().to_vec::<i64>().unwrap(), vec![1]);
    assert_eq!(m.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0, 1.0, 0.0]);
    assert!(m.sum_all().is_err(), "u8 masks are not summed directly");
    assert!(a.eq(&a.to_dtype(DType::F64).unwrap()).is_err(), "comparisons need one dtype");
}

#[test]
fn i64_arithmetic() {
    let x = Tensor::from_vec(vec![-3i64, 0, 5, 7], [2, 2], CPU).unwrap();
    let y = Tensor::from_vec(vec![2i64, -1], [2], CPU).unwrap();
    assert_eq!(x.add(&y).unwrap().to_vec::<i64>().unwrap(), vec![-1, -1, 7, 6]);
    assert_eq!(x.mul(&y).unwrap().to_vec::<i64>().unwrap(), vec![-6, 0, 10, -7]);
    assert_eq!(x.maximum(&y).unwrap().to_vec::<i64>().unwrap(), vec![2, 0, 5, 7]);
    assert_eq!(x.neg().unwrap().abs().unwrap().to_vec::<i64>().unwrap(), vec![3, 0, 5, 7]);
    assert_eq!(x.affine(2.0, 1.0).unwrap().to_vec::<i64>().unwrap(), vec![-5, 1, 11, 15]);
    assert!(x.affine(0.5, 0.0).is_err(), "a fractional affine on integers is refused");
    assert_eq!(x.sum(&[0], false).unwrap().to_vec::<i64>().unwrap(), vec![2, 7]);
    assert_eq!(x.max(&[1], false).unwrap().to_vec::<i64>().unwrap(), vec![0, 7]);
    assert_eq!(x.t().unwrap().contiguous().unwrap().to_vec::<i64>().unwrap(), vec![-3, 5, 0, 7]);
}

#[test]
fn gradients_keep_their_leaf_dtype() {
    // f32 leaf through f64 arithmetic: the gradient comes back as f32.
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 0.5], [3], CPU).unwrap().requires_grad_(true);
    let loss = x.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap();
    assert_eq!(loss.dtype(), DType::F64);
    loss.backward().unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![2.0, -4.0, 1.0]);
    // f64 leaf through f16 arithmetic and back.
    let x = Tensor::from_vec(vec![1.0f64, -2.0, 0.5], [3], CPU).unwrap().requires_grad_(true);
    let loss =
        x.to_dtype(DType::F16).unwrap().mul_scalar(3.0).unwrap().to_dtype(DType::F64).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F64);
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![3.0; 3]);
    // Half-precision leaves get half-precision gradients.
    for dt in HALVES {
        let x = Tensor::from_f64_vec(vec![1.0, -2.0, 0.5, 4.0], [2, 2], dt, CPU).unwrap().requires_grad_(true);
        let w = Tensor::from_f64_vec(vec![0.5, 1.0, -1.0, 2.0], [2, 2], dt, CPU).unwrap();
        let loss = x.matmul(&w).unwrap().sqr().unwrap().sum_all().unwrap();
        assert_eq!(loss.dtype(), dt);
        loss.backward().unwrap();
        let g = x.grad().unwrap();
        assert_eq!(g.dtype(), dt);
        // ∂/∂x Σ (x·w)² = 2 (x·w) wᵀ, small integers and halves: exact in both half types.
        let xw = [2.5, -3.0, -3.75, 8.5]; // x·w for x = [[1, -2], [0.5, 4]], w = [[0.5, 1], [-1, 2]]
        let want: Vec<f64> = (0..4)
            .map(|i| {
                let (r, c) = (i / 2, i % 2);
                let wt = [[0.5, -1.0], [1.0, 2.0]]; // wᵀ
                2.0 * (xw[r * 2] * wt[0][c] + xw[r * 2 + 1] * wt[1][c])
            })
            .collect();
        assert_eq!(g.to_vec_f64().unwrap(), want, "{dt}");
    }
}

#[test]
fn dtype_facts() {
    use DType::*;
    for (dt, size, float, compute) in [
        (F32, 4, true, F32),
        (F64, 8, true, F64),
        (F16, 2, true, F32),
        (BF16, 2, true, F32),
        (I64, 8, false, I64),
        (U8, 1, false, U8),
    ] {
        assert_eq!(dt.size_in_bytes(), size);
        assert_eq!(dt.is_float(), float);
        assert_eq!(dt.compute_type(), compute);
        assert_eq!(Tensor::zeros([2], dt, CPU).unwrap().dtype(), dt);
    }
    assert_eq!(F16.to_string(), "f16");
    assert_eq!(BF16.to_string(), "bf16");
}
