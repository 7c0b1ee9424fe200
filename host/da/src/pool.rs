//! Worker threads kept parked between analyses, so that a cycle of a
//! fraction of a millisecond does not pay for starting threads (a scoped
//! spawn and join cost about as much as a tenth of a Lorenz-96-400 LETKF
//! analysis on two threads).
//!
//! [`Pool::run`] hands one job to the calling thread and `threads − 1`
//! parked workers and returns when every one of them has finished it: the
//! job may borrow from the caller's stack, as with `std::thread::scope`.
//! Workers sleep on a condition variable between jobs (no spinning: under
//! `mpirun` the other ranks want the cores). A job that panics on any
//! thread makes `run` panic on the caller once all have finished.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Parked worker threads; started on first use, joined when dropped.
#[derive(Default)]
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Workers wait here for a new job (or for the pool to close).
    wake: Condvar,
    /// The caller waits here for the last worker to finish.
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Incremented per job: a worker runs each generation once.
    generation: u64,
    job: Option<Job>,
    /// Workers that take part in the current job (indices 1..=taking).
    taking: usize,
    /// Of them, those not finished yet.
    running: usize,
    panicked: bool,
    closing: bool,
}

/// The current job, its lifetime erased: [`Pool::run`] does not return
/// (or unwind) before every worker has finished with it.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync` and outlives every use (see `Job`).
unsafe impl Send for Job {}

impl Pool {
    /// Run `job(i)` for every i in `0..threads`: `job(0)` on this thread,
    /// the others on parked workers (started the first time they are
    /// needed). Returns when all have returned; panics if any panicked.
    pub fn run(&mut self, threads: usize, job: &(dyn Fn(usize) + Sync)) {
        let helpers = threads.saturating_sub(1);
        if helpers == 0 {
            return job(0);
        }
        while self.workers.len() < helpers {
            let (shared, index) = (Arc::clone(&self.shared), self.workers.len() + 1);
            self.workers.push(
                std::thread::Builder::new().name(format!("geohost-analysis-{index}")).spawn(move || work(&shared, index)).expect("starting an analysis thread"),
            );
        }
        // SAFETY: only the lifetime changes; the wait below outlives every use.
        let erased: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(job) };
        {
            let mut state = lock(&self.shared.state);
            state.generation += 1;
            state.job = Some(Job(erased));
            state.taking = helpers;
            state.running = helpers;
            state.panicked = false;
        }
        self.shared.wake.notify_all();
        let here = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut state = lock(&self.shared.state);
        while state.running > 0 {
            state = unpoisoned(self.shared.done.wait(state));
        }
        state.job = None;
        let panicked = state.panicked;
        drop(state);
        if let Err(payload) = here {
            std::panic::resume_unwind(payload);
        }
        assert!(!panicked, "an analysis thread panicked");
    }
}

impl Pool {
    /// Split `data` into `threads` contiguous parts of whole `unit`s (the
    /// first ones one unit longer when they do not divide evenly, as
    /// [`crate::team::share`] counts) and run `job(first, part)` on each
    /// part on its own thread, `first` the part's first unit. For kernels
    /// whose every unit (a row, a member, an observation) is computed on
    /// its own: the bits do not depend on `threads`.
    pub fn split_mut<T: Send>(&mut self, threads: usize, data: &mut [T], unit: usize, job: &(dyn Fn(usize, &mut [T]) + Sync)) {
        self.split_mut_indexed(threads, data, unit, &|_, first, part| job(first, part));
    }

    /// [`Pool::split_mut`] whose `job(i, first, part)` also receives the
    /// part's index i (`0..threads` after clamping to the units), for jobs
    /// that pair part i with something of their own (a model instance).
    pub fn split_mut_indexed<T: Send>(&mut self, threads: usize, data: &mut [T], unit: usize, job: &(dyn Fn(usize, usize, &mut [T]) + Sync)) {
        let units = data.len().checked_div(unit).unwrap_or(0);
        let threads = threads.clamp(1, units.max(1));
        if threads == 1 {
            return job(0, 0, data);
        }
        let mut rest = data;
        let mut parts = Vec::with_capacity(threads);
        for i in 0..threads {
            let range = crate::team::share(units, threads, i);
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(range.len() * unit);
            parts.push(Mutex::new((range.start, part)));
            rest = tail;
        }
        // Thread i takes part i: no lock is ever contended.
        self.run(threads, &|i| {
            let mut part = lock_part(&parts[i]);
            let (first, values) = &mut *part;
            job(i, *first, values);
        });
    }
}

fn lock_part<'a, 'b, T>(part: &'a Mutex<(usize, &'b mut [T])>) -> MutexGuard<'a, (usize, &'b mut [T])> {
    unpoisoned(part.lock())
}

/// Threads worth using for a pass over `elements` values on a machine
/// with `threads` (at least one): handing a part to a parked thread costs
/// about as much as a pass over some 10⁵ values (at 4,000 × 20 a split
/// pass measured slower than one thread), so below
/// [`ELEMENTS_PER_THREAD`] each a pass stays on one.
pub fn threads_for(elements: usize, threads: usize) -> usize {
    threads.min(elements / ELEMENTS_PER_THREAD).max(1)
}

/// Fewest values per thread in a threaded pass ([`threads_for`]).
pub const ELEMENTS_PER_THREAD: usize = 1 << 17;

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    unpoisoned(state.lock())
}

/// A lock's value whether or not a thread panicked holding it: a panic on
/// a pool's thread is passed on by [`Pool::run`] anyway.
pub(crate) fn unpoisoned<T>(lock: std::sync::LockResult<T>) -> T {
    lock.unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Worker `index`'s loop: wait for a job it takes part in, run it, report.
fn work(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let job = {
            let mut state = lock(&shared.state);
            loop {
                if state.closing {
                    return;
                }
                if state.generation != seen {
                    seen = state.generation;
                    if index <= state.taking {
                        break state.job.expect("a job while its generation runs");
                    }
                }
                state = unpoisoned(shared.wake.wait(state));
            }
        };
        // SAFETY: `run` waits for this worker before the job's borrow ends.
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(index) }));
        let mut state = lock(&shared.state);
        state.panicked |= result.is_err();
        state.running -= 1;
        if state.running == 0 {
            shared.done.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_index_runs_once_per_job_and_borrows_end_with_run() {
        let mut pool = Pool::default();
        for threads in [1, 3, 2, 4, 1, 3] {
            let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            pool.run(threads, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads: {hits:?}");
        }
    }

    #[test]
    fn a_panicking_worker_panics_the_caller_and_the_pool_goes_on() {
        let mut pool = Pool::default();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(3, &|i| assert_ne!(i, 2, "worker 2 fails"));
        }));
        assert!(caught.is_err());
        let sum = AtomicUsize::new(0);
        pool.run(3, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 3);
    }
}
