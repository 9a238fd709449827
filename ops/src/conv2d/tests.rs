//! conv2d tests:
//!
//! * forward and all three gradients equal direct (seven-nested-loop) convolutions in f64, over
//!   proptest shapes, strides, symmetric and per-side paddings, dilations and groups, with one
//!   image per chunk and with whole-batch chunks;
//! * f64 gradient checks against finite differences through the public API, with permuted
//!   (non-contiguous) inputs and weights;
//! * explicit corner shapes: C == H == W, 7×7 stride 2 (BiT's stem), 1×1 (in place and
//!   strided), depthwise, odd sizes, size-1 dims;
//! * f32 against f64 (forward and gradients), f16/bf16 through f32;
//! * bit-identical results on 1, 2 and 3 threads;
//! * every error case.

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{autograd, DType, Device, Rng, Tensor};
use proptest::prelude::*;

use super::cpu;
use super::params::Geom;
use super::{conv2d, Conv2dParams, Padding};

const CPU: Device = Device::Cpu;

/// One convolution to test.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) batch: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) k: [usize; 2],
    pub(super) params: Conv2dParams,
    pub(super) bias: bool,
}

impl Case {
    pub(super) fn x_dims(&self) -> [usize; 4] {
        [self.batch, self.c, self.h, self.w]
    }
    pub(super) fn w_dims(&self) -> [usize; 4] {
        [self.o, self.c / self.params.groups, self.k[0], self.k[1]]
    }
    pub(super) fn geom(&self) -> Geom {
        Geom::new(&self.x_dims(), &self.w_dims(), &self.params).expect("valid case")
    }
}

/// Valid cases with small dims: the padded input always holds the dilated kernel.
fn case(max_cg: usize, max_hw_extra: usize) -> impl Strategy<Value = Case> {
    let shape = (1usize..=3, 1..=3usize, 1..=max_cg, 1..=3usize, 1..=3usize, 1..=3usize);
    let sliding = (1..=3usize, 1..=3usize, 1..=2usize, 1..=2usize, 0..=max_hw_extra, 0..=max_hw_extra);
    let pads = (proptest::bool::ANY, [0..=2usize, 0..=2, 0..=2, 0..=2], proptest::bool::ANY);
    (shape, sliding, pads).prop_map(|((batch, groups, cg, og, kh, kw), (sh, sw, dh, dw, eh, ew), (sym, pad, bias))| {
        let pad = if sym { [pad[0], pad[0], pad[2], pad[2]] } else { pad };
        let padding = if sym { Padding::Symmetric([pad[0], pad[2]]) } else { Padding::PerSide(pad) };
        // Smallest valid input: the dilated kernel minus the padding (at least 1 pixel).
        let h = ((dh * (kh - 1) + 1 + eh) as isize - (pad[0] + pad[1]) as isize).max(1) as usize;
        let w = ((dw * (kw - 1) + 1 + ew) as isize - (pad[2] + pad[3]) as isize).max(1) as usize;
        Case {
            batch,
            c: groups * cg,
            h,
            w,
            o: groups * og,
            k: [kh, kw],
            params: Conv2dParams { stride: [sh, sw], padding, dilation: [dh, dw], groups },
            bias,
        }
    })
}

pub(super) fn randn(dims: &[usize], seed: u64) -> Vec<f64> {
    Tensor::randn(dims.to_vec(), 0.0, 1.0, DType::F64, CPU, &mut Rng::new(seed)).unwrap().to_vec::<f64>().unwrap()
}

/// Direct convolution.
pub(super) fn naive_forward(x: &[f64], w: &[f64], bias: Option<&[f64]>, g: &Geom) -> Vec<f64> {
    let mut y = vec![0.0; g.batch * g.o * g.p()];
    visit(g, |xi, wi, yi| y[yi] += w[wi] * x[xi]);
    if let Some(b) = bias {
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[(i / g.p()) % g.o];
        }
    }
    y
}

/// The gradients of the direct convolution for the output gradient `gy`.
pub(super) fn naive_grads(x: &[f64], w: &[f64], gy: &[f64], g: &Geom) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; g.o]);
    visit(g, |xi, wi, yi| {
        dx[xi] += w[wi] * gy[yi];
        dw[wi] += x[xi] * gy[yi];
    });
    for (i, v) in gy.iter().enumerate() {
        db[(i / g.p()) % g.o] += v;
    }
    (dx, dw, db)
}

/// Calls `f(x index, w index, y index)` for every multiply-add of the convolution that does
/// not read padding.
fn visit(g: &Geom, mut f: impl FnMut(usize, usize, usize)) {
    let (cg, og) = (g.cg(), g.og());
    for b in 0..g.batch {
        for o in 0..g.o {
            let grp = o / og;
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let yi = ((b * g.o + o) * g.oh + oh) * g.ow + ow;
                    for c in 0..cg {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let ih = (oh * g.stride[0] + i * g.dilation[0]) as isize - g.pad[0] as isize;
                                let iw = (ow * g.stride[1] + j * g.dilation[1]) as isize - g.pad[2] as isize;
                                if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                                    continue;
                                }
                                let xi = ((b * g.c + grp * cg + c) * g.h + ih as usize) * g.w + iw as usize;
                                let wi = ((o * cg + c) * g.kh + i) * g.kw + j;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// `|got − want| ≤ tol · scale` elementwise, where `scale` is the same computation on absolute
/// values (the sum of |terms|, which bounds the rounding error of any summation order).
pub(super) fn assert_close(got: &[f64], want: &[f64], scale: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        assert!(
            err <= tol * (scale[i] + 1e-30),
            "{what}[{i}]: got {}, want {} (|err| {err:e}, scale {})",
            got[i],
            want[i],
            scale[i]
        );
    }
}

/// The two chunking regimes: one image per chunk, and the default (whole small batches).
pub(super) const CHUNK_BOUNDS: [usize; 2] = [0, cpu::MAX_COL_BYTES];

fn check_against_naive(case: &Case, seed: u64) {
    let g = case.geom();
    let x = randn(&case.x_dims(), seed);
    let w = randn(&case.w_dims(), seed + 1);
    let b = case.bias.then(|| randn(&[case.o], seed + 2));
    let gy = randn(&[g.batch, g.o, g.oh, g.ow], seed + 3);
    let want = naive_forward(&x, &w, b.as_deref(), &g);
    let scale = naive_forward(&abs(&x), &abs(&w), b.as_deref().map(abs).as_deref(), &g);
    let (dx, dw, db) = naive_grads(&x, &w, &gy, &g);
    let (sx, sw, sb) = naive_grads(&abs(&x), &abs(&w), &abs(&gy), &g);
    for bound in CHUNK_BOUNDS {
        let y = cpu::forward(&x, &w, cpu::Start::bias(b.as_deref()), &g, bound);
        assert_close(&y, &want, &scale, 1e-13, &format!("y (bound {bound}) {case:?}"));
        let grads = cpu::backward(&x, &w, &gy, &g, [true, true, true], bound);
        assert_close(&grads.dx.unwrap(), &dx, &sx, 1e-13, &format!("dx (bound {bound}) {case:?}"));
        assert_close(&grads.dw.unwrap(), &dw, &sw, 1e-13, &format!("dw (bound {bound}) {case:?}"));
        assert_close(&grads.db.unwrap(), &db, &sb, 1e-13, &format!("db (bound {bound}) {case:?}"));
    }
}

/// The leaf layouts of a gradient check: plain, or stored permuted so that the op sees a
/// non-contiguous view.
#[derive(Debug, Clone, Copy)]
enum Layouts {
    Contiguous,
    /// x stored `[B, H, W, C]`, w stored `[kh, kw, I, O]`.
    Permuted,
}

fn gradcheck(case: &Case, layouts: Layouts, seed: u64) {
    let (xd, wd) = (case.x_dims(), case.w_dims());
    let (x_store, w_store, x_perm, w_perm) = match layouts {
        Layouts::Contiguous => (xd.to_vec(), wd.to_vec(), vec![0, 1, 2, 3], vec![0, 1, 2, 3]),
        Layouts::Permuted => {
            (vec![xd[0], xd[2], xd[3], xd[1]], vec![wd[2], wd[3], wd[1], wd[0]], vec![0, 3, 1, 2], vec![3, 2, 0, 1])
        }
    };
    let mut inputs = vec![
        Tensor::from_vec(randn(&x_store, seed), x_store, CPU).unwrap(),
        Tensor::from_vec(randn(&w_store, seed + 1), w_store, CPU).unwrap(),
    ];
    if case.bias {
        inputs.push(Tensor::from_vec(randn(&[case.o], seed + 2), [case.o], CPU).unwrap());
    }
    let p = case.params;
    let f = |t: &[Tensor]| {
        let (x, w) = (t[0].permute(&x_perm)?, t[1].permute(&w_perm)?);
        conv2d(&x, &w, t.get(2), &p)
    };
    let opts = GradCheck { atol: 1e-6, rtol: 1e-5, ..GradCheck::default() };
    if let Err(e) = check_gradients(f, &inputs, opts) {
        panic!("{case:?} {layouts:?}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn forward_and_gradients_equal_direct_loops(case in case(3, 4), seed in any::<u32>()) {
        check_against_naive(&case, seed as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn gradients_match_finite_differences(case in case(2, 2), permuted in any::<bool>(), seed in any::<u32>()) {
        let layouts = if permuted { Layouts::Permuted } else { Layouts::Contiguous };
        gradcheck(&case, layouts, seed as u64);
    }
}

/// A case from the input dims `[batch, c, h, w]`, `o` output channels and a `k × k` kernel.
pub(super) fn dense([batch, c, h, w]: [usize; 4], o: usize, k: usize, params: Conv2dParams, bias: bool) -> Case {
    Case { batch, c, h, w, o, k: [k, k], params, bias }
}

/// Shapes the generator rarely or never produces.
pub(super) fn corner_cases() -> Vec<Case> {
    vec![
        // C == H == W (and O too): a transposed axis would go unnoticed in the shapes.
        dense([2, 5, 5, 5], 5, 3, Conv2dParams::new(1, 1), true),
        // BiT's stem, scaled down: 7×7, stride 2, padding 3, odd input.
        dense([2, 3, 11, 9], 4, 7, Conv2dParams::new(2, 3), false),
        // 1×1 stride 1 unpadded (GEMM in place), several images per chunk or one.
        dense([3, 6, 4, 5], 7, 1, Conv2dParams::default(), true),
        // 1×1 with fewer outputs than inputs (weight gradient accumulated transposed), grouped.
        dense([3, 8, 4, 5], 4, 1, Conv2dParams::default(), false),
        dense([2, 6, 3, 3], 4, 1, Conv2dParams::default().with_groups(2), true),
        // 1×1 on maps of 256 pixels and more (the weight gradient as whole-batch row tiles):
        // more outputs than inputs (plain form), fewer (transposed), grouped.
        dense([2, 3, 16, 16], 5, 1, Conv2dParams::default(), false),
        dense([2, 6, 16, 17], 3, 1, Conv2dParams::default(), true),
        dense([2, 4, 16, 16], 6, 1, Conv2dParams::default().with_groups(2), false),
        // 1×1 stride 2 (BiT's projection shortcut), odd spatial size.
        dense([2, 4, 7, 7], 6, 1, Conv2dParams::new(2, 0), false),
        // Depthwise, asymmetric padding, dilation.
        dense(
            [2, 4, 6, 7],
            4,
            3,
            Conv2dParams::default().with_groups(4).with_padding_sides(2, 0, 1, 2).with_dilation(2),
            true,
        ),
        // Depthwise with channel multiplier 2.
        dense([1, 3, 5, 5], 6, 3, Conv2dParams::new(1, 1).with_groups(3), false),
        // Size-1 everything.
        dense([1, 1, 1, 1], 1, 1, Conv2dParams::default(), true),
        // Kernel as large as the padded input: a 1×1 output.
        dense([2, 2, 3, 3], 3, 5, Conv2dParams::new(1, 1), false),
        // BiT's "fixed" padding on an even kernel.
        dense([1, 2, 6, 6], 2, 4, Conv2dParams { padding: Padding::fixed(4), ..Conv2dParams::new(2, 0) }, true),
    ]
}

#[test]
fn corner_cases_equal_direct_loops_and_finite_differences() {
    for (i, case) in corner_cases().iter().enumerate() {
        check_against_naive(case, 100 + i as u64);
        gradcheck(case, Layouts::Contiguous, 200 + i as u64);
        gradcheck(case, Layouts::Permuted, 300 + i as u64);
    }
}

/// Runs the public op in `dtype` (inputs rounded from the same f64 values) and returns y and the
/// gradients of `Σ y ⊙ gy`, as f64.
fn run_public(case: &Case, dtype: DType, seed: u64) -> Vec<Vec<f64>> {
    let g = case.geom();
    let t = |dims: &[usize], s: u64| {
        Tensor::from_f64_vec(randn(dims, s), dims.to_vec(), dtype, CPU).unwrap().requires_grad_(true)
    };
    let (x, w) = (t(&case.x_dims(), seed), t(&case.w_dims(), seed + 1));
    let b = case.bias.then(|| t(&[case.o], seed + 2));
    let gy =
        Tensor::from_f64_vec(randn(&[g.batch, g.o, g.oh, g.ow], seed + 3), vec![g.batch, g.o, g.oh, g.ow], dtype, CPU)
            .unwrap();
    let y = conv2d(&x, &w, b.as_ref(), &case.params).unwrap();
    assert_eq!(y.dtype(), dtype);
    let store = autograd::grad(&y, &gy).unwrap();
    let mut out = vec![y.to_vec_f64().unwrap()];
    for leaf in [Some(&x), Some(&w), b.as_ref()].into_iter().flatten() {
        let gr = store.get(leaf).expect("gradient reached the leaf");
        assert_eq!(gr.dtype(), dtype);
        out.push(gr.to_vec_f64().unwrap());
    }
    out
}

#[test]
fn f32_agrees_with_f64_and_half_types_run_in_f32() {
    let cases = [
        dense([2, 8, 9, 9], 16, 3, Conv2dParams::new(2, 1), true),
        dense([3, 32, 6, 6], 8, 1, Conv2dParams::default(), false),
        dense([2, 6, 8, 8], 6, 3, Conv2dParams::new(1, 1).with_groups(3), true),
    ];
    for (i, case) in cases.iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let f64s = run_public(case, DType::F64, seed);
        let f32s = run_public(case, DType::F32, seed);
        for (k, (a, b)) in f32s.iter().zip(&f64s).enumerate() {
            let scale = b.iter().map(|v| v.abs()).fold(1.0, f64::max);
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() <= 1e-5 * scale, "case {i} output {k}: f32 {p} vs f64 {q}");
            }
        }
        for half in [DType::F16, DType::BF16] {
            let h = run_public(case, half, seed);
            let tol = if half == DType::F16 { 2e-2 } else { 1e-1 };
            for (k, (a, b)) in h.iter().zip(&f64s).enumerate() {
                let scale = b.iter().map(|v| v.abs()).fold(1.0, f64::max);
                for (p, q) in a.iter().zip(b) {
                    assert!((p - q).abs() <= tol * scale, "case {i} {half} output {k}: {p} vs f64 {q}");
                }
            }
        }
    }
}

#[test]
fn only_inputs_that_require_grad_get_one() {
    let x = Tensor::randn([2, 3, 6, 6], 0.0, 1.0, DType::F32, CPU, &mut Rng::new(1)).unwrap();
    let w = Tensor::randn([4, 3, 3, 3], 0.0, 1.0, DType::F32, CPU, &mut Rng::new(2)).unwrap().requires_grad_(true);
    let y = conv2d(&x, &w, None, &Conv2dParams::new(1, 1)).unwrap();
    let store = autograd::grad(&y.sum_all().unwrap(), &Tensor::scalar(1.0, DType::F32, CPU).unwrap()).unwrap();
    assert!(store.get(&x).is_none());
    assert_eq!(store.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
}

/// Results must not depend on the thread count: run forward and backward in pools of 1, 2 and
/// 3 threads on shapes large enough for every parallel path (threaded GEMMs, parallel im2col
/// and col2im, groups side by side, several chunks).
#[test]
fn results_are_identical_on_any_number_of_threads() {
    let cases = [
        (dense([4, 16, 20, 20], 32, 3, Conv2dParams::new(1, 1), true), cpu::MAX_COL_BYTES),
        (dense([4, 16, 20, 20], 32, 3, Conv2dParams::new(2, 1), false), 100_000),
        (dense([3, 64, 8, 8], 128, 1, Conv2dParams::default(), false), cpu::MAX_COL_BYTES),
        (dense([4, 48, 16, 16], 32, 1, Conv2dParams::default(), true), 0),
        (dense([2, 32, 24, 24], 32, 3, Conv2dParams::new(1, 1).with_groups(8), true), cpu::MAX_COL_BYTES),
    ];
    for (i, (case, bound)) in cases.iter().enumerate() {
        let g = case.geom();
        let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let x = to32(randn(&case.x_dims(), 1));
        let w = to32(randn(&case.w_dims(), 2));
        let b = to32(randn(&[case.o], 3));
        let gy = to32(randn(&[g.batch, g.o, g.oh, g.ow], 4));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = cpu::forward(&x, &w, cpu::Start::bias(case.bias.then_some(&b[..])), &g, *bound);
                let gr = cpu::backward(&x, &w, &gy, &g, [true, true, true], *bound);
                (y, gr.dx.unwrap(), gr.dw.unwrap(), gr.db.unwrap())
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads) == one, "case {i}: {threads} threads differ from 1");
        }
    }
}

fn err(x: &[usize], w: &[usize], b: Option<&[usize]>, p: Conv2dParams) -> String {
    let t = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32, CPU).unwrap();
    let bias = b.map(t);
    match conv2d(&t(x), &t(w), bias.as_ref(), &p) {
        Ok(y) => panic!("expected an error for x {x:?}, w {w:?}, bias {b:?}, {p:?}; got {y:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_calls_are_errors_that_name_the_problem() {
    let d = Conv2dParams::default();
    let has = |msg: String, parts: &[&str]| {
        for p in parts {
            assert!(msg.contains(p), "{msg:?} should mention {p:?}");
        }
    };
    has(err(&[2, 3, 8], &[4, 3, 3, 3], None, d), &["4-d", "[2, 3, 8]"]);
    has(err(&[2, 3, 8, 8], &[4, 3, 3], None, d), &["4-d", "[4, 3, 3]"]);
    has(err(&[2, 3, 8, 8], &[4, 2, 3, 3], None, d), &["3 channels", "[4, 2, 3, 3]"]);
    has(err(&[2, 6, 8, 8], &[4, 3, 3, 3], None, d.with_groups(4)), &["groups = 4", "6"]);
    has(err(&[2, 6, 8, 8], &[5, 3, 3, 3], None, d.with_groups(2)), &["groups = 2", "5"]);
    has(err(&[2, 6, 8, 8], &[4, 3, 3, 3], None, d.with_groups(0)), &["groups"]);
    has(err(&[2, 3, 8, 8], &[4, 3, 3, 3], Some(&[3]), d), &["bias", "[3]", "[4]"]);
    has(err(&[2, 3, 8, 8], &[4, 3, 3, 3], None, d.with_stride(0)), &["stride"]);
    has(err(&[2, 3, 8, 8], &[4, 3, 3, 3], None, d.with_dilation_hw(1, 0)), &["dilation"]);
    has(err(&[2, 3, 4, 8], &[4, 3, 5, 3], None, d), &["larger than the padded input", "height"]);
    has(err(&[2, 3, 8, 4], &[4, 3, 3, 3], None, d.with_dilation(2)), &["extent 5", "width"]);
    has(err(&[2, 3, 8, 8], &[4, 3, 0, 3], None, d), &["kernel height"]);
    has(err(&[2, 0, 8, 8], &[4, 0, 3, 3], None, d), &["no channels"]);
    // Padding makes room: the same kernel fits once padded.
    let t = |dims: Vec<usize>| Tensor::zeros(dims, DType::F32, CPU).unwrap();
    assert_eq!(
        conv2d(&t(vec![2, 3, 4, 8]), &t(vec![4, 3, 5, 3]), None, &d.with_padding(1)).unwrap().dims(),
        &[2, 4, 2, 8]
    );

    let x = Tensor::zeros([1, 3, 8, 8], DType::F32, CPU).unwrap();
    let w64 = Tensor::zeros([4, 3, 3, 3], DType::F64, CPU).unwrap();
    assert!(conv2d(&x, &w64, None, &d).unwrap_err().to_string().contains("dtype"));
    let xi = Tensor::zeros([1, 3, 8, 8], DType::I64, CPU).unwrap();
    let wi = Tensor::zeros([4, 3, 3, 3], DType::I64, CPU).unwrap();
    assert!(conv2d(&xi, &wi, None, &d).unwrap_err().to_string().contains("i64"));
}

#[test]
fn params_constructors_and_output_size() {
    let p = Conv2dParams::new(2, 3);
    assert_eq!(p, Conv2dParams { stride: [2, 2], padding: Padding::Symmetric([3, 3]), dilation: [1, 1], groups: 1 });
    assert_eq!(Conv2dParams::default(), Conv2dParams::new(1, 0));
    assert_eq!(p.output_size([224, 224], [7, 7]).unwrap(), [112, 112]);
    assert_eq!(Conv2dParams::new(2, 1).output_size([7, 8], [3, 3]).unwrap(), [4, 4]);
    let asym = Conv2dParams::default().with_padding_sides(0, 1, 2, 3).with_stride_hw(2, 1).with_dilation_hw(1, 2);
    // H: ⌊(5 + 0 + 1 − 2 − 1)/2⌋ + 1 = 2; W: ⌊(5 + 2 + 3 − 4 − 1)/1⌋ + 1 = 6.
    assert_eq!(asym.output_size([5, 5], [3, 3]).unwrap(), [2, 6]);
    assert_eq!(Padding::fixed(7).sides(), [3, 3, 3, 3]);
    assert_eq!(Padding::fixed(4).sides(), [1, 2, 1, 2]);
    assert_eq!(Padding::Symmetric([1, 2]).sides(), [1, 1, 2, 2]);
}

#[test]
fn empty_batch_gives_empty_output_and_zero_weight_gradient() {
    let x = Tensor::zeros([0, 3, 5, 5], DType::F64, CPU).unwrap().requires_grad_(true);
    let w = Tensor::ones([2, 3, 3, 3], DType::F64, CPU).unwrap().requires_grad_(true);
    let y = conv2d(&x, &w, None, &Conv2dParams::default()).unwrap();
    assert_eq!(y.dims(), &[0, 2, 3, 3]);
    let store = autograd::grad(&y, &Tensor::zeros_like(&y).unwrap()).unwrap();
    assert_eq!(store.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 54]);
}

#[test]
fn chunks_split_the_batch_evenly_near_the_target() {
    use super::cpu::even_chunks;
    // (batch, target, bound) → images per chunk.
    for (batch, target, bound, want) in [
        (8, 6, 100, 4),  // 14 × 14 maps at batch 8: 4 + 4, not 6 + 2
        (8, 2, 100, 2),  // already even
        (8, 4, 100, 4),  // already even
        (8, 1, 100, 1),  // one image each
        (8, 8, 100, 8),  // the whole batch fits the target: one chunk
        (32, 6, 100, 8), // 4 chunks of 8 (4 × 8 is nearer 6 than 8 × 4 by ratio)
        (32, 6, 5, 4),   // the column bound caps the size
        (7, 6, 100, 4),  // no even split of 7: as equal as two chunks allow (4 + 3)
        (1, 6, 100, 1),
        (5, 1, 100, 1),
    ] {
        assert_eq!(even_chunks(batch, target, bound), want, "batch {batch}, target {target}, bound {bound}");
    }
}
