//! std_conv2d's bf16 node on the CPU: both instruction families' emulations on every machine,
//! and the instructions where the CPU has them (AMX, AVX512-BF16), held to the same bf16 bounds
//! as the tensor-core node (see `gpu_tests.rs`) against the f64 composition; std_conv2d takes
//! the node whenever the CPU runs one of them, the fastest.

use bitgrad_engine::cpu::isa::{self, Family, Isa};
use bitgrad_engine::{autograd, DType, MemoryFormat, Tensor};

use super::cpu_bf16::plan_with;
use super::gpu_tests::{reference, within, WS_EPS};
use super::std_conv2d;
use crate::conv2d::bf16_tiles::Tiles;
use crate::conv2d::Conv2dParams;
use crate::fusion::{self, Fusion, Fusions};
use crate::testing::{l2_rel, randn_as};

/// `(name, x dims, output channels, kernel size, params, WS ε, channels-last input)`.
type Case = (&'static str, [usize; 4], usize, usize, Conv2dParams, Option<f64>, bool);

fn cases() -> [Case; 5] {
    [
        ("3x3/1", [2, 32, 5, 5], 64, 3, Conv2dParams::new(1, 1), Some(WS_EPS), false),
        ("3x3/2", [1, 32, 7, 7], 32, 3, Conv2dParams::new(2, 1), Some(WS_EPS), true),
        ("1x1/2 projection", [2, 64, 4, 4], 32, 1, Conv2dParams::new(2, 0), Some(1e-10), true),
        ("1x1/1 no WS", [1, 32, 3, 3], 32, 1, Conv2dParams::new(1, 0), None, false),
        (
            "1x1/1 expanding (weight gradient transposed)",
            [2, 32, 4, 5],
            64,
            1,
            Conv2dParams::new(1, 0),
            Some(WS_EPS),
            true,
        ),
    ]
}

fn run(tiles: Tiles, (name, xd, k, ks, p, ws, channels_last): Case) {
    let x16 = randn_as(&xd, DType::BF16, 1);
    let w32 = randn_as(&[k, xd[1], ks, ks], DType::F32, 2);
    let x = if channels_last { x16.to_memory_format(MemoryFormat::ChannelsLast).unwrap() } else { x16.clone() };
    let x = x.requires_grad_(true);
    let w = w32.detach().requires_grad_(true);
    let plan = plan_with(&x, &w, &p, tiles).unwrap_or_else(|| panic!("{name}: the bf16 kernels take it"));
    let y = plan.forward(&x, &w, ws, None).unwrap();
    assert_eq!(y.dtype(), DType::BF16, "{name}");
    assert!(y.is_channels_last(), "{name}: the output is channels-last");
    let gy = randn_as(y.dims(), DType::BF16, 3);
    let store = autograd::grad(&y, &gy).unwrap();
    let (dx, dw) = (store.get(&x).unwrap(), store.get(&w).unwrap());
    assert_eq!((dx.dims(), dx.dtype()), (x.dims(), DType::BF16), "{name}");
    assert_eq!((dw.dims(), dw.dtype(), dw.is_contiguous()), (w.dims(), DType::F32, true), "{name}");
    let [ry, rdx, rdw, ay, adx] = reference(&x16, &w32, &gy, ws, &p);
    let v = |t: &Tensor| t.contiguous().unwrap().to_vec_f64().unwrap();
    within(&format!("{name} y"), &v(&y), &ry, &ay);
    within(&format!("{name} dx"), &v(dx), &rdx, &adx);
    let e = l2_rel(&v(dw), &rdw);
    assert!(e <= 1e-4, "{name} dw: relative L2 error {e:e} (bound 1e-4)");
}

#[test]
fn the_emulated_node_is_within_bf16_bounds() {
    for tiles in [Tiles::AmxEmulated, Tiles::DotEmulated] {
        for c in cases() {
            run(tiles, c);
        }
    }
}

#[test]
fn the_node_on_the_instructions_is_within_bf16_bounds() {
    let all = Tiles::all_hardware();
    let Some(&fastest) = all.first() else {
        eprintln!("skipped: this CPU runs neither tdpbf16ps nor vdpbf16ps (no AMX-BF16 or AVX512-BF16, or BITGRAD_CPU_ISA is lower)");
        return;
    };
    for hw in all {
        for c in cases() {
            run(hw, c);
        }
    }
    // std_conv2d itself takes the node here, on the fastest instruction.
    isa::reset();
    let x = randn_as(&[1, 32, 4, 4], DType::BF16, 4);
    let w = randn_as(&[32, 32, 3, 3], DType::F32, 5);
    std_conv2d(&x, &w, Some(WS_EPS), &Conv2dParams::new(1, 1)).unwrap();
    let want = if fastest == Tiles::Amx { Isa::Amx } else { Isa::Avx512Bf16 };
    assert_eq!(isa::last(Family::ConvBf16), Some(want));
}

/// WS folded into the weight packing (`Fusion::WsPacking`) changes no bit: y, dx and dW with the
/// fusion on and off, on both emulations and the instructions where present.
#[test]
fn folding_ws_into_the_packing_changes_no_bit() {
    let mut all = Tiles::all_hardware();
    all.extend([Tiles::AmxEmulated, Tiles::DotEmulated]);
    for tiles in all {
        for (name, xd, k, ks, p, ws, _) in cases() {
            let run = |fusions: Fusions| {
                let x = randn_as(&xd, DType::BF16, 1).requires_grad_(true);
                let w = randn_as(&[k, xd[1], ks, ks], DType::F32, 2).requires_grad_(true);
                let plan = plan_with(&x, &w, &p, tiles).unwrap();
                let y = fusion::with(fusions, || plan.forward(&x, &w, ws, None)).unwrap();
                let store = autograd::grad(&y, &randn_as(y.dims(), DType::BF16, 3)).unwrap();
                let v = |t: &Tensor| t.contiguous().unwrap().to_vec_f64().unwrap();
                [v(&y), v(store.get(&x).unwrap()), v(store.get(&w).unwrap())]
            };
            let on = run(Fusions::only(Fusion::WsPacking));
            let off = run(Fusions::NONE);
            for (what, a, b) in [("y", &on[0], &off[0]), ("dx", &on[1], &off[1]), ("dw", &on[2], &off[2])] {
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "{tiles:?} {name}: {what}");
            }
        }
    }
}
