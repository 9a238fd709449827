//! `cpu::malloc::keep_freed_memory`: after it, a second step's worth of tensor-sized buffers
//! reuses the first one's memory instead of faulting every page in again. Its own process:
//! the settings are process-wide.

use bitgrad_engine::cpu::malloc::{keep_freed_memory, MallocTuning};

/// Minor page faults of this process so far (Linux: field 10 of /proc/self/stat).
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(7)?.parse().ok()
}

/// A step's buffers: 12 of 0.5–6 MiB (48 MiB in all), every page written, all freed at the end.
fn one_step() -> usize {
    let sizes: Vec<usize> = (0..12).map(|i| (512 << 10) * (1 + (i * 5) % 12)).collect();
    let bufs: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| {
            let mut v = Vec::<u8>::with_capacity(n);
            // Writing through spare capacity: no zero-fill by the allocator, one touch per page.
            v.spare_capacity_mut().iter_mut().step_by(4096).for_each(|b| {
                b.write(1);
            });
            v
        })
        .collect();
    std::hint::black_box(&bufs);
    sizes.iter().sum::<usize>() / 4096
}

#[test]
fn a_second_step_reuses_the_first_ones_pages() {
    let tuning = keep_freed_memory();
    if cfg!(all(target_os = "linux", target_env = "gnu")) && std::env::var_os("BITGRAD_MALLOC").is_none() {
        assert_eq!(tuning, MallocTuning::Applied);
    }
    let Some(start) = minor_faults() else {
        eprintln!("skipped: no /proc/self/stat on this system");
        return;
    };
    if tuning != MallocTuning::Applied {
        eprintln!("skipped the fault count: {tuning:?}");
        return;
    }
    // Two steps to settle, then two measured.
    one_step();
    one_step();
    let warm = minor_faults().unwrap();
    let pages = one_step() + one_step();
    let faults = minor_faults().unwrap() - warm;
    eprintln!("{faults} faults for {pages} pages written (first two steps: {})", warm - start);
    // glibc's defaults give back the freed heap top after each step: ~1 fault per page.
    assert!(faults * 10 < pages as u64, "{faults} page faults for {pages} pages: the freed memory was not kept");
}
