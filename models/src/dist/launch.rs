//! Who started this process, and which collective engine `--dist auto` picks.
//!
//! Three launchers are understood, through the variables they set for each process:
//!
//! | launcher | rank | world size | local rank | rendezvous |
//! |---|---|---|---|---|
//! | OpenMPI's `mpirun` | `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` | `OMPI_COMM_WORLD_LOCAL_RANK` | MPI itself |
//! | `torchrun` | `RANK` | `WORLD_SIZE` | `LOCAL_RANK` | `MASTER_ADDR`, `MASTER_PORT` |
//! | SLURM's `srun` | `SLURM_PROCID` | `SLURM_STEP_NUM_TASKS` (or `SLURM_NTASKS`) | `SLURM_LOCALID` | MPI (PMI) |
//!
//! checked in that order (`mpirun` inside a SLURM allocation sets both; OpenMPI's variables are
//! the ones of the processes it started). A GPU rank uses device `cuda:<local rank>`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// `--dist`: which engine joins the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    /// MPI under mpirun/srun on the CPU, NCCL on GPUs, a single process without a launcher.
    Auto,
    Mpi,
    Nccl,
    /// A single process, whatever the environment says.
    None,
}

impl FromStr for DistKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DistKind::Auto),
            "mpi" => Ok(DistKind::Mpi),
            "nccl" => Ok(DistKind::Nccl),
            "none" => Ok(DistKind::None),
            _ => Err(Error::Config(format!("--dist takes auto, mpi, nccl or none, not {s:?}"))),
        }
    }
}

/// The launcher whose variables were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    None,
    OpenMpi,
    Torchrun,
    Slurm,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::None => "no launcher",
            Launcher::OpenMpi => "mpirun (OMPI_COMM_WORLD_*)",
            Launcher::Torchrun => "torchrun (RANK/WORLD_SIZE)",
            Launcher::Slurm => "srun (SLURM_*)",
        })
    }
}

/// What a process learns from its launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// Rank on this node: the GPU a rank uses.
    pub local_rank: usize,
    /// torchrun's `MASTER_ADDR:MASTER_PORT`, when set (the NCCL rendezvous without MPI).
    pub master: Option<String>,
}

/// Why an engine may see another world size than the launcher announced.
pub const MISMATCH_HINT: &str = "an MPI library other than the one bitgrad was built against, or srun with an \
     MPI built without SLURM's PMI support (try `srun --mpi=pmix`, or mpirun inside the allocation)";

impl Launch {
    /// A process started by hand: rank 0 of 1.
    pub fn alone() -> Launch {
        Launch { launcher: Launcher::None, rank: 0, world_size: 1, local_rank: 0, master: None }
    }

    /// Reads this process's environment.
    pub fn from_env() -> Result<Launch> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let num = |k: &str| -> Result<Option<usize>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!("the launcher variable {k}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let master = match (get("MASTER_ADDR"), get("MASTER_PORT")) {
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            _ => None,
        };
        let found = if let Some(rank) = num("OMPI_COMM_WORLD_RANK")? {
            let world = num("OMPI_COMM_WORLD_SIZE")?;
            Some((Launcher::OpenMpi, rank, world, "OMPI_COMM_WORLD_SIZE", num("OMPI_COMM_WORLD_LOCAL_RANK")?))
        } else if let Some(rank) = num("RANK")? {
            Some((Launcher::Torchrun, rank, num("WORLD_SIZE")?, "WORLD_SIZE", num("LOCAL_RANK")?))
        } else if let Some(rank) = num("SLURM_PROCID")? {
            let world = match num("SLURM_STEP_NUM_TASKS")? {
                Some(n) => Some(n),
                None => num("SLURM_NTASKS")?,
            };
            Some((Launcher::Slurm, rank, world, "SLURM_NTASKS", num("SLURM_LOCALID")?))
        } else {
            None
        };
        let Some((launcher, rank, world, world_var, local)) = found else { return Ok(Launch::alone()) };
        let Some(world_size) = world else {
            return Err(Error::Config(format!("{launcher} gave this process a rank but {world_var} is not set")));
        };
        if world_size == 0 || rank >= world_size {
            return Err(Error::Config(format!("{launcher} gave rank {rank} in a world of {world_size} ranks")));
        }
        Ok(Launch { launcher, rank, world_size, local_rank: local.unwrap_or(0), master })
    }
}

/// The engine for `kind` in this launch: `auto` is a single process in a world of one, NCCL on
/// a GPU, MPI on the CPU under mpirun or srun; torchrun on the CPU has no engine (it brings no
/// MPI runtime, and bitgrad has no home-made transport).
pub fn choose(kind: DistKind, launch: &Launch, cuda: bool) -> Result<DistKind> {
    match kind {
        DistKind::Nccl if !cuda => {
            Err(Error::Config("--dist nccl needs a CUDA device (--device cuda); on the CPU use --dist mpi".into()))
        }
        DistKind::Auto if launch.world_size == 1 => Ok(DistKind::None),
        DistKind::Auto if cuda => Ok(DistKind::Nccl),
        DistKind::Auto if launch.launcher == Launcher::Torchrun => Err(Error::Config(format!(
            "torchrun started {} ranks on the CPU: bitgrad's CPU engine is MPI, which torchrun does not \
             start; launch with `mpirun -np {}` or `srun`, or use --device cuda (NCCL)",
            launch.world_size, launch.world_size
        ))),
        DistKind::Auto => Ok(DistKind::Mpi),
        k => Ok(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_the_three_launchers() {
        assert_eq!(launch(&[]).unwrap(), Launch::alone());
        let l = launch(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ])
        .unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size, l.local_rank), (Launcher::OpenMpi, 3, 4, 1));
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size, l.local_rank), (Launcher::Torchrun, 1, 2, 1));
        assert_eq!(l.master.as_deref(), Some("10.0.0.1:29500"));
        let l = launch(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")]).unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size, l.local_rank), (Launcher::Slurm, 5, 8, 1));
        // srun's step size wins over the allocation's task count.
        let l = launch(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "8"), ("SLURM_STEP_NUM_TASKS", "2")]).unwrap();
        assert_eq!(l.world_size, 2);
        // mpirun inside an allocation: OpenMPI's variables are this process's.
        let l = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
        ])
        .unwrap();
        assert_eq!((l.launcher, l.rank), (Launcher::OpenMpi, 2));
    }

    #[test]
    fn bad_variables_are_named() {
        let e = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = launch(&[("RANK", "0")]).unwrap_err().to_string();
        assert!(e.contains("WORLD_SIZE is not set"), "{e}");
        let e = launch(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")]).unwrap_err().to_string();
        assert!(e.contains("rank 4 in a world of 4"), "{e}");
    }

    #[test]
    fn auto_picks_the_engine() {
        let alone = Launch::alone();
        let mpi = launch(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]).unwrap();
        let torch = launch(&[("RANK", "0"), ("WORLD_SIZE", "2")]).unwrap();
        assert_eq!(choose(DistKind::Auto, &alone, false).unwrap(), DistKind::None);
        assert_eq!(choose(DistKind::Auto, &mpi, false).unwrap(), DistKind::Mpi);
        assert_eq!(choose(DistKind::Auto, &mpi, true).unwrap(), DistKind::Nccl);
        assert_eq!(choose(DistKind::Auto, &torch, true).unwrap(), DistKind::Nccl);
        assert!(choose(DistKind::Auto, &torch, false).unwrap_err().to_string().contains("mpirun -np 2"));
        assert!(choose(DistKind::Nccl, &alone, false).unwrap_err().to_string().contains("--device cuda"));
        assert_eq!(choose(DistKind::None, &mpi, false).unwrap(), DistKind::None);
        assert_eq!("mpi".parse::<DistKind>().unwrap(), DistKind::Mpi);
        assert!("gloo".parse::<DistKind>().is_err());
    }
}
