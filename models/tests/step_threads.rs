//! A training step runs on the thread that calls it, under that thread's grad mode.
//!
//! Regression: the trainer once handed each step to a rayon worker (`rayon::scope`). A worker
//! waiting inside a parallel op runs whatever is queued, so another thread's step could run
//! inside the worker's `no_grad()` scope — with tests in parallel, one evaluation made another
//! test's training step fail with "this tensor does not require grad". Here the pool's only
//! worker sits in a `no_grad()` scope, running queued work, for the whole step.

mod train_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitgrad_engine::no_grad;
use bitgrad_models::train::train;
use train_util::{config, hyper, synthetic};

#[test]
fn a_step_is_not_run_by_a_pool_worker_inside_another_threads_no_grad() {
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().expect("this test binary builds the pool");
    let in_scope = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (entered, finished) = (in_scope.clone(), done.clone());
    rayon::spawn(move || {
        let _g = no_grad();
        entered.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        while !finished.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
            // Runs one queued job if there is one — as a worker waiting in a join would.
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    while !in_scope.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut cfg = config(hyper(&[1, 4, 5, 6, 7], 0.1, 8, 2), 3);
    cfg.stop_after = Some(2);
    let trained = train(&cfg, synthetic(16, 3, 5), None);
    done.store(true, Ordering::SeqCst);
    assert_eq!(trained.expect("the steps record their graphs on this thread").steps, 2);
}
