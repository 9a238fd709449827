//! The shim's knobs, read once from the environment at `cuInit`.

use std::time::Duration;

use bitgrad_kernels::emu::Modes;

/// What the emulated machine looks like and how strictly it behaves.
#[derive(Debug, Clone)]
pub struct Config {
    pub devices: usize,
    pub mem_bytes: u64,
    /// Work waits this long on its stream before running, unless a synchronize asks for it.
    pub latency: Duration,
    pub reject_cubin: bool,
    pub quiet: bool,
    pub modes: Modes,
}

fn number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("bitgrad CUDA shim: ignoring {name}={v:?} (not a number); using {default}");
            default
        }),
        Err(_) => default,
    }
}

impl Config {
    pub fn from_env() -> Config {
        Config {
            devices: number("BITGRAD_SHIM_DEVICES", 1) as usize,
            mem_bytes: number("BITGRAD_SHIM_MEM_MB", 16 << 10) << 20,
            latency: Duration::from_micros(number("BITGRAD_SHIM_LATENCY_US", 200)),
            reject_cubin: std::env::var("BITGRAD_SHIM_REJECT_CUBIN").is_ok_and(|v| v == "1"),
            quiet: std::env::var("BITGRAD_SHIM_QUIET").is_ok_and(|v| v == "1"),
            modes: Modes::from_env(),
        }
    }
}

/// The emulated GPU: an H100's numbers where a program may ask for them.
pub const DEVICE_NAME: &str = "bitgrad emulated GPU";
pub const CC: (u32, u32) = (9, 0);
/// Driver 580 series = CUDA 13.0; the newest PTX ISA it compiles is 9.0.
pub const DRIVER_VERSION: i32 = 13000;
pub const MAX_PTX_ISA: (u32, u32) = (9, 0);
/// Without `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)` a block gets 48 KiB.
pub const DEFAULT_SHARED: u32 = 48 << 10;
/// The opt-in maximum per block on sm_90 (227 KiB).
pub const OPTIN_SHARED: u32 = 232_448;
/// Shared memory the hardware reserves per block on sm_80+; sm_90 CUBINs include it in
/// `.nv.shared.<kernel>`, and it does not count against the limits above.
pub const RESERVED_SHARED: u32 = 1024;
pub const MAX_THREADS: u32 = 1024;

/// `cuDeviceGetAttribute` values (H100 SXM5); an attribute not listed is an error, not a guess.
pub fn attribute(attr: i32) -> Option<i32> {
    Some(match attr {
        1 => 1024,                     // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,                 // MAX_BLOCK_DIM_X, _Y
        4 => 64,                       // MAX_BLOCK_DIM_Z
        5 => i32::MAX,                 // MAX_GRID_DIM_X
        6 | 7 => 65535,                // MAX_GRID_DIM_Y, _Z
        8 => 49152,                    // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                    // TOTAL_CONSTANT_MEMORY
        10 => 32,                      // WARP_SIZE
        12 => 65536,                   // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,               // CLOCK_RATE (kHz)
        16 => 132,                     // MULTIPROCESSOR_COUNT
        17 | 18 => 0,                  // KERNEL_EXEC_TIMEOUT, INTEGRATED
        19 => 1,                       // CAN_MAP_HOST_MEMORY
        20 => 0,                       // COMPUTE_MODE (default)
        31 | 32 => 1,                  // CONCURRENT_KERNELS, ECC_ENABLED
        36 => 2_619_000,               // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                    // GLOBAL_MEMORY_BUS_WIDTH
        38 => 50 << 20,                // L2_CACHE_SIZE
        39 => 2048,                    // MAX_THREADS_PER_MULTIPROCESSOR
        41 => 1,                       // UNIFIED_ADDRESSING
        75 => CC.0 as i32,             // COMPUTE_CAPABILITY_MAJOR
        76 => CC.1 as i32,             // COMPUTE_CAPABILITY_MINOR
        81 => 233_472,                 // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                   // MAX_REGISTERS_PER_MULTIPROCESSOR
        97 => OPTIN_SHARED as i32,     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        106 => 32,                     // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => RESERVED_SHARED as i32, // RESERVED_SHARED_MEMORY_PER_BLOCK
        115 => 1,                      // MEMORY_POOLS_SUPPORTED
        _ => return None,
    })
}
