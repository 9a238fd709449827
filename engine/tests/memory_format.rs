//! The channels-last memory format: predicates and conversions (views, slices, size-1 axes),
//! elementwise ops that keep the format and give the NCHW results bit for bit, gradients in the
//! input's format, no copy where none is promised, and the same API on the emulator.

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{DType, Device, Layout, MemoryFormat, Result, Rng, Tensor};

const CL: MemoryFormat = MemoryFormat::ChannelsLast;
const NCHW: MemoryFormat = MemoryFormat::Contiguous;

fn randn(dims: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), 0.0, 1.0, dtype, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

/// Values in [0.5, 2) (for log, sqrt, recip, powf).
fn positive(dims: &[usize], seed: u64) -> Tensor {
    randn(dims, DType::F32, seed).abs().unwrap().affine(0.5, 0.5).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn assert_same_values(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert_eq!(bits(got), bits(want), "{what}: values");
}

#[test]
fn conversion_keeps_values_and_sets_strides() {
    let x = randn(&[2, 3, 4, 5], DType::F32, 1);
    assert_eq!(x.memory_format(), NCHW);
    let y = x.to_memory_format(CL).unwrap();
    assert_eq!(y.layout().strides(), &[60, 1, 15, 3]);
    assert!(y.is_channels_last() && !y.is_contiguous());
    assert_eq!(y.memory_format(), CL);
    assert_same_values(&y, &x, "channels-last copy");
    // The storage really is NHWC: the buffer read flat is the NHWC permutation read row-major.
    let flat = y.with_layout(Layout::contiguous([120])).to_vec::<f32>().unwrap();
    assert_eq!(flat, x.permute(&[0, 2, 3, 1]).unwrap().contiguous().unwrap().to_vec::<f32>().unwrap());
    // Back to NCHW.
    let z = y.to_memory_format(NCHW).unwrap();
    assert!(z.is_contiguous() && !z.same_storage(&y));
    assert_same_values(&z, &x, "round trip");
    // `contiguous()` means NCHW, as in PyTorch.
    assert!(y.contiguous().unwrap().is_contiguous());
}

#[test]
fn conversion_to_the_current_format_is_the_same_tensor() {
    let x = randn(&[2, 3, 4, 5], DType::F32, 2);
    let same = x.to_memory_format(NCHW).unwrap();
    assert_eq!(same.id(), x.id());
    let y = x.to_memory_format(CL).unwrap();
    let again = y.to_memory_format(CL).unwrap();
    assert_eq!(again.id(), y.id());
    // Size-1 axes: C = 1 or H = W = 1 tensors are already in both formats, so no copy.
    for dims in [[2, 1, 4, 5], [2, 3, 1, 1], [1, 1, 1, 1]] {
        let t = randn(&dims, DType::F32, 3);
        assert!(t.is_contiguous() && t.is_channels_last(), "{dims:?}");
        assert_eq!(t.to_memory_format(CL).unwrap().id(), t.id(), "{dims:?}");
        assert_eq!(t.memory_format(), NCHW, "{dims:?}: row-major suggests contiguous");
    }
}

#[test]
fn channels_last_needs_four_axes() {
    for dims in [vec![3], vec![2, 3], vec![2, 3, 4], vec![1, 2, 3, 4, 5]] {
        let t = randn(&dims, DType::F32, 4);
        let err = t.to_memory_format(CL).unwrap_err().to_string();
        assert!(err.contains("4-d") && err.contains("channels_last"), "{err}");
        assert!(!t.is_channels_last());
        assert_eq!(t.memory_format(), NCHW);
        // Contiguous works at any rank.
        assert!(t.to_memory_format(NCHW).is_ok());
    }
}

#[test]
fn views_and_slices() {
    let x = randn(&[2, 3, 4, 5], DType::F32, 5).to_memory_format(CL).unwrap();
    // A slice along H or W keeps the NHWC stride order but has gaps.
    let s = x.narrow(2, 1, 2).unwrap();
    assert!(!s.is_channels_last() && s.same_storage(&x));
    assert_eq!(s.memory_format(), CL);
    let dense = s.to_memory_format(CL).unwrap();
    assert!(dense.is_channels_last() && !dense.same_storage(&x));
    assert_same_values(&dense, &s, "slice made dense");
    // A slice along N or C... N stays dense channels-last; C does not.
    assert!(x.narrow(0, 1, 1).unwrap().is_channels_last());
    assert!(!x.narrow(1, 0, 2).unwrap().is_channels_last());
    // Elementwise on a slice (not dense): the output is a fresh row-major tensor... in NHWC order
    // only if dense, so here it is NCHW-contiguous with the same values.
    let e = s.neg().unwrap();
    assert!(e.is_contiguous());
    assert_same_values(&e, &s.contiguous().unwrap().neg().unwrap(), "neg of a slice");
    // permute(0, 2, 3, 1) of a channels-last tensor is a row-major NHWC view: no copy.
    let nhwc = x.permute(&[0, 2, 3, 1]).unwrap();
    assert!(nhwc.is_contiguous() && nhwc.same_storage(&x));
    // A channels-last [N, C, 1, 1] (a pooled map) suggests channels-last, as in PyTorch.
    let p = Tensor::zeros([2, 3, 1, 1], DType::F32, Device::Cpu).unwrap();
    let pl = p.with_layout(Layout::channels_last([2, 3, 1, 1]).unwrap());
    assert_eq!(pl.memory_format(), CL);
    assert!(pl.is_contiguous() && pl.is_channels_last());
}

type Unary = fn(&Tensor) -> Result<Tensor>;

#[test]
fn unary_ops_keep_the_format_and_the_values() {
    let ops: [(&str, Unary, bool); 15] = [
        ("neg", |t| t.neg(), false),
        ("exp", |t| t.exp(), false),
        ("log", |t| t.log(), true),
        ("sqrt", |t| t.sqrt(), true),
        ("rsqrt", |t| t.rsqrt(), true),
        ("recip", |t| t.recip(), true),
        ("sqr", |t| t.sqr(), false),
        ("relu", |t| t.relu(), false),
        ("sigmoid", |t| t.sigmoid(), false),
        ("tanh", |t| t.tanh(), false),
        ("abs", |t| t.abs(), false),
        ("sign", |t| t.sign(), false),
        ("powf", |t| t.powf(1.7), true),
        ("affine", |t| t.affine(0.3, -1.0), false),
        ("to_dtype f64", |t| t.to_dtype(DType::F64), false),
    ];
    for (name, op, pos) in ops {
        let x = if pos { positive(&[2, 5, 3, 7], 6) } else { randn(&[2, 5, 3, 7], DType::F32, 6) };
        let xl = x.to_memory_format(CL).unwrap();
        let (want, got) = (op(&x).unwrap(), op(&xl).unwrap());
        assert!(got.is_channels_last() && !got.is_contiguous(), "{name}: output strides {:?}", got.layout().strides());
        assert_same_values(&got, &want, name);
    }
    // Half casts too (f32 → bf16 → f32).
    let xl = randn(&[2, 5, 3, 7], DType::F32, 7).to_memory_format(CL).unwrap();
    let h = xl.to_dtype(DType::BF16).unwrap();
    assert!(h.is_channels_last());
    assert_same_values(&h, &xl.contiguous().unwrap().to_dtype(DType::BF16).unwrap(), "to bf16");
}

type Binary = fn(&Tensor, &Tensor) -> Result<Tensor>;

#[test]
fn binary_ops_keep_the_format_with_and_without_broadcasting() {
    let ops: [(&str, Binary); 6] = [
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
    ];
    let dims = [3, 4, 5, 6];
    let a = randn(&dims, DType::F32, 8);
    let al = a.to_memory_format(CL).unwrap();
    // Same shape (both channels-last), a per-channel [1, C, 1, 1] and [C, 1, 1], a row [W],
    // a scalar, and an NCHW operand.
    let full = positive(&dims, 9);
    let others = [
        ("channels-last", full.clone(), full.to_memory_format(CL).unwrap()),
        ("[1, C, 1, 1]", positive(&[1, 4, 1, 1], 10), positive(&[1, 4, 1, 1], 10)),
        ("[C, 1, 1]", positive(&[4, 1, 1], 11), positive(&[4, 1, 1], 11)),
        ("[W]", positive(&[6], 12), positive(&[6], 12)),
        ("scalar", positive(&[], 13), positive(&[], 13)),
        ("nchw", full.clone(), full.clone()),
    ];
    for (name, op) in ops {
        for (what, b, bl) in &others {
            let want = op(&a, b).unwrap();
            let got = op(&al, bl).unwrap();
            assert!(got.is_channels_last() && !got.is_contiguous(), "{name} with {what}");
            assert_same_values(&got, &want, &format!("{name} with {what}"));
            // The other operand first: a broadcast one does not decide the output's strides, a
            // full-shape NCHW one does (the first dense full-shape operand wins, as in PyTorch).
            let got = op(bl, &al).unwrap();
            if *what == "nchw" {
                assert!(got.is_contiguous(), "{name}: {what} first");
            } else {
                assert!(got.is_channels_last() && !got.is_contiguous(), "{name}: {what} first");
            }
            assert_same_values(&got, &op(b, &a).unwrap(), &format!("{name}: {what} first"));
        }
    }
    // An NCHW first operand wins over a channels-last second (the first dense one decides).
    assert!(a.add(&al).unwrap().is_contiguous());
    // Comparisons and where.
    let m = al.gt(&full.to_memory_format(CL).unwrap()).unwrap();
    assert!(m.is_channels_last());
    assert_same_values(&m, &a.gt(&full).unwrap(), "gt");
    let w = Tensor::where_cond(&m, &al, &Tensor::scalar(0.0, DType::F32, Device::Cpu).unwrap()).unwrap();
    assert!(w.is_channels_last());
    let want = Tensor::where_cond(&a.gt(&full).unwrap(), &a, &Tensor::scalar(0.0, DType::F32, Device::Cpu).unwrap());
    assert_same_values(&w, &want.unwrap(), "where_cond");
}

#[test]
fn transposed_dense_tensors_keep_their_strides_too() {
    // The rule is general: any dense permutation is preserved, as with PyTorch's preserve_format.
    let a = randn(&[4, 6], DType::F64, 14);
    let at = a.t().unwrap();
    let y = at.exp().unwrap().add(&at).unwrap();
    assert_eq!(y.layout().strides(), at.layout().strides());
    assert_same_values(&y, &at.contiguous().unwrap().exp().unwrap().add(&at.contiguous().unwrap()).unwrap(), "t");
}

#[test]
fn gradients_come_back_in_the_input_format() {
    let x = randn(&[2, 3, 4, 5], DType::F64, 15).to_memory_format(CL).unwrap().requires_grad_(true);
    let b = randn(&[1, 3, 1, 1], DType::F64, 16).requires_grad_(true);
    let y = x.mul(&x).unwrap().add(&b).unwrap().relu().unwrap().sigmoid().unwrap();
    y.sum_all().unwrap().backward().unwrap();
    let gx = x.grad().unwrap();
    assert!(gx.is_channels_last() && !gx.is_contiguous(), "leaf gradient strides {:?}", gx.layout().strides());
    assert_eq!(b.grad().unwrap().dims(), &[1, 3, 1, 1]);

    // The same graph in NCHW gives the same gradients.
    let xn = x.detach().contiguous().unwrap().requires_grad_(true);
    let bn = b.detach().requires_grad_(true);
    xn.mul(&xn).unwrap().add(&bn).unwrap().relu().unwrap().sigmoid().unwrap().sum_all().unwrap().backward().unwrap();
    assert_same_values(&gx, &xn.grad().unwrap(), "dx");
    // db sums over N, H, W: the same logical order, but the CPU reduction adds a unit-stride run
    // in four lanes and a strided one in one, so the last bit may differ between layouts.
    let (g1, g2) = (b.grad().unwrap().to_vec::<f64>().unwrap(), bn.grad().unwrap().to_vec::<f64>().unwrap());
    for (p, q) in g1.iter().zip(&g2) {
        assert!((p - q).abs() <= 1e-13 * q.abs().max(1.0), "db: {p} vs {q}");
    }

    // Through a conversion: an NCHW leaf gets an NCHW gradient, a channels-last one a
    // channels-last gradient, whatever format the gradient arrived in.
    let n = randn(&[2, 3, 4, 5], DType::F64, 17).requires_grad_(true);
    n.to_memory_format(CL).unwrap().exp().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(n.grad().unwrap().is_contiguous() && !n.grad().unwrap().is_channels_last());
    let c = randn(&[2, 3, 4, 5], DType::F64, 18).to_memory_format(CL).unwrap().requires_grad_(true);
    c.to_memory_format(NCHW).unwrap().exp().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(c.grad().unwrap().is_channels_last());
}

#[test]
fn gradcheck_through_channels_last() {
    let x = randn(&[2, 3, 2, 3], DType::F64, 19);
    let b = randn(&[1, 3, 1, 1], DType::F64, 20);
    let f = |t: &[Tensor]| -> Result<Tensor> {
        let xl = t[0].to_memory_format(CL)?;
        let y = xl.mul(&xl.tanh()?)?.add(&t[1])?.to_memory_format(NCHW)?;
        y.div(&t[1].exp()?)
    };
    check_gradients(f, &[x, b], GradCheck::default()).unwrap();
}

#[test]
fn no_copy_where_none_is_promised() {
    let x = randn(&[2, 3, 4, 5], DType::F32, 21).to_memory_format(CL).unwrap();
    // Converting to the format it has is the same handle; views share the storage.
    let same = x.to_memory_format(CL).unwrap();
    assert!(same.id() == x.id() && same.same_storage(&x));
    let before = x.storage_refcount();
    let v = x.narrow(0, 0, 1).unwrap();
    assert!(v.same_storage(&x));
    assert_eq!(x.storage_refcount(), before + 1);
    // An elementwise op makes exactly one new buffer, already channels-last: the output's
    // storage holds exactly numel elements (no NCHW intermediate kept around).
    let y = x.exp().unwrap();
    assert!(!y.same_storage(&x));
    assert_eq!(y.storage_refcount(), 1);
    assert_eq!(y.storage().len(), y.numel());
    assert!(y.is_channels_last());
}

/// The same API on the emulator: conversion, elementwise ops and their gradients.
#[test]
fn emulator_keeps_the_format() {
    let dev = Device::Emu;
    let x = randn(&[2, 3, 4, 5], DType::F32, 22);
    let b = randn(&[1, 3, 1, 1], DType::F32, 23);
    let xe = x.to_device(dev).unwrap().to_memory_format(CL).unwrap();
    assert!(xe.is_channels_last() && xe.device() == dev);
    // Device moves keep the format in both directions.
    let moved = x.to_memory_format(CL).unwrap().to_device(dev).unwrap();
    assert!(moved.is_channels_last());
    assert_same_values(&moved.to_device(Device::Cpu).unwrap(), &x, "emu round trip");
    assert!(moved.to_device(Device::Cpu).unwrap().is_channels_last());
    let be = b.to_device(dev).unwrap();
    let ye = xe.mul(&be).unwrap().relu().unwrap();
    assert!(ye.is_channels_last());
    let want = x.mul(&b).unwrap().relu().unwrap();
    assert_same_values(&ye.to_device(Device::Cpu).unwrap(), &want, "emu mul + relu");
    // Back to NCHW on the device.
    let back = ye.to_memory_format(NCHW).unwrap();
    assert!(back.is_contiguous());
    assert_same_values(&back.to_device(Device::Cpu).unwrap(), &want, "emu to NCHW");
    // A gradient through the conversion, on the device.
    let leaf = x.to_device(dev).unwrap().to_memory_format(CL).unwrap().requires_grad_(true);
    leaf.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g = leaf.grad().unwrap();
    assert!(g.is_channels_last());
    assert_same_values(&g.to_device(Device::Cpu).unwrap(), &x.mul_scalar(2.0).unwrap(), "emu gradient");
}

#[test]
fn leaf_gradients_take_the_leaf_layout() {
    // A row-major leaf whose gradient arrives transposed gets a row-major gradient.
    let w = randn(&[3, 4], DType::F64, 24).requires_grad_(true);
    let a = randn(&[4, 3], DType::F64, 25);
    w.t().unwrap().mul(&a).unwrap().sum_all().unwrap().backward().unwrap();
    let g = w.grad().unwrap();
    assert!(g.is_contiguous(), "strides {:?}", g.layout().strides());
    assert_same_values(&g, &a.t().unwrap(), "transposed gradient");
    // A channels-last leaf whose gradient arrives NCHW gets a channels-last gradient.
    let x = randn(&[2, 3, 4, 5], DType::F64, 26).to_memory_format(CL).unwrap().requires_grad_(true);
    let k = randn(&[2, 3, 4, 5], DType::F64, 27);
    k.mul(&x).unwrap().sum_all().unwrap().backward().unwrap(); // NCHW first: dx is NCHW
    let gx = x.grad().unwrap();
    assert!(gx.is_channels_last() && !gx.is_contiguous());
    assert_same_values(&gx, &k, "channels-last leaf gradient");
}
