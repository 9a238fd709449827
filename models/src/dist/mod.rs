//! Data-parallel training over existing collective engines (docs/distributed.md).
//!
//! * [`Collectives`]: the few operations the trainer needs — in-place all-reduce (sum or mean)
//!   of flat f32 buffers, broadcast, barrier, rank and world size — with three backends:
//!   [`Single`] (a world of one, the default), `Mpi` (rsmpi, cargo feature `mpi`) and `Nccl`
//!   (cudarc's NCCL, cargo feature `nccl`).
//! * [`launch`]: who started us (torchrun, mpirun, srun) and which backend `--dist auto` picks.
//! * [`buckets`]: the gradient bucket plan (reverse parameter order, 1 MiB first bucket, 25 MiB
//!   after, as PyTorch's DDP).
//! * [`reducer`]: the DDP gradient all-reduce, bucket by bucket on a communication thread while
//!   backward is still running.
//! * [`verify`]: ranks compare what they were given before training starts, and the state they
//!   hold at each checkpoint.
//! * [`watchdog`]: every collective has a deadline, so a dead or stuck peer ends the run with a
//!   message instead of a hang.

pub mod buckets;
pub mod launch;
pub mod reducer;
pub mod single;
pub mod verify;
pub mod watchdog;

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

pub use self::buckets::{Bucket, BucketPlan};
pub use self::launch::{DistKind, Launch, Launcher};
pub use self::reducer::{Reducer, ReducerStats};
pub use self::single::Single;
pub use self::watchdog::Watched;
use crate::{Error, Result};

/// How an all-reduce combines the ranks' buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size (DDP's gradient average).
    Avg,
}

/// The collective operations data-parallel training needs. Every rank must make the same calls
/// in the same order with buffers of the same length; the trainer guarantees that (a mismatch
/// in an engine hangs or corrupts, it is not detected). Implementations serialise their calls
/// internally, so a communication thread and the main thread may share one.
pub trait Collectives: Send + Sync + Debug {
    /// The engine's name ("single", "mpi", "nccl") for messages.
    fn backend(&self) -> &'static str;
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Reduces `buf` over all ranks, in place; every rank ends with the result.
    fn all_reduce(&self, buf: &mut [f32], op: ReduceOp) -> Result<()>;
    /// Rank `root`'s `buf` replaces every other rank's.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// [`Collectives::broadcast`] of raw bytes (fingerprints, NCCL ids).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// The collectives of a single-process run.
pub fn single() -> Arc<dyn Collectives> {
    Arc::new(Single)
}

/// Joins the run described by `launch` with the engine `kind` asks for (`auto` picks one from
/// the launcher and the device; see [`launch::choose`]). Every collective then runs under a
/// watchdog of `timeout` (see [`watchdog`]). `cuda_device` is the device a GPU rank uses.
pub fn connect(kind: DistKind, launch: &Launch, cuda: bool, timeout: Duration) -> Result<Arc<dyn Collectives>> {
    let chosen = launch::choose(kind, launch, cuda)?;
    let inner: Arc<dyn Collectives> = match chosen {
        DistKind::None | DistKind::Auto => return Ok(single()),
        DistKind::Mpi => connect_mpi(launch)?,
        DistKind::Nccl => connect_nccl(launch)?,
    };
    if inner.world_size() != launch.world_size && launch.launcher != Launcher::None {
        return Err(Error::Config(format!(
            "{} says the world has {} ranks but {} sees {}: {}",
            launch.launcher,
            launch.world_size,
            inner.backend(),
            inner.world_size(),
            launch::MISMATCH_HINT
        )));
    }
    Ok(Arc::new(Watched::new(inner, timeout)))
}

#[cfg(feature = "mpi")]
fn connect_mpi(_launch: &Launch) -> Result<Arc<dyn Collectives>> {
    Ok(Arc::new(mpi::Mpi::init()?))
}
#[cfg(not(feature = "mpi"))]
fn connect_mpi(_launch: &Launch) -> Result<Arc<dyn Collectives>> {
    Err(Error::Config(
        "--dist mpi: this bitgrad was built without MPI; rebuild with `cargo build --release --features mpi` \
         (needs an MPI library such as Debian's libopenmpi-dev, and libclang)"
            .into(),
    ))
}

#[cfg(feature = "nccl")]
fn connect_nccl(launch: &Launch) -> Result<Arc<dyn Collectives>> {
    Ok(Arc::new(nccl::Nccl::init(launch)?))
}
#[cfg(not(feature = "nccl"))]
fn connect_nccl(_launch: &Launch) -> Result<Arc<dyn Collectives>> {
    Err(Error::Config(
        "--dist nccl: this bitgrad was built without NCCL; rebuild with `cargo build --release --features nccl`".into(),
    ))
}
