//! The emulator's SIGSEGV handler only handles faults inside kernels: a fault elsewhere, after a
//! launch installed the handler, still kills the process with SIGSEGV. Checked in a child
//! process (this test binary re-run with an environment variable).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use bitgrad_kernels::emu::Modes;
use common::*;

const CHILD: &str = "BITGRAD_EMU_FAULT_CHILD";

#[test]
fn faults_outside_kernels_still_crash() {
    if std::env::var_os(CHILD).is_some() {
        let out = filled(32, 0f32, &Modes::CHECKED);
        run("selftest_index", [1, 1, 1], [32, 1, 1], 0, &[ptr(&out)], &Modes::CHECKED).unwrap();
        // SAFETY: deliberately not safe: this child process must die here.
        unsafe { std::ptr::write_volatile(16usize as *mut u32, 1) };
        std::process::exit(0); // not reached
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new(exe)
        .args(["--exact", "faults_outside_kernels_still_crash", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run child")
        .status;
    assert_eq!(status.signal(), Some(libc_sigsegv()), "child status {status:?}");
}

fn libc_sigsegv() -> i32 {
    11 // SIGSEGV on Linux
}
