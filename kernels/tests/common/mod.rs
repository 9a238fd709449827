//! Helpers shared by the emulator tests: buffers from slices, argument bytes, a timeout.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use bitgrad_kernels::emu::{self, Buffer, EmuError, Modes};

/// A buffer holding `data` (guarded when `modes.guard`).
pub fn upload<T: Copy>(data: &[T], modes: &Modes) -> Buffer {
    let bytes = std::mem::size_of_val(data);
    let buf = emu::alloc(bytes, modes.guard).expect("alloc");
    // SAFETY: the buffer has `bytes` bytes; T is plain data.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), buf.as_ptr(), bytes) };
    buf
}

/// A buffer of `n` copies of `value`.
pub fn filled<T: Copy>(n: usize, value: T, modes: &Modes) -> Buffer {
    upload(&vec![value; n], modes)
}

/// The buffer's contents as `T`s.
pub fn download<T: Copy + Default>(buf: &Buffer) -> Vec<T> {
    let n = buf.len() / std::mem::size_of::<T>();
    let mut out = vec![T::default(); n];
    // SAFETY: reading n*size_of::<T>() bytes of the buffer into a Vec<T> of plain data.
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), out.as_mut_ptr().cast::<u8>(), n * std::mem::size_of::<T>()) };
    out
}

/// The bytes of a plain value, as a kernel argument.
pub fn arg<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is plain data; we copy its bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
}

/// A device pointer argument.
pub fn ptr(buf: &Buffer) -> Vec<u8> {
    (buf.as_ptr() as usize as u64).to_ne_bytes().to_vec()
}

/// Launches with owned argument byte vectors.
pub fn run(
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: &[Vec<u8>],
    modes: &Modes,
) -> Result<(), EmuError> {
    let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    // SAFETY: the tests pass pointers to live buffers sized for the launch.
    unsafe { emu::launch(kernel, grid, block, shared, &slices, modes) }
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs` (a hang).
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).expect("timed out: the emulator hung")
}

/// Both standard mode sets.
pub const BOTH: [Modes; 2] = [Modes::FAST, Modes::CHECKED];

pub mod blocksum;
pub mod conv;
pub mod tc;
