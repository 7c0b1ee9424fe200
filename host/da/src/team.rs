//! The processes one ensemble method's run is split over: one process
//! ([`Solo`]), or the ranks of an MPI job ([`mpi::World`], cargo feature
//! `mpi`, launched as `mpirun -np K geohost run SET`).
//!
//! Two splits. For the LETKF (an analysis with rows of its own) the
//! ensemble is decomposed: each rank holds its share of the members for
//! the forecast and its local domains' rows for the analysis, never the
//! whole ensemble ([`crate::decomposed`]). For the global analyses (ETKF,
//! EnKF) it is replicated: every rank holds the whole ensemble, advances
//! its share of the members, and the shares are gathered into every rank
//! ([`crate::ensemble::split_members`]). Either way each member's forecast
//! and each domain's analysis is computed by the same code on the same
//! inputs whichever rank does it, and exchanges copy bits, so a run on K
//! ranks gives the bits of the run on one process (tested with `mpirun
//! -np 2`).
//!
//! A rank that fails (a trapping plugin, a non-finite state) must not leave
//! the others waiting in a collective call forever: [`Team::gather`] and
//! [`Team::exchange`] first agree on whether every rank succeeded, and
//! every rank returns an error when one did not.

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

    /// All-to-all: `outgoing` is this rank's parts for ranks 0, 1, …
    /// concatenated, `send[r]` long each; returns the parts every rank
    /// sent this one, concatenated in rank order, `receive[r]` long each
    /// (every rank knows every count). Errors as in [`Team::gather`].
    fn exchange(&self, outgoing: Result<Vec<f64>>, send: &[usize], receive: &[usize]) -> Result<Vec<f64>>;
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
    fn exchange(&self, outgoing: Result<Vec<f64>>, _send: &[usize], _receive: &[usize]) -> Result<Vec<f64>> {
        outgoing
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
    use mpi::datatype::{Partition, PartitionMut};
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
            let local = self.agree(local)?;
            assert_eq!(local.len(), counts[self.rank()], "this rank's part has the length its count says");
            let (counts_i32, displs) = counts_and_displacements(counts)?;
            let mut all = vec![0.0; counts.iter().sum()];
            let mut partition = PartitionMut::new(&mut all[..], counts_i32, displs);
            self.world.all_gather_varcount_into(&local[..], &mut partition);
            Ok(all)
        }

        fn exchange(&self, outgoing: Result<Vec<f64>>, send: &[usize], receive: &[usize]) -> Result<Vec<f64>> {
            let size = self.size();
            assert!(send.len() == size && receive.len() == size, "one count per rank");
            let outgoing = self.agree(outgoing)?;
            assert_eq!(outgoing.len(), send.iter().sum::<usize>(), "this rank's parts have the lengths its counts say");
            let (send, send_displs) = counts_and_displacements(send)?;
            let (receive_counts, receive_displs) = counts_and_displacements(receive)?;
            let mut incoming = vec![0.0; receive.iter().sum()];
            let sent = Partition::new(&outgoing[..], send, send_displs);
            let mut partition = PartitionMut::new(&mut incoming[..], receive_counts, receive_displs);
            self.world.all_to_all_varcount_into(&sent, &mut partition);
            Ok(incoming)
        }
    }

    impl World {
        /// Agree on failure before a collective call, so that no rank
        /// waits forever for one that failed: every rank returns an error
        /// when one has (its own, or one naming the lowest failed rank).
        fn agree(&self, local: Result<Vec<f64>>) -> Result<Vec<f64>> {
            let size = self.size() as i32;
            let failed_here = if local.is_err() { self.rank() as i32 } else { size };
            let mut first_failed = size;
            self.world.all_reduce_into(&failed_here, &mut first_failed, SystemOperation::min());
            match local {
                Err(e) => Err(e),
                Ok(_) if first_failed < size => bail!("MPI rank {first_failed} failed (its error is printed by that rank)"),
                Ok(local) => Ok(local),
            }
        }
    }

    /// MPI's 32-bit counts and displacements for parts of `counts` numbers.
    fn counts_and_displacements(counts: &[usize]) -> Result<(Vec<i32>, Vec<i32>)> {
        let total: usize = counts.iter().sum();
        if total > i32::MAX as usize {
            bail!("MPI: one exchange of {total} numbers exceeds MPI's 32-bit counts; run on more ranks or with a smaller ensemble");
        }
        let counts: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
        let displs = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
        Ok((counts, displs))
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
