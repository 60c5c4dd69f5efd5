//! The stats topic: every pipeline's rate, latency and counters and the link's, published every
//! `[device] stats_interval_s`.

use crate::mqtt::{Link, Meta};
use crate::status::{now_ms, rfc3339, SharedStatus};
use crate::topics::Topics;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publishes the stats message every `interval` until `stop`.
pub(super) fn stats_loop(
    link: Link,
    topics: Topics,
    device: String,
    statuses: Vec<(String, SharedStatus)>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut last = Instant::now();
    let mut prev: Vec<u64> = vec![0; statuses.len()];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < interval {
            continue;
        }
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let mut pipelines = serde_json::Map::new();
        for (k, (name, status)) in statuses.iter().enumerate() {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            let fps = (s.processed - prev[k]) as f64 / dt;
            prev[k] = s.processed;
            let (p50, p99) = (s.inference.percentile(50.0), s.inference.percentile(99.0));
            let mut entry = json!({"fps": (fps * 100.0).round() / 100.0, "inference_p50_ms": p50.as_secs_f64() * 1e3, "inference_p99_ms": p99.as_secs_f64() * 1e3,
                       "processed": s.processed, "inferred": s.inferred, "dropped": s.dropped, "published": s.messages, "finished": s.finished});
            if s.snapshots > 0 || s.snapshots_dropped > 0 {
                entry["snapshots"] = json!(s.snapshots);
                entry["snapshots_dropped"] = json!(s.snapshots_dropped);
            }
            for (k, v) in s.clip_counters() {
                entry[k] = json!(v);
            }
            if let Some(h) = &s.source {
                entry["source_outages"] = json!(h.outages());
                entry["source_connected"] = json!(!h.down());
                let (n, took) = h.decoding();
                if n > 0 {
                    entry["source_decoded"] = json!(n);
                    entry["decode_mean_ms"] = json!(took.as_secs_f64() * 1e3 / n as f64);
                }
            }
            pipelines.insert(name.clone(), entry);
        }
        let l = link.stats();
        let msg = json!({
            "device": device, "ts": rfc3339(now_ms()), "uptime_s": started.elapsed().as_secs(), "pipelines": pipelines,
            "queue_depth": l.queue_depth, "messages_delivered": l.delivered, "messages_dropped": l.dropped, "connections": l.connections,
            "broker": link.broker(), "failovers": l.failovers, "failover_ms": l.failover_ms, "replayed": l.replayed,
        });
        link.publish(&topics.stats(), msg.to_string().into_bytes(), false, Meta::JSON);
    }
}
