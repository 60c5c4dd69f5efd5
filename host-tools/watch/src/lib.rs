//! What `lepton-watch` understands of a message: topic levels, JSON or postcard payloads, and the
//! line it prints; and what it understands of its `--host` values. Payloads come from any client
//! of the broker, so nothing here trusts them: an undecodable payload or an impossible value is
//! shown as such, never a panic. The event store (module `store`, feature `store`) and the command
//! (feature `cli`) come with the default features; without them this is the decoding alone.

#[cfg(feature = "store")]
pub mod store;

use lepton_core::event::{decode_detection_message, decode_event_message, EventKind};
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
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
    // One `/` after the prefix: an empty level (`lepton//x/detections`) stays an empty device.
    let rest = topic.strip_prefix(prefix).unwrap_or(topic);
    let levels: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
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
        Err(_) if kind == "detections" => match decode_detection_message(payload) {
            Ok(m) => json!({
                "format": "postcard", "run": m.run, "seq": m.seq, "frame": m.meta.frame,
                "ts": timestamp(m.meta.timestamp_ms),
                "latency_ms": m.latency_us as f64 / 1e3,
                "detections": m.detections.iter().map(|d| match d.bbox {
                    Some(b) => json!({"class": d.class, "score": d.score, "box": [b.x0, b.y0, b.x1, b.y1]}),
                    None => json!({"class": d.class, "score": d.score}),
                }).collect::<Vec<_>>(),
            }),
            Err(_) => json!({"undecodable": payload.len()}),
        },
        Err(_) if kind == "events" => match decode_event_message(payload) {
            Ok(m) => {
                let e = m.event;
                json!({"format": "postcard", "run": m.run, "class": e.class, "event": if e.kind == EventKind::Start { "start" } else { "end" }, "score": e.score, "ts": timestamp(e.timestamp_ms)})
            }
            Err(_) => json!({"undecodable": payload.len()}),
        },
        Err(_) => json!({"undecodable": payload.len()}),
    };
    json!({"topic": topic, "kind": kind, "device": device, "pipeline": pipeline, "message": body})
}

/// The identity of an event message [`describe`] understood (device, pipeline, run, time,
/// label, start or end): the same for the event on the pipeline's events topic and its retained
/// copy on `.../events/{label}`. None for other messages.
pub fn event_key(v: &Value) -> Option<String> {
    if v["kind"] != "events" {
        return None;
    }
    let m = &v["message"];
    let label = m.get("label").or_else(|| m.get("class"))?;
    Some(format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{label}\u{0}{}",
        v["device"], v["pipeline"], m["run"], m["ts"], m["event"]
    ))
}

/// The keys of the last [`Recent::CAPACITY`] messages shown: each event arrives twice (its
/// topic and its label's retained copy) and QoS 1 may deliver again; it is shown once.
#[derive(Debug, Default)]
pub struct Recent {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// Keys remembered; older ones are forgotten.
    pub const CAPACITY: usize = 4096;

    /// `true` the first time `key` is seen (among the last [`Recent::CAPACITY`]).
    pub fn first(&mut self, key: String) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if self.order.len() >= Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

/// A `--host` value that is not `HOST` or `HOST:PORT`. The messages never contain a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty.
    #[error("--host is empty: give a host name or address, e.g. --host 192.168.1.20 or --host broker.lan:1883")]
    Empty,
    /// A URL (`mqtt://…`), perhaps with credentials; `.0` is the value without them, `.1` what to write.
    #[error("--host {0}: a host name or address, not a URL: write {1}{2}")]
    Url(String, String, &'static str),
    /// `user:password@host`; `.0` is what to write.
    #[error("--host …@{0}: no user name or password here: write {1}{2}")]
    Credentials(String, String, &'static str),
    /// A path or spaces after the host.
    #[error("--host {0}: only HOST or HOST:PORT: write {1}")]
    Path(String, String),
    /// A port that is not a number from 1 to 65535.
    #[error("--host {0}: the port `{1}` is not a number from 1 to 65535: write --host HOST:PORT, e.g. --host broker.lan:1883")]
    Port(String, String),
    /// An IPv6 address without its closing bracket.
    #[error("--host {0}: no closing `]` after the IPv6 address: write --host [ADDRESS]:PORT, e.g. --host [::1]:1883")]
    Bracket(String),
}

/// What follows the suggestion when the value had credentials.
const NO_LOGIN: &str = " (lepton-watch connects without a user name and password: the broker must allow it, e.g. \
                        mosquitto's `allow_anonymous true` on a listener for watchers)";
/// What follows the suggestion for a TLS scheme.
const NO_TLS: &str = " (lepton-watch connects without TLS: watch through a listener without TLS)";

/// A `--host` value as (host, port): `HOST` (with `port`), `HOST:PORT`, `[IPv6]` or
/// `[IPv6]:PORT`. A URL, credentials, a path or a bad port is an error saying what to write.
pub fn parse_host(value: &str, port: u16) -> Result<(String, u16), HostError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        // Everything up to the last `@` may be credentials (a password may hold a `/`): never shown.
        let (had_login, rest) = match rest.rsplit_once('@') {
            Some((_, after)) => (true, after),
            None => (false, rest),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let shown = format!("{scheme}://{}{authority}", if had_login { "…@" } else { "" });
        let tls = ["mqtts", "ssl", "tls", "wss", "https"].contains(&scheme.to_ascii_lowercase().as_str());
        let note = if tls {
            NO_TLS
        } else if had_login {
            NO_LOGIN
        } else {
            ""
        };
        let write = suggestion(authority, port);
        return Err(HostError::Url(shown, write, note));
    }
    if let Some((_, host)) = value.rsplit_once('@') {
        let host = host.split(['/', '?', '#']).next().unwrap_or("");
        return Err(HostError::Credentials(host.to_string(), suggestion(host, port), NO_LOGIN));
    }
    if let Some(at) = value.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace()) {
        return Err(HostError::Path(value.to_string(), suggestion(&value[..at], port)));
    }
    let port_of = |p: &str| -> Result<u16, HostError> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(HostError::Port(value.to_string(), p.to_string())),
        }
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(|| HostError::Bracket(value.to_string()))?;
        let p = match tail.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if tail.is_empty() => port,
            None => return Err(HostError::Port(value.to_string(), tail.to_string())),
        };
        return Ok((addr.to_string(), p));
    }
    match value.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => Ok((name.to_string(), port_of(p)?)),
        // More than one colon: an IPv6 address without a port.
        _ => Ok((value.to_string(), port)),
    }
}

/// `--host HOST[:PORT]` for an authority (`host`, `host:port`), as far as it can be read.
fn suggestion(authority: &str, port: u16) -> String {
    match parse_host(authority, port) {
        Ok((h, p)) if h.contains(':') => format!("--host [{h}]:{p}"),
        Ok((h, p)) if p == port && !authority.contains(':') => format!("--host {h}"),
        Ok((h, p)) => format!("--host {h}:{p}"),
        Err(_) => "--host HOST:PORT".into(),
    }
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

    #[test]
    fn host_values_are_host_or_host_port_and_the_rest_says_what_to_write() {
        assert_eq!(parse_host("broker.lan", 1883), Ok(("broker.lan".into(), 1883)));
        assert_eq!(parse_host("broker.lan:1884", 1883), Ok(("broker.lan".into(), 1884)));
        assert_eq!(parse_host("[::1]:1884", 1883), Ok(("::1".into(), 1884)));
        assert_eq!(parse_host("::1", 1883), Ok(("::1".into(), 1883)));
        let e = parse_host("mqtt://cam:secret@host.lan:1883", 1883).unwrap_err().to_string();
        assert!(e.contains("--host mqtt://…@host.lan:1883") && e.contains("write --host host.lan:1883"), "{e}");
        assert!(!e.contains("secret") && e.contains("user name and password"), "{e}");
        let e = parse_host("cam:secret@host.lan", 1883).unwrap_err().to_string();
        assert!(!e.contains("secret") && e.contains("write --host host.lan "), "{e}");
        let e = parse_host("mqtts://host.lan:8883", 1883).unwrap_err().to_string();
        assert!(e.contains("TLS") && e.contains("--host host.lan:8883"), "{e}");
        let e = parse_host("mqtt://[::1]:1884/x", 1883).unwrap_err().to_string();
        assert!(e.contains("write --host [::1]:1884"), "{e}");
        assert!(matches!(parse_host("host:0", 1883), Err(HostError::Port(..))));
        assert!(matches!(parse_host("host:http", 1883), Err(HostError::Port(..))));
        assert!(matches!(parse_host("[::1", 1883), Err(HostError::Bracket(..))));
        assert!(matches!(parse_host("host/x", 1883), Err(HostError::Path(..))));
        assert!(matches!(parse_host(" ", 1883), Err(HostError::Empty)));
    }

    #[test]
    fn an_event_and_its_retained_copy_have_one_key_and_are_shown_once() {
        let p = br#"{"ts":"2026-11-30T10:00:01Z","label":"3","event":"start","score":0.9,"run":5}"#;
        let a = event_key(&describe("lepton/cam1/front/events", p, "lepton")).unwrap();
        let b = event_key(&describe("lepton/cam1/front/events/3", p, "lepton")).unwrap();
        assert_eq!(a, b);
        let mut recent = Recent::default();
        assert!(recent.first(a));
        assert!(!recent.first(b));
        for i in 0..Recent::CAPACITY {
            assert!(recent.first(i.to_string()));
        }
        assert_eq!(recent.keys.len(), Recent::CAPACITY, "bounded");
        assert_eq!(event_key(&describe("lepton/cam1/status", b"online", "lepton")), None);
    }
}
