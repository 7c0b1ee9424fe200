//! The processes a command is one of: a plain start, or one rank of an MPI
//! job (`mpirun -np K geohost run SET`, `srun geohost run SET`), which
//! needs geohost built with `--features mpi`.

use anyhow::{bail, Result};
use geohost_da::team::{launched, Solo, Team};

/// This process's team; with MPI, MPI is finalised when this is dropped.
pub enum Ranks {
    Solo(Solo),
    #[cfg(feature = "mpi")]
    Mpi(geohost_da::team::mpi::World),
}

impl Ranks {
    /// Join the MPI job when an MPI launcher started this process (a plain
    /// start is one process). Built without MPI, a start by a launcher of
    /// more than one process is refused: each copy would run everything.
    pub fn start() -> Result<Ranks> {
        #[cfg(feature = "mpi")]
        if launched().is_some() {
            return match geohost_da::team::mpi::World::init() {
                Some(world) => Ok(Ranks::Mpi(world)),
                None => bail!("MPI was already initialised in this process"),
            };
        }
        #[cfg(not(feature = "mpi"))]
        if let Some(size) = launched() {
            if size != Some(1) {
                bail!(
                    "this process was started by an MPI launcher ({} processes), but this geohost was built without MPI, \
                     so every copy would run the whole job; build it with `cargo build --release --features mpi` \
                     (Debian: apt-get install libopenmpi-dev libclang-dev openmpi-bin), or start one process without mpirun",
                    size.map_or("an unknown number of".to_string(), |n| n.to_string())
                );
            }
        }
        Ok(Ranks::Solo(Solo))
    }

    pub fn team(&self) -> &dyn Team {
        match self {
            Ranks::Solo(solo) => solo,
            #[cfg(feature = "mpi")]
            Ranks::Mpi(world) => world,
        }
    }

    /// End this rank after a failure of the split work: print `error`, wait
    /// until every rank has printed its own (they all fail together, in the
    /// same exchange), then exit non-zero. Without the wait the launcher
    /// would stop the other ranks when the first one exits, before they
    /// print which rank failed.
    pub fn fail(&self, error: &anyhow::Error) -> ! {
        // One write: every rank prints at once here.
        crate::print_error(&format!("{error:#}"));
        #[cfg(feature = "mpi")]
        if let Ranks::Mpi(world) = self {
            world.barrier();
        }
        std::process::exit(1)
    }

    /// Refuse a command that does not split its work when started as more
    /// than one rank (`what` names it).
    pub fn single(&self, what: &str) -> Result<()> {
        let size = self.team().size();
        if size > 1 {
            bail!("{what} runs in one process, but this is one of {size} MPI ranks: start it without mpirun (MPI splits the ensemble methods of dynamic plugin-sets)");
        }
        Ok(())
    }
}
