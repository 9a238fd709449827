//! The process's rayon pool, with the calling (main) thread as its worker 0.
//!
//! bitgrad's CPU kernels split their work with rayon. By default rayon starts one worker per
//! core and the main thread stays outside the pool: a training step's serial parts (building the
//! graph, small ops, the autograd walk) then run on a thread of their own and compete for the
//! cores with the workers, which spin for a while after every parallel op before they sleep. On
//! 2 cores that cost 6–10 % of an R50x1 step. [`join_global_pool`] makes the caller one of the
//! pool's threads instead (rayon's `use_current_thread`): the pool starts one thread fewer, and
//! the caller's own parallel ops run on it as on any worker.
//!
//! Why not hand each step to a worker (`rayon::scope(|_| step())`)? A worker that waits inside a
//! parallel op steals whatever is queued — another thread's whole step included — and runs it on
//! its own stack, under its own thread-local state (a `no_grad()` scope, say). Two trainers in
//! one process (tests, or a user's program) then broke each other. A step on the caller's
//! thread is only ever interleaved with kernel pieces, which read no thread-local state.

/// Builds rayon's global pool with the calling thread as worker 0 (thread count: rayon's
/// default, `RAYON_NUM_THREADS` or the available cores). Call it first thing on the thread that
/// will run the steps (the CLI does, in `main`).
///
/// Returns `true` when the pool was built so; `false` (and nothing changes) when rayon's global
/// pool already exists, or when it would have a single thread — then the caller would be its
/// only worker, and parallel work another thread queued would wait until the caller next ran a
/// parallel op itself.
pub fn join_global_pool() -> bool {
    let threads = default_threads();
    if threads < 2 {
        return false;
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build_global().is_ok()
}

/// The thread count rayon's default pool would have: `RAYON_NUM_THREADS` when it is a positive
/// number, else the available cores.
fn default_threads() -> usize {
    let cores = || std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => cores(),
    }
}
