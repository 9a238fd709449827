//! glibc malloc settings for a process that allocates and frees tensor-sized buffers every step.
//!
//! A training step allocates its activations and gradients (on R50x1 at 128 px, batch 8, about
//! 100 MB of buffers of 0.1–8 MB) and frees them all when the step ends. With glibc's defaults
//! the freed heap top is larger than the trim threshold (twice the largest buffer freed so far),
//! so it goes back to the kernel at the end of every step, and the next step takes every page
//! again as a page fault, zero-filled by the kernel: measured on a 2-core AMD EPYC, 586 000
//! faults and 2.5 s of system time over a `bench train` run that with the settings below took
//! 182 000 faults and 1.2 s. PyTorch's CPU allocator has the same behaviour (plain
//! `posix_memalign`).
//!
//! [`keep_freed_memory`] sets, through `mallopt`:
//! * `M_TRIM_THRESHOLD` = 2 GiB − 1 (the largest value `mallopt` takes): the heap's free top stays mapped (the next step reuses it);
//! * `M_MMAP_THRESHOLD` = 32 MiB (glibc's maximum): buffers below it come from the heap from the
//!   first step on, instead of from `mmap` until glibc's dynamic threshold has grown.
//!
//! Peak memory is unchanged in kind (freed memory is reused, not added to); what changes is that
//! the process keeps its peak heap mapped until it exits. Buffers of 32 MiB and more still come
//! from `mmap`. A user's own `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_` or
//! `MALLOC_TOP_PAD_` wins (nothing is set then), and `BITGRAD_MALLOC=default` leaves glibc as it
//! is. Other C libraries and systems: nothing to do.

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MallocTuning {
    /// The settings above are in effect.
    Applied,
    /// Left alone: the user set glibc's own variables or `BITGRAD_MALLOC=default`.
    UserSettings,
    /// Not glibc (or `mallopt` refused a value): nothing was changed.
    Unsupported,
}

/// The largest `M_MMAP_THRESHOLD` glibc accepts on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Applies the settings of the module docs (once per process; the CLI calls it first thing).
pub fn keep_freed_memory() -> MallocTuning {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let user = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"].iter().any(|n| set(n));
    if user || std::env::var("BITGRAD_MALLOC").is_ok_and(|v| v.trim() == "default") {
        return MallocTuning::UserSettings;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> MallocTuning {
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
    let ok = unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as i32) == 1
    };
    if ok {
        MallocTuning::Applied
    } else {
        MallocTuning::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> MallocTuning {
    MallocTuning::Unsupported
}
