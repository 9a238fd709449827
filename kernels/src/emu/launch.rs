//! Launching a kernel: validation like CUDA's, argument marshalling, and spreading the blocks over
//! rayon's threads (each calls into the C++ runtime for a range of blocks).

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::ffi::{self, EmuErr, KernelEntry, LaunchDesc};
use super::{buffer, EmuError, Modes};

/// Shared memory per block on current GPUs (Hopper: 227 KiB with the opt-in attribute).
const MAX_SHARED_BYTES: u32 = 227 * 1024;
/// Below this many threads a launch runs on the calling thread: fanning out costs more.
const PARALLEL_MIN_THREADS: u64 = 16 * 1024;

/// Numbers launches, so `shuffle` orders differ from launch to launch (deterministically for a
/// deterministic program).
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// Every kernel compiled into this build ([`crate::SOURCES`] and [`crate::TEST_SOURCES`]).
pub fn kernel_names() -> Vec<&'static str> {
    crate::SOURCES.iter().chain(crate::TEST_SOURCES).flat_map(|s| s.kernels.iter().copied()).collect()
}

/// The (size, alignment) in bytes of each parameter of `kernel` as this build compiled it, or
/// `None` if no kernel of that name is compiled in. A driver checks a launch's arguments against
/// the same facts read from the GPU image; comparing the two catches a layout disagreement between
/// the GPU compiler and the host C++ compiler (a struct parameter, say).
pub fn param_layout(kernel: &str) -> Option<Vec<(usize, usize)>> {
    // SAFETY: the name is passed with its length; the runtime copies it.
    let entry = unsafe { ffi::bitgrad_emu_find(kernel.as_ptr().cast(), kernel.len()) };
    // SAFETY: a non-null entry points into the static kernel table.
    let entry: &KernelEntry = unsafe { entry.as_ref() }?;
    let n = entry.n_params as usize;
    // SAFETY: the generated table has n_params entries in `sizes` and `aligns`.
    let (sizes, aligns) =
        unsafe { (std::slice::from_raw_parts(entry.sizes, n), std::slice::from_raw_parts(entry.aligns, n)) };
    Some(sizes.iter().zip(aligns).map(|(&s, &a)| (s as usize, a as usize)).collect())
}

/// Runs `kernel` on a `grid` of `block`-shaped blocks with `shared_bytes` of dynamic shared
/// memory. `args[i]` holds the bytes of parameter i (a pointer: its 8 address bytes; an `int`: 4
/// bytes; a struct: its bytes), like `cuLaunchKernel`'s `kernelParams`. Returns when every block
/// has finished, or with the first error.
///
/// # Safety
/// Every pointer argument must point into live [`super::Buffer`]s (or other memory valid for
/// all of the kernel's accesses), with no other access to that memory during the launch.
pub unsafe fn launch(
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[&[u8]],
    modes: &Modes,
) -> Result<(), EmuError> {
    // SAFETY: the name is passed with its length; the runtime copies it.
    let entry = unsafe { ffi::bitgrad_emu_find(kernel.as_ptr().cast(), kernel.len()) };
    // SAFETY: a non-null entry points into the static kernel table.
    let entry: &KernelEntry = unsafe { entry.as_ref() }.ok_or_else(|| EmuError::UnknownKernel(kernel.to_string()))?;
    check_config(kernel, grid, block, shared_bytes)?;
    let storage = marshal(kernel, entry, args)?;

    let launch_no = LAUNCHES.fetch_add(1, Ordering::Relaxed);
    let desc = LaunchDesc {
        kernel: entry,
        grid,
        block,
        shared_bytes,
        shuffle: modes.shuffle as u32,
        args: storage.ptrs.as_ptr(),
        seed: modes.seed ^ launch_no.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    };
    let blocks = grid.iter().map(|&g| g as u64).product::<u64>();
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    let run = |begin: u64, end: u64| -> Result<(), EmuError> {
        let mut err = EmuErr::new();
        // SAFETY: desc, the argument storage and the kernel table outlive the call; the caller
        // vouches for the pointers inside the arguments.
        if unsafe { ffi::bitgrad_emu_run_blocks(&desc, begin, end, &mut err) } == 0 {
            Ok(())
        } else {
            Err(convert(kernel, &err))
        }
    };
    let workers = rayon::current_num_threads() as u64;
    if blocks == 1 || workers <= 1 || blocks * threads < PARALLEL_MIN_THREADS {
        return run(0, blocks);
    }
    // A few chunks per worker balances uneven blocks without paying a call per block.
    let chunk = blocks.div_ceil(workers * 4).max(1);
    (0..blocks.div_ceil(chunk)).into_par_iter().try_for_each(|c| run(c * chunk, ((c + 1) * chunk).min(blocks)))
}

fn check_config(kernel: &str, grid: [u32; 3], block: [u32; 3], shared: u32) -> Result<(), EmuError> {
    let bad = |limit: String| Err(EmuError::BadConfig { kernel: kernel.to_string(), limit });
    if grid.contains(&0) || block.contains(&0) {
        return bad(format!("zero dimension (grid {grid:?}, block {block:?})"));
    }
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    if threads > 1024 {
        return bad(format!("block {block:?} has {threads} threads, the limit is 1024"));
    }
    for (d, limit) in [1024, 1024, 64].into_iter().enumerate() {
        if block[d] > limit {
            return bad(format!(
                "block dimension {} is {}, the limit is {limit}",
                "xyz".as_bytes()[d] as char,
                block[d]
            ));
        }
    }
    if grid[0] > i32::MAX as u32 {
        return bad(format!("grid.x is {}, the limit is 2^31-1", grid[0]));
    }
    for (d, &g) in grid.iter().enumerate().skip(1) {
        if g > 65535 {
            return bad(format!("grid dimension {} is {g}, the limit is 65535", "xyz".as_bytes()[d] as char));
        }
    }
    if shared > MAX_SHARED_BYTES {
        return bad(format!("{shared} bytes of dynamic shared memory, the limit is {MAX_SHARED_BYTES}"));
    }
    Ok(())
}

/// Arguments copied into 16-byte aligned storage, as the trampolines dereference them as their
/// parameter types.
struct ArgStorage {
    _blocks: Vec<[u128; 1]>,
    ptrs: Vec<*mut c_void>,
}

fn marshal(kernel: &str, entry: &KernelEntry, args: &[&[u8]]) -> Result<ArgStorage, EmuError> {
    let n = entry.n_params as usize;
    if args.len() != n {
        return Err(EmuError::ArgCount { kernel: kernel.to_string(), expected: n, got: args.len() });
    }
    // SAFETY: the generated table has n_params entries in `sizes` and `aligns`.
    let (sizes, aligns) = unsafe {
        (std::slice::from_raw_parts(entry.sizes, n.max(1)), std::slice::from_raw_parts(entry.aligns, n.max(1)))
    };
    let mut offsets = Vec::with_capacity(n);
    let mut units = 0usize;
    for (i, arg) in args.iter().enumerate() {
        if arg.len() != sizes[i] as usize {
            return Err(EmuError::ArgSize {
                kernel: kernel.to_string(),
                index: i,
                expected: sizes[i] as usize,
                got: arg.len(),
            });
        }
        if aligns[i] > 16 {
            return Err(EmuError::BadConfig {
                kernel: kernel.to_string(),
                limit: format!("parameter {i} needs {}-byte alignment, the emulator supports 16", aligns[i]),
            });
        }
        offsets.push(units);
        units += arg.len().div_ceil(16).max(1);
    }
    let mut blocks = vec![[0u128; 1]; units.max(1)];
    let base = blocks.as_mut_ptr().cast::<u8>();
    let mut ptrs = Vec::with_capacity(n);
    for (arg, &off) in args.iter().zip(&offsets) {
        // SAFETY: each argument gets its own ceil(len/16) units inside `blocks`.
        unsafe {
            let dst = base.add(off * 16);
            std::ptr::copy_nonoverlapping(arg.as_ptr(), dst, arg.len());
            ptrs.push(dst.cast::<c_void>());
        }
    }
    Ok(ArgStorage { _blocks: blocks, ptrs })
}

fn convert(kernel: &str, e: &EmuErr) -> EmuError {
    let kernel = kernel.to_string();
    let block = e.block;
    let thread = (e.has_thread != 0).then_some(e.thread);
    let write = match e.is_write {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    };
    let addr = e.addr as usize;
    match e.kind {
        ffi::ERR_DEADLOCK => EmuError::Deadlock { kernel, block, detail: e.message() },
        ffi::ERR_WARP => EmuError::WarpSync { kernel, block, thread, detail: e.message() },
        ffi::ERR_ASYNC => EmuError::AsyncCopy { kernel, block, thread, detail: e.message() },
        ffi::ERR_FAULT => match buffer::past_guarded_end(addr) {
            Some((past_end, buffer_len)) => {
                EmuError::OutOfBounds { kernel, block, thread, addr, write, past_end, buffer_len }
            }
            None => EmuError::Fault {
                kernel,
                block,
                thread,
                addr,
                write,
                // x86 reports a misaligned 16-byte vector access (a float4 off a 16-byte
                // boundary, which also faults on a GPU) as a fault at address 0.
                detail: if addr == 0 {
                    "a null pointer, or a misaligned vector (float4/double2) access".to_string()
                } else {
                    "not inside any live guarded buffer's guard page".to_string()
                },
            },
        },
        ffi::ERR_STACK => EmuError::Fault { kernel, block, thread, addr, write, detail: e.message() },
        _ => EmuError::Alloc { bytes: 0, detail: e.message() },
    }
}
