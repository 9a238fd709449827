//! Where a tensor's storage lives and its kernels run.
//!
//! `Cpu` is always available and is the numerical reference. `Cuda(i)` runs the hand-written
//! kernels through cudarc and `Emu` runs the same kernel sources on the CPU emulator; both arrive
//! with the GPU runtime and answer with a clear [`crate::Error::DeviceUnavailable`] until then.

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    Emu,
}

impl Device {
    /// Fails unless tensors can be created on this device in this build.
    pub fn check_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(_) | Device::Emu => Err(crate::Error::DeviceUnavailable {
                device: self,
                reason: "this build has only the CPU backend; the CUDA runtime and the emulator \
                         arrive with the GPU runtime (see docs/architecture.md)"
                    .into(),
            }),
        }
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
