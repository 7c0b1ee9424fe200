//! The processes one ensemble method's run is split over: one process
//! ([`Solo`]), or the ranks of an MPI job ([`mpi::World`], cargo feature
//! `mpi`, launched as `mpirun -np K geohost run SET`).
//!
//! The split is a replicated ensemble: every rank holds the whole ensemble,
//! the observations and the twin, advances its share of the members and
//! analyses its share of the LETKF's local domains, and the shares are
//! gathered into every rank. Each member's forecast and each domain's
//! analysis is computed by the same code on the same inputs whichever rank
//! does it, and gathering copies bits, so a run on K ranks gives the bits
//! of the run on one process (tested with `mpirun -np 2`).
//!
//! A rank that fails (a trapping plugin, a non-finite state) must not leave
//! the others waiting in a collective call forever: [`Team::gather`] first
//! agrees on whether every rank succeeded, and every rank returns an error
//! when one did not.

use anyhow::Result;

/// A group of processes working on one run, in lock-step: every rank makes
/// the same sequence of [`Team::gather`] calls.
pub trait Team {
    /// This process's index, `0..size()`; rank 0 writes the outputs.
    fn rank(&self) -> usize;
    /// How many processes share the work.
    fn size(&self) -> usize;
    /// Every rank's `local` part concatenated in rank order, on every rank;
    /// `counts[r]` is rank `r`'s length (every rank knows every count). A
    /// rank passing an error makes every rank return one: its own, or one
    /// naming the rank that failed.
    fn gather(&self, local: Result<Vec<f64>>, counts: &[usize]) -> Result<Vec<f64>>;
}

/// One process: gathering is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Team for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn gather(&self, local: Result<Vec<f64>>, _counts: &[usize]) -> Result<Vec<f64>> {
        local
    }
}

/// The contiguous share of `items` that rank `rank` of `size` takes: the
/// first `items % size` ranks take one more than the others.
pub fn share(items: usize, size: usize, rank: usize) -> std::ops::Range<usize> {
    let (base, extra) = (items / size, items % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Whether an MPI launcher started this process, and the job's size when
/// it says: OpenMPI's `mpirun` sets `OMPI_COMM_WORLD_SIZE`, MPICH's Hydra
/// and Slurm's `srun --mpi=pmi2` set `PMI_SIZE`, PMIx launchers (`srun
/// --mpi=pmix`, PRRTE) set `PMIX_RANK` (the size is then only known to MPI).
pub fn launched() -> Option<Option<usize>> {
    for name in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
        if let Ok(value) = std::env::var(name) {
            return Some(value.parse().ok());
        }
    }
    std::env::var_os("PMIX_RANK").map(|_| None)
}

#[cfg(feature = "mpi")]
pub mod mpi {
    //! The ranks of an MPI job (`MPI_COMM_WORLD`).

    use super::Team;
    use anyhow::{bail, Result};
    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    /// `MPI_COMM_WORLD`, initialised once per process; MPI is finalised
    /// when this is dropped (keep it alive until the end of `main`).
    pub struct World {
        _universe: Universe,
        world: SimpleCommunicator,
    }

    impl World {
        /// Initialise MPI (threads may exist, only the main thread calls
        /// MPI: `MPI_THREAD_FUNNELED`). `None` when MPI was already
        /// initialised in this process.
        pub fn init() -> Option<World> {
            let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
            let world = universe.world();
            Some(World { _universe: universe, world })
        }

        /// Wait until every rank gets here.
        pub fn barrier(&self) {
            self.world.barrier();
        }
    }

    impl Team for World {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn gather(&self, local: Result<Vec<f64>>, counts: &[usize]) -> Result<Vec<f64>> {
            let size = self.size();
            assert_eq!(counts.len(), size, "one count per rank");
            // Agree on failure first: the lowest failed rank, or size.
            let failed_here = if local.is_err() { self.rank() as i32 } else { size as i32 };
            let mut first_failed = size as i32;
            self.world.all_reduce_into(&failed_here, &mut first_failed, SystemOperation::min());
            let local = match local {
                Err(e) => return Err(e),
                Ok(_) if first_failed < size as i32 => bail!("MPI rank {first_failed} failed (its error is printed by that rank)"),
                Ok(local) => local,
            };
            assert_eq!(local.len(), counts[self.rank()], "this rank's part has the length its count says");
            let total: usize = counts.iter().sum();
            if total > i32::MAX as usize {
                bail!("MPI: one exchange of {total} numbers exceeds MPI's 32-bit counts; run on more ranks or with a smaller ensemble");
            }
            let counts_i32: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
            let displs: Vec<i32> = counts_i32.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
            let mut all = vec![0.0; total];
            let mut partition = PartitionMut::new(&mut all[..], counts_i32, displs);
            self.world.all_gather_varcount_into(&local[..], &mut partition);
            Ok(all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_rank_order() {
        for items in 0..20 {
            for size in 1..6 {
                let ranges: Vec<_> = (0..size).map(|r| share(items, size, r)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[size - 1].end, items);
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
                assert!(ranges.iter().all(|r| r.len() == items / size || r.len() == items / size + 1));
            }
        }
    }
}
