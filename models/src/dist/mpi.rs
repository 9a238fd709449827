//! MPI collectives through rsmpi (the `mpi` crate) — the CPU engine, launched by `mpirun` or
//! `srun`. MPI is initialised only when a run asks for it, with `MPI_THREAD_SERIALIZED`: the
//! communication thread and the main thread both call MPI, never at the same time (a mutex here
//! serialises them). An MPI library can be initialised once per process, so a second `Mpi::init`
//! in the same process is an error. Dropping the last handle calls `MPI_Finalize`.
//!
//! MPI's default error handler stays in place: an error inside MPI (a peer that died, under
//! OpenMPI) aborts the job, and mpirun reports which rank failed; [`super::Watched`] bounds the
//! cases where MPI would wait instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::Communicator;
use mpi::Threading;

use super::{Collectives, ReduceOp};
use crate::{Error, Result};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The MPI world (see the module docs).
pub struct Mpi {
    /// The universe (finalised on drop) and a scratch buffer: rsmpi has no in-place all-reduce,
    /// so the send side is a copy of the bucket (reused between calls).
    state: Mutex<(Universe, Vec<f32>)>,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank, self.size)
    }
}

impl Mpi {
    /// Initialises MPI (`MPI_Init_thread`, serialized). Without a launcher this is an MPI
    /// singleton: rank 0 of 1.
    pub fn init() -> Result<Mpi> {
        if INITIALISED.swap(true, Ordering::SeqCst) || mpi::environment::is_initialized() {
            return Err(Error::Msg("MPI can be initialised only once per process".into()));
        }
        let (universe, provided) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Msg("MPI was already initialised in this process".into()))?;
        if !matches!(provided, Threading::Serialized | Threading::Multiple) {
            return Err(Error::Msg(format!(
                "the MPI library provides thread level {provided:?}; bitgrad's communication thread needs \
                 MPI_THREAD_SERIALIZED or better"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Mpi { state: Mutex::new((universe, Vec::new())), rank, size })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Universe, Vec<f32>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_root(&self, root: usize) -> Result<i32> {
        if root >= self.size {
            return Err(Error::Msg(format!("broadcast from rank {root} in a world of {} ranks", self.size)));
        }
        Ok(root as i32)
    }
}

impl Collectives for Mpi {
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn all_reduce(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        if i32::try_from(buf.len()).is_err() {
            return Err(Error::Msg(format!("an MPI all-reduce of {} elements exceeds MPI's int count", buf.len())));
        }
        let mut guard = self.lock();
        let (universe, scratch) = &mut *guard;
        scratch.clear();
        scratch.extend_from_slice(buf);
        universe.world().all_reduce_into(&scratch[..], buf, SystemOperation::sum());
        if op == ReduceOp::Avg {
            // A division, not a multiplication by 1/W: exact for powers of two, correctly rounded else.
            let w = self.size as f32;
            buf.iter_mut().for_each(|x| *x /= w);
        }
        Ok(())
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let root = self.check_root(root)?;
        let guard = self.lock();
        guard.0.world().process_at_rank(root).broadcast_into(buf);
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        let root = self.check_root(root)?;
        let guard = self.lock();
        guard.0.world().process_at_rank(root).broadcast_into(buf);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.lock().0.world().barrier();
        Ok(())
    }
}
