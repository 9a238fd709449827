//! Where a tensor's storage lives and its kernels run.
//!
//! `Cpu` is always available and is the numerical reference. `Cuda(i)` runs the hand-written
//! kernels through cudarc and `Emu` runs the same kernel sources on the CPU emulator; a GPU device
//! that cannot be opened answers with a clear [`crate::Error::DeviceUnavailable`].

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    Emu,
}

impl Device {
    /// Fails unless tensors can be created on this device in this build. For a GPU device that
    /// means its runtime opens; the error says why not (which library is missing, no GPU, …).
    pub fn check_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(_) | Device::Emu => crate::gpu::runtime(self).map(|_| ()),
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
