//! Ways to stop every pipeline: each source and pipeline registers one as it starts, and a signal
//! calls them all (one registered after the signal is called at once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Ways to stop every pipeline, registered as they start.
pub(super) type Stoppers = Arc<Mutex<Vec<Box<dyn Fn() + Send + Sync>>>>;

/// Registers `f`; calls it at once when a stop is already under way.
pub(super) fn register(stoppers: &Stoppers, stopping: &AtomicBool, f: impl Fn() + Send + Sync + 'static) {
    if stopping.load(Ordering::Relaxed) {
        f();
    }
    stoppers.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(f));
}
