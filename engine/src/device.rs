//! Where a tensor's storage lives and its kernels run.
//!
//! `Cpu` is always available and is the numerical reference. `Cuda(i)` runs the hand-written
//! kernels through cudarc and `Emu` runs the same kernel sources on the CPU emulator (see
//! [`crate::gpu`]); an unusable device answers [`crate::Error::DeviceUnavailable`] with the reason.

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    Emu,
}

impl Device {
    /// Fails unless tensors can be created on this device (for `Cuda`, starts its runtime).
    pub fn check_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            _ => crate::gpu::runtime(self).map(|_| ()),
        }
    }

    /// True for the devices that run the CUDA kernels (`Cuda` and `Emu`).
    pub fn is_gpu(self) -> bool {
        !matches!(self, Device::Cpu)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Emu => f.write_str("emu"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Device::Cuda(i)),
                _ => Err(crate::Error::Msg(format!("unknown device `{s}`: expected cpu, emu, cuda or cuda:N"))),
            },
        }
    }
}
