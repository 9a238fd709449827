//! Every NN op in both memory formats: a channels-last input gives the NCHW op's output and
//! gradients bit for bit, the output and the input's gradient are channels-last, the f64
//! finite-difference check passes through the channels-last path, and the emulator agrees.

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{DType, Device, MemoryFormat, Result, Rng, Tensor};

use crate::batch_norm::{batch_norm, RunningStats};
use crate::conv2d::{conv2d, Conv2dParams};
use crate::dropout::dropout;
use crate::group_norm::{group_norm, Activation};
use crate::pad::pad2d;
use crate::pool::{avg_pool2d, global_avg_pool, max_pool2d};
use crate::testing::{distinct, randn};

const CL: MemoryFormat = MemoryFormat::ChannelsLast;

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
}

type Op<'a> = dyn Fn(&Tensor, &[Tensor]) -> Result<Tensor> + 'a;

/// Runs `f(x, params)` with `x` NCHW and channels-last (the params as given) and checks the
/// output and every gradient; returns the channels-last output.
fn same_in_both_formats(name: &str, x: &Tensor, params: &[Tensor], f: &Op<'_>) -> Tensor {
    let run = |x: Tensor| {
        let x = x.requires_grad_(true);
        let p: Vec<Tensor> = params.iter().map(|p| p.detach().requires_grad_(true)).collect();
        let y = f(&x, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let w = randn(y.dims(), 99).to_dtype(y.dtype()).unwrap();
        y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let grads: Vec<Tensor> =
            p.iter().map(|p| p.grad().unwrap_or_else(|| panic!("{name}: no param grad"))).collect();
        (y, x.grad().unwrap_or_else(|| panic!("{name}: no input grad")), grads)
    };
    let (yn, gn, pn) = run(x.detach());
    let (yl, gl, pl) = run(x.detach().to_memory_format(CL).unwrap());
    assert!(yn.is_contiguous(), "{name}: NCHW in, NCHW out");
    if yl.rank() == 4 {
        assert!(yl.is_channels_last() && !yl.is_contiguous(), "{name}: output strides {:?}", yl.layout().strides());
    }
    assert_eq!(yl.dims(), yn.dims(), "{name}: shape");
    assert_eq!(bits(&yl), bits(&yn), "{name}: output");
    assert!(gl.is_channels_last() && !gl.is_contiguous(), "{name}: input gradient strides {:?}", gl.layout().strides());
    assert_eq!(bits(&gl), bits(&gn), "{name}: input gradient");
    for (k, (a, b)) in pl.iter().zip(&pn).enumerate() {
        assert!(a.is_contiguous(), "{name}: parameter {k} gradient keeps the parameter's format");
        assert_eq!(bits(a), bits(b), "{name}: gradient of parameter {k}");
    }
    // Finite differences through the channels-last path.
    let mut inputs = vec![x.clone()];
    inputs.extend(params.iter().cloned());
    let g = |t: &[Tensor]| f(&t[0].to_memory_format(CL)?, &t[1..]);
    check_gradients(g, &inputs, GradCheck { atol: 1e-6, rtol: 1e-4, ..GradCheck::default() })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    yl
}

#[test]
fn conv2d_in_both_formats() {
    let x = randn(&[2, 3, 5, 6], 1);
    let (w, b) = (randn(&[4, 3, 3, 3], 2), randn(&[4], 3));
    let p = Conv2dParams::new(2, 1);
    same_in_both_formats("conv2d 3x3/2", &x, &[w.clone(), b], &|x, t| conv2d(x, &t[0], Some(&t[1]), &p));
    // 1×1 stride 1 (the GEMM path), no bias.
    let w1 = randn(&[5, 3, 1, 1], 4);
    same_in_both_formats("conv2d 1x1", &x, &[w1], &|x, t| conv2d(x, &t[0], None, &Conv2dParams::new(1, 0)));
    // A channels-last weight is read as OIHW and its gradient comes back channels-last.
    let wl = w.to_memory_format(CL).unwrap().requires_grad_(true);
    let xl = x.to_memory_format(CL).unwrap();
    let y = conv2d(&xl, &wl, None, &p).unwrap();
    assert!(y.is_channels_last());
    assert_eq!(bits(&y), bits(&conv2d(&x, &w, None, &p).unwrap()));
    y.sum_all().unwrap().backward().unwrap();
    assert!(wl.grad().unwrap().is_channels_last());
    // An NCHW input with a channels-last weight gives an NCHW output.
    assert!(conv2d(&x, &w.to_memory_format(CL).unwrap(), None, &p).unwrap().is_contiguous());
}

#[test]
fn group_norm_in_both_formats() {
    let x = randn(&[2, 6, 3, 4], 5);
    let (g, b) = (randn(&[6], 6), randn(&[6], 7));
    same_in_both_formats("group_norm", &x, &[g.clone(), b.clone()], &|x, t| {
        group_norm(x, 3, Some(&t[0]), Some(&t[1]), 1e-5, Activation::None)
    });
    // Fused ReLU: distinct inputs keep outputs off the kink.
    let xd = distinct(&[2, 6, 3, 4], 8);
    same_in_both_formats("group_norm + relu", &xd, &[g, b], &|x, t| {
        group_norm(x, 2, Some(&t[0]), Some(&t[1]), 1e-5, Activation::Relu)
    });
}

#[test]
fn batch_norm_in_both_formats() {
    let x = randn(&[3, 4, 3, 2], 9);
    let (g, b) = (randn(&[4], 10), randn(&[4], 11));
    let f = |x: &Tensor, t: &[Tensor]| batch_norm(x, Some(&t[0]), Some(&t[1]), None, true, 0.1, 1e-5);
    same_in_both_formats("batch_norm train", &x, &[g.clone(), b.clone()], &f);
    // Running statistics are updated the same way from either format.
    let (rn, rl) = (
        RunningStats::new(4, DType::F64, Device::Cpu).unwrap(),
        RunningStats::new(4, DType::F64, Device::Cpu).unwrap(),
    );
    batch_norm(&x, Some(&g), Some(&b), Some(&rn), true, 0.1, 1e-5).unwrap();
    let y = batch_norm(&x.to_memory_format(CL).unwrap(), Some(&g), Some(&b), Some(&rl), true, 0.1, 1e-5).unwrap();
    assert!(y.is_channels_last());
    assert_eq!(bits(rn.mean()), bits(rl.mean()));
    assert_eq!(bits(rn.var()), bits(rl.var()));
    // Eval mode with those statistics.
    let f = |x: &Tensor, t: &[Tensor]| batch_norm(x, Some(&t[0]), Some(&t[1]), Some(&rn), false, 0.1, 1e-5);
    same_in_both_formats("batch_norm eval", &x, &[g, b], &f);
}

#[test]
fn pools_and_pad_in_both_formats() {
    let x = distinct(&[2, 3, 5, 6], 12);
    same_in_both_formats("max_pool2d", &x, &[], &|x, _| max_pool2d(x, [3, 3], [2, 2], [1, 1]));
    same_in_both_formats("avg_pool2d", &x, &[], &|x, _| avg_pool2d(x, [2, 3], [2, 1], [1, 0], false));
    same_in_both_formats("pad2d", &x, &[], &|x, _| pad2d(x, [1, 0, 2, 1], 0.0));
    // The pooled [N, C] has no format; the input's gradient is still channels-last.
    let y = same_in_both_formats("global_avg_pool", &x, &[], &|x, _| global_avg_pool(x));
    assert_eq!(y.dims(), &[2, 3]);
}

#[test]
fn dropout_in_both_formats() {
    // The same seed drops the same logical elements in either format.
    let x = randn(&[2, 3, 4, 5], 13);
    same_in_both_formats("dropout", &x, &[], &|x, _| dropout(x, 0.3, true, &mut Rng::new(5)));
}

#[test]
fn half_dtypes_keep_the_format() {
    let x = randn(&[2, 3, 4, 4], 14).to_dtype(DType::BF16).unwrap();
    let xl = x.to_memory_format(CL).unwrap();
    let y = max_pool2d(&xl, [2, 2], [2, 2], [0, 0]).unwrap();
    assert!(y.is_channels_last() && y.dtype() == DType::BF16);
    assert_eq!(bits(&y), bits(&max_pool2d(&x, [2, 2], [2, 2], [0, 0]).unwrap()));
}

/// The boundary works on the emulator too (its kernels read NCHW as well): conv, group norm +
/// ReLU, pad and max pool, forward and backward.
#[test]
fn emulator_in_both_formats() {
    let dev = Device::Emu;
    let x = distinct(&[2, 4, 5, 6], 15).to_dtype(DType::F32).unwrap();
    let (g, b) = (randn(&[4], 16).to_dtype(DType::F32).unwrap(), randn(&[4], 17).to_dtype(DType::F32).unwrap());
    let w = randn(&[4, 4, 3, 3], 18).to_dtype(DType::F32).unwrap();
    let f = |x: &Tensor, w: &Tensor, g: &Tensor, b: &Tensor| -> Result<Tensor> {
        let h = conv2d(x, w, None, &Conv2dParams::new(1, 1))?;
        let h = group_norm(&h, 2, Some(g), Some(b), 1e-5, Activation::Relu)?;
        max_pool2d(&pad2d(&h, [1, 1, 1, 1], 0.0)?, [3, 3], [2, 2], [0, 0])
    };
    let want = f(&x, &w, &g, &b).unwrap();
    let (we, ge, be) = (w.to_device(dev).unwrap(), g.to_device(dev).unwrap(), b.to_device(dev).unwrap());
    let xn = x.to_device(dev).unwrap().requires_grad_(true);
    let xl = x.to_memory_format(CL).unwrap().to_device(dev).unwrap().requires_grad_(true);
    assert!(xl.is_channels_last());
    let (yn, yl) = (f(&xn, &we, &ge, &be).unwrap(), f(&xl, &we, &ge, &be).unwrap());
    assert!(yl.is_channels_last() && yl.device() == dev);
    assert_eq!(bits(&yl), bits(&yn), "emu: channels-last vs NCHW");
    let d = crate::testing::max_rel_diff(&yl.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
    assert!(d < 1e-5, "emu vs cpu: {d:e}");
    yn.sum_all().unwrap().backward().unwrap();
    yl.sum_all().unwrap().backward().unwrap();
    let gl = xl.grad().unwrap();
    assert!(gl.is_channels_last());
    assert_eq!(bits(&gl), bits(&xn.grad().unwrap()), "emu: input gradients");
}
