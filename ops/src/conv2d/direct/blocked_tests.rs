//! The channel-blocked kernels against the plain f64 loops, at every ISA level this CPU has.

use bitgrad_engine::cpu::isa::Isa;

use super::super::tests::{abs, assert_close, dense, naive_forward, naive_grads, randn, Case};
use super::super::Conv2dParams;
use super::tests::{to32, to64};
use super::*;
use super::{blocked, pointwise};

/// Blocked-eligible shapes (at least 13 of every 16 input channels real) that cover the
/// kernels' edges: a last channel block part-filled (13, 40 channels), several channel blocks,
/// output channels fewer than, not a multiple of, and more than one block of 32 (16 at AVX2);
/// rows narrower than a tile, split into several tiles (33 → 3 × 11 at AVX-512), and of one
/// pixel; no padding, asymmetric padding, dilation, strides 2 and (3, 2), 7×7 and 5×3 kernels;
/// batch 1 with one output-channel block (its rows split over the items).
fn cases() -> Vec<Case> {
    let mut v = vec![
        dense([2, 16, 9, 9], 7, 3, Conv2dParams::new(1, 1), true),
        dense([1, 13, 8, 17], 40, 3, Conv2dParams::new(1, 1), false),
        dense([3, 40, 6, 33], 14, 3, Conv2dParams::new(1, 1), true),
        dense([1, 16, 20, 30], 25, 3, Conv2dParams::new(1, 0), false),
        dense([2, 32, 11, 24], 12, 3, Conv2dParams::new(1, 2).with_dilation(2), true),
        dense([1, 16, 7, 40], 3, 3, Conv2dParams::new(1, 1).with_padding_sides(0, 2, 1, 0), false),
        dense([2, 16, 5, 1], 33, 3, Conv2dParams::new(1, 1), true),
        dense([1, 16, 30, 5], 8, 3, Conv2dParams::new(1, 1), false),
        dense([2, 16, 17, 20], 9, 3, Conv2dParams::new(2, 1), false),
        dense([1, 16, 12, 9], 5, 3, Conv2dParams::new(1, 1).with_stride_hw(3, 2), true),
        dense([1, 16, 21, 40], 10, 7, Conv2dParams::new(2, 3), true),
        dense([2, 16, 19, 23], 6, 3, Conv2dParams::new(2, 2).with_dilation(2), false),
    ];
    let mut k53 = dense([2, 13, 9, 18], 5, 3, Conv2dParams::new(1, 0).with_padding_hw(2, 1), true);
    k53.k = [5, 3];
    v.push(k53);
    v
}

struct Data {
    x: Vec<f64>,
    w: Vec<f64>,
    b: Vec<f64>,
    r: Vec<f64>,
    gy: Vec<f64>,
}

/// Inputs rounded to f32 first, so the f64 reference sees the same values.
fn data(case: &Case, seed: u64) -> Data {
    let g = case.geom();
    let round = |v: Vec<f64>| to64(&to32(&v));
    Data {
        x: round(randn(&case.x_dims(), seed)),
        w: round(randn(&case.w_dims(), seed + 1)),
        b: round(randn(&[case.o], seed + 2)),
        r: round(randn(&[g.batch, g.o, g.oh, g.ow], seed + 3)),
        gy: round(randn(&[g.batch, g.o, g.oh, g.ow], seed + 4)),
    }
}

/// The case's bias and, when `residual`, its residual, as f32 (for a [`Start`]).
fn start_values(case: &Case, d: &Data, residual: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    (case.bias.then(|| to32(&d.b)), residual.then(|| to32(&d.r)))
}

/// `y` against the plain loops' forward, plus the residual when `residual`.
fn check_forward(y: &[f32], case: &Case, d: &Data, residual: bool, what: &str) {
    let g = case.geom();
    let bias = case.bias.then_some(&d.b[..]);
    let mut want = naive_forward(&d.x, &d.w, bias, &g);
    let mut scale = naive_forward(&abs(&d.x), &abs(&d.w), bias.map(abs).as_deref(), &g);
    if residual {
        want.iter_mut().zip(&d.r).for_each(|(w, r)| *w += r);
        scale.iter_mut().zip(&d.r).for_each(|(s, r)| *s += r.abs());
    }
    assert_close(&to64(y), &want, &scale, 1e-6, &format!("{what}: forward"));
}

/// `dx` against the plain loops' input gradient.
fn check_input_grad(dx: &[f32], case: &Case, d: &Data, what: &str) {
    let g = case.geom();
    let (want, _, _) = naive_grads(&d.x, &d.w, &d.gy, &g);
    let (scale, _, _) = naive_grads(&abs(&d.x), &abs(&d.w), &abs(&d.gy), &g);
    assert_close(&to64(dx), &want, &scale, 1e-6, &format!("{what}: input gradient"));
}

#[test]
fn forward_and_input_gradient_match_the_plain_loops_at_every_isa() {
    for isa in Isa::available() {
        for (i, case) in cases().iter().enumerate() {
            let g = case.geom();
            assert!(blocked::eligible(&g, g.c), "case {i} meant to be eligible");
            let d = data(case, 10 * i as u64);
            let what = format!("{isa} case {i} {case:?}");
            // With the residual as the starting value on odd cases.
            let residual = i % 2 == 1;
            let (b32, r32) = start_values(case, &d, residual);
            let start = Start { bias: b32.as_deref(), residual: r32.as_deref() };
            let y = blocked::forward(&to32(&d.x), &to32(&d.w), start, &g, isa, None);
            check_forward(&y, case, &d, residual, &what);
            if input_grad_shape_ok(&g) && blocked::eligible(&g, g.o) {
                let dx = blocked::input_grad(&to32(&d.w), &to32(&d.gy), &g, isa);
                check_input_grad(&dx, case, &d, &what);
            }
        }
    }
}

#[test]
fn the_input_gradient_runs_on_the_blocked_kernels_where_its_channels_fill_them() {
    // 16 input and 40 output channels: both passes blocked. 40 output channels and 3 input
    // channels: the forward is not (3 of 16 lanes), the input gradient (over 40) is.
    let both = dense([1, 16, 8, 8], 40, 3, Conv2dParams::new(1, 1), false).geom();
    assert!(blocked::eligible(&both, both.c) && blocked::eligible(&both, both.o));
    let stem_like = dense([1, 3, 8, 8], 40, 3, Conv2dParams::new(1, 1), false).geom();
    assert!(!blocked::eligible(&stem_like, stem_like.c) && blocked::eligible(&stem_like, stem_like.o));
    let pointwise = dense([1, 16, 8, 8], 40, 1, Conv2dParams::default(), false).geom();
    assert!(!blocked::eligible(&pointwise, pointwise.c), "1×1 stays on gemm");
    let grouped = dense([1, 32, 8, 8], 32, 3, Conv2dParams::new(1, 1).with_groups(2), false).geom();
    assert!(!blocked::eligible(&grouped, grouped.c));
    // The public path takes it, and its result is the blocked kernels' own.
    let case = dense([2, 16, 6, 10], 20, 3, Conv2dParams::new(1, 1), true);
    let d = data(&case, 90);
    let (x, w, b) = (to32(&d.x), to32(&d.w), to32(&d.b));
    let y = forward(&x, &w, Start::bias(Some(&b)), &case.geom()).expect("direct");
    assert!(y == blocked::forward(&x, &w, Start::bias(Some(&b)), &case.geom(), isa::active(), None));
}

#[test]
fn a_plane_map_folds_into_the_packing_bit_for_bit() {
    let case = dense([2, 20, 9, 11], 12, 3, Conv2dParams::new(1, 1), false);
    let g = case.geom();
    let d = data(&case, 40);
    let planes = g.batch * g.c;
    let scale: Vec<f32> = (0..planes).map(|p| 0.5 + p as f32 / 16.0).collect();
    let shift: Vec<f32> = (0..planes).map(|p| (p as f32 - 20.0) / 10.0).collect();
    let x = to32(&d.x);
    for relu in [false, true] {
        let map = PlaneMap { scale: &scale, shift: &shift, relu };
        let mapped: Vec<f32> = x
            .chunks(g.h * g.w)
            .enumerate()
            .flat_map(|(p, plane)| plane.iter().map(move |&v| map.one(p, v)).collect::<Vec<_>>())
            .collect();
        for isa in Isa::available() {
            let fused = blocked::forward(&x, &to32(&d.w), Start::bias(None), &g, isa, Some(map));
            let plain = blocked::forward(&mapped, &to32(&d.w), Start::bias(None), &g, isa, None);
            assert!(fused == plain, "{isa} relu {relu}: the mapped packing differs from mapping first");
        }
    }
}

#[test]
fn blocked_results_do_not_depend_on_the_thread_count() {
    for case in [
        dense([3, 40, 12, 20], 30, 3, Conv2dParams::new(1, 1), true),
        dense([1, 16, 30, 5], 8, 3, Conv2dParams::new(2, 1), true),
    ] {
        let g = case.geom();
        let d = data(&case, 70);
        let (x, w, b, gy) = (to32(&d.x), to32(&d.w), to32(&d.b), to32(&d.gy));
        for isa in Isa::available() {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let y = blocked::forward(&x, &w, Start::bias(Some(&b)), &g, isa, None);
                    let dx = (g.stride == [1, 1]).then(|| blocked::input_grad(&w, &gy, &g, isa));
                    (y, dx)
                })
            };
            let one = run(1);
            for threads in [2, 3, 5] {
                assert!(run(threads) == one, "{isa} {case:?}: {threads} threads differ from 1");
            }
        }
    }
}

/// 1×1 shapes for the pointwise kernel: 16 and 48 channels (one and three blocks), output
/// channels below, at and above a block (32 at AVX-512, 16 at AVX2), pixel runs shorter than a
/// tile, split into several tiles and into several groups, batch 1 and 3.
fn pointwise_cases() -> Vec<Case> {
    vec![
        dense([2, 16, 3, 3], 5, 1, Conv2dParams::default(), true),
        dense([1, 48, 7, 9], 32, 1, Conv2dParams::default(), false),
        dense([3, 32, 5, 11], 40, 1, Conv2dParams::default(), true),
        dense([1, 16, 1, 1], 70, 1, Conv2dParams::default(), false),
        dense([2, 512, 4, 5], 16, 1, Conv2dParams::default(), true),
        dense([1, 16, 40, 70], 3, 1, Conv2dParams::default(), false),
    ]
}

#[test]
fn the_pointwise_kernel_matches_the_plain_loops_at_every_isa() {
    for isa in Isa::available() {
        for (i, case) in pointwise_cases().iter().enumerate() {
            let g = case.geom();
            assert!(pointwise::shape_ok(&g, g.c), "case {i} meant to fit");
            let d = data(case, 200 + 10 * i as u64);
            let what = format!("{isa} pointwise case {i} {case:?}");
            let residual = i % 2 == 0;
            let (b32, r32) = start_values(case, &d, residual);
            let start = Start { bias: b32.as_deref(), residual: r32.as_deref() };
            let y = pointwise::forward(&to32(&d.x), &to32(&d.w), start, &g, isa);
            check_forward(&y, case, &d, residual, &what);
            if pointwise::shape_ok(&g, g.o) {
                let dx = pointwise::input_grad(&to32(&d.w), &to32(&d.gy), &g, isa);
                check_input_grad(&dx, case, &d, &what);
            }
        }
    }
}

#[test]
fn pointwise_takes_long_whole_block_reductions_only() {
    let long = dense([1, 512, 7, 7], 64, 1, Conv2dParams::default(), false).geom();
    assert!(pointwise::eligible(&long, long.c) && !pointwise::eligible(&long, long.o));
    let partial = dense([1, 520, 7, 7], 64, 1, Conv2dParams::default(), false).geom();
    assert!(!pointwise::shape_ok(&partial, partial.c), "a partial channel block would read past the input");
    let strided = dense([1, 512, 8, 8], 64, 1, Conv2dParams::new(2, 0), false).geom();
    assert!(!pointwise::shape_ok(&strided, strided.c));
    let padded = dense([1, 512, 8, 8], 64, 1, Conv2dParams::new(1, 1), false).geom();
    assert!(!pointwise::shape_ok(&padded, padded.c));
    // The public paths take it: the forward of `long`, and the input gradient of its mirror.
    let case = dense([1, 512, 3, 5], 16, 1, Conv2dParams::default(), true);
    let d = data(&case, 300);
    let (x, w, b) = (to32(&d.x), to32(&d.w), to32(&d.b));
    let y = forward(&x, &w, Start::bias(Some(&b)), &case.geom()).expect("direct");
    assert!(y == pointwise::forward(&x, &w, Start::bias(Some(&b)), &case.geom(), isa::active()));
    let mirror = dense([1, 16, 3, 5], 512, 1, Conv2dParams::default(), false);
    let (wm, gy) = (to32(&randn(&mirror.w_dims(), 301)), to32(&randn(&[1, 512, 3, 5], 302)));
    let dx = input_grad(&wm, &gy, &mirror.geom()).expect("direct");
    assert!(dx == pointwise::input_grad(&wm, &gy, &mirror.geom(), isa::active()));
}

#[test]
fn pointwise_results_do_not_depend_on_the_thread_count() {
    let case = dense([3, 48, 9, 13], 80, 1, Conv2dParams::default(), true);
    let g = case.geom();
    let d = data(&case, 400);
    let (x, w, b, gy) = (to32(&d.x), to32(&d.w), to32(&d.b), to32(&d.gy));
    for isa in Isa::available() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = pointwise::forward(&x, &w, Start::bias(Some(&b)), &g, isa);
                (y, pointwise::input_grad(&w, &gy, &g, isa))
            })
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            assert!(run(threads) == one, "{isa}: {threads} threads differ from 1");
        }
    }
}
