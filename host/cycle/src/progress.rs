//! Progress reporting: the trait long tasks report through, with no
//! dependencies, so that every layer can report and only the CLI draws.

/// A progress display for one task of `total` steps.
pub trait Progress {
    /// Step `k` (0-based) is done.
    fn tick(&mut self, k: usize);
    /// A short status (e.g. the current loss).
    fn message(&mut self, _message: String) {}
    /// The task is over (possibly before its last step).
    fn finish(&mut self) {}
}

/// No display.
pub struct Silent;

impl Progress for Silent {
    fn tick(&mut self, _k: usize) {}
}

/// Progress displays per task: `start(label, total)` returns the one for
/// that task.
pub type ProgressFactory<'a> = dyn FnMut(&str, usize) -> Box<dyn Progress> + 'a;
