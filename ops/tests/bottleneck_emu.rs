//! A BiT bottleneck unit (pre-activation, projection shortcut, stride 2 on the 3×3 conv) forward
//! and backward on the GPU devices equals the CPU: every op of a ResNet-v2 unit (GroupNorm + ReLU,
//! weight-standardized 1×1 / 3×3 convolutions, the residual add) through our kernels.
//!
//! ```text
//! a  = relu(gn1(x))                    (the pre-activation, shared by both branches)
//! sc = conv1x1/2(ws(w_proj), a)        (projection from the pre-activated input)
//! h  = conv1x1(ws(w1), a);  h = relu(gn2(h))
//! h  = conv3x3/2(ws(w2), h); h = relu(gn3(h))
//! y  = conv1x1(ws(w3), h) + sc
//! ```

use bitgrad_ops::conv2d::{conv2d, Conv2dParams};
use bitgrad_ops::engine::{DType, Device, Result, Rng, Tensor};
use bitgrad_ops::group_norm::{group_norm, Activation, GN_EPS};
use bitgrad_ops::weight_std::{weight_std, WS_EPS_BIT};

/// Parameters in timm's order: norm1.{w,b}, conv1, norm2.{w,b}, conv2, norm3.{w,b}, conv3, downsample.
fn params(cin: usize, mid: usize, cout: usize, rng: &mut Rng) -> Vec<Tensor> {
    let mut p = Vec::new();
    let gn = |c: usize, rng: &mut Rng| {
        [
            Tensor::randn([c], 1.0, 0.2, DType::F32, Device::Cpu, rng).unwrap(),
            Tensor::randn([c], 0.0, 0.2, DType::F32, Device::Cpu, rng).unwrap(),
        ]
    };
    let conv = |o: usize, i: usize, k: usize, rng: &mut Rng| {
        Tensor::randn([o, i, k, k], 0.0, 1.0, DType::F32, Device::Cpu, rng).unwrap()
    };
    p.extend(gn(cin, rng));
    p.push(conv(mid, cin, 1, rng));
    p.extend(gn(mid, rng));
    p.push(conv(mid, mid, 3, rng));
    p.extend(gn(mid, rng));
    p.push(conv(cout, mid, 1, rng));
    p.push(conv(cout, cin, 1, rng));
    p
}

fn unit(x: &Tensor, p: &[Tensor], groups: usize) -> Result<Tensor> {
    let ws = |w: &Tensor| weight_std(w, WS_EPS_BIT);
    let a = group_norm(x, groups, Some(&p[0]), Some(&p[1]), GN_EPS, Activation::Relu)?;
    let sc = conv2d(&a, &ws(&p[9])?, None, &Conv2dParams::new(2, 0))?;
    let h = conv2d(&a, &ws(&p[2])?, None, &Conv2dParams::new(1, 0))?;
    let h = group_norm(&h, groups, Some(&p[3]), Some(&p[4]), GN_EPS, Activation::Relu)?;
    let h = conv2d(&h, &ws(&p[5])?, None, &Conv2dParams::new(2, 1))?;
    let h = group_norm(&h, groups, Some(&p[6]), Some(&p[7]), GN_EPS, Activation::Relu)?;
    conv2d(&h, &ws(&p[8])?, None, &Conv2dParams::new(1, 0))?.add(&sc)
}

/// Output, input gradient and every parameter gradient of a weighted sum of the unit's output.
fn run(device: Device, x: &Tensor, p: &[Tensor], groups: usize) -> Vec<Vec<f64>> {
    let x = x.to_device(device).unwrap().requires_grad_(true);
    let p: Vec<Tensor> = p.iter().map(|t| t.to_device(device).unwrap().requires_grad_(true)).collect();
    let y = unit(&x, &p, groups).unwrap();
    let w = Tensor::arange(0.0, y.numel() as f64, 1.0, DType::F32, device)
        .unwrap()
        .affine(0.173, -2.0)
        .unwrap()
        .tanh()
        .unwrap();
    y.mul(&w.reshape(y.dims().to_vec()).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y.to_vec_f64().unwrap(), x.grad().unwrap().to_vec_f64().unwrap()];
    out.extend(p.iter().map(|t| t.grad().unwrap().to_vec_f64().unwrap()));
    out
}

#[test]
fn a_bit_bottleneck_unit_on_the_gpu_devices_equals_the_cpu() {
    // cin 32 → mid 16 → cout 64 at 9×9 (odd: the stride-2 3×3 sees a ragged edge), GN(8).
    let mut rng = Rng::new(7);
    let (n, cin, mid, cout, hw, groups) = (2, 32, 16, 64, 9, 8);
    let x = Tensor::randn([n, cin, hw, hw], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let p = params(cin, mid, cout, &mut rng);
    let want = run(Device::Cpu, &x, &p, groups);
    let mut devices = vec![Device::Emu];
    if bitgrad_ops::engine::gpu::runtime(Device::Cuda(0)).is_ok() {
        devices.push(Device::Cuda(0));
    }
    let names = [
        "output", "dx", "dgn1.w", "dgn1.b", "dconv1", "dgn2.w", "dgn2.b", "dconv2", "dgn3.w", "dgn3.b", "dconv3",
        "dproj",
    ];
    for d in devices {
        let got = run(d, &x, &p, groups);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
            let worst = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst <= 2e-4 * scale, "{} on {d}: max |diff| {worst:e} vs scale {scale:e}", names[k]);
        }
    }
}
