//! The `Cuda(i)` device (filled in by the CUDA runtime work).
use std::sync::Arc;

use crate::gpu::GpuRuntime;
use crate::{Device, Error, Result};

pub fn runtime(i: usize) -> Result<Arc<dyn GpuRuntime>> {
    Err(Error::DeviceUnavailable { device: Device::Cuda(i), reason: "not built yet".into() })
}
