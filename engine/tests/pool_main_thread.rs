//! `cpu::pool::join_global_pool`: the calling thread becomes worker 0 of rayon's global pool
//! (the CLI calls it first thing). Its own process: the global pool is built once per process.

use std::time::Duration;

use bitgrad_engine::cpu::pool::join_global_pool;
use rayon::prelude::*;

#[test]
fn the_caller_becomes_worker_0_and_other_threads_still_get_parallel_work_done() {
    let threads = match std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let joined = join_global_pool();
    // One thread would leave the caller as the only worker: then it must decline.
    assert_eq!(joined, threads >= 2, "{threads} threads");
    if !joined {
        eprintln!("skipped the rest: a single thread ({threads})");
        return;
    }
    assert_eq!(rayon::current_thread_index(), Some(0), "the caller is worker 0");
    assert_eq!(rayon::current_num_threads(), threads, "the caller counts as one of the threads");
    assert!(!join_global_pool(), "a second call finds the pool built and changes nothing");
    let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i % 7).sum();
    assert_eq!(sum, (0..100_000u64).map(|i| i % 7).sum::<u64>());

    // Another thread's parallel op completes while worker 0 is busy outside rayon (the
    // loader's threads do this while the main thread waits): the other workers serve it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let s: u64 = (0..10_000u64).into_par_iter().sum();
        tx.send(s).unwrap();
    });
    let got = rx.recv_timeout(Duration::from_secs(60)).expect("the other workers ran it");
    assert_eq!(got, 49_995_000);
}
