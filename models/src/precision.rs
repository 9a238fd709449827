//! The mixed-precision policy (`--precision bf16|f32`): which dtype a model's activations run
//! in. Parameters, their gradients and the optimizer state are f32 in both (the master weights
//! and momentum, so checkpoints are f32 too); with [`Precision::Bf16`] the activations are
//! bf16 — the input batch is rounded once before the stem, convolutions read a bf16 copy of
//! their (standardized) f32 weight made on every forward, group norm keeps f32 statistics —
//! and the pooled features go back to f32 before the head, so the logits, the softmax and the
//! loss are f32. On a GPU device the bf16 activations also run channels-last, the layout of the
//! tensor-core kernels (`bitgrad_ops::std_conv2d`, `group_norm`'s NHWC path).
//!
//! The default ([`Precision::default_for`]) is bf16 on a CUDA GPU of compute capability 8.0 or
//! newer (Ampere on: bf16 tensor cores) and f32 everywhere else: the CPU, where bf16 storage
//! would only add conversions around f32 arithmetic, and the emulator, whose job is exactness.
//! Either can be asked for anywhere; on the CPU bf16 rounds the activations but computes in f32.

use std::fmt;
use std::str::FromStr;

use bitgrad_engine::{DType, Device};

use crate::error::{Error, Result};

/// The dtype the activations of a model run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32 (the reference).
    #[default]
    F32,
    /// bf16 activations, f32 master weights, optimizer state, statistics, logits and loss.
    Bf16,
}

impl Precision {
    /// The dtype of the activations.
    pub fn activation_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// bf16 on a CUDA GPU with compute capability ≥ 8.0, f32 otherwise (see the module docs).
    /// A device that cannot be opened gets f32 (opening it reports the problem elsewhere).
    pub fn default_for(device: Device) -> Precision {
        let cc = match device {
            Device::Cuda(_) => bitgrad_engine::gpu::runtime(device).ok().and_then(|rt| rt.compute_capability()),
            _ => None,
        };
        match cc {
            Some((major, _)) if major >= 8 => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// `Some(p)` as given, or the device's default.
    pub fn resolve(asked: Option<Precision>, device: Device) -> Precision {
        asked.unwrap_or_else(|| Precision::default_for(device))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(Error::Msg(format!("unknown precision {other:?}: expected bf16 or f32"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_defaults() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!(" F32 ".parse::<Precision>().unwrap(), Precision::F32);
        assert!("fp8".parse::<Precision>().unwrap_err().to_string().contains("bf16 or f32"));
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(Precision::Bf16.activation_dtype(), DType::BF16);
        // The CPU and the emulator default to f32; asking wins everywhere.
        assert_eq!(Precision::default_for(Device::Cpu), Precision::F32);
        assert_eq!(Precision::default_for(Device::Emu), Precision::F32);
        assert_eq!(Precision::resolve(Some(Precision::Bf16), Device::Cpu), Precision::Bf16);
        assert_eq!(Precision::resolve(None, Device::Emu), Precision::F32);
    }
}
