//! The daemon's lines on standard output (detections, events, summaries): a view for the person
//! watching, never the product (that is MQTT). The daemon ignores SIGPIPE, so a broker that
//! resets its connection cannot kill it; when the reader of standard output goes away (`lepton
//! run | head`), the lines stop, with one warning, and the device keeps running.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output has failed; later lines are not written.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to standard output unless it has failed before.
pub fn line(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        if !CLOSED.swap(true, Ordering::Relaxed) {
            tracing::warn!("standard output: {e}; no more lines are printed here (the work goes on)");
        }
    }
}

/// `println!` for the daemon: see [`line()`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}
pub(crate) use say;
