//! The systemd watchdog: `READY=1` once every pipeline runs, then `WATCHDOG=1` only while each
//! pipeline makes progress, so that a stalled capture or a wedged engine gets the daemon
//! restarted (`Type=notify` and `WatchdogSec=` in `boards/lepton.service`).
//!
//! Progress is a pipeline's processed count (frames or audio windows) going up; a pipeline whose
//! source ended, or whose live source is reconnecting (an outage, counted in the stats), counts as
//! healthy. A pipeline without progress for `[device] stall_s` seconds is
//! stalled: the daemon logs it once by name, tells systemd in `STATUS=`, and sends no more pings
//! until it moves again. Outside systemd (no `NOTIFY_SOCKET`), nothing is sent; the stall is
//! still logged and marked in the pipeline's status, which the device page's `/healthz` answers
//! with 503.

use crate::status::SharedStatus;
use sd_notify::NotifyState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tells systemd the daemon is ready (a no-op outside systemd).
pub fn ready(pipelines: usize) {
    let status = format!("running {pipelines} pipeline(s)");
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]) {
        tracing::warn!("systemd notify socket: {e}");
    }
}

/// Tells systemd the daemon is stopping (a no-op outside systemd).
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// One pipeline as the watchdog sees it.
struct Watched {
    name: String,
    status: SharedStatus,
    processed: u64,
    since: Instant,
}

/// Starts the thread that watches every pipeline's progress: it marks a pipeline that made none
/// within `stall` as stalled in its status (logged once), and, when systemd asked for a watchdog
/// (`WATCHDOG_USEC` for this process), pings at half that interval while none is stalled.
pub fn start(pipelines: Vec<(String, SharedStatus)>, stall: Duration, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let mut usec = 0u64;
    let systemd = sd_notify::watchdog_enabled(false, &mut usec) && usec > 0;
    let period = if systemd {
        tracing::info!(
            "systemd watchdog: every {:.1} s while each pipeline processes something within {:.0} s",
            (usec / 2) as f64 / 1e6,
            stall.as_secs_f64()
        );
        Duration::from_micros(usec / 2).max(Duration::from_millis(10))
    } else {
        Duration::from_millis(500)
    };
    let now = Instant::now();
    let mut watched: Vec<Watched> =
        pipelines.into_iter().map(|(name, status)| Watched { name, status, processed: 0, since: now }).collect();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut healthy = true;
            for w in &mut watched {
                let mut s = w.status.lock().unwrap_or_else(|p| p.into_inner());
                let reconnecting = s.source.as_ref().is_some_and(|h| h.down());
                // A source that is reconnecting (camera unplugged, stream lost) is not a stalled
                // process: restarting would not bring the camera back. Its outage is in the stats.
                if s.processed != w.processed || s.finished || reconnecting {
                    w.processed = s.processed;
                    w.since = now;
                    if s.stalled {
                        s.stalled = false;
                        tracing::info!("pipeline {}: moving again; watchdog pings resume", w.name);
                    }
                    continue;
                }
                let idle = now - w.since;
                if idle > stall {
                    healthy = false;
                    if !s.stalled {
                        s.stalled = true;
                        tracing::error!(
                            "pipeline {}: nothing processed for {:.0} s (stall_s = {:.0}); withholding the systemd watchdog ping (a service restarts) and answering /healthz with 503",
                            w.name,
                            idle.as_secs_f64(),
                            stall.as_secs_f64()
                        );
                        let status =
                            format!("pipeline {} stalled: nothing processed for {:.0} s", w.name, idle.as_secs_f64());
                        let _ = sd_notify::notify(false, &[NotifyState::Status(&status)]);
                    }
                }
            }
            if healthy && systemd {
                if let Err(e) = sd_notify::notify(false, &[NotifyState::Watchdog]) {
                    tracing::warn!("systemd watchdog ping: {e}");
                }
            }
            // In short steps, so that stopping never waits a whole period.
            let until = Instant::now() + period;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50).min(period));
            }
        }
    })
}
