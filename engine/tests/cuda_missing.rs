//! Without the CUDA driver (every build machine), asking for a CUDA device is an error that names
//! the missing library and the fix — never a panic — whether through the runtime or a tensor.

use bitgrad_engine::gpu::cuda::libs::Lib;
use bitgrad_engine::{gpu, DType, Device, Error, Tensor};

#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    if Lib::Driver.present() {
        println!("skipped: {} is loadable here; the GPU tests cover this machine", Lib::Driver.file());
        return;
    }
    let check = |e: Error| match e {
        Error::DeviceUnavailable { device: Device::Cuda(0), reason } => {
            assert!(reason.contains("libcuda.so.1") && reason.contains("LD_LIBRARY_PATH"), "{reason}");
        }
        other => panic!("expected DeviceUnavailable for cuda:0, got {other}"),
    };
    check(gpu::runtime(Device::Cuda(0)).unwrap_err());
    check(Tensor::zeros([4], DType::F32, Device::Cuda(0)).unwrap_err());
    let cpu = Tensor::zeros([4], DType::F32, Device::Cpu).unwrap();
    check(cpu.to_device(Device::Cuda(0)).unwrap_err());
}
