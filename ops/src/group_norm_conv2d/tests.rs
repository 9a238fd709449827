//! The fused `group_norm_conv2d` against `conv2d(group_norm(x))`: the output and every gradient
//! (x, γ, β, w) bit for bit, on shapes that take the fused path (stride 1 and 2, whole rows and
//! the flattened grid, with and without ReLU and affine) and on shapes that fall back to the
//! composition; f64 gradients through the API against finite differences; errors.

use bitgrad_engine::gradcheck::{check_gradients, GradCheck};
use bitgrad_engine::{autograd, DType, Device, Rng, Tensor};

use super::{group_norm_conv2d, GroupNormArgs};
use crate::conv2d::{conv2d, Conv2dParams};
use crate::group_norm::{group_norm, Activation};

/// The backward profile is process-wide: these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Case {
    x: [usize; 4],
    o: usize,
    k: usize,
    stride: usize,
    groups: usize,
    affine: bool,
    act: Activation,
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().into_iter().map(f64::to_bits).collect()
}

/// Output and gradients (x, γ, β, w) of one run, and how many fused nodes its backward ran.
fn run(c: &Case, fused: bool, dtype: DType) -> (Vec<Vec<u64>>, usize) {
    let mut rng = Rng::new(5);
    let leaf = |t: Tensor| t.requires_grad_(true);
    let x = leaf(Tensor::randn(c.x, 0.5, 1.5, dtype, Device::Cpu, &mut rng).unwrap());
    let ch = c.x[1];
    let gamma = leaf(Tensor::randn([ch], 1.0, 0.5, dtype, Device::Cpu, &mut rng).unwrap());
    let beta = leaf(Tensor::randn([ch], 0.0, 0.5, dtype, Device::Cpu, &mut rng).unwrap());
    let w = leaf(Tensor::randn([c.o, ch, c.k, c.k], 0.0, 0.3, dtype, Device::Cpu, &mut rng).unwrap());
    let p = Conv2dParams::new(c.stride, (c.k - 1) / 2);
    let (g, b) = if c.affine { (Some(&gamma), Some(&beta)) } else { (None, None) };
    let gn = GroupNormArgs { groups: c.groups, gamma: g, beta: b, eps: 1e-5, act: c.act };
    let y = if fused {
        group_norm_conv2d(&x, gn, &w, &p).unwrap()
    } else {
        conv2d(&group_norm(&x, c.groups, g, b, 1e-5, c.act).unwrap(), &w, None, &p).unwrap()
    };
    let r = Tensor::randn(y.shape(), 0.0, 1.0, dtype, Device::Cpu, &mut rng).unwrap();
    autograd::profile::enable(true);
    y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let report = autograd::profile::report();
    autograd::profile::enable(false);
    let nodes = report.iter().find(|r| r.0 == "group_norm_conv2d").map_or(0, |r| r.1);
    let mut out = vec![bits(&y), bits(&x.grad().unwrap()), bits(&w.grad().unwrap())];
    if c.affine {
        out.push(bits(&gamma.grad().unwrap()));
        out.push(bits(&beta.grad().unwrap()));
    }
    (out, nodes)
}

fn case(x: [usize; 4], o: usize, k: usize, stride: usize, groups: usize, affine: bool, act: Activation) -> Case {
    Case { x, o, k, stride, groups, affine, act }
}

#[test]
fn fused_gives_the_unfused_output_and_gradients_bit_for_bit() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relu = Activation::Relu;
    for c in [
        case([2, 8, 16, 16], 16, 3, 1, 4, true, relu), // whole 8- or 16-lane rows
        case([2, 8, 13, 11], 12, 3, 1, 2, true, relu), // the flattened grid (11-pixel rows)
        case([1, 4, 32, 32], 8, 3, 2, 4, true, relu),  // stride 2: the phase planes
        case([2, 6, 16, 16], 6, 3, 1, 3, false, Activation::None), // no affine, no ReLU
        case([1, 16, 8, 24], 8, 5, 1, 16, true, relu), // 5×5, instance-norm groups
    ] {
        let (fused, nodes) = run(&c, true, DType::F32);
        let (plain, plain_nodes) = run(&c, false, DType::F32);
        let what = format!("x {:?} → {} {}×{}/{}", c.x, c.o, c.k, c.k, c.stride);
        assert_eq!(nodes, 1, "{what}: the fused node ran");
        assert_eq!(plain_nodes, 0, "{what}");
        for (i, name) in ["output", "dx", "dw", "dγ", "dβ"].iter().enumerate().take(fused.len()) {
            assert!(fused[i] == plain[i], "{what}: {name} differs");
        }
    }
}

/// The fused op's forward (statistics per (n, g), the mapped copy per plane) and its backward
/// give the same bits on 1, 2 and 3 threads, on a shape with more tasks than threads.
#[test]
fn thread_count_does_not_change_the_fused_results() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for c in [
        case([4, 32, 20, 20], 32, 3, 1, 8, true, Activation::Relu),
        case([3, 16, 32, 32], 16, 3, 2, 4, true, Activation::Relu),
    ] {
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| run(&c, true, DType::F32))
        };
        let (one, nodes) = on(1);
        assert_eq!(nodes, 1, "{:?}: the fused node ran", c.x);
        for threads in [2, 3] {
            assert!(on(threads).0 == one, "{:?}: {threads} threads differ from 1", c.x);
        }
    }
}

#[test]
fn shapes_the_direct_kernels_do_not_take_fall_back_to_the_two_ops() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (c, dtype) in [
        (case([2, 8, 8, 8], 16, 1, 1, 4, true, Activation::Relu), DType::F32), // 1×1: gemm
        (case([2, 8, 16, 16], 8, 3, 1, 4, true, Activation::Relu), DType::F64), // f64
    ] {
        let (fused, nodes) = run(&c, true, dtype);
        let (plain, _) = run(&c, false, dtype);
        assert_eq!(nodes, 0, "{:?} {dtype}: not fused", c.x);
        assert!(fused == plain, "{:?} {dtype}: the fallback is the composition", c.x);
    }
}

#[test]
fn f64_gradients_through_the_api_match_finite_differences() {
    let mut rng = Rng::new(9);
    let mk = |s: &[usize], rng: &mut Rng| Tensor::randn(s, 0.3, 1.0, DType::F64, Device::Cpu, rng).unwrap();
    let inputs = [mk(&[1, 4, 5, 5], &mut rng), mk(&[4], &mut rng), mk(&[4], &mut rng), mk(&[3, 4, 3, 3], &mut rng)];
    let f = |t: &[Tensor]| {
        let gn = GroupNormArgs { groups: 2, gamma: Some(&t[1]), beta: Some(&t[2]), eps: 1e-5, act: Activation::None };
        group_norm_conv2d(&t[0], gn, &t[3], &Conv2dParams::new(1, 1))?.sum_all()
    };
    check_gradients(f, &inputs, GradCheck::default()).unwrap();
}

#[test]
fn bad_arguments_are_the_group_norms_and_the_convolutions_errors() {
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, Device::Cpu).unwrap();
    let x = z(&[1, 6, 8, 8]);
    let gn = |groups| GroupNormArgs { groups, gamma: None, beta: None, eps: 1e-5, act: Activation::Relu };
    let e = group_norm_conv2d(&x, gn(4), &z(&[8, 6, 3, 3]), &Conv2dParams::new(1, 1)).unwrap_err();
    assert!(e.to_string().contains("cannot be split into 4 groups"), "{e}");
    let e = group_norm_conv2d(&x, gn(3), &z(&[8, 5, 3, 3]), &Conv2dParams::new(1, 1)).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
}
