//! Device parity: one test body per primitive, run on every GPU device this machine has — the
//! emulator always, CUDA when a GPU is visible (required when `BITGRAD_TEST_CUDA=1`) — and
//! compared with the CPU on the same random inputs: odd sizes (1, 31, 33, 1023, 4097 elements),
//! broadcast operands and non-contiguous views.

use bitgrad_engine::gpu;
use bitgrad_engine::{DType, Device, Result, Rng, Tensor};

/// The devices to check against the CPU.
fn devices() -> Vec<Device> {
    let mut d = vec![Device::Emu];
    let want_cuda = std::env::var("BITGRAD_TEST_CUDA").is_ok_and(|v| v == "1");
    match gpu::runtime(Device::Cuda(0)) {
        Ok(_) => d.push(Device::Cuda(0)),
        Err(e) if want_cuda => panic!("BITGRAD_TEST_CUDA=1 but CUDA is not usable: {e}"),
        Err(e) => eprintln!("cuda: skipped ({e})"),
    }
    d
}

const SIZES: [usize; 5] = [1, 31, 33, 1023, 4097];

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape.to_vec(), 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

/// Asserts `got` (any device) equals `want` (CPU) within `tol` of the larger of 1 and |want|,
/// NaNs in the same places.
fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if b.is_nan() || a.is_nan() {
            assert!(a.is_nan() && b.is_nan(), "{what}[{i}]: got {a}, want {b}");
        } else if b.is_infinite() || a.is_infinite() {
            assert_eq!(a, b, "{what}[{i}]");
        } else {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}[{i}]: got {a}, want {b}");
        }
    }
}

fn assert_bits(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{what}[{i}]: got {a}, want {b}");
    }
}

/// Runs `f` on the CPU inputs and on copies of them on each device; compares within `tol`.
fn parity(what: &str, inputs: &[Tensor], tol: f64, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let want = f(inputs).unwrap_or_else(|e| panic!("{what} on cpu: {e}"));
    for d in devices() {
        let on: Vec<Tensor> = inputs.iter().map(|t| t.to_device(d).unwrap()).collect();
        let got = f(&on).unwrap_or_else(|e| panic!("{what} on {d}: {e}"));
        assert_eq!(got.device(), d, "{what}: result stays on the device");
        assert_close(&got, &want, tol, &format!("{what} on {d}"));
    }
}

type Unary = fn(&Tensor) -> Result<Tensor>;
const UNARY: &[(&str, Unary)] = &[
    ("neg", |x| x.neg()),
    ("exp", |x| x.exp()),
    ("log", |x| x.log()),
    ("sqrt", |x| x.sqrt()),
    ("rsqrt", |x| x.rsqrt()),
    ("recip", |x| x.recip()),
    ("sqr", |x| x.sqr()),
    ("relu", |x| x.relu()),
    ("sigmoid", |x| x.sigmoid()),
    ("tanh", |x| x.tanh()),
    ("abs", |x| x.abs()),
    ("sign", |x| x.sign()),
    ("powf", |x| x.abs()?.powf(1.7)),
    ("affine", |x| x.affine(-1.5, 0.25)),
];

#[test]
fn unary_ops_on_odd_sizes_and_views() {
    for (i, &n) in SIZES.iter().enumerate() {
        let x = randn(&[n], i as u64);
        for &(name, f) in UNARY {
            // Contiguous (log/sqrt of negatives: NaN on both sides).
            parity(&format!("{name}[{n}]"), std::slice::from_ref(&x), 4e-6, |v| f(&v[0]));
        }
    }
    // A contiguous view whose input is 16-byte aligned but whose (end-aligned, guarded) output
    // is not: the float4 path must check both sides (a bug the guard mode caught).
    let x = randn(&[2, 2, 3], 8);
    parity("neg of narrow(0, 0, 1)", std::slice::from_ref(&x), 0.0, |v| v[0].narrow(0, 0, 1)?.neg());
    parity("add of narrow(0, 0, 1)", std::slice::from_ref(&x), 0.0, |v| {
        v[0].narrow(0, 0, 1)?.add(&v[0].narrow(0, 1, 1)?)
    });
    // Non-contiguous: a transposed and a narrowed view, and one starting at an odd offset
    // (misaligned for the float4 path).
    let m = randn(&[33, 31], 7);
    for &(name, f) in UNARY {
        parity(&format!("{name} of transpose"), std::slice::from_ref(&m), 4e-6, |v| f(&v[0].t()?));
        parity(&format!("{name} of narrow"), std::slice::from_ref(&m), 4e-6, |v| f(&v[0].narrow(1, 3, 17)?));
        parity(&format!("{name} at offset 1"), std::slice::from_ref(&m), 4e-6, |v| {
            f(&v[0].reshape([33 * 31])?.narrow(0, 1, 1022)?)
        });
    }
}

#[test]
fn unary_ops_in_every_float_dtype() {
    let x = randn(&[1023], 3);
    for dt in [DType::F64, DType::F16, DType::BF16] {
        for &(name, f) in UNARY {
            let tol = match dt {
                DType::F64 => 1e-12,
                _ => 1e-2, // one half-precision ulp at most: both sides round the same f32 once
            };
            parity(&format!("{name} {dt}"), &[x.to_dtype(dt).unwrap()], tol, |v| f(&v[0]));
        }
    }
}

#[test]
fn binary_ops_broadcast_and_views() {
    type Binary = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let ops: &[(&str, Binary)] = &[
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
    ];
    let shapes: &[(&[usize], &[usize])] = &[
        (&[1], &[1]),
        (&[31], &[31]),
        (&[4097], &[4097]),
        (&[1023], &[1]),
        (&[33, 1], &[1, 31]),
        (&[3, 1, 33], &[7, 1]),
        (&[2, 3, 4, 5, 6], &[5, 1]),
    ];
    for (k, &(sa, sb)) in shapes.iter().enumerate() {
        let (a, b) = (randn(sa, 10 + k as u64), randn(sb, 20 + k as u64));
        for &(name, f) in ops {
            parity(&format!("{name} {sa:?} {sb:?}"), &[a.clone(), b.clone()], 1e-6, |v| f(&v[0], &v[1]));
        }
    }
    // Permuted lhs, narrowed rhs; and f64 / f16.
    let (a, b) = (randn(&[31, 33], 1), randn(&[33, 40], 2));
    parity("add of views", &[a.clone(), b.clone()], 1e-6, |v| v[0].t()?.add(&v[1].narrow(1, 5, 31)?));
    for dt in [DType::F64, DType::F16, DType::BF16] {
        let (x, y) = (a.to_dtype(dt).unwrap(), a.t().unwrap().contiguous().unwrap().to_dtype(dt).unwrap());
        parity(&format!("mul {dt}"), &[x, y], 1e-2, |v| v[0].mul(&v[1].t()?));
    }
}

#[test]
fn comparisons_and_where() {
    let (a, b) = (randn(&[33, 31], 4), randn(&[31], 5));
    let a = a.narrow(0, 0, 32).unwrap(); // ties: compare a with itself below
    parity("lt", &[a.clone(), b.clone()], 0.0, |v| v[0].lt(&v[1]));
    parity("ge", &[a.clone(), b.clone()], 0.0, |v| v[0].ge(&v[1]));
    parity("eq self", std::slice::from_ref(&a), 0.0, |v| v[0].eq(&v[0].t()?.t()?));
    parity("where", &[a.clone(), b.clone()], 0.0, |v| Tensor::where_cond(&v[0].gt(&v[1])?, &v[0], &v[1].exp()?));
    parity("masked where f64", &[a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap()], 0.0, |v| {
        Tensor::where_cond(&v[0].le(&v[1])?, &v[0].t()?.t()?, &v[1])
    });
}

#[test]
fn reductions_over_axes() {
    for &n in &SIZES {
        let x = randn(&[n], n as u64);
        parity(&format!("sum[{n}]"), std::slice::from_ref(&x), 1e-6, |v| v[0].sum_all());
        parity(&format!("max[{n}]"), std::slice::from_ref(&x), 0.0, |v| v[0].max(&[0], false));
        parity(&format!("argmin[{n}]"), std::slice::from_ref(&x), 0.0, |v| v[0].argmin(0, false));
    }
    // Long rows (block per output) and short ones (thread per output), over any axes of views.
    let x = randn(&[5, 300, 7], 11);
    for axes in [vec![0isize], vec![1], vec![2], vec![0, 2], vec![1, 2], vec![0, 1, 2]] {
        parity(&format!("sum {axes:?}"), std::slice::from_ref(&x), 1e-5, |v| v[0].sum(&axes, false));
        parity(&format!("mean {axes:?}"), std::slice::from_ref(&x), 1e-5, |v| v[0].mean(&axes, true));
        parity(&format!("min {axes:?}"), std::slice::from_ref(&x), 0.0, |v| v[0].min(&axes, false));
        parity(&format!("sum of permuted {axes:?}"), std::slice::from_ref(&x), 1e-5, |v| {
            v[0].permute(&[2, 0, 1])?.sum(&axes, false)
        });
    }
    for axis in [0isize, 1, 2] {
        parity(&format!("argmax {axis}"), std::slice::from_ref(&x), 0.0, |v| v[0].argmax(axis, false));
        parity(&format!("var {axis}"), std::slice::from_ref(&x), 1e-5, |v| v[0].var(&[axis], false, true));
    }
    // Ties keep the first index; NaN wins.
    let t = Tensor::from_vec(vec![1.0f32, 3.0, 3.0, 2.0, f32::NAN, 5.0, 0.0, 0.0, -1.0], [3, 3], Device::Cpu).unwrap();
    parity("argmax ties/nan", std::slice::from_ref(&t), 0.0, |v| v[0].argmax(1, false));
    parity("max ties/nan", std::slice::from_ref(&t), 0.0, |v| v[0].max(&[0], false));
    parity("argmin over 300", &[randn(&[2, 300], 1).to_dtype(DType::F64).unwrap()], 0.0, |v| v[0].argmin(1, false));
    parity("sum f16", &[x.to_dtype(DType::F16).unwrap()], 1e-3, |v| v[0].sum(&[1], false));
}

#[test]
fn copies_cat_and_casts() {
    let x = randn(&[4, 33, 31], 9);
    parity("contiguous of permute", std::slice::from_ref(&x), 0.0, |v| v[0].permute(&[2, 0, 1])?.contiguous());
    parity("cat of views", std::slice::from_ref(&x), 0.0, |v| {
        Tensor::cat(&[&v[0].narrow(1, 0, 3)?, &v[0].narrow(1, 10, 20)?.contiguous()?, &v[0].narrow(1, 5, 1)?], 1)
    });
    parity("stack", std::slice::from_ref(&x), 0.0, |v| Tensor::stack(&[&v[0].t()?, &v[0].t()?.exp()?], 0));
    // Casts: every pair, on values that exercise rounding, saturation, NaN and infinities —
    // bit-identical to the CPU.
    let special = vec![
        0.0,
        -0.0,
        1.0,
        -1.5,
        2.5,
        3.5,
        65504.0,
        65520.0,
        1e-8,
        6e-8,
        3e-5,
        1e30,
        -1e30,
        300.0,
        255.9,
        -3.7,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1.0 / 3.0,
        123456789.123,
        9.3e18,
        -9.3e18,
        5.960464477539063e-8,
        2.980232238769531e-8,
        1.1754943508222875e-38,
        1e-40,
    ];
    let all = [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::U8];
    let base = Tensor::from_vec(special.clone(), [special.len()], Device::Cpu).unwrap();
    for from in all {
        let src = base.to_dtype(from).unwrap();
        for to in all {
            let want = src.to_dtype(to).unwrap();
            for d in devices() {
                let got = src.to_device(d).unwrap().to_dtype(to).unwrap();
                assert_bits(&got, &want, &format!("cast {from} → {to} on {d}"));
                // And from a strided view.
                let got = src.to_device(d).unwrap().narrow(0, 1, 20).unwrap().to_dtype(to).unwrap();
                assert_bits(&got, &want.narrow(0, 1, 20).unwrap(), &format!("cast view {from} → {to} on {d}"));
            }
        }
    }
}

#[test]
fn matmul_through_the_runtime_gemm() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1], &[1, 1]),
        (&[31, 33], &[33, 17]),
        (&[2, 1, 5, 7], &[3, 7, 4]),
        (&[4097, 3], &[3, 2]),
        (&[8], &[8, 3]),
    ];
    for (i, &(sa, sb)) in cases.iter().enumerate() {
        let (a, b) = (randn(sa, 30 + i as u64), randn(sb, 40 + i as u64));
        parity(&format!("matmul {sa:?}×{sb:?}"), &[a.clone(), b.clone()], 1e-5, |v| v[0].matmul(&v[1]));
        parity(
            &format!("matmul f64 {sa:?}×{sb:?}"),
            &[a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap()],
            1e-12,
            |v| v[0].matmul(&v[1]),
        );
    }
    // Transposed operands go in place (Op::T); a view with no unit stride is copied first.
    let (a, b) = (randn(&[33, 31], 1), randn(&[17, 33], 2));
    parity("matmul aᵀ bᵀ", &[a.clone(), b.clone()], 1e-5, |v| v[0].t()?.matmul(&v[1].t()?));
    parity("matmul strided", &[a.clone(), b.clone()], 1e-5, |v| {
        v[0].narrow(0, 0, 32)?.reshape([16, 2, 31])?.narrow(1, 0, 1)?.squeeze(1)?.matmul(&v[1].t()?.narrow(0, 0, 31)?)
    });
    parity("matmul f16", &[a.to_dtype(DType::F16).unwrap(), b.to_dtype(DType::F16).unwrap()], 2e-2, |v| {
        v[0].t()?.matmul(&v[1].t()?)
    });
}

#[test]
fn softmax_along_every_axis() {
    let x = randn(&[3, 33, 31], 12);
    for axis in [0isize, 1, 2] {
        parity(&format!("softmax {axis}"), std::slice::from_ref(&x), 2e-6, |v| v[0].softmax(axis));
        parity(&format!("log_softmax {axis}"), std::slice::from_ref(&x), 4e-6, |v| v[0].log_softmax(axis));
        parity(&format!("softmax of permute {axis}"), std::slice::from_ref(&x), 2e-6, |v| {
            v[0].permute(&[1, 2, 0])?.softmax(axis)
        });
    }
    parity("softmax long rows", &[randn(&[2, 4097], 13)], 2e-6, |v| v[0].softmax(1));
    parity("log_softmax f64", &[x.to_dtype(DType::F64).unwrap()], 1e-12, |v| v[0].log_softmax(1));
    let inf = Tensor::from_vec(vec![f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY], [2, 2], Device::Cpu)
        .unwrap();
    parity("softmax with -inf", &[inf], 1e-6, |v| v[0].softmax(1));
}

#[test]
fn fill_arange_and_random_numbers() {
    for d in devices() {
        for dt in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::U8] {
            assert_bits(
                &Tensor::full(2.7, [33], dt, d).unwrap(),
                &Tensor::full(2.7, [33], dt, Device::Cpu).unwrap(),
                "full",
            );
            assert_bits(&Tensor::zeros([31], dt, d).unwrap(), &Tensor::zeros([31], dt, Device::Cpu).unwrap(), "zeros");
            let (a, b) = (
                Tensor::arange(-3.0, 7.5, 0.25, dt, d).unwrap(),
                Tensor::arange(-3.0, 7.5, 0.25, dt, Device::Cpu).unwrap(),
            );
            assert_bits(&a, &b, "arange");
        }
        for dt in [DType::F32, DType::F64, DType::BF16] {
            let (mut r1, mut r2) = (Rng::new(5), Rng::new(5));
            let (a, b) = (
                Tensor::randn([4097], 0.5, 2.0, dt, d, &mut r1).unwrap(),
                Tensor::randn([4097], 0.5, 2.0, dt, Device::Cpu, &mut r2).unwrap(),
            );
            // Emu runs the host's libm: identical. A GPU's f64 log/cos may differ in the last bit.
            if d == Device::Emu {
                assert_bits(&a, &b, "randn");
            } else {
                assert_close(&a, &b, 1e-6, "randn");
            }
            let (a, b) = (
                Tensor::rand([1023], -1.0, 3.0, dt, d, &mut r1).unwrap(),
                Tensor::rand([1023], -1.0, 3.0, dt, Device::Cpu, &mut r2).unwrap(),
            );
            assert_bits(&a, &b, "rand after randn (offsets advance alike)");
            assert_eq!(r1, r2);
        }
    }
}

#[test]
fn index_select_gather_and_their_gradients() {
    let x = randn(&[5, 33, 3], 14);
    let ids = Tensor::from_vec(vec![4i64, 0, 0, 2, 4, 1], [6], Device::Cpu).unwrap();
    let gi: Vec<i64> = (0..5 * 7 * 3).map(|i| (i * 7 % 33) as i64).collect();
    let index = Tensor::from_vec(gi, [5, 7, 3], Device::Cpu).unwrap();
    for d in devices() {
        for (name, f) in [
            (
                "index_select",
                Box::new(|x: &Tensor, i: &Tensor| x.index_select(0, i))
                    as Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor>>,
            ),
            ("gather", Box::new(|x: &Tensor, i: &Tensor| x.gather(1, i))),
        ] {
            let i = if name == "gather" { &index } else { &ids };
            let run = |dev: Device| {
                let leaf = x.to_device(dev).unwrap().requires_grad_(true);
                let y = f(&leaf.permute(&[0, 1, 2]).unwrap(), &i.to_device(dev).unwrap()).unwrap();
                let w = Tensor::arange(0.0, y.numel() as f64, 1.0, DType::F32, dev)
                    .unwrap()
                    .reshape(y.dims().to_vec())
                    .unwrap();
                y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                (y, leaf.grad().unwrap())
            };
            let (yw, gw) = run(Device::Cpu);
            let (yg, gg) = run(d);
            assert_close(&yg, &yw, 0.0, &format!("{name} on {d}"));
            assert_close(&gg, &gw, 1e-6, &format!("{name} gradient on {d}"));
        }
    }
}

#[test]
fn autograd_runs_on_the_device() {
    // A two-layer network: every primitive's backward (matmul, broadcast sums, relu, log_softmax,
    // gather) runs on the device, and the gradients equal the CPU's.
    let mut rng = Rng::new(1);
    let x = Tensor::randn([16, 7], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let w1 = Tensor::randn([7, 33], 0.0, 0.5, DType::F32, Device::Cpu, &mut rng).unwrap();
    let b1 = Tensor::randn([33], 0.0, 0.1, DType::F32, Device::Cpu, &mut rng).unwrap();
    let w2 = Tensor::randn([33, 5], 0.0, 0.5, DType::F32, Device::Cpu, &mut rng).unwrap();
    let labels = Tensor::from_vec((0..16).map(|i| (i % 5) as i64).collect::<Vec<_>>(), [16, 1], Device::Cpu).unwrap();
    let run = |d: Device| -> Vec<Tensor> {
        let ps: Vec<Tensor> = [&w1, &b1, &w2].iter().map(|p| p.to_device(d).unwrap().requires_grad_(true)).collect();
        let h = x.to_device(d).unwrap().matmul(&ps[0]).unwrap().add(&ps[1]).unwrap().relu().unwrap();
        let logp = h.matmul(&ps[2]).unwrap().log_softmax(1).unwrap();
        let loss = logp.gather(1, &labels.to_device(d).unwrap()).unwrap().mean_all().unwrap().neg().unwrap();
        loss.backward().unwrap();
        let mut out = vec![loss];
        out.extend(ps.iter().map(|p| p.grad().expect("a gradient")));
        out
    };
    let want = run(Device::Cpu);
    for d in devices() {
        for (i, (g, w)) in run(d).iter().zip(&want).enumerate() {
            assert_eq!(g.device(), d);
            assert_close(g, w, 1e-5, &format!("network output/gradient {i} on {d}"));
        }
    }
}

#[test]
fn moving_between_devices_is_differentiable_and_copies_only_the_view() {
    let x = randn(&[33, 31], 15).requires_grad_(true);
    for d in devices() {
        let v = x.narrow(1, 2, 5).unwrap().to_device(d).unwrap();
        assert_eq!(v.device(), d);
        assert_eq!(v.storage().len(), 33 * 5, "only the view's elements travel");
        let back = v.exp().unwrap().to_device(Device::Cpu).unwrap();
        back.sum_all().unwrap().backward().unwrap();
        let g = x.grad().unwrap();
        assert_eq!(g.device(), Device::Cpu);
        let want = x.narrow(1, 2, 5).unwrap().exp().unwrap();
        assert_close(&g.narrow(1, 2, 5).unwrap(), &want, 1e-6, "gradient through to_device");
        x.zero_grad();
    }
}

#[test]
fn mixing_devices_is_an_error_not_a_panic() {
    let a = randn(&[3], 1);
    let b = a.to_device(Device::Emu).unwrap();
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("device mismatch") && e.contains("emu"), "{e}");
    let e = b.with_cpu_slice::<f32, _>(|_| ()).unwrap_err().to_string();
    assert!(e.contains("on emu") && e.contains("to_device"), "{e}");
    assert!(b.to_dtype(DType::I64).unwrap().exp().is_err(), "exp of i64 on a GPU device is refused");
}
