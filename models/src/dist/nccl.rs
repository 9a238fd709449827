//! NCCL collectives through cudarc (cargo feature `nccl`): one process per GPU, each rank on
//! device `cuda:<local rank>`, joined by `ncclCommInitRank` (cudarc's `Comm::from_rank`, with
//! the device's context bound to the thread first, as NCCL requires).
//!
//! The 128-byte NCCL id: under mpirun (and a build with `mpi`), rank 0 creates it and MPI
//! broadcasts it; otherwise every rank builds the same id from `NCCL_COMM_ID=<host>:<port>`
//! (NCCL's own bootstrap, rank 0 listens there), which bitgrad sets from torchrun's
//! `MASTER_ADDR` and `MASTER_PORT + 1` when it is not set (torchrun's own store holds
//! `MASTER_PORT`).
//!
//! The library: cudarc looks for `libnccl.so` (and `.so.{13,12,11,10,9,1}`), while NVIDIA ships
//! `libnccl.so.2` (PyPI's `nvidia-nccl-cu13`, Debian's/Ubuntu's `libnccl2`). [`locate_library`]
//! finds a `libnccl.so.2`, links it as `libnccl.so` in a private folder and re-executes the
//! process with that folder on `LD_LIBRARY_PATH` (the dynamic loader reads it only at start).
//!
//! The collectives take host buffers (the trait's contract) and reduce them through a device
//! staging buffer on the communicator's stream; gradients that already live on the GPU make a
//! round trip through the host. The communication thread gives the overlap with backward.

use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp as NcclOp};

use super::launch::Launch;
#[cfg(feature = "mpi")]
use super::launch::Launcher;
use super::{Collectives, ReduceOp};
use crate::{Error, Result};

/// Set on the re-executed process, so that a library that still does not load is an error
/// instead of a loop.
const REEXEC_MARK: &str = "BITGRAD_NCCL_REEXEC";

/// A rank of an NCCL communicator (see the module docs).
pub struct Nccl {
    state: Mutex<State>,
    rank: usize,
    size: usize,
}

struct State {
    comm: Comm,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// MPI, when it carried the id: finalised with this rank.
    #[cfg(feature = "mpi")]
    _mpi: Option<super::mpi::Mpi>,
}

// SAFETY: cudarc's `Comm` holds the raw `ncclComm_t` and is not `Send`/`Sync`. NCCL allows a
// communicator to be used from any thread as long as calls on it are not concurrent and the
// device's context is current: every use goes through the mutex and binds the context first.
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nccl(rank {} of {})", self.rank, self.size)
    }
}

fn nccl_error(what: &str, e: cudarc::nccl::result::NcclError) -> Error {
    Error::Msg(format!("NCCL {what} failed: {:?} (set NCCL_DEBUG=INFO for NCCL's own account)", e.0))
}

fn driver_error(what: &str, e: cudarc::driver::DriverError) -> Error {
    Error::Msg(format!("CUDA {what} failed: {e:?}"))
}

/// The message for a machine without a loadable NCCL.
pub fn missing_library_message() -> String {
    "NCCL was not found: cudarc loads libnccl.so (or libnccl.so.13/.12/.11/.10/.9/.1) and bitgrad also \
     looks for libnccl.so.2 in $BITGRAD_NCCL_LIB, the LD_LIBRARY_PATH folders and the system library \
     folders; install NCCL (`pip install nvidia-nccl-cu13` and set BITGRAD_NCCL_LIB=<site-packages>/nvidia/nccl/lib, \
     or the libnccl2 package) — docs/distributed.md"
        .into()
}

/// Folders that may hold `libnccl.so.2`: `BITGRAD_NCCL_LIB` (a folder or the file), then
/// `LD_LIBRARY_PATH`, then the system's library folders.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("BITGRAD_NCCL_LIB") {
        let p = PathBuf::from(p);
        out.push(if p.is_dir() { p.join("libnccl.so.2") } else { p });
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        out.extend(std::env::split_paths(&paths).map(|d| d.join("libnccl.so.2")));
    }
    for d in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/local/cuda/lib64"] {
        out.push(Path::new(d).join("libnccl.so.2"));
    }
    out
}

/// Makes NCCL loadable for cudarc (see the module docs): returns when it is, re-executes the
/// process when a `libnccl.so.2` needs a `libnccl.so` link, errors when there is none.
pub fn locate_library() -> Result<()> {
    // SAFETY: only tries to dlopen the candidate names.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Ok(());
    }
    if std::env::var_os(REEXEC_MARK).is_some() {
        return Err(Error::Msg(format!(
            "{} (a libnccl.so link to {} was made but does not load)",
            missing_library_message(),
            std::env::var(REEXEC_MARK).unwrap_or_default()
        )));
    }
    let Some(lib) = candidates().into_iter().find(|p| p.is_file()) else {
        return Err(Error::Msg(missing_library_message()));
    };
    let dir = std::env::temp_dir().join(format!("bitgrad-nccl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let link = dir.join("libnccl.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link).map_err(|e| Error::io(&link, e))?;
    let mut paths = vec![dir.clone()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    let joined = std::env::join_paths(paths).map_err(|e| Error::Msg(format!("LD_LIBRARY_PATH: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| Error::Msg(format!("cannot find this executable: {e}")))?;
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", joined)
        .env(REEXEC_MARK, &lib)
        .exec();
    Err(Error::Msg(format!("cannot re-execute {} with NCCL on LD_LIBRARY_PATH: {err}", exe.display())))
}

impl Nccl {
    /// Joins the NCCL world of `launch` on device `cuda:<local rank>`.
    pub fn init(launch: &Launch) -> Result<Nccl> {
        locate_library()?;
        // SAFETY: only tries to dlopen libcuda.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Msg(
                "NCCL needs a GPU: the CUDA driver (libcuda.so.1) is not installed on this machine".into(),
            ));
        }
        let ctx = CudaContext::new(launch.local_rank)
            .map_err(|e| Error::Msg(format!("NCCL needs a GPU: cannot open cuda:{} ({e:?})", launch.local_rank)))?;
        ctx.bind_to_thread().map_err(|e| driver_error("binding the context", e))?;
        let stream = ctx.new_stream().map_err(|e| driver_error("creating a stream", e))?;
        #[cfg(feature = "mpi")]
        let (id, mpi) = if launch.launcher == Launcher::OpenMpi {
            let mpi = super::mpi::Mpi::init()?;
            let id = id_over_mpi(&mpi)?;
            (id, Some(mpi))
        } else {
            (id_from_env(launch)?, None)
        };
        #[cfg(not(feature = "mpi"))]
        let id = id_from_env(launch)?;
        let comm = Comm::from_rank(stream.clone(), launch.rank, launch.world_size, id)
            .map_err(|e| nccl_error("ncclCommInitRank", e))?;
        Ok(Nccl {
            state: Mutex::new(State {
                comm,
                ctx,
                stream,
                #[cfg(feature = "mpi")]
                _mpi: mpi,
            }),
            rank: launch.rank,
            size: launch.world_size,
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.ctx.bind_to_thread().map_err(|e| driver_error("binding the context", e))?;
        Ok(s)
    }

    fn round_trip<T: cudarc::driver::DeviceRepr + cudarc::nccl::NcclType>(
        &self,
        buf: &mut [T],
        f: impl FnOnce(&Comm, &mut cudarc::driver::CudaSlice<T>) -> std::result::Result<(), Error>,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let s = self.lock()?;
        let mut dev = s.stream.clone_htod(&*buf).map_err(|e| driver_error("copy to the device", e))?;
        f(&s.comm, &mut dev)?;
        s.stream.memcpy_dtoh(&dev, buf).map_err(|e| driver_error("copy to the host", e))?;
        s.stream.synchronize().map_err(|e| driver_error("synchronize", e))
    }
}

/// Under mpirun: rank 0's `ncclGetUniqueId`, broadcast over MPI.
#[cfg(feature = "mpi")]
fn id_over_mpi(mpi: &super::mpi::Mpi) -> Result<Id> {
    let mut bytes = [0u8; 128];
    if mpi.rank() == 0 {
        let id = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        for (b, c) in bytes.iter_mut().zip(id.internal()) {
            *b = *c as u8;
        }
    }
    mpi.broadcast_bytes(&mut bytes, 0)?;
    Ok(Id::uninit(bytes.map(|b| b as c_char)))
}

/// Without MPI: the id NCCL derives from `NCCL_COMM_ID` (the same on every rank), set from
/// torchrun's `MASTER_ADDR:MASTER_PORT+1` when absent; a world of one makes its own.
fn id_from_env(launch: &Launch) -> Result<Id> {
    if std::env::var_os("NCCL_COMM_ID").is_none() && launch.world_size == 1 {
        // Nobody to share it with: rank 0's own id.
        return Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e));
    }
    if std::env::var_os("NCCL_COMM_ID").is_none() {
        let Some(master) = &launch.master else {
            return Err(Error::Config(format!(
                "NCCL needs a rendezvous for {}: set NCCL_COMM_ID=<rank 0's host>:<free port> on every rank, \
                 or launch with torchrun (MASTER_ADDR/MASTER_PORT) or mpirun (a build with --features mpi)",
                launch.launcher
            )));
        };
        let (host, port) = master.rsplit_once(':').unwrap_or((master, ""));
        let port: u16 = port.parse().map_err(|_| Error::Config(format!("MASTER_PORT of {master:?} is not a port")))?;
        let comm_id = format!("{host}:{}", port.wrapping_add(1));
        // SAFETY: set before any thread that could read the environment concurrently exists in
        // this process's NCCL setup (the call below is the first NCCL call).
        std::env::set_var("NCCL_COMM_ID", comm_id);
    }
    Id::new().map_err(|e| nccl_error("ncclGetUniqueId (from NCCL_COMM_ID)", e))
}

impl Collectives for Nccl {
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn all_reduce(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        let op = match op {
            ReduceOp::Sum => NcclOp::Sum,
            ReduceOp::Avg => NcclOp::Avg,
        };
        self.round_trip(buf, |comm, dev| {
            comm.all_reduce_in_place(dev, &op).map(|_| ()).map_err(|e| nccl_error("all-reduce", e))
        })
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.round_trip(buf, |comm, dev| {
            comm.broadcast_in_place(dev, root as i32).map(|_| ()).map_err(|e| nccl_error("broadcast", e))
        })
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.round_trip(buf, |comm, dev| {
            comm.broadcast_in_place(dev, root as i32).map(|_| ()).map_err(|e| nccl_error("broadcast", e))
        })
    }
    fn barrier(&self) -> Result<()> {
        // NCCL has no barrier: a one-element all-reduce waits for every rank.
        self.all_reduce(&mut [0.0], ReduceOp::Sum)
    }
}
