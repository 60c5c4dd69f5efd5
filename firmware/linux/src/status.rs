//! What the daemon knows about its pipelines while they run: each one's counters, shared by its
//! sink (which writes them) and the stats topic, the device page and the watchdog (which read
//! them); and the wall clock's timestamps, as messages and the history carry them.

use lepton_runtime::pipeline::LatencyStats;
use lepton_runtime::source::clips::ClipStats;
use lepton_runtime::source::latest::Health;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Live counters of one pipeline, read by the stats publisher.
#[derive(Debug, Default)]
pub struct Status {
    /// Frames (or audio windows) processed.
    pub processed: u64,
    /// Frames the model ran on (fewer than `processed` behind a motion gate).
    pub inferred: u64,
    /// Frames the source dropped (vision) or samples lost (audio).
    pub dropped: u64,
    /// Messages published on the detections topic.
    pub messages: u64,
    /// Inference times.
    pub inference: LatencyStats,
    /// The pipeline has ended.
    pub finished: bool,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Snapshots not published (over the MQTT packet limit).
    pub snapshots_dropped: u64,
    /// A live source's connection state (cameras, network cameras).
    pub source: Option<Health>,
    /// Frames that failed to decode or preprocess (skipped).
    pub failed: u64,
    /// Inference times as a Prometheus histogram: counts per bucket of [`LATENCY_BUCKETS`].
    pub histogram: [u64; LATENCY_BUCKETS.len()],
    /// No progress within `[device] stall_s` (set by the watchdog thread).
    pub stalled: bool,
    /// Events written to the history (device page).
    pub history: u64,
    /// Events not written to the history: its writer fell behind or failed (logged).
    pub history_dropped: u64,
    /// The clip recorder's counters (`[pipeline.clips]`).
    pub clips: Option<Arc<ClipStats>>,
}

impl Status {
    /// The clip counters as `(name, value)` pairs (`clips_written`...), none without clips.
    pub fn clip_counters(&self) -> Vec<(&'static str, u64)> {
        let Some(c) = &self.clips else { return vec![] };
        let g = ClipStats::get;
        vec![
            ("clips_written", g(&c.written)),
            ("clips_failed", g(&c.failed)),
            ("clips_skipped", g(&c.skipped)),
            ("clips_deleted", g(&c.deleted)),
            ("clips_bytes", g(&c.bytes)),
            ("clip_units_dropped", g(&c.units_dropped)),
            ("clip_events_dropped", g(&c.events_dropped)),
        ]
    }
}

/// Upper bounds, in seconds, of the inference-time histogram's buckets (`/metrics`).
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Shared handle to a pipeline's counters.
pub type SharedStatus = Arc<Mutex<Status>>;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
