//! The bf16 route of [`super::std_conv2d`] on the CPU: bf16 channels-last activations, the f32
//! master weight standardized in f32 and rounded to bf16 as it is packed into the tile layout
//! (once per forward), the fprop / dgrad / wgrad passes of `crate::conv2d::bf16_tiles` on AMX or
//! AVX512-BF16, and WS's backward in f32 — one autograd node, the CPU twin of the tensor-core
//! route (`tc.rs`).

use bitgrad_engine::{BackwardOp, DType, Device, MemoryFormat, Result, Tensor};
use half::bf16;

use crate::conv2d::bf16_tiles::{self, Tiles};
use crate::conv2d::params::Geom;
use crate::conv2d::Conv2dParams;
use crate::fusion::{self, Fusion};
use crate::weight_std::cpu as ws;

/// Logical NCHW (or OIHW) → the NHWC view of a channels-last tensor, and back.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];

/// One convolution the bf16 kernels take, and which instructions run it.
pub(super) struct Plan {
    g: Geom,
    tiles: Tiles,
}

/// The plan for bf16 `x` and f32 `w` on the CPU when this CPU has AMX or AVX512-BF16 (the
/// fastest is taken) and the kernels take the
/// shape (one group, channels in multiples of 32); `None` otherwise.
pub(super) fn plan(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Option<Plan> {
    plan_with(x, w, p, Tiles::hardware()?)
}

/// [`plan`] with the tiles chosen by the caller (the tests run the emulation on any CPU).
pub(super) fn plan_with(x: &Tensor, w: &Tensor, p: &Conv2dParams, tiles: Tiles) -> Option<Plan> {
    if x.device() != Device::Cpu || x.rank() != 4 || w.rank() != 4 {
        return None;
    }
    let g = Geom::new(x.dims(), w.dims(), p).ok()?;
    bf16_tiles::takes(&g).then_some(Plan { g, tiles })
}

fn bits(v: &[bf16]) -> &[u16] {
    bytemuck::cast_slice(v)
}

fn from_bits(v: Vec<u16>) -> Vec<bf16> {
    v.into_iter().map(bf16::from_bits).collect()
}

/// `t` as a contiguous NHWC (`[N, H, W, C]`) bf16 tensor: a view when it already is channels-last.
fn nhwc(t: &Tensor) -> Result<Tensor> {
    t.to_memory_format(MemoryFormat::ChannelsLast)?.detach().permute(&TO_NHWC)?.contiguous()
}

impl Plan {
    /// The node's forward; with a residual (bf16, the output's shape, checked by the caller) the
    /// accumulators start from it and the node records it as a third input.
    pub(super) fn forward(
        self,
        x: &Tensor,
        w_master: &Tensor,
        ws_eps: Option<f64>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let g = self.g;
        let xcl = x.to_memory_format(MemoryFormat::ChannelsLast)?;
        let x_nhwc = nhwc(&xcl)?;
        // WS in f32 on the master weight (OIHW); the rounding to bf16 reorders it to KRSC. With
        // the WS-packing fusion on, the rounding standardizes as it reads the raw weight and
        // only μ and r are kept (the same bits; no f32 ŵ is made or held until the backward).
        let w = w_master.detach().contiguous()?;
        let fold = fusion::enabled(Fusion::WsPacking);
        let (ws, w_bf16) = w.with_cpu_slice::<f32, _>(|v| match ws_eps {
            Some(eps) if fold => {
                let (mean, rstd) = ws::stats(v, g.o, eps);
                let w_bf16 = bf16_tiles::round_weight(self.tiles, v, Some((&mean, &rstd)), &g);
                (Ws::Folded { mean, rstd }, w_bf16)
            }
            Some(eps) => {
                let (w_hat, rstd) = ws::forward(v, g.o, eps);
                let w_bf16 = bf16_tiles::round_weight(self.tiles, &w_hat, None, &g);
                (Ws::Materialized { w_hat, rstd }, w_bf16)
            }
            None => (Ws::Off, bf16_tiles::round_weight(self.tiles, v, None, &g)),
        })?;
        let packed = bf16_tiles::pack_weight_fprop(&w_bf16, &g);
        let r_nhwc = residual.map(nhwc).transpose()?;
        let y = x_nhwc.with_cpu_slice::<bf16, _>(|xs| match &r_nhwc {
            Some(r) => {
                r.with_cpu_slice::<bf16, _>(|rs| bf16_tiles::fprop(self.tiles, bits(xs), &packed, Some(bits(rs)), &g))
            }
            None => Ok(bf16_tiles::fprop(self.tiles, bits(xs), &packed, None, &g)),
        })??;
        let y = Tensor::from_vec(from_bits(y), [g.batch, g.oh, g.ow, g.o], Device::Cpu)?.permute(&TO_NCHW)?;
        let mut inputs = vec![&xcl, w_master];
        inputs.extend(residual);
        Ok(y.record(&inputs, StdConv2dCpuBf16Backward { plan: self, x: x_nhwc, ws, w_bf16 }))
    }
}

/// What the backward needs of weight standardization: nothing (no WS), ŵ and r, or — WS folded
/// into the packing — μ and r, from which ŵ is made again row by row next to the raw weight.
enum Ws {
    Off,
    Materialized { w_hat: Vec<f32>, rstd: Vec<f32> },
    Folded { mean: Vec<f32>, rstd: Vec<f32> },
}

/// Saved: the NHWC input, WS's state, and ŵ in bf16 (KRSC), what the forward multiplied with.
struct StdConv2dCpuBf16Backward {
    plan: Plan,
    x: Tensor,
    ws: Ws,
    w_bf16: Vec<u16>,
}

impl BackwardOp for StdConv2dCpuBf16Backward {
    fn name(&self) -> &'static str {
        "std_conv2d (cpu, bf16)"
    }

    fn backward(&self, inputs: &[Tensor], _y: &Tensor, gy_in: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (g, tiles) = (&self.plan.g, self.plan.tiles);
        let gy = nhwc(&gy_in.to_dtype(DType::BF16)?)?;
        let dx = if inputs[0].requires_grad() {
            let dx = gy.with_cpu_slice::<bf16, _>(|d| bf16_tiles::dgrad(tiles, bits(d), &self.w_bf16, g))?;
            Some(Tensor::from_vec(from_bits(dx), [g.batch, g.h, g.w, g.c], Device::Cpu)?.permute(&TO_NCHW)?)
        } else {
            None
        };
        let dw = if inputs[1].requires_grad() {
            let dw_hat = gy.with_cpu_slice::<bf16, _>(|d| {
                self.x.with_cpu_slice::<bf16, _>(|x| bf16_tiles::wgrad(tiles, bits(d), bits(x), g))
            })??;
            let dw_hat = dw_hat.oihw();
            let dw = match &self.ws {
                Ws::Off => dw_hat,
                Ws::Materialized { w_hat, rstd } => ws::backward(&dw_hat, w_hat, rstd),
                Ws::Folded { mean, rstd } => {
                    let w = inputs[1].detach().contiguous()?;
                    w.with_cpu_slice::<f32, _>(|w| ws::backward_from_weight(&dw_hat, w, mean, rstd))?
                }
            };
            Some(Tensor::from_vec(dw, inputs[1].dims(), Device::Cpu)?)
        } else {
            None
        };
        let mut out = vec![dx, dw];
        // A fused residual's gradient is the output gradient itself.
        if let Some(r) = inputs.get(2) {
            out.push(r.requires_grad().then(|| gy_in.clone()));
        }
        Ok(out)
    }
}
