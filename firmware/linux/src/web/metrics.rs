//! `/metrics`: the daemon's counters in Prometheus' text exposition format (version 0.0.4).

use super::State;
use crate::status::LATENCY_BUCKETS;
use axum::extract::State as AxState;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;

/// Writes one metric family: `# HELP`, `# TYPE` and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// A label value escaped as the format asks (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition text.
pub fn render(st: &State) -> String {
    let mut out = String::with_capacity(4096);
    let series = st.series.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut processed = vec![];
    let mut inferred = vec![];
    let mut dropped = vec![];
    let mut failed = vec![];
    let mut published = vec![];
    let mut fps = vec![];
    let mut stalled = vec![];
    let mut snapshots = vec![];
    let mut history_dropped = vec![];
    let mut outages = vec![];
    let mut clips = vec![];
    let mut clips_failed = vec![];
    let mut hist = String::new();
    for (p, s) in st.pipelines.iter().zip(&series) {
        let l = format!("{{pipeline=\"{}\"}}", escape(&p.name));
        let s_ = p.status.lock().unwrap_or_else(|p| p.into_inner());
        processed.push((l.clone(), s_.processed as f64));
        inferred.push((l.clone(), s_.inferred as f64));
        dropped.push((l.clone(), s_.dropped as f64));
        failed.push((l.clone(), s_.failed as f64));
        published.push((l.clone(), s_.messages as f64));
        fps.push((l.clone(), s.back().map_or(0.0, |q| q.fps)));
        stalled.push((l.clone(), f64::from(u8::from(s_.stalled))));
        snapshots.push((l.clone(), s_.snapshots as f64));
        history_dropped.push((l.clone(), s_.history_dropped as f64));
        if let Some(c) = &s_.clips {
            use lepton_runtime::source::clips::ClipStats;
            clips.push((l.clone(), ClipStats::get(&c.written) as f64));
            clips_failed.push((l.clone(), ClipStats::get(&c.failed) as f64));
        }
        if let Some(h) = &s_.source {
            outages.push((l.clone(), h.outages() as f64));
        }
        let name = escape(&p.name);
        let mut cumulative = 0u64;
        for (le, n) in LATENCY_BUCKETS.iter().zip(s_.histogram) {
            cumulative += n;
            let _ = writeln!(hist, "lepton_inference_seconds_bucket{{pipeline=\"{name}\",le=\"{le}\"}} {cumulative}");
        }
        let count = s_.inference.count();
        let _ = writeln!(hist, "lepton_inference_seconds_bucket{{pipeline=\"{name}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(
            hist,
            "lepton_inference_seconds_sum{{pipeline=\"{name}\"}} {}",
            s_.inference.total().as_secs_f64()
        );
        let _ = writeln!(hist, "lepton_inference_seconds_count{{pipeline=\"{name}\"}} {count}");
    }
    family(&mut out, "lepton_frames_processed_total", "counter", "Frames (or audio windows) processed.", &processed);
    family(
        &mut out,
        "lepton_frames_inferred_total",
        "counter",
        "Frames (or audio windows) the model ran on (fewer than processed behind a motion gate).",
        &inferred,
    );
    family(
        &mut out,
        "lepton_frames_dropped_total",
        "counter",
        "Frames the source dropped while the pipeline was busy (audio: samples lost).",
        &dropped,
    );
    family(&mut out, "lepton_frames_failed_total", "counter", "Frames that failed to decode or preprocess.", &failed);
    family(&mut out, "lepton_detections_published_total", "counter", "Detection messages published.", &published);
    family(&mut out, "lepton_fps", "gauge", "Frames processed per second over the last sampling interval.", &fps);
    family(
        &mut out,
        "lepton_pipeline_stalled",
        "gauge",
        "1 when the pipeline made no progress within stall_s.",
        &stalled,
    );
    family(&mut out, "lepton_snapshots_total", "counter", "Snapshots published.", &snapshots);
    family(&mut out, "lepton_history_dropped_total", "counter", "Events not written to the history.", &history_dropped);
    if !clips.is_empty() {
        family(&mut out, "lepton_clips_written_total", "counter", "Event clips written.", &clips);
        family(&mut out, "lepton_clips_failed_total", "counter", "Event clips that failed to write.", &clips_failed);
    }
    if !outages.is_empty() {
        family(&mut out, "lepton_source_outages_total", "counter", "Times a live source was lost.", &outages);
    }
    let _ = writeln!(out, "# HELP lepton_inference_seconds Engine run time per frame.");
    let _ = writeln!(out, "# TYPE lepton_inference_seconds histogram");
    out.push_str(&hist);
    let l = st.link.stats();
    let one = |v: f64| vec![(String::new(), v)];
    family(
        &mut out,
        "lepton_mqtt_connected",
        "gauge",
        "1 while the MQTT broker is connected.",
        &one(f64::from(u8::from(l.connected))),
    );
    family(
        &mut out,
        "lepton_mqtt_queue_depth",
        "gauge",
        "Messages waiting for the broker's acknowledgement.",
        &one(l.queue_depth as f64),
    );
    family(
        &mut out,
        "lepton_mqtt_messages_delivered_total",
        "counter",
        "Messages the broker acknowledged.",
        &one(l.delivered as f64),
    );
    family(
        &mut out,
        "lepton_mqtt_messages_dropped_total",
        "counter",
        "Messages dropped from a full queue.",
        &one(l.dropped as f64),
    );
    family(
        &mut out,
        "lepton_mqtt_reconnects_total",
        "counter",
        "Reconnections to the broker (connections after the first).",
        &one(l.connections.saturating_sub(1) as f64),
    );
    family(
        &mut out,
        "lepton_mqtt_failovers_total",
        "counter",
        "Connections made to another broker node than the one lost ([mqtt] hosts).",
        &one(l.failovers as f64),
    );
    family(
        &mut out,
        "lepton_mqtt_replayed_total",
        "counter",
        "Messages sent again to the next node after a failover (acknowledged by the lost node just before its loss).",
        &one(l.replayed as f64),
    );
    family(
        &mut out,
        "lepton_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        &one(st.started.elapsed().as_secs_f64().floor()),
    );
    out
}

/// `GET /metrics`.
pub async fn handler(AxState(st): AxState<Arc<State>>) -> Response {
    let mut r = render(&st).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
