//! Worker threads kept between analyses, so that a cycle of a fraction of
//! a millisecond does not pay for starting threads (a scoped spawn and
//! join cost about as much as a tenth of a Lorenz-96-400 LETKF analysis
//! on two threads).
//!
//! [`Pool::run`] hands one job to the calling thread and `threads − 1`
//! workers and returns when every one of them has finished it: the job
//! may borrow from the caller's stack, as with `std::thread::scope`. The
//! workers are the process's, one set for every [`Pool`] handle (the
//! LETKF's, the model instances', the statistics'), so that they never
//! compete for the cores among themselves. Between jobs a worker polls
//! for [`spin_time`], then sleeps on a condition variable. A job that
//! panics on any thread makes `run` panic on the caller once all have
//! finished.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A handle on the process's worker threads (started on first use).
#[derive(Default)]
pub struct Pool {
    _handle: (),
}

/// The process's workers.
static WORKERS: LazyLock<Mutex<Workers>> = LazyLock::new(Mutex::default);

/// Parked worker threads; started on first use.
#[derive(Default)]
struct Workers {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Workers wait here for a new job.
    wake: Condvar,
    /// The caller waits here for the last worker to finish.
    done: Condvar,
    /// `state.generation` and `state.running`, readable without the lock
    /// for the polls before a sleep ([`spin_until`]).
    posted: AtomicU64,
    left: AtomicUsize,
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
}

/// The current job, its lifetime erased: [`Workers::run`] does not return
/// (or unwind) before every worker has finished with it.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync` and outlives every use (see `Job`).
unsafe impl Send for Job {}

impl Pool {
    /// Run `job(i)` for every i in `0..threads`: `job(0)` on this thread,
    /// the others on the process's workers (started the first time they
    /// are needed). Returns when all have returned; panics if any
    /// panicked. While another thread has the workers (tests, ranks
    /// played by threads), every `job(i)` runs here, one after the other:
    /// the jobs are independent, so the result is the same.
    pub fn run(&mut self, threads: usize, job: &(dyn Fn(usize) + Sync)) {
        if threads <= 1 {
            return job(0);
        }
        match WORKERS.try_lock() {
            Ok(mut workers) => workers.run(threads, job),
            Err(TryLockError::Poisoned(workers)) => workers.into_inner().run(threads, job),
            Err(TryLockError::WouldBlock) => (0..threads).for_each(job),
        }
    }
}

impl Workers {
    fn run(&mut self, threads: usize, job: &(dyn Fn(usize) + Sync)) {
        let helpers = threads - 1;
        while self.workers.len() < helpers {
            let (shared, index) = (Arc::clone(&self.shared), self.workers.len() + 1);
            self.workers.push(
                std::thread::Builder::new().name(format!("geohost-worker-{index}")).spawn(move || work(&shared, index)).expect("starting a worker thread"),
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
            self.shared.left.store(helpers, Ordering::Release);
            self.shared.posted.store(state.generation, Ordering::Release);
        }
        self.shared.wake.notify_all();
        let here = catch_unwind(AssertUnwindSafe(|| job(0)));
        spin_until(|| self.shared.left.load(Ordering::Acquire) == 0);
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
        assert!(!panicked, "a worker thread panicked");
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
/// with `threads` (at least one): below [`ELEMENTS_PER_THREAD`] each a
/// pass stays on one. The threshold dates from workers that slept between
/// jobs, when waking one cost about a pass over some 10⁵ values (at
/// 4,000 × 20 a split pass measured slower than one thread); with workers
/// that poll, 4,000 and 8,000 per thread measured no different at 400 and
/// 4,000 variables (2026-12-07), so it stands.
pub fn threads_for(elements: usize, threads: usize) -> usize {
    threads.min(elements / ELEMENTS_PER_THREAD).max(1)
}

/// Fewest values per thread in a threaded pass ([`threads_for`]).
pub const ELEMENTS_PER_THREAD: usize = 1 << 17;

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    unpoisoned(state.lock())
}

/// A lock's value whether or not a thread panicked holding it: a panic on
/// a pool's thread is passed on by [`Pool::run`] anyway.
pub(crate) fn unpoisoned<T>(lock: std::sync::LockResult<T>) -> T {
    lock.unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a thread polls before it sleeps on a condition variable: a
/// worker for the next job, the caller for the workers to finish. A
/// Lorenz-96-400 cycle hands out one job per 0.6 ms or so, and waking a
/// sleeping thread costs tens of µs on a VM; polling yields the core to
/// any other runnable thread every 32 tries (other MPI ranks, other
/// processes). Set by `GEOHOST_SPIN_US` (0: sleep at once).
fn spin_time() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| Duration::from_micros(std::env::var("GEOHOST_SPIN_US").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)))
}

/// Poll `ready` for up to [`spin_time`], yielding between polls.
fn spin_until(ready: impl Fn() -> bool) {
    let spin = spin_time();
    if spin.is_zero() || ready() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < spin {
        for _ in 0..32 {
            if ready() {
                return;
            }
            std::hint::spin_loop();
        }
        std::thread::yield_now();
    }
}

/// Worker `index`'s loop: wait for a job it takes part in, run it, report.
fn work(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        spin_until(|| shared.posted.load(Ordering::Acquire) != seen);
        let job = {
            let mut state = lock(&shared.state);
            loop {
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
        shared.left.store(state.running, Ordering::Release);
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

    /// Handles used from several threads at once (tests, ranks played by
    /// threads): one gets the workers, the others run their jobs in turn
    /// on their own thread; every index still runs once per job.
    #[test]
    fn handles_on_several_threads_at_once_run_every_index_once() {
        std::thread::scope(|scope| {
            for threads in [2, 3, 4] {
                scope.spawn(move || {
                    let mut pool = Pool::default();
                    for _ in 0..300 {
                        let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                        pool.run(threads, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads: {hits:?}");
                    }
                });
            }
        });
    }
}
