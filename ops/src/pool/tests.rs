use bitgrad_engine::{DType, Tensor};
use proptest::prelude::*;

use super::*;
use crate::pad::pad2d;
use crate::testing::{distinct, gradcheck, max_rel_diff, named, randn, to_f32, Permuted, CPU};

/// A pooling configuration with a valid output size.
#[derive(Debug, Clone)]
struct Case {
    dims: Vec<usize>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    seed: u64,
}

/// Leading axes 0..=2 of size 1..=3, H and W in 1..=6, kernel 1..=4, stride 1..=4 (so stride >
/// kernel happens), padding 0..=k/2; H and W at least the kernel span minus the padding. One case
/// in four sets H (and W) to the kernel size exactly.
fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(1usize..=3, 0..=2),
        prop::array::uniform2(1usize..=4),
        prop::array::uniform2(1usize..=4),
        prop::array::uniform2(0usize..=2),
        prop::array::uniform2(0usize..=4),
        any::<u64>(),
    )
        .prop_map(|(lead, kernel, stride, pad, extra, seed)| {
            let padding = [pad[0].min(kernel[0] / 2), pad[1].min(kernel[1] / 2)];
            let exact = seed % 4 == 0;
            let size = |a: usize| if exact { kernel[a] } else { (kernel[a] - 2 * padding[a]).max(1) + extra[a] };
            let mut dims = lead;
            dims.extend([size(0), size(1)]);
            Case { dims, kernel, stride, padding, seed }
        })
}

/// Max or average over each window by index arithmetic on the padded coordinates (positions
/// outside the input are skipped for max and count toward the divisor only with `include_pad`).
fn reference(x: &[f64], c: &Case, avg: Option<bool>) -> Vec<f64> {
    let r = c.dims.len();
    let (h, w) = (c.dims[r - 2] as isize, c.dims[r - 1] as isize);
    let planes: usize = c.dims[..r - 2].iter().product();
    let (k, s, p) = (c.kernel.map(|v| v as isize), c.stride.map(|v| v as isize), c.padding.map(|v| v as isize));
    let oh = (h + 2 * p[0] - k[0]) / s[0] + 1;
    let ow = (w + 2 * p[1] - k[1]) / s[1] + 1;
    let mut out = Vec::new();
    for pl in 0..planes as isize {
        for i in 0..oh {
            for j in 0..ow {
                let (mut best, mut sum, mut real, mut padded) = (f64::NEG_INFINITY, 0.0, 0.0, 0.0);
                for di in 0..k[0] {
                    for dj in 0..k[1] {
                        let (y, xx) = (i * s[0] - p[0] + di, j * s[1] - p[1] + dj);
                        if y < h + p[0] && xx < w + p[1] {
                            padded += 1.0;
                        }
                        if (0..h).contains(&y) && (0..w).contains(&xx) {
                            let v = x[((pl * h + y) * w + xx) as usize];
                            best = best.max(v);
                            sum += v;
                            real += 1.0;
                        }
                    }
                }
                out.push(match avg {
                    None => best,
                    Some(true) => sum / padded,
                    Some(false) => sum / real,
                });
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn max_pool_values_and_gradients(c in case()) {
        let x = distinct(&c.dims, c.seed);
        let y = named("max_pool2d", max_pool2d(&x, c.kernel, c.stride, c.padding))?;
        prop_assert_eq!(y.to_vec::<f64>().unwrap(), reference(&x.to_vec::<f64>().unwrap(), &c, None));

        let view = Permuted::from_seed(c.dims.len(), c.seed);
        gradcheck("max_pool2d", &[view.leaf(&x)], |t| max_pool2d(&view.view(&t[0])?, c.kernel, c.stride, c.padding))?;

        let y32 = named("max_pool2d f32", max_pool2d(&to_f32(&x), c.kernel, c.stride, c.padding))?;
        prop_assert_eq!(y32.to_vec_f64().unwrap(), to_f32(&y).to_vec_f64().unwrap());
    }

    #[test]
    fn avg_pool_values_and_gradients(c in case(), include_pad in any::<bool>()) {
        let x = randn(&c.dims, c.seed);
        let y = named("avg_pool2d", avg_pool2d(&x, c.kernel, c.stride, c.padding, include_pad))?;
        let want = reference(&x.to_vec::<f64>().unwrap(), &c, Some(include_pad));
        prop_assert!(max_rel_diff(&y.to_vec::<f64>().unwrap(), &want) < 1e-14);

        let view = Permuted::from_seed(c.dims.len(), c.seed);
        gradcheck("avg_pool2d", &[view.leaf(&x)], |t| {
            avg_pool2d(&view.view(&t[0])?, c.kernel, c.stride, c.padding, include_pad)
        })?;

        let y32 = named("avg_pool2d f32", avg_pool2d(&to_f32(&x), c.kernel, c.stride, c.padding, include_pad))?;
        prop_assert!(max_rel_diff(&y32.to_vec_f64().unwrap(), &want) < 1e-6);
    }

    #[test]
    fn global_avg_pool_values_and_gradients(dims in prop::collection::vec(1usize..=5, 2..=4), seed in any::<u64>()) {
        let x = randn(&dims, seed);
        let y = named("global_avg_pool", global_avg_pool(&x))?;
        prop_assert_eq!(y.dims(), &dims[..dims.len() - 2]);
        let want = x.mean(&[-2, -1], false).unwrap().to_vec::<f64>().unwrap();
        prop_assert!(max_rel_diff(&y.to_vec::<f64>().unwrap(), &want) < 1e-14);

        let view = Permuted::from_seed(dims.len(), seed);
        gradcheck("global_avg_pool", &[view.leaf(&x)], |t| global_avg_pool(&view.view(&t[0])?))?;

        let y32 = named("global_avg_pool f32", global_avg_pool(&to_f32(&x)))?;
        prop_assert!(max_rel_diff(&y32.to_vec_f64().unwrap(), &want) < 1e-6);
    }

    /// relu lives in the engine; checked here with the other activation-path ops.
    #[test]
    fn relu_gradients(dims in prop::collection::vec(1usize..=4, 1..=4), seed in any::<u64>()) {
        let x = distinct(&dims, seed);
        let view = Permuted::from_seed(dims.len(), seed);
        gradcheck("relu", &[view.leaf(&x)], |t| view.view(&t[0])?.relu())?;
    }
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    // As torch.nn.functional.max_pool2d(torch.zeros(1, 1, 3, 3), 2, 1) backward.
    let x = Tensor::zeros([1, 1, 3, 3], DType::F64, CPU).unwrap().requires_grad_(true);
    max_pool2d(&x, [2, 2], [1, 1], [0, 0]).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![1., 1., 0., 1., 1., 0., 0., 0., 0.]);
}

#[test]
fn max_pool_padding_never_wins() {
    // All values negative: with −∞ padding every output is a real (negative) element.
    let x = randn(&[2, 3, 5, 4], 3).abs().unwrap().add_scalar(0.1).unwrap().neg().unwrap();
    let y = max_pool2d(&x, [3, 3], [2, 2], [1, 1]).unwrap().to_vec::<f64>().unwrap();
    assert!(y.iter().all(|&v| v < 0.0 && v.is_finite()), "{y:?}");
}

#[test]
fn max_pool_propagates_nan() {
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 2.0], [1, 1, 2, 2], CPU).unwrap();
    assert!(max_pool2d(&x, [2, 2], [1, 1], [0, 0]).unwrap().to_vec::<f32>().unwrap()[0].is_nan());
}

#[test]
fn half_precision_pools_in_f32() {
    let x = randn(&[1, 2, 4, 4], 5).to_dtype(DType::BF16).unwrap();
    let xf = x.to_dtype(DType::F32).unwrap();
    let y = max_pool2d(&x, [2, 2], [2, 2], [0, 0]).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_eq!(y.to_vec_f64().unwrap(), max_pool2d(&xf, [2, 2], [2, 2], [0, 0]).unwrap().to_vec_f64().unwrap());
    assert_eq!(global_avg_pool(&x).unwrap().dtype(), DType::BF16);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large enough for the parallel paths (≥ 65536 outputs / gradients).
    let x = randn(&[4, 16, 64, 64], 11).to_dtype(DType::F32).unwrap().requires_grad_(true);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let x = x.detach().requires_grad_(true);
            let a = max_pool2d(&x, [3, 3], [1, 1], [1, 1]).unwrap();
            let b = avg_pool2d(&x, [3, 3], [2, 2], [1, 1], false).unwrap();
            let c = global_avg_pool(&x).unwrap();
            let loss = a.sum_all().unwrap().add(&b.sqr().unwrap().sum_all().unwrap()).unwrap();
            let loss = loss.add(&c.sum_all().unwrap()).unwrap();
            loss.backward().unwrap();
            (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), x.grad().unwrap().to_vec::<f32>().unwrap())
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn bad_arguments_are_errors() {
    let x = randn(&[1, 1, 4, 4], 0);
    let msg = |r: bitgrad_engine::Result<Tensor>| r.unwrap_err().to_string();
    assert!(msg(max_pool2d(&x, [3, 3], [1, 1], [2, 2])).contains("at most half"));
    assert!(msg(avg_pool2d(&x, [2, 2], [1, 1], [0, 2], true)).contains("at most half"));
    assert!(msg(max_pool2d(&x, [5, 1], [1, 1], [0, 0])).contains("[1, 1, 4, 4]"));
    assert!(msg(max_pool2d(&x, [0, 1], [1, 1], [0, 0])).contains("positive"));
    assert!(msg(max_pool2d(&x, [1, 1], [1, 0], [0, 0])).contains("positive"));
    assert!(msg(max_pool2d(&randn(&[4], 0), [1, 1], [1, 1], [0, 0])).contains("[4]"));
    let ints = Tensor::zeros([1, 1, 2, 2], DType::I64, CPU).unwrap();
    assert!(msg(max_pool2d(&ints, [1, 1], [1, 1], [0, 0])).contains("i64"));
    assert!(msg(global_avg_pool(&Tensor::zeros([2, 0, 3], DType::F32, CPU).unwrap())).contains("[2, 0, 3]"));
}

/// bit-spec §1.3: BiT's stem zero-pads the conv output by 1 and then max-pools 3×3/2 without
/// padding. That is not `max_pool2d(.., padding 1)`, whose padding is −∞: where a window touches
/// the border and all its real values are negative, the BiT form returns 0 (the pad) instead.
#[test]
fn bit_stem_zero_pad_differs_from_pool_padding() {
    let (k, s) = ([3, 3], [2, 2]);
    let bit_stem = |x: &Tensor| max_pool2d(&pad2d(x, [1, 1, 1, 1], 0.0).unwrap(), k, s, [0, 0]).unwrap();
    let pool_pad = |x: &Tensor| max_pool2d(x, k, s, [1, 1]).unwrap();

    // A "conv output" of 2 channels, 8×7 (even and odd sizes), negative everywhere except a
    // positive blob in the middle: every border window sees only negative values.
    let (h, w) = (8usize, 7usize);
    let mut v = Vec::new();
    for c in 0..2 {
        for i in 0..h {
            for j in 0..w {
                let centre = (2..6).contains(&i) && (2..5).contains(&j);
                let m = 0.5 + 0.1 * ((i * w + j + c) % 5) as f64;
                v.push(if centre { m } else { -m });
            }
        }
    }
    let x = Tensor::from_vec(v, [1, 2, h, w], CPU).unwrap();
    let (a, b) = (bit_stem(&x), pool_pad(&x));
    assert_eq!(a.dims(), b.dims());
    let (oh, ow) = (a.dims()[2], a.dims()[3]);
    assert_eq!((oh, ow), (4, 4));
    let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    // Output (i, j) covers padded rows 2i..2i+2, i.e. input rows 2i−1..2i+1: it touches the pad
    // when 2i − 1 < 0 or 2i + 1 > h − 1.
    let touches = |o: usize, n: usize| o == 0 || 2 * o + 1 > n - 1;
    let mut border_differs = 0;
    for c in 0..2 {
        for i in 0..oh {
            for j in 0..ow {
                let at = (c * oh + i) * ow + j;
                if touches(i, h) || touches(j, w) {
                    // The zero pad is the maximum of an all-negative window; the −∞ pad never wins.
                    assert_eq!(a[at], b[at].max(0.0), "border output ({c}, {i}, {j})");
                    if b[at] < 0.0 {
                        assert_eq!(a[at], 0.0);
                        border_differs += 1;
                    }
                } else {
                    assert_eq!(a[at], b[at], "interior output ({c}, {i}, {j})");
                }
            }
        }
    }
    assert!(border_differs > 0, "the input must exercise the difference");
    assert_ne!(a, b);

    // With all values positive the two forms agree everywhere (max(window, 0) = max(window)).
    let pos = x.abs().unwrap();
    assert_eq!(bit_stem(&pos).to_vec::<f64>().unwrap(), pool_pad(&pos).to_vec::<f64>().unwrap());
}

/// The stem pool's vector kernel (3×3, stride 2, f32; `max_avx2.rs`) against the plain loop,
/// bit for bit in the maxima and their positions: ties, ±0, NaN and infinities, maps wide
/// enough for several vector blocks and narrow enough for none, with and without padding.
#[test]
fn stem_pool_vector_kernel_is_the_plain_loop_bit_for_bit() {
    let specials = [0.0f32, -0.0, 1.0, -1.0, 2.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5];
    let mut s = 7u64;
    let mut checked = 0;
    for (h, w) in [(5, 5), (9, 19), (19, 35), (20, 36), (66, 66), (7, 41)] {
        for pad in [0, 1] {
            let x = Tensor::from_vec(vec![0f32; 3 * h * w], [3, h, w], CPU).unwrap();
            let g = PoolGeom::new("max_pool2d", &x, [3, 3], [2, 2], [pad, pad]).unwrap();
            let data: Vec<f32> = (0..3 * h * w)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let r = s >> 33;
                    // Mostly a few repeated values (ties), some specials, some noise.
                    match r % 8 {
                        0 => specials[(r / 8) as usize % specials.len()],
                        1..=4 => ((r / 8) % 4) as f32,
                        _ => (r % 1000) as f32 / 100.0 - 5.0,
                    }
                })
                .collect();
            let (o, a) = cpu::max_forward::<f32>(&data, &g);
            for p in 0..3 {
                let xp = &data[p * h * w..][..h * w];
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        let (want, at) = cpu::max_output(xp, &g, oh, ow);
                        let k = (p * g.out_h + oh) * g.out_w + ow;
                        assert_eq!(
                            (o[k].to_bits(), a[k]),
                            (want.to_bits(), at),
                            "{h}×{w} pad {pad} plane {p} ({oh}, {ow})"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 2000);
    if !super::max_avx2::applies(
        &PoolGeom::new("max_pool2d", &Tensor::zeros([1, 5, 5], DType::F32, CPU).unwrap(), [3, 3], [2, 2], [0, 0])
            .unwrap(),
    ) {
        eprintln!("no AVX2 at the active level: the plain loop was compared with itself");
    }
}
