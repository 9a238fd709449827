//! The direct kernels against the plain f64 loops, at every ISA level this CPU has.

use bitgrad_engine::cpu::isa::Isa;

use super::super::tests::{abs, assert_close, dense, naive_forward, naive_grads, randn, Case};
use super::super::{Conv2dParams, Padding};
use super::*;

pub(super) fn to32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

pub(super) fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// Direct-eligible shapes that cover the kernel's edges: rows shorter than, equal to and longer
/// than a vector (the flattened grid where rows are not whole vectors, its last vector masked),
/// output channels not a multiple of the register block, more
/// input channels than one channel block, asymmetric padding, no padding, dilation, 5×3
/// kernels, batch 1 and 3, bias on and off.
fn cases() -> Vec<Case> {
    let mut v = vec![
        dense([2, 5, 9, 9], 7, 3, Conv2dParams::new(1, 1), true),
        dense([1, 3, 8, 17], 13, 3, Conv2dParams::new(1, 1), false),
        dense([3, 80, 6, 16], 14, 3, Conv2dParams::new(1, 1), true),
        dense([1, 4, 20, 33], 25, 3, Conv2dParams::new(1, 0), false),
        dense([2, 6, 11, 24], 12, 3, Conv2dParams::new(1, 2).with_dilation(2), true),
        dense([1, 2, 7, 40], 3, 3, Conv2dParams::new(1, 1).with_padding_sides(0, 2, 1, 0), false),
    ];
    // Strided: forward and weight gradient (the input gradient is direct at stride 1 only).
    v.push(dense([2, 16, 17, 20], 9, 3, Conv2dParams::new(2, 1), false));
    v.push(dense([1, 8, 12, 9], 5, 3, Conv2dParams::new(1, 1).with_stride_hw(3, 2), true));
    // The stem's shape class: 7×7, stride 2, padding 3, 3 input channels; and stride 2 with
    // dilation 2.
    v.push(dense([1, 3, 21, 40], 10, 7, Conv2dParams::new(2, 3), true));
    v.push(dense([2, 5, 19, 23], 6, 3, Conv2dParams::new(2, 2).with_dilation(2), false));
    let mut k53 = dense([2, 3, 9, 18], 5, 3, Conv2dParams::new(1, 0).with_padding_hw(2, 1), true);
    k53.k = [5, 3];
    v.push(k53);
    v
}

#[test]
fn every_pass_matches_the_plain_loops_at_every_isa() {
    let mut weight_checked = 0;
    for isa in Isa::available() {
        for (i, case) in cases().iter().enumerate() {
            let g = case.geom();
            let (x, w, b) = (randn(&case.x_dims(), 1), randn(&case.w_dims(), 2), randn(&[case.o], 3));
            let gy = randn(&[g.batch, g.o, g.oh, g.ow], 4);
            // Inputs rounded to f32 first, so the f64 reference sees the same values.
            let (x, w, b, gy) = (to64(&to32(&x)), to64(&to32(&w)), to64(&to32(&b)), to64(&to32(&gy)));
            let bias = case.bias.then_some(&b[..]);
            let what = format!("{isa} case {i} {case:?}");
            if g.stride == [1, 1] {
                let y = forward_f32(&to32(&x), &to32(&w), Start::bias(bias.map(to32).as_deref()), &g, isa);
                let want = naive_forward(&x, &w, bias, &g);
                let scale = naive_forward(&abs(&x), &abs(&w), bias.map(abs).as_deref(), &g);
                assert_close(&to64(&y), &want, &scale, 1e-6, &format!("{what}: forward"));
                assert!(input_grad_shape_ok(&g), "{what}: meant to be eligible");
                let dx = input_grad_f32(&to32(&w), &to32(&gy), &g, isa);
                let (want_dx, _, _) = naive_grads(&x, &w, &gy, &g);
                let (scale_dx, _, _) = naive_grads(&abs(&x), &abs(&w), &abs(&gy), &g);
                assert_close(&to64(&dx), &want_dx, &scale_dx, 1e-6, &format!("{what}: input gradient"));
            }
            if weight_grad_shape_ok(&g) {
                let dw = weight_grad_f32(&to32(&x), &to32(&gy), &g, isa);
                let (_, want_dw, _) = naive_grads(&x, &w, &gy, &g);
                let (_, scale_dw, _) = naive_grads(&abs(&x), &abs(&w), &abs(&gy), &g);
                assert_close(&to64(&dw), &want_dw, &scale_dw, 1e-6, &format!("{what}: weight gradient"));
                weight_checked += 1;
            }
        }
    }
    assert!(weight_checked >= 10 * Isa::available().len(), "the 3-wide cases reach the weight kernel");
}

#[test]
fn the_public_paths_choose_direct_only_where_it_applies() {
    let isa = Isa::Avx2;
    let ok = dense([1, 4, 8, 16], 8, 3, Conv2dParams::new(1, 1), false).geom();
    assert!(eligible(&ok, isa) && input_grad_eligible(&ok, isa));
    let strided = dense([1, 4, 16, 32], 8, 3, Conv2dParams::new(2, 1), false).geom();
    assert!(eligible(&strided, isa) && !input_grad_eligible(&strided, isa));
    let pointwise = dense([1, 4, 8, 16], 8, 1, Conv2dParams::default(), false).geom();
    assert!(!eligible(&pointwise, isa));
    let grouped = dense([1, 4, 8, 16], 8, 3, Conv2dParams::new(1, 1).with_groups(2), false).geom();
    assert!(!eligible(&grouped, isa));
    // 4-wide rows fill half of an 8-lane vector, and the flattened grid (pitch 6) two thirds:
    // im2col + GEMM batches them better.
    let narrow = dense([1, 4, 4, 4], 8, 3, Conv2dParams::new(1, 1), false).geom();
    assert!(!eligible(&narrow, isa));
    // 14-wide rows are not whole vectors, but the flattened grid (pitch 16) fills 7/8 of them;
    // 7-wide ones (pitch 9) only 49/64 with AVX-512's 16 lanes; strided never goes flat.
    let fourteen = dense([1, 4, 14, 14], 8, 3, Conv2dParams::new(1, 1), false).geom();
    assert!(eligible(&fourteen, Isa::Avx512) && input_grad_eligible(&fourteen, Isa::Avx512));
    let seven = dense([1, 4, 7, 7], 8, 3, Conv2dParams::new(1, 1), false).geom();
    assert!(!eligible(&seven, Isa::Avx512) && !input_grad_eligible(&seven, Isa::Avx512));
    let strided_28 = dense([1, 4, 29, 29], 8, 3, Conv2dParams::new(2, 1), false).geom();
    assert!(!eligible(&strided_28, Isa::Avx512), "15-wide strided rows stay on im2col");
    // Padding wider than the kernel reach: the gradient would need negative padding.
    let wide_pad =
        dense([1, 4, 8, 12], 8, 3, Conv2dParams { padding: Padding::Symmetric([3, 3]), ..Default::default() }, false)
            .geom();
    assert!(eligible(&wide_pad, isa) && !input_grad_eligible(&wide_pad, isa));
    // f64 never goes direct.
    let (x, w) = (vec![0.0f64; 4 * 8 * 16], vec![0.0f64; 8 * 4 * 9]);
    assert!(forward(&x, &w, Start::bias(None), &ok).is_none());
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let case = dense([3, 40, 12, 20], 30, 3, Conv2dParams::new(1, 1), true);
    let g = case.geom();
    let (x, w, b) = (to32(&randn(&case.x_dims(), 5)), to32(&randn(&case.w_dims(), 6)), to32(&randn(&[case.o], 7)));
    let gy = to32(&randn(&[g.batch, g.o, g.oh, g.ow], 8));
    for isa in Isa::available() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                (
                    forward_f32(&x, &w, Start::bias(Some(&b)), &g, isa),
                    input_grad_f32(&w, &gy, &g, isa),
                    weight_grad_f32(&x, &gy, &g, isa),
                )
            })
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            assert!(run(threads) == one, "{isa}: {threads} threads differ from 1");
        }
    }
}

/// The phase planes against their definition: padded pixel (i, j) at phase (i mod sh, j mod sw),
/// place (i / sh, j / sw), zeros elsewhere — strides 1 to 3, left paddings below and above the
/// stride, odd widths.
#[test]
fn phase_planes_follow_their_definition() {
    for (h, w, pad, stride) in [
        (5, 7, [1, 1, 1, 1], [2, 2]),
        (4, 9, [0, 2, 3, 1], [2, 3]),
        (3, 6, [2, 0, 0, 2], [3, 2]),
        (6, 5, [1, 2, 4, 0], [1, 2]),
        (2, 1, [0, 0, 1, 1], [2, 2]),
    ] {
        let x: Vec<f32> = (0..2 * h * w).map(|v| v as f32 + 1.0).collect();
        let got = pack::phase_planes(&x, 2, h, w, pad, stride, None);
        let [sh, sw] = stride;
        let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
        let (hph, wph) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let mut want = vec![0f32; 2 * sh * sw * hph * wph];
        for plane in 0..2 {
            for i in 0..h {
                for j in 0..w {
                    let (pi, pj) = (i + pad[0], j + pad[2]);
                    let at = plane * sh * sw * hph * wph
                        + ((pi % sh) * sw + pj % sw) * hph * wph
                        + (pi / sh) * wph
                        + pj / sw;
                    want[at] = x[(plane * h + i) * w + j];
                }
            }
        }
        assert_eq!(got, want, "{h}×{w}, pad {pad:?}, stride {stride:?}");
    }
}

/// Each level's micro-kernel is the one that runs: the vector levels (AVX2, AVX-512, NEON)
/// reduce with fused multiply-adds, the portable one rounds each product first. Two channels
/// whose products cancel to within 2⁻⁴⁰ tell them apart: `−(1 + 2⁻¹⁹) + (1 + 2⁻²⁰)²` is 2⁻⁴⁰
/// when the second product is not rounded, 0 when it is.
#[test]
fn every_level_runs_its_own_kernel() {
    let e = (1.0f32 + 2f32.powi(-20), 1.0f32 + 2f32.powi(-19));
    for isa in Isa::available() {
        let (mr, lanes) = kernel::blocking(isa);
        // Panel [channel][tap][MR]: weight −1 on channel 0, 1 + 2⁻²⁰ on channel 1.
        let a: Vec<f32> = [-1.0f32, e.0].iter().flat_map(|&w| std::iter::repeat_n(w, mr)).collect();
        // Two channel planes of two vectors: 1 + 2⁻¹⁹, then 1 + 2⁻²⁰.
        let plane = 2 * lanes;
        let b: Vec<f32> = [e.1, e.0].iter().flat_map(|&x| std::iter::repeat_n(x, plane)).collect();
        let mut out = vec![f32::NAN; mr * plane];
        let taps = [0isize];
        let t = kernel::Tile {
            a: a.as_ptr(),
            b: b.as_ptr(),
            plane,
            kc: 2,
            taps: &taps,
            src: [0, lanes as isize],
            dst: [out.as_mut_ptr(), out.as_mut_ptr().wrapping_add(lanes)],
            ldc: plane,
            len: [lanes, lanes],
            mr,
            accumulate: false,
        };
        // SAFETY: `a` holds 2 channels × 1 tap × MR weights, `b` 2 planes of 2 vectors, and `out`
        // MR rows of `ldc` values, each row's two vectors inside it.
        unsafe { kernel::run(isa, &t) };
        let want = if isa == Isa::Scalar { 0.0 } else { 2f32.powi(-40) };
        assert!(out.iter().all(|&v| v == want), "{isa}: {:?} …, want {want:e}", &out[..4]);
    }
}

/// The same for the weight-gradient kernel: two output pixels whose products cancel to 2⁻⁴⁰
/// (tap 0) when the second is fused into the sum.
#[test]
fn every_level_runs_its_own_weight_kernel() {
    let e = (1.0f32 + 2f32.powi(-20), 1.0f32 + 2f32.powi(-19));
    for isa in Isa::available() {
        let (mo, lanes) = weight_kernel::blocking(isa);
        // One packed row of 4 pixels (`L` channels each): 1 + 2⁻¹⁹, 1 + 2⁻²⁰, 1, 1.
        let x: Vec<f32> = [e.1, e.0, 1.0, 1.0].iter().flat_map(|&v| std::iter::repeat_n(v, lanes)).collect();
        // Each output channel's gradient at the 2 output pixels: −1, 1 + 2⁻²⁰.
        let dy: Vec<f32> = (0..mo).flat_map(|_| [-1.0, e.0]).collect();
        let mut out = vec![f32::NAN; mo * weight_kernel::KW * lanes];
        let t = weight_kernel::WeightTile {
            x: x.as_ptr(),
            x_image: x.len(),
            dy: dy.as_ptr(),
            dy_image: dy.len(),
            dy_channel: 2,
            mo,
            batch: 1,
            oh: 1,
            ow: 2,
            wp: 4,
            dw: 1,
            stride: [1, 1],
            out: out.as_mut_ptr(),
        };
        // SAFETY: the 3 taps of the 2 pixels read pixels 0..4 of `x`; `dy` holds MO channels of
        // 2 pixels; `out` holds MO × KW vectors.
        unsafe { weight_kernel::run(isa, &t) };
        let want = if isa == Isa::Scalar { 0.0 } else { 2f32.powi(-40) };
        for r in 0..mo {
            let tap0 = &out[r * weight_kernel::KW * lanes..][..lanes];
            assert!(tap0.iter().all(|&v| v == want), "{isa} row {r}: {tap0:?}, want {want:e}");
        }
    }
}
