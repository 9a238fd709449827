//! conv2d on the emulated GPU against the CPU twin: the output and the gradients of every input
//! (`x`, `w`, `bias`, through `autograd::grad` with a random output gradient) on BiT's layer
//! shapes at small sizes (the 7×7/2 stem, 3×3 stride 1 and 2, 1×1 projections stride 1 — the GEMM
//! path — and stride 2), channel counts that are not multiples of the 64-wide tile, H/W of 1, 3,
//! 7 and 33, dilation, per-side padding, batch 1 and 3, permuted and narrowed (non-contiguous)
//! inputs, a weight gradient whose reduction is split over blocks, f64; f16 and bf16 (native
//! kernels on Emu, f32 with one rounding on the CPU) on the same kinds of shapes, and a check that
//! the half kernels themselves ran; and the error for grouped convolutions.

use bitgrad_engine::gpu::launch_count;
use bitgrad_engine::gpu::test_device;
use bitgrad_engine::{autograd, DType, Device, Rng, Tensor};

use super::{conv2d, Conv2dParams};

/// How the input reaches the op.
#[derive(Debug, Clone, Copy, PartialEq)]
enum View {
    /// A contiguous leaf.
    Plain,
    /// The leaf is stored `[B, H, W, C]` and permuted to `[B, C, H, W]`.
    Permuted,
    /// The leaf is 3 columns wider and narrowed to the middle.
    Narrowed,
}

#[derive(Debug, Clone)]
struct Case {
    x: [usize; 4],
    o: usize,
    k: [usize; 2],
    params: Conv2dParams,
    bias: bool,
    view: View,
}

fn case(x: [usize; 4], o: usize, k: usize, params: Conv2dParams) -> Case {
    Case { x, o, k: [k, k], params, bias: true, view: View::Plain }
}

fn randn(dims: &[usize], seed: u64) -> Vec<f64> {
    Tensor::randn(dims.to_vec(), 0.0, 1.0, DType::F64, Device::Cpu, &mut Rng::new(seed))
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
}

/// `[y, d(leaf x), dw, db]` (db only with a bias) as f64, computed on `device` in `dtype`.
fn run(c: &Case, device: Device, dtype: DType, seed: u64) -> Vec<Vec<f64>> {
    let leaf =
        |v: Vec<f64>, dims: Vec<usize>| Tensor::from_f64_vec(v, dims, dtype, device).unwrap().requires_grad_(true);
    let [b, ch, h, w] = c.x;
    let (x_leaf, x) = match c.view {
        View::Plain => {
            let l = leaf(randn(&c.x, seed), c.x.to_vec());
            (l.clone(), l)
        }
        View::Permuted => {
            let l = leaf(randn(&c.x, seed), vec![b, h, w, ch]);
            let v = l.permute(&[0, 3, 1, 2]).unwrap();
            (l, v)
        }
        View::Narrowed => {
            let l = leaf(randn(&[b, ch, h, w + 3], seed), vec![b, ch, h, w + 3]);
            let v = l.narrow(3, 1, w).unwrap();
            (l, v)
        }
    };
    let wd = vec![c.o, ch / c.params.groups, c.k[0], c.k[1]];
    let wt = leaf(randn(&wd, seed + 1), wd);
    let bias = c.bias.then(|| leaf(randn(&[c.o], seed + 2), vec![c.o]));
    let y = conv2d(&x, &wt, bias.as_ref(), &c.params).unwrap();
    assert_eq!((y.device(), y.dtype()), (device, dtype));
    let yd = y.dims().to_vec();
    let gy = Tensor::from_f64_vec(randn(&yd, seed + 3), yd, dtype, device).unwrap();
    let store = autograd::grad(&y, &gy).unwrap();
    let mut out = vec![y.to_vec_f64().unwrap()];
    for l in [Some(&x_leaf), Some(&wt), bias.as_ref()].into_iter().flatten() {
        let g = store.get(l).expect("gradient reached the leaf");
        assert_eq!((g.device(), g.dtype()), (device, dtype));
        out.push(g.to_vec_f64().unwrap());
    }
    out
}

/// Emu equals the CPU within `tol` relative to each result's largest magnitude.
fn check(c: &Case, dtype: DType, tol: f64) {
    let cpu = run(c, Device::Cpu, dtype, 7);
    let emu = run(c, test_device(), dtype, 7);
    for (what, (a, e)) in ["y", "dx", "dw", "db"].iter().zip(cpu.iter().zip(&emu)) {
        assert_eq!(a.len(), e.len(), "{what} of {c:?}");
        let scale = a.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        for (i, (u, v)) in a.iter().zip(e).enumerate() {
            assert!((u - v).abs() <= tol * scale, "{what}[{i}] of {c:?} in {dtype:?}: cpu {u} vs emu {v}");
        }
    }
}

#[test]
fn bit_layers_match_the_cpu() {
    let cases = [
        // The root conv: 7×7 stride 2, padding 3, 3 → 16 channels.
        case([1, 3, 17, 17], 16, 7, Conv2dParams::new(2, 3)),
        // 3×3 stride 1 and 2 (BiT's fixed padding as per-side padding for the strided one).
        Case { bias: false, ..case([3, 32, 7, 7], 32, 3, Conv2dParams::new(1, 1)) },
        case([1, 24, 9, 9], 24, 3, Conv2dParams::new(2, 1)),
        case([1, 24, 8, 8], 24, 3, Conv2dParams::default().with_stride(2).with_padding_sides(0, 1, 0, 1)),
        // 1×1 projections: stride 1 (the GEMM path; O spans two 64-row tiles) and stride 2.
        case([3, 24, 3, 3], 70, 1, Conv2dParams::default()),
        case([1, 32, 7, 7], 16, 1, Conv2dParams::default().with_stride(2)),
    ];
    for c in &cases {
        check(c, DType::F32, 1e-5);
    }
}

#[test]
fn odd_shapes_match_the_cpu() {
    let cases = [
        // 1×1 images, with and without padding.
        case([3, 5, 1, 1], 7, 1, Conv2dParams::default()),
        case([1, 5, 1, 1], 3, 3, Conv2dParams::new(1, 1)),
        // Dilation 2 with per-side padding; rectangular kernel and stride.
        case([3, 5, 7, 7], 7, 3, Conv2dParams::default().with_dilation(2).with_padding_sides(0, 2, 1, 1)),
        Case {
            k: [3, 2],
            ..case([1, 3, 7, 9], 4, 3, Conv2dParams::default().with_stride_hw(2, 1).with_padding_hw(1, 0))
        },
        // 33×33 with a stride that does not divide the padded size; batch·pixels spans 5 tiles.
        case([1, 2, 33, 33], 3, 3, Conv2dParams::default().with_stride(2).with_padding_sides(1, 1, 0, 2)),
        // A long weight-gradient reduction (3·16·16 pixels): split over blocks, summed in order.
        case([3, 4, 16, 16], 8, 3, Conv2dParams::new(1, 1)),
    ];
    for c in &cases {
        check(c, DType::F32, 1e-5);
    }
}

#[test]
fn non_contiguous_inputs_match_the_cpu() {
    let cases = [
        Case { view: View::Permuted, ..case([3, 6, 5, 5], 5, 3, Conv2dParams::new(1, 1)) },
        Case { view: View::Narrowed, ..case([3, 6, 5, 5], 5, 1, Conv2dParams::default()) },
        Case { view: View::Narrowed, bias: false, ..case([1, 6, 5, 5], 5, 3, Conv2dParams::new(2, 0)) },
    ];
    for c in &cases {
        check(c, DType::F32, 1e-5);
    }
}

#[test]
fn f64_matches_the_cpu() {
    let dilated = case([3, 5, 7, 7], 7, 3, Conv2dParams::default().with_dilation(2).with_padding(2));
    check(&dilated, DType::F64, 1e-12);
    check(&case([3, 6, 4, 4], 6, 1, Conv2dParams::default()), DType::F64, 1e-12);
}

/// Half-precision cases: the stem, 3×3 stride 1 and 2, 1×1 stride 1 (the tiled kernel in half:
/// the GEMM has no half dtypes) over two row tiles, dilation with per-side padding, 33×33, a
/// split weight-gradient reduction, and a permuted input.
fn half_cases() -> Vec<Case> {
    vec![
        case([1, 3, 17, 17], 16, 7, Conv2dParams::new(2, 3)),
        Case { bias: false, ..case([3, 32, 7, 7], 32, 3, Conv2dParams::new(1, 1)) },
        case([1, 24, 8, 8], 24, 3, Conv2dParams::default().with_stride(2).with_padding_sides(0, 1, 0, 1)),
        case([3, 24, 3, 3], 70, 1, Conv2dParams::default()),
        case([3, 5, 7, 7], 7, 3, Conv2dParams::default().with_dilation(2).with_padding_sides(0, 2, 1, 1)),
        case([1, 2, 33, 33], 3, 3, Conv2dParams::default().with_stride(2).with_padding_sides(1, 1, 0, 2)),
        case([3, 4, 16, 16], 8, 3, Conv2dParams::new(1, 1)),
        Case { view: View::Permuted, ..case([3, 6, 5, 5], 5, 3, Conv2dParams::new(1, 1)) },
    ]
}

// The two devices differ by at most one rounding of the half dtype (their f32 sums differ only
// in order): one ulp is at most 2⁻¹⁰ (f16) or 2⁻⁷ (bf16) of the largest result; allow two.

#[test]
fn f16_matches_the_cpu() {
    for c in &half_cases() {
        check(c, DType::F16, 2e-3);
    }
}

#[test]
fn bf16_matches_the_cpu() {
    for c in &half_cases() {
        check(c, DType::BF16, 1.6e-2);
    }
}

/// On a GPU device a half input reaches the half kernels (no f32 round trip), 1×1 stride-1
/// convolutions included, and every result stays in the half dtype.
#[test]
fn half_inputs_run_the_half_kernels() {
    for (dtype, sfx) in [(DType::F16, "f16"), (DType::BF16, "bf16")] {
        for k in [3, 1] {
            let names = ["fwd", "bwd_data", "bwd_weight"].map(|v| format!("conv2d_{v}_{sfx}"));
            let before = names.each_ref().map(|n| launch_count(n));
            // `run` checks that y and every gradient are `dtype` on Emu.
            run(&case([1, 4, 5, 5], 6, k, Conv2dParams::default()), test_device(), dtype, 3);
            for (n, b) in names.iter().zip(before) {
                assert!(launch_count(n) > b, "{n} was not launched for a {k}×{k} convolution in {dtype:?}");
            }
        }
    }
}

#[test]
fn grouped_convolutions_are_an_error_on_gpu_devices() {
    let x = Tensor::zeros([1, 4, 5, 5], DType::F32, test_device()).unwrap();
    let w = Tensor::zeros([4, 2, 3, 3], DType::F32, test_device()).unwrap();
    let err = conv2d(&x, &w, None, &Conv2dParams::default().with_groups(2)).unwrap_err().to_string();
    assert!(err.contains("groups = 2") && err.contains("GPU"), "{err}");
}
