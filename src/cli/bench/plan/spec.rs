//! The GPU the plan is made for: SM count, tensor rate and HBM bandwidth, with H100 SXM defaults.
//! Every number can be overridden on the command line; the defaults and their sources are:
//!
//! | quantity | H100 SXM5 | source |
//! | --- | --- | --- |
//! | SMs | 132 | NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), H100 SXM5 column |
//! | dense bf16 tensor peak | 989.4 TFLOP/s | 132 SMs × 1.83 GHz × 4096 FLOP/clk/SM (NVIDIA/cudnn-frontend PR #650); datasheet "1,979 TFLOPS with sparsity" ÷ 2 |
//! | share of that peak reachable with `mma.sync` | 0.64 | ~63–65 % on Hopper, arXiv:2501.12084 (Luo et al., *Dissecting the NVIDIA Hopper Architecture*), 494 of 757 TFLOP/s on an H800; the full rate needs `wgmma` (sm_90a) |
//! | HBM3 bandwidth | 3.35 TB/s | H100 SXM5 datasheet |
//!
//! The 0.64 is a measurement by others on a related part, not ours: the plan is an estimate.

use clap::Args;

/// The machine model of the plan (`bitgrad bench gpu --plan`).
#[derive(Args, Clone, Debug)]
pub struct GpuSpec {
    /// Streaming multiprocessors of the GPU planned for [default: H100 SXM5].
    #[arg(long, default_value_t = 132, value_parser = crate::cli::bench::positive)]
    pub sms: usize,
    /// Dense bf16 tensor-core peak in TFLOP/s [default: H100 SXM5].
    #[arg(long, default_value_t = 989.4, value_parser = positive_f64)]
    pub tensor_tflops: f64,
    /// Fraction of the tensor peak that mma.sync kernels can reach (0 < f ≤ 1).
    #[arg(long, default_value_t = 0.64, value_parser = fraction)]
    pub mma_fraction: f64,
    /// HBM bandwidth in TB/s (10¹² bytes per second) [default: H100 SXM5 HBM3].
    #[arg(long, default_value_t = 3.35, value_parser = positive_f64)]
    pub hbm_tbs: f64,
}

impl GpuSpec {
    /// H100 SXM5, the defaults above.
    #[cfg(test)]
    pub fn h100() -> GpuSpec {
        GpuSpec { sms: 132, tensor_tflops: 989.4, mma_fraction: 0.64, hbm_tbs: 3.35 }
    }

    /// FLOP per second of one SM at the mma.sync rate.
    pub fn sm_flops(&self) -> f64 {
        self.tensor_tflops * 1e12 * self.mma_fraction / self.sms as f64
    }

    /// Bytes per second of HBM.
    pub fn hbm_bytes_per_s(&self) -> f64 {
        self.hbm_tbs * 1e12
    }
}

/// A finite number > 0.
fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

/// A number in (0, 1].
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("`{s}` is not a fraction in (0, 1]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_sm_rate_and_bad_values() {
        let h = GpuSpec::h100();
        // 989.4 TFLOP/s × 0.64 over 132 SMs.
        assert!((h.sm_flops() - 4.797e12).abs() < 1e9, "{}", h.sm_flops());
        assert_eq!(h.hbm_bytes_per_s(), 3.35e12);
        assert!(positive_f64("0").is_err() && positive_f64("-1").is_err() && positive_f64("inf").is_err());
        assert!(fraction("1.5").is_err() && fraction("0").is_err() && fraction("x").is_err());
        assert_eq!(fraction("1"), Ok(1.0));
    }
}
