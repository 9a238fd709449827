//! The `Emu` device (filled in by the emulator work).
use std::sync::Arc;

use super::GpuRuntime;
use crate::{Device, Error, Result};

pub fn runtime() -> Result<Arc<dyn GpuRuntime>> {
    Err(Error::DeviceUnavailable { device: Device::Emu, reason: "not built yet".into() })
}
