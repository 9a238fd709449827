//! The C types and status codes of the driver and cuBLAS ABIs, as the shim needs them.

use std::ffi::c_void;

pub type CUresult = i32;
pub type CUdevice = i32;
pub type CUdeviceptr = u64;
/// Every opaque handle (`CUcontext`, `CUstream`, `CUmodule`, `CUfunction`, `CUevent`,
/// `cublasHandle_t`) is a pointer-sized token; the shim never hands out real addresses.
pub type Handle = *mut c_void;

pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_INVALID_VALUE: CUresult = 1;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CUDA_ERROR_NOT_INITIALIZED: CUresult = 3;
pub const CUDA_ERROR_NO_DEVICE: CUresult = 100;
pub const CUDA_ERROR_INVALID_DEVICE: CUresult = 101;
pub const CUDA_ERROR_INVALID_IMAGE: CUresult = 200;
pub const CUDA_ERROR_INVALID_CONTEXT: CUresult = 201;
pub const CUDA_ERROR_NO_BINARY_FOR_GPU: CUresult = 209;
pub const CUDA_ERROR_INVALID_PTX: CUresult = 218;
pub const CUDA_ERROR_UNSUPPORTED_PTX_VERSION: CUresult = 222;
pub const CUDA_ERROR_INVALID_HANDLE: CUresult = 400;
pub const CUDA_ERROR_NOT_FOUND: CUresult = 500;
pub const CUDA_ERROR_NOT_READY: CUresult = 600;
pub const CUDA_ERROR_ILLEGAL_ADDRESS: CUresult = 700;
pub const CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: CUresult = 701;
pub const CUDA_ERROR_LAUNCH_FAILED: CUresult = 719;
pub const CUDA_ERROR_NOT_SUPPORTED: CUresult = 801;
pub const CUDA_ERROR_UNKNOWN: CUresult = 999;

pub type CublasStatus = i32;
pub const CUBLAS_STATUS_NOT_INITIALIZED: CublasStatus = 1;
pub const CUBLAS_STATUS_INVALID_VALUE: CublasStatus = 7;
pub const CUBLAS_STATUS_EXECUTION_FAILED: CublasStatus = 13;
pub const CUBLAS_STATUS_INTERNAL_ERROR: CublasStatus = 14;
pub const CUBLAS_STATUS_NOT_SUPPORTED: CublasStatus = 15;

/// A failed call: the status the caller gets and the shim's own explanation (printed on stderr
/// and kept for `bitgradShimLastError`, since a status code alone cannot name the kernel, the
/// argument or the address).
#[derive(Debug, Clone)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
    /// An expected answer to a probe (an attribute the shim does not model, a parameter index
    /// past the last), not a misuse: not printed.
    pub quiet: bool,
}

impl Fail {
    pub fn new(code: i32, msg: impl Into<String>) -> Fail {
        Fail { code, msg: msg.into(), quiet: false }
    }

    pub fn quiet(code: i32, msg: impl Into<String>) -> Fail {
        Fail { code, msg: msg.into(), quiet: true }
    }
}

pub type Res<T> = Result<T, Fail>;

/// Handle kinds, kept in the top bits of each token so that a handle of one kind passed where
/// another is expected is an error rather than a lookup of an unrelated object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Context = 0xC7,
    Stream = 0x57,
    Module = 0x3D,
    Function = 0xF0,
    Event = 0xE7,
    Blas = 0xB1,
}

pub fn handle(kind: Kind, id: u64) -> Handle {
    (((kind as u64) << 48) | id) as Handle
}

/// The id inside `h` if it is a token of `kind`.
pub fn id_of(h: Handle, kind: Kind) -> Option<u64> {
    let v = h as u64;
    (v >> 48 == kind as u64 && v & 0xFFFF_FFFF_FFFF != 0).then_some(v & 0xFFFF_FFFF_FFFF)
}
