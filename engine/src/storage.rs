//! Storage: the buffer behind one or more tensors. Views share it through an `Arc`; the
//! `RwLock` lets optimizers update parameters in place while readers hold views.

use std::sync::Arc;

use half::{bf16, f16};

use crate::gpu::{DevicePtr, GpuBuffer, GpuRuntime};
use crate::{DType, Device, Error, Result, WithDType};

/// A host buffer of one dtype.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

/// Every device's storage: host vectors, or device memory of a GPU runtime (Cuda or Emu).
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Gpu(GpuStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(g) => g.device(),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Gpu(g) => g.dtype(),
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Gpu(g) => g.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The host storage; an error naming `op` for device storage (an op without a kernel for
    /// that device, or a caller that forgot `to_device(Device::Cpu)`).
    pub fn cpu(&self, op: &'static str) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Gpu(g) => Err(on_gpu(op, g.device())),
        }
    }
    /// Mutable [`Storage::cpu`].
    pub fn cpu_mut(&mut self, op: &'static str) -> Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Gpu(g) => Err(on_gpu(op, g.device())),
        }
    }
    /// The device storage, or an error naming `op`.
    pub fn gpu(&self, op: &'static str) -> Result<&GpuStorage> {
        match self {
            Storage::Gpu(g) => Ok(g),
            Storage::Cpu(_) => Err(Error::invalid(op, "expected device memory, found a CPU tensor")),
        }
    }
}

fn on_gpu(op: &'static str, device: Device) -> Error {
    Error::invalid(
        op,
        format!("needs a CPU tensor but this one is on {device}: move it with .to_device(Device::Cpu), or use an op that has a kernel for {device}"),
    )
}

/// Device memory holding `len` elements of one dtype. Like [`CpuStorage`], it is dense: views
/// describe which elements a tensor uses through its layout.
#[derive(Debug)]
pub struct GpuStorage {
    buf: GpuBuffer,
    dtype: DType,
    len: usize,
}

impl GpuStorage {
    /// Uninitialised memory for `len` elements.
    pub fn alloc(rt: &Arc<dyn GpuRuntime>, dtype: DType, len: usize) -> Result<Self> {
        Ok(GpuStorage { buf: rt.alloc(len * dtype.size_in_bytes())?, dtype, len })
    }
    /// Zero-filled memory for `len` elements.
    pub fn zeros(rt: &Arc<dyn GpuRuntime>, dtype: DType, len: usize) -> Result<Self> {
        Ok(GpuStorage { buf: rt.alloc_zeroed(len * dtype.size_in_bytes())?, dtype, len })
    }
    /// Uploads a host storage.
    pub fn from_cpu(rt: &Arc<dyn GpuRuntime>, s: &CpuStorage) -> Result<Self> {
        let out = GpuStorage::alloc(rt, s.dtype(), s.len())?;
        if !s.is_empty() {
            rt.htod(s.as_bytes(), out.ptr())?;
        }
        Ok(out)
    }
    /// Downloads every element.
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        let mut host = CpuStorage::full(self.dtype, self.len, 0.0);
        if self.len > 0 {
            self.runtime().dtoh(self.ptr(), host.as_bytes_mut())?;
        }
        Ok(host)
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn device(&self) -> Device {
        self.buf.runtime().device()
    }
    pub fn runtime(&self) -> &Arc<dyn GpuRuntime> {
        self.buf.runtime()
    }
    /// The address of element 0.
    pub fn ptr(&self) -> DevicePtr {
        self.buf.ptr()
    }
    /// The address of element `i`.
    pub fn ptr_at(&self, i: usize) -> DevicePtr {
        self.buf.ptr().byte_add(i * self.dtype.size_in_bytes())
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U8(_) => DType::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
            CpuStorage::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' bytes (native endianness), for uploads and files.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F64(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
            CpuStorage::I64(v) => bytemuck::cast_slice(v),
            CpuStorage::U8(v) => v,
        }
    }
    /// Mutable [`CpuStorage::as_bytes`].
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::F64(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::F16(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::I64(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::U8(v) => v,
        }
    }

    /// A buffer of `n` copies of `v` (converted to `dtype`).
    pub fn full(dtype: DType, n: usize, v: f64) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![v as f32; n]),
            DType::F64 => CpuStorage::F64(vec![v; n]),
            DType::F16 => CpuStorage::F16(vec![f16::from_f64(v); n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::from_f64(v); n]),
            DType::I64 => CpuStorage::I64(vec![v as i64; n]),
            DType::U8 => CpuStorage::U8(vec![v as u8; n]),
        }
    }
}

/// Moves typed vectors in and out of [`CpuStorage`].
pub trait CpuElement: WithDType {
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! cpu_element {
    ($t:ty, $v:ident) => {
        impl CpuElement for $t {
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$v(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
cpu_element!(f32, F32);
cpu_element!(f64, F64);
cpu_element!(f16, F16);
cpu_element!(bf16, BF16);
cpu_element!(i64, I64);
cpu_element!(u8, U8);
