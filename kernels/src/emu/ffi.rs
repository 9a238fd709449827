//! The C interface of the emulator runtime (`kernels/emu/runtime.h`); layouts must match.

use std::ffi::{c_char, c_int, c_void};

/// `emu::KernelEntry`: one kernel of the generated table.
#[repr(C)]
pub(crate) struct KernelEntry {
    pub name: *const c_char,
    pub tramp: Option<unsafe extern "C" fn(*const *mut c_void)>,
    pub n_params: u32,
    pub sizes: *const u32,
    pub aligns: *const u32,
}

/// `emu::LaunchDesc`.
#[repr(C)]
pub(crate) struct LaunchDesc {
    pub kernel: *const KernelEntry,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub shuffle: u32,
    pub args: *const *mut c_void,
    pub seed: u64,
}

pub(crate) const ERR_DEADLOCK: i32 = 1;
pub(crate) const ERR_WARP: i32 = 2;
pub(crate) const ERR_FAULT: i32 = 3;
pub(crate) const ERR_STACK: i32 = 4;
pub(crate) const ERR_ASYNC: i32 = 6;

/// `emu::EmuErr`: what went wrong in a block.
#[repr(C)]
pub(crate) struct EmuErr {
    pub kind: i32,
    pub block: [u32; 3],
    pub thread: [u32; 3],
    pub has_thread: i32,
    pub is_write: i32,
    pub addr: u64,
    pub msg: [c_char; 768],
}

impl EmuErr {
    pub fn new() -> EmuErr {
        EmuErr { kind: 0, block: [0; 3], thread: [0; 3], has_thread: 0, is_write: -1, addr: 0, msg: [0; 768] }
    }

    pub fn message(&self) -> String {
        let bytes: Vec<u8> = self.msg.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

// The runtime only reads the launch description and the argument blocks, and these are shared
// between the rayon threads running one launch.
unsafe impl Sync for LaunchDesc {}
unsafe impl Send for LaunchDesc {}

extern "C" {
    pub(crate) fn bitgrad_emu_run_blocks(launch: *const LaunchDesc, begin: u64, end: u64, err: *mut EmuErr) -> c_int;
    pub(crate) fn bitgrad_emu_find(name: *const c_char, len: usize) -> *const KernelEntry;
}
