//! `bitgrad bench gpu --plan`: what a bf16 tensor-core training step of a BiT model should cost
//! on a GPU, before any GPU time is spent. For every convolution pass (fprop, dgrad — strided
//! ones by phase —, wgrad with split-K) the implicit GEMM's shape, the tile chosen for it, the
//! grid, its waves on the GPU's SMs and the time at the mma.sync rate; the memory-bound ops
//! (norms, WS, SGD, residual sums, pooling) at the HBM roof; the step time and img/s they add up
//! to. Everything printed is an estimate from the model in `gemm` and `memops` with the rates of
//! `spec` — a bound to measure kernels against, not a measurement.

pub(super) mod gemm;
pub(super) mod memops;
pub(super) mod net;
mod report;
mod spec;

use bitgrad::models::ResNetV2Config;

pub use spec::GpuSpec;

/// What to plan (the flags of `bench gpu` used with `--plan`).
#[derive(clap::Args, Clone, Debug)]
pub struct PlanArgs {
    /// Architecture: a BiT name (resnetv2_50x1_bit … resnetv2_152x4_bit) or a small config.
    #[arg(long, default_value = "resnetv2_50x1_bit")]
    pub model: String,
    /// Images per training step (1 to 65536).
    #[arg(long, default_value_t = 64, value_parser = super::positive)]
    pub batch: usize,
    /// Input size in pixels, square (1 to 4096).
    #[arg(long, default_value_t = 224, value_parser = super::positive)]
    pub size: usize,
    /// Classes of the head.
    #[arg(long, default_value_t = 1000, value_parser = super::positive)]
    pub classes: usize,
    #[command(flatten)]
    pub gpu: GpuSpec,
}

/// One planned GEMM: where it comes from and how it is priced.
#[derive(Clone, Debug)]
pub struct Row {
    /// The layer (timm module name) or "head".
    pub layer: String,
    pub gemm: gemm::Gemm,
    pub priced: gemm::Priced,
}

/// The whole plan of one training step.
pub struct Plan {
    pub args: PlanArgs,
    pub rows: Vec<Row>,
    pub mem: Vec<memops::MemOp>,
}

impl Plan {
    /// Plans `args`: errors (never panics) on an unknown model or sizes outside the limits.
    pub fn new(args: &PlanArgs) -> Result<Plan, String> {
        if args.batch > 65536 || args.size > 4096 {
            return Err(format!(
                "--batch {} --size {}: the plan takes batches up to 65536 and sizes up to 4096 px",
                args.batch, args.size
            ));
        }
        let config = ResNetV2Config::named(&args.model, args.classes).map_err(|e| e.to_string())?;
        let net = net::walk(&config, args.batch, args.size)?;
        let mut rows = Vec::new();
        let mut zero_fill = 0;
        let mut add = |layer: &str, g: gemm::Gemm| {
            let priced = gemm::choose(&g, &args.gpu);
            rows.push(Row { layer: layer.to_string(), gemm: g, priced });
        };
        for c in &net.convs {
            add(&c.name, gemm::fprop(c));
        }
        let (feat, classes) = net.head;
        for g in gemm::head(args.batch, feat, classes) {
            add("head", g);
        }
        // Backward runs in reverse; the table keeps forward order within each pass.
        for c in &net.convs {
            if c.dgrad {
                let (gemms, zero) = gemm::dgrad(c);
                zero_fill += zero;
                for g in gemms {
                    add(&c.name, g);
                }
            }
            add(&c.name, gemm::wgrad(c));
        }
        rows.sort_by_key(|r| r.gemm.pass);
        let mem = memops::ops(&net, zero_fill);
        Ok(Plan { args: args.clone(), rows, mem })
    }

    /// Seconds of all GEMMs.
    pub fn gemm_time(&self) -> f64 {
        self.rows.iter().map(|r| r.priced.time()).sum()
    }

    /// Seconds of the memory-bound ops at the HBM roof.
    pub fn mem_time(&self) -> f64 {
        self.mem.iter().map(|m| m.bytes).sum::<f64>() / self.args.gpu.hbm_bytes_per_s()
    }

    /// The estimated step: every GEMM and memory op one after the other (no overlap).
    pub fn step_time(&self) -> f64 {
        self.gemm_time() + self.mem_time()
    }

    pub fn images_per_s(&self) -> f64 {
        self.args.batch as f64 / self.step_time()
    }
}

/// Prints the plan of `args`.
pub fn run(args: &PlanArgs) -> bitgrad::Result<()> {
    let plan = Plan::new(args).map_err(bitgrad::Error::Msg)?;
    report::print(&plan);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(model: &str, batch: usize, size: usize) -> PlanArgs {
        PlanArgs { model: model.into(), batch, size, classes: 1000, gpu: GpuSpec::h100() }
    }

    #[test]
    fn r50x1_plan_adds_up() {
        let p = Plan::new(&args("resnetv2_50x1_bit", 64, 224)).unwrap();
        let fprop: f64 = p.rows.iter().filter(|r| r.gemm.pass == gemm::Pass::Fprop).map(|r| r.priced.flop).sum();
        // R50x1's convolutions: 4.09 GMAC per 224-px image (the stem's RGB padded to 4
        // channels adds 39 MFLOP), plus the 2048×1000 head.
        let per_image = fprop / 64.0 / 1e9;
        assert!((8.2..8.35).contains(&per_image), "{per_image} GFLOP per image");
        // 53 fprop + 1 head; wgrad for every conv; dgrad for all but the stem, the 3×3 and
        // 1×1 stride-2 layers split into 4 and 1 phases.
        let count = |pass| p.rows.iter().filter(|r| r.gemm.pass == pass).count();
        assert_eq!(count(gemm::Pass::Fprop), 54);
        assert_eq!(count(gemm::Pass::Wgrad), 54);
        assert_eq!(count(gemm::Pass::Dgrad), 52 - 6 + 3 * 4 + 3 + 1);
        // The step is the sum of its parts, and bounded below by the tensor peak.
        assert!((p.step_time() - p.gemm_time() - p.mem_time()).abs() < 1e-15);
        let flop: f64 = p.rows.iter().map(|r| r.priced.flop).sum();
        assert!(p.gemm_time() >= flop / (989.4e12 * 0.64));
        assert!(p.images_per_s() > 0.0);
    }

    #[test]
    fn faster_parts_are_faster_and_bad_args_are_errors() {
        let a = args("resnetv2_101x1_bit", 32, 160);
        let base = Plan::new(&a).unwrap();
        let faster =
            PlanArgs { gpu: GpuSpec { tensor_tflops: 2.0 * 989.4, hbm_tbs: 6.7, ..GpuSpec::h100() }, ..a.clone() };
        let faster = Plan::new(&faster).unwrap();
        // Twice the rates: exactly half the time (the tile choice is scale-free).
        assert!((faster.step_time() * 2.0 - base.step_time()).abs() < 1e-9 * base.step_time());
        // One SM at the same total rate has no partial waves: only padding is lost.
        let one = Plan::new(&PlanArgs { gpu: GpuSpec { sms: 1, ..GpuSpec::h100() }, ..a.clone() }).unwrap();
        assert!(one.rows.iter().all(|r| r.priced.wave_eff == 1.0));
        assert!(base.rows.iter().any(|r| r.priced.wave_eff < 0.9));
        let e = Plan::new(&args("resnet50", 64, 224)).err().unwrap();
        assert!(e.contains("unknown architecture"), "{e}");
        assert!(Plan::new(&args("resnetv2_50x1_bit", 1 << 20, 224)).is_err());
        assert!(Plan::new(&args("resnetv2_50x1_bit", 1, 100_000)).is_err());
        // Tiny inputs and the small configs plan fine.
        assert!(Plan::new(&args("resnetv2_tiny_bit", 2, 32)).is_ok());
        assert!(Plan::new(&args("resnetv2_152x4_bit", 1, 1)).is_ok());
    }
}
