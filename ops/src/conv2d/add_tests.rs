//! `conv2d_add`: the convolution on top of a residual (the residual as the initial accumulator).
//!
//! * every CPU path (im2col one image at a time, in place for 1×1, staged whole-batch chunks;
//!   the direct kernels at every ISA level, rows of whole vectors and the flattened grid) equals
//!   the plain loops plus the residual;
//! * f64 gradients against finite differences, the residual among the inputs;
//! * fused (on) against `conv2d` then `add` (off): the same output up to the rounding of one
//!   sum, the same x, w and bias gradients bit for bit, the residual's gradient the output
//!   gradient;
//! * the shapes, dtypes and layouts it does not fuse give exactly `conv2d` then `add`.

use bitgrad_engine::cpu::isa::Isa;
use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{autograd, DType, Device, MemoryFormat, Tensor};

use super::cpu::{self, Start};
use super::tests::{abs, assert_close, corner_cases, dense, naive_forward, randn, Case, CHUNK_BOUNDS};
use super::{conv2d, conv2d_add, Conv2dParams};

const CPU: Device = Device::Cpu;

fn plus(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

#[test]
fn every_cpu_path_equals_the_plain_loops_plus_the_residual() {
    let mut cases = corner_cases();
    // Whole-batch staging (several images per chunk) with and without a bias.
    cases.push(dense([5, 8, 3, 4], 6, 1, Conv2dParams::default(), true));
    cases.push(dense([4, 3, 5, 5], 4, 3, Conv2dParams::new(2, 1), false));
    for (i, case) in cases.iter().enumerate() {
        let g = case.geom();
        let (x, w) = (randn(&case.x_dims(), 10 + i as u64), randn(&case.w_dims(), 20 + i as u64));
        let b = case.bias.then(|| randn(&[case.o], 30 + i as u64));
        let r = randn(&[g.batch, g.o, g.oh, g.ow], 40 + i as u64);
        let want = plus(&naive_forward(&x, &w, b.as_deref(), &g), &r);
        let scale = plus(&naive_forward(&abs(&x), &abs(&w), b.as_deref().map(abs).as_deref(), &g), &abs(&r));
        for bound in CHUNK_BOUNDS {
            let y = cpu::forward(&x, &w, Start { bias: b.as_deref(), residual: Some(&r) }, &g, bound);
            assert_close(&y, &want, &scale, 1e-13, &format!("y + r (bound {bound}) {case:?}"));
        }
    }
}

#[test]
fn the_direct_kernels_start_from_the_residual_at_every_isa() {
    let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    let to64 = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    // Rows of whole vectors (16, 32), rows that run on the flattened grid (14, 28 at AVX-512;
    // 9 on AVX2's 8 lanes), strided, bias on and off.
    let cases = [
        dense([2, 5, 6, 16], 13, 3, Conv2dParams::new(1, 1), true),
        dense([1, 7, 14, 14], 14, 3, Conv2dParams::new(1, 1), false),
        dense([2, 3, 9, 9], 5, 3, Conv2dParams::new(1, 1), true),
        dense([1, 4, 8, 32], 6, 3, Conv2dParams::new(2, 1), false),
        dense([1, 6, 28, 28], 4, 3, Conv2dParams::new(1, 1), true),
    ];
    let mut direct = 0;
    for isa in Isa::available() {
        for (i, case) in cases.iter().enumerate() {
            let g = case.geom();
            let (x, w) = (to32(randn(&case.x_dims(), i as u64)), to32(randn(&case.w_dims(), 9 + i as u64)));
            let b = to32(randn(&[case.o], 19 + i as u64));
            let r = to32(randn(&[g.batch, g.o, g.oh, g.ow], 29 + i as u64));
            let bias = case.bias.then_some(&b[..]);
            let Some(y) = super::direct::forward_at(&x, &w, Start { bias, residual: Some(&r) }, &g, isa) else {
                continue;
            };
            direct += 1;
            let b64 = bias.map(to64);
            let want = plus(&naive_forward(&to64(&x), &to64(&w), b64.as_deref(), &g), &to64(&r));
            let scale = plus(
                &naive_forward(&abs(&to64(&x)), &abs(&to64(&w)), b64.as_deref().map(abs).as_deref(), &g),
                &abs(&to64(&r)),
            );
            assert_close(&to64(&y), &want, &scale, 1e-6, &format!("{isa} case {i} {case:?}"));
        }
    }
    assert!(direct >= 4 * Isa::available().len(), "the cases reach the direct kernels ({direct} ran)");
}

/// The inputs `[x, w, (bias,) residual]` of a gradient check in f64.
fn leaves(case: &Case, seed: u64) -> Vec<Tensor> {
    let g = case.geom();
    let t = |dims: Vec<usize>, s: u64| Tensor::from_vec(randn(&dims, s), dims, CPU).unwrap();
    let mut v = vec![t(case.x_dims().to_vec(), seed), t(case.w_dims().to_vec(), seed + 1)];
    if case.bias {
        v.push(t(vec![case.o], seed + 2));
    }
    v.push(t(vec![g.batch, g.o, g.oh, g.ow], seed + 3));
    v
}

#[test]
fn gradients_match_finite_differences() {
    for (i, case) in corner_cases().iter().enumerate() {
        let inputs = leaves(case, 500 + 10 * i as u64);
        let p = case.params;
        let f = |t: &[Tensor]| {
            let bias = case.bias.then(|| &t[2]);
            // The residual as a non-contiguous view: its gradient still comes back in its shape.
            let r = t.last().unwrap().permute(&[0, 1, 3, 2])?.permute(&[0, 1, 3, 2])?;
            conv2d_add(&t[0], &t[1], bias, &p, &r)
        };
        let opts = GradCheck { atol: 1e-6, rtol: 1e-5, ..GradCheck::default() };
        if let Err(e) = check_gradients(f, &inputs, opts) {
            panic!("{case:?}: {e}");
        }
    }
}

/// y and the gradients of Σ y ⊙ gy for x, w, (bias,) residual, fused or as conv2d then add.
fn run_f32(case: &Case, fused: bool, residual_dims: &[usize], format: MemoryFormat) -> Vec<Vec<f32>> {
    let g = case.geom();
    let t = |dims: &[usize], s: u64| {
        let v = Tensor::from_f64_vec(randn(dims, s), dims.to_vec(), DType::F32, CPU).unwrap();
        let v = if dims.len() == 4 { v.to_memory_format(format).unwrap() } else { v };
        v.requires_grad_(true)
    };
    let (x, w, r) = (t(&case.x_dims(), 1), t(&case.w_dims(), 2), t(residual_dims, 4));
    let b = case.bias.then(|| t(&[case.o], 3));
    let y = if fused {
        conv2d_add(&x, &w, b.as_ref(), &case.params, &r).unwrap()
    } else {
        conv2d(&x, &w, b.as_ref(), &case.params).unwrap().add(&r).unwrap()
    };
    let dims = [g.batch, g.o, g.oh, g.ow];
    let gy = Tensor::from_f64_vec(randn(&dims, 5), dims.to_vec(), DType::F32, CPU).unwrap();
    let store = autograd::grad(&y, &gy).unwrap();
    let mut out = vec![y.to_vec::<f32>().unwrap()];
    for leaf in [Some(&x), Some(&w), b.as_ref(), Some(&r)].into_iter().flatten() {
        out.push(store.get(leaf).expect("a gradient for every input").to_vec::<f32>().unwrap());
    }
    out
}

#[test]
fn fused_matches_conv2d_then_add() {
    // BiT's conv3 (1×1 in place, one image per chunk) and late-stage 1×1 (staged chunks), a 3×3
    // on the direct kernels, a strided one on im2col.
    let cases = [
        dense([2, 16, 16, 16], 32, 1, Conv2dParams::default(), false),
        dense([8, 32, 4, 4], 64, 1, Conv2dParams::default(), true),
        dense([2, 8, 16, 16], 8, 3, Conv2dParams::new(1, 1), false),
        dense([2, 8, 9, 9], 12, 3, Conv2dParams::new(2, 1), true),
    ];
    for (case, format) in
        cases.iter().flat_map(|c| [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast].map(|f| (c, f)))
    {
        let g = case.geom();
        let dims = [g.batch, g.o, g.oh, g.ow];
        let on = run_f32(case, true, &dims, format);
        let off = run_f32(case, false, &dims, format);
        // One sum rounded in another order: within a few f32 ulps of the output's terms.
        let (y_on, y_off) = (&on[0], &off[0]);
        for (i, (a, b)) in y_on.iter().zip(y_off).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{case:?} {format:?} y[{i}]: fused {a}, unfused {b}");
        }
        assert!(on[1..] == off[1..], "{case:?} {format:?}: the gradients are the unfused ones bit for bit");
        let gy = Tensor::from_f64_vec(randn(&dims, 5), dims.to_vec(), DType::F32, CPU).unwrap();
        assert_eq!(on.last().unwrap(), &gy.to_vec::<f32>().unwrap(), "the residual's gradient is dy");
    }
}

#[test]
fn what_it_does_not_fuse_is_conv2d_then_add() {
    let case = dense([2, 4, 6, 6], 8, 3, Conv2dParams::new(1, 1), true);
    let g = case.geom();
    // A broadcast residual: the same values as the unfused ops.
    let dims = [1, g.o, 1, 1];
    assert!(
        run_f32(&case, true, &dims, MemoryFormat::Contiguous) == run_f32(&case, false, &dims, MemoryFormat::Contiguous)
    );
    // A residual the add refuses is the add's error.
    let t = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32, CPU).unwrap();
    let err = conv2d_add(&t(&case.x_dims()), &t(&case.w_dims()), None, &case.params, &t(&[2, 3, 6, 6])).unwrap_err();
    assert!(err.to_string().contains("broadcast") || err.to_string().contains("shape"), "{err}");
}
