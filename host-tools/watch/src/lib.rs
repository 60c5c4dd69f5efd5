//! What `lepton-watch` understands of a message: topic levels, JSON or postcard payloads, and the
//! line it prints. Payloads come from any client of the broker, so nothing here trusts them: an
//! undecodable payload or an impossible value is shown as such, never a panic.

pub mod store;

use lepton_runtime::event::{decode, DetectionMessage, EventKind};
use lepton_runtime::Event;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// A device's timestamp (milliseconds since the Unix epoch) as RFC 3339, or, past the year 9999,
/// as a string saying so with the raw value.
pub fn timestamp(ms: u64) -> String {
    if ms > LAST_RFC3339_MS {
        return format!("invalid timestamp {ms} ms");
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A message, understood.
pub fn describe(topic: &str, payload: &[u8], prefix: &str) -> Value {
    let levels: Vec<&str> = topic.strip_prefix(prefix).unwrap_or(topic).trim_start_matches('/').split('/').collect();
    let device = levels.first().copied().unwrap_or("");
    let kind = match levels.as_slice() {
        [_, "status"] => "status",
        [_, "stats"] => "stats",
        [_, _, "detections"] => "detections",
        [_, _, "events", ..] => "events",
        [_, _, "snapshot", ..] => "snapshot",
        [_, _, "heard"] => "heard",
        _ => "other",
    };
    let pipeline = if levels.len() >= 3 { levels[1] } else { "" };
    if kind == "snapshot" {
        let body = json!({
            "label": levels.get(3),
            "bytes": payload.len(),
            "jpeg": is_jpeg(payload),
        });
        return json!({"topic": topic, "kind": kind, "device": device, "pipeline": pipeline, "message": body});
    }
    let body = match serde_json::from_slice::<Value>(payload) {
        Ok(v) => v,
        Err(_) if kind == "status" => Value::String(String::from_utf8_lossy(payload).into_owned()),
        Err(_) if kind == "detections" => match decode::<DetectionMessage>(payload) {
            Ok(m) => json!({
                "format": "postcard", "seq": m.seq, "frame": m.meta.frame,
                "ts": timestamp(m.meta.timestamp_ms),
                "latency_ms": m.latency_us as f64 / 1e3,
                "detections": m.detections.iter().map(|d| match d.bbox {
                    Some(b) => json!({"class": d.class, "score": d.score, "box": [b.x0, b.y0, b.x1, b.y1]}),
                    None => json!({"class": d.class, "score": d.score}),
                }).collect::<Vec<_>>(),
            }),
            Err(_) => json!({"undecodable": payload.len()}),
        },
        Err(_) if kind == "events" => match decode::<Event>(payload) {
            Ok(e) => {
                json!({"format": "postcard", "class": e.class, "event": if e.kind == EventKind::Start { "start" } else { "end" }, "score": e.score, "ts": timestamp(e.timestamp_ms)})
            }
            Err(_) => json!({"undecodable": payload.len()}),
        },
        Err(_) => json!({"undecodable": payload.len()}),
    };
    json!({"topic": topic, "kind": kind, "device": device, "pipeline": pipeline, "message": body})
}

/// `true` for bytes that start and end like a JPEG picture (SOI … EOI markers).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() > 4 && bytes.starts_with(&[0xFF, 0xD8]) && bytes.ends_with(&[0xFF, 0xD9])
}

/// The file name a snapshot is saved under: device, pipeline, label (`all` for the pipeline's
/// latest), receive time; characters other than letters, digits, `-` and `_` become `_`, so a
/// topic level can never reach outside the folder.
pub fn snapshot_file_name(device: &str, pipeline: &str, label: Option<&str>, ms: u64) -> String {
    let safe = |s: &str| -> String {
        let t: String =
            s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        if t.is_empty() {
            "_".into()
        } else {
            t
        }
    };
    let time = timestamp(ms).replace([':', '-'], "");
    format!("{}_{}_{}_{}.jpg", safe(device), safe(pipeline), safe(label.unwrap_or("all")), safe(&time))
}

/// One human-readable line for a message [`describe`] understood.
pub fn line(v: &Value) -> String {
    let m = &v["message"];
    let who = format!("{}/{}", v["device"].as_str().unwrap_or(""), v["pipeline"].as_str().unwrap_or(""));
    match v["kind"].as_str().unwrap_or("") {
        "detections" => {
            let dets: Vec<String> = m["detections"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| {
                            let label =
                                d["label"].as_str().map(str::to_string).unwrap_or_else(|| format!("#{}", d["class"]));
                            let score = d["score"].as_f64().unwrap_or(0.0);
                            match d["box"].as_array() {
                                Some(b) => format!(
                                    "{label} {score:.2} [{}]",
                                    b.iter()
                                        .map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0)))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                ),
                                None => format!("{label} {score:.2}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{:<24} {:<20} #{:<5} frame {:<6} {}",
                m["ts"].as_str().unwrap_or(""),
                who,
                m["seq"],
                m["frame"],
                dets.join("  ")
            )
        }
        "events" => {
            let label = m["label"].as_str().map(str::to_string).unwrap_or_else(|| format!("#{}", m["class"]));
            format!(
                "{:<24} {:<20} {} {label} ({:.2})",
                m["ts"].as_str().unwrap_or(""),
                who,
                m["event"].as_str().unwrap_or("?").to_uppercase(),
                m["score"].as_f64().unwrap_or(0.0)
            )
        }
        "stats" => {
            let p: Vec<String> = m["pipelines"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, s)| {
                            format!(
                                "{k}: {} fps, p50 {:.2} ms, dropped {}",
                                s["fps"],
                                s["inference_p50_ms"].as_f64().unwrap_or(0.0),
                                s["dropped"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{:<24} {:<20} stats  {}  queue {} dropped {}",
                m["ts"].as_str().unwrap_or(""),
                v["device"].as_str().unwrap_or(""),
                p.join("; "),
                m["queue_depth"],
                m["messages_dropped"]
            )
        }
        "status" => {
            format!("{:<24} {:<20} status {}", "", v["device"].as_str().unwrap_or(""), m.as_str().unwrap_or(""))
        }
        "snapshot" => format!(
            "{:<24} {:<20} snapshot {} ({} bytes{})",
            "",
            who,
            m["label"].as_str().unwrap_or("(latest)"),
            m["bytes"],
            if m["jpeg"] == true { ", JPEG" } else { ", not a JPEG" }
        ),
        "heard" => format!(
            "{:<24} {:<20} HEARD {} ({:.2})",
            m["ts"].as_str().unwrap_or(""),
            who,
            m["event_type"].as_str().unwrap_or("?"),
            m["score"].as_f64().unwrap_or(0.0)
        ),
        _ => format!("{} {}", v["topic"].as_str().unwrap_or(""), m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_described_and_named_safely() {
        let v = describe("lepton/cam1/door/snapshot/7", &[0xFF, 0xD8, 1, 2, 0xFF, 0xD9], "lepton");
        assert_eq!((v["kind"].as_str(), v["message"]["label"].as_str()), (Some("snapshot"), Some("7")));
        assert_eq!(v["message"]["jpeg"], true);
        let name = snapshot_file_name("cam1", "door", Some("../../etc"), 0);
        assert_eq!(name, "cam1_door_______etc_19700101T000000_000Z.jpg");
        assert!(!name.contains('/'));
        assert!(snapshot_file_name("cam1", "door", None, 0).starts_with("cam1_door_all_"));
        assert!(!is_jpeg(b"{\"not\": 1}"));
    }
}
