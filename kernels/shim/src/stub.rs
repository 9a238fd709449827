//! What the generated stubs (`build.rs`) do: say which function was called, and refuse.

pub const CUDA_ERROR_NOT_SUPPORTED: i32 = crate::ffi::CUDA_ERROR_NOT_SUPPORTED;
pub const CUBLAS_STATUS_NOT_SUPPORTED: i32 = crate::ffi::CUBLAS_STATUS_NOT_SUPPORTED;

/// Reports a call to a function the shim does not implement (once per name is enough to notice).
pub fn unsupported(name: &str) {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if SEEN.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string()) {
        eprintln!("bitgrad CUDA shim: {name} is not emulated; it returns NOT_SUPPORTED");
    }
}
