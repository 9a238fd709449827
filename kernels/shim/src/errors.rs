//! `cuGetErrorName` / `cuGetErrorString`: the driver's names and texts for every status the shim
//! can return (and the common others). A code outside the table is answered as the driver
//! answers an unknown one: `CUDA_ERROR_INVALID_VALUE` and a null string.

use std::ffi::c_char;

use crate::ffi::*;

/// (code, name, text), NUL-terminated for C.
const TABLE: &[(CUresult, &str, &str)] = &[
    (0, "CUDA_SUCCESS\0", "no error\0"),
    (1, "CUDA_ERROR_INVALID_VALUE\0", "invalid argument\0"),
    (2, "CUDA_ERROR_OUT_OF_MEMORY\0", "out of memory\0"),
    (3, "CUDA_ERROR_NOT_INITIALIZED\0", "initialization error\0"),
    (4, "CUDA_ERROR_DEINITIALIZED\0", "driver shutting down\0"),
    (34, "CUDA_ERROR_STUB_LIBRARY\0", "CUDA driver is a stub library\0"),
    (46, "CUDA_ERROR_DEVICE_UNAVAILABLE\0", "CUDA-capable device(s) is/are busy or unavailable\0"),
    (100, "CUDA_ERROR_NO_DEVICE\0", "no CUDA-capable device is detected\0"),
    (101, "CUDA_ERROR_INVALID_DEVICE\0", "invalid device ordinal\0"),
    (200, "CUDA_ERROR_INVALID_IMAGE\0", "device kernel image is invalid\0"),
    (201, "CUDA_ERROR_INVALID_CONTEXT\0", "invalid device context\0"),
    (202, "CUDA_ERROR_CONTEXT_ALREADY_CURRENT\0", "context already current\0"),
    (209, "CUDA_ERROR_NO_BINARY_FOR_GPU\0", "no kernel image is available for execution on the device\0"),
    (218, "CUDA_ERROR_INVALID_PTX\0", "a PTX JIT compilation failed\0"),
    (222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION\0", "the provided PTX was compiled with an unsupported toolchain.\0"),
    (400, "CUDA_ERROR_INVALID_HANDLE\0", "invalid resource handle\0"),
    (500, "CUDA_ERROR_NOT_FOUND\0", "named symbol not found\0"),
    (600, "CUDA_ERROR_NOT_READY\0", "device not ready\0"),
    (700, "CUDA_ERROR_ILLEGAL_ADDRESS\0", "an illegal memory access was encountered\0"),
    (701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES\0", "too many resources requested for launch\0"),
    (702, "CUDA_ERROR_LAUNCH_TIMEOUT\0", "the launch timed out and was terminated\0"),
    (709, "CUDA_ERROR_CONTEXT_IS_DESTROYED\0", "context is destroyed\0"),
    (710, "CUDA_ERROR_ASSERT\0", "device-side assert triggered\0"),
    (715, "CUDA_ERROR_ILLEGAL_INSTRUCTION\0", "an illegal instruction was encountered\0"),
    (716, "CUDA_ERROR_MISALIGNED_ADDRESS\0", "misaligned address\0"),
    (719, "CUDA_ERROR_LAUNCH_FAILED\0", "unspecified launch failure\0"),
    (800, "CUDA_ERROR_NOT_PERMITTED\0", "operation not permitted\0"),
    (801, "CUDA_ERROR_NOT_SUPPORTED\0", "operation not supported\0"),
    (999, "CUDA_ERROR_UNKNOWN\0", "unknown error\0"),
];

fn lookup(code: CUresult, text: bool, out: *mut *const c_char) -> CUresult {
    if out.is_null() {
        return CUDA_ERROR_INVALID_VALUE;
    }
    let found = TABLE.iter().find(|(c, ..)| *c == code).map(|(_, name, txt)| if text { *txt } else { *name });
    // SAFETY: `out` is the caller's non-null out-pointer; the strings are static.
    unsafe { *out = found.map_or(std::ptr::null(), |s| s.as_ptr().cast()) };
    if found.is_some() {
        CUDA_SUCCESS
    } else {
        CUDA_ERROR_INVALID_VALUE
    }
}

/// # Safety
/// `p_str` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, p_str: *mut *const c_char) -> CUresult {
    lookup(error, true, p_str)
}

/// # Safety
/// `p_str` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, p_str: *mut *const c_char) -> CUresult {
    lookup(error, false, p_str)
}

/// The shim's explanation of the last failed call on this thread (or a stream worker's fault),
/// NUL-terminated; empty when none. Not a CUDA function: for tests and debugging.
#[no_mangle]
pub extern "C" fn bitgradShimLastError() -> *const c_char {
    crate::state::last_error_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_texts_are_terminated_and_unique() {
        for (i, (code, name, text)) in TABLE.iter().enumerate() {
            assert!(name.ends_with('\0') && text.ends_with('\0'), "{code}");
            assert!(name.starts_with("CUDA_"), "{name}");
            assert!(TABLE[..i].iter().all(|(c, ..)| c != code), "{code} twice");
        }
        let mut s = std::ptr::null();
        assert_eq!(lookup(700, true, &mut s), CUDA_SUCCESS);
        // SAFETY: lookup returned a static NUL-terminated string.
        assert_eq!(
            unsafe { std::ffi::CStr::from_ptr(s) }.to_str().unwrap(),
            "an illegal memory access was encountered"
        );
        assert_eq!(lookup(12345, false, &mut s), CUDA_ERROR_INVALID_VALUE);
        assert!(s.is_null());
    }
}
