//! One message to store ([`Row`]), and the check of every field it takes from a message.

use serde_json::Value;

/// Longest device, pipeline or label, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most objects one detection message may carry.
pub const MAX_OBJECTS: usize = 1024;

/// What is wrong with a message the store cannot take (no text of the message is repeated but
/// numbers: a payload may hold anything, terminal escapes too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// One object of a detection message: label (or class index), score, box.
pub type Object = (String, f32, Option<[f32; 4]>);

/// One message to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A detection message and its objects.
    Detections {
        /// Device id.
        device: String,
        /// Pipeline name.
        pipeline: String,
        /// The sender's run (0: a message without one).
        run: i64,
        /// The pipeline's message counter.
        seq: i64,
        /// Frame time, ms since 1970.
        ts_ms: i64,
        /// Frame index.
        frame: Option<i64>,
        /// Inference latency.
        latency_ms: Option<f64>,
        /// Label (or class index), score, box.
        objects: Vec<Object>,
    },
    /// A presence or keyword event.
    Event {
        /// Device id.
        device: String,
        /// Pipeline name.
        pipeline: String,
        /// The sender's run (0: a message without one).
        run: i64,
        /// Event time, ms since 1970.
        ts_ms: i64,
        /// Label (or class index).
        label: String,
        /// `start` or `end`.
        event: String,
        /// Score.
        score: f32,
        /// Duration of an ended presence.
        duration_s: Option<f64>,
    },
}

fn bad(what: &str, why: &str) -> Malformed {
    Malformed(format!("{what}: {why}"))
}

/// A number as a message shows it: short, in scientific notation when large.
fn num(x: f64) -> String {
    if x.abs() >= 1e9 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A device, pipeline or label: a string of 1 to [`MAX_TEXT`] bytes without control characters.
fn text(v: &Value, what: &str) -> Result<String, Malformed> {
    let s = match v {
        Value::Null => return Err(bad(what, "missing")),
        Value::String(s) => s,
        _ => return Err(bad(what, "not a string")),
    };
    if s.is_empty() {
        return Err(bad(what, "empty"));
    }
    if s.len() > MAX_TEXT {
        return Err(bad(what, &format!("{} bytes, more than {MAX_TEXT}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(what, "holds a control character"));
    }
    Ok(s.clone())
}

/// A whole number from 0 that fits a BIGINT; None when absent (or null).
fn counter(v: &Value, what: &str) -> Result<Option<i64>, Malformed> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Ok(Some(i)),
            Some(i) => Err(bad(what, &format!("{i} is negative"))),
            None if n.is_u64() => Err(bad(what, &format!("{n} is too large"))),
            None => Err(bad(what, &format!("{n} is not a whole number"))),
        },
        _ => Err(bad(what, "not a number")),
    }
}

/// A finite number from 0 that fits an f64 column; None when absent (or null).
fn amount(v: &Value, what: &str) -> Result<Option<f64>, Malformed> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            Some(x) => Err(bad(what, &format!("{} is not a finite number from 0", num(x)))),
            None => Err(bad(what, "not a number")),
        },
        _ => Err(bad(what, "not a number")),
    }
}

/// A score: a number from 0 to 1 (a hair above 1 is taken: dequantized outputs round).
fn score(v: &Value, what: &str) -> Result<f32, Malformed> {
    match v {
        Value::Null => Err(bad(what, "missing")),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (0.0..=1.001).contains(&x) => Ok(x as f32),
            Some(x) => Err(bad(what, &format!("{} is out of 0..1", num(x)))),
            None => Err(bad(what, "not a number")),
        },
        _ => Err(bad(what, "not a number")),
    }
}

/// A box: four numbers that are finite as `f32`, or none.
fn bbox(v: &Value, what: &str) -> Result<Option<[f32; 4]>, Malformed> {
    let b = match v {
        Value::Null => return Ok(None),
        Value::Array(b) if b.len() == 4 => b,
        Value::Array(b) => return Err(bad(what, &format!("{} numbers, not 4", b.len()))),
        _ => return Err(bad(what, "not a list of 4 numbers")),
    };
    let mut out = [0f32; 4];
    for (o, x) in out.iter_mut().zip(b) {
        *o = match x.as_f64() {
            Some(x) if (x as f32).is_finite() => x as f32,
            Some(x) => return Err(bad(what, &format!("{} is not a finite number", num(x)))),
            None => return Err(bad(what, "not a list of 4 numbers")),
        };
    }
    Ok(Some(out))
}

/// A label, or a class index (postcard payloads) written as its number.
fn label(d: &Value, what: &str) -> Result<String, Malformed> {
    match (&d["label"], &d["class"]) {
        (Value::Null, Value::Null) => Err(bad(what, "no label (or class)")),
        (Value::Null, c) => match c.as_u64() {
            Some(c) if c <= u64::from(u16::MAX) => Ok(c.to_string()),
            _ => Err(bad(&format!("{what} class"), "not a class index (0 to 65535)")),
        },
        (l, _) => text(l, &format!("{what} label")),
    }
}

/// An RFC 3339 UTC time (`2026-12-01T10:00:00.250Z`) as ms since 1970.
fn time(v: &Value) -> Result<i64, Malformed> {
    let s = match v {
        Value::Null => return Err(bad("ts", "missing")),
        Value::String(s) => s,
        _ => return Err(bad("ts", "not a string")),
    };
    let t = humantime::parse_rfc3339(s)
        .map_err(|_| bad("ts", "not an RFC 3339 UTC time (like 2026-12-01T10:00:00.250Z)"))?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad("ts", "before 1970"))?.as_millis();
    i64::try_from(ms).map_err(|_| bad("ts", "out of range"))
}

impl Row {
    /// The row for a message `describe` understood. None for what is not stored (status,
    /// stats, snapshots, heard, the retained per-label copies of events, which are the events
    /// topic's again); an error saying what is wrong for a detection or event message with a
    /// field missing, of the wrong type, not finite or out of range, or an undecodable payload.
    pub fn from_message(v: &Value) -> Result<Option<Row>, Malformed> {
        let kind = v["kind"].as_str().unwrap_or("");
        if kind != "detections" && kind != "events" {
            return Ok(None);
        }
        let m = &v["message"];
        if let Some(n) = m.get("undecodable") {
            return Err(Malformed(format!("{n} bytes that are neither JSON nor a postcard message")));
        }
        if !m.is_object() {
            return Err(Malformed("not a JSON object".into()));
        }
        let device = text(&v["device"], "device (topic level)")?;
        let pipeline = text(&v["pipeline"], "pipeline (topic level)")?;
        let run = counter(&m["run"], "run")?.unwrap_or(0);
        let ts_ms = time(&m["ts"])?;
        if kind == "detections" {
            let seq = counter(&m["seq"], "seq")?.ok_or_else(|| bad("seq", "missing"))?;
            let frame = counter(&m["frame"], "frame")?;
            let latency_ms = amount(&m["latency_ms"], "latency_ms")?;
            let list = match &m["detections"] {
                Value::Array(a) => a,
                Value::Null => return Err(bad("detections", "missing")),
                _ => return Err(bad("detections", "not a list")),
            };
            if list.len() > MAX_OBJECTS {
                return Err(bad("detections", &format!("{} objects, more than {MAX_OBJECTS}", list.len())));
            }
            let objects = list
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let at = format!("detections[{i}]");
                    if !d.is_object() {
                        return Err(bad(&at, "not an object"));
                    }
                    Ok((
                        label(d, &at)?,
                        score(&d["score"], &format!("{at}.score"))?,
                        bbox(&d["box"], &format!("{at}.box"))?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(Row::Detections { device, pipeline, run, seq, ts_ms, frame, latency_ms, objects }));
        }
        let label = label(m, "event")?;
        let event = match &m["event"] {
            Value::String(e) if e == "start" || e == "end" => e.clone(),
            Value::Null => return Err(bad("event", "missing")),
            _ => return Err(bad("event", "neither \"start\" nor \"end\"")),
        };
        let score = score(&m["score"], "score")?;
        let duration_s = amount(&m["duration_s"], "duration_s")?;
        // The pipeline's events topic; the per-label copies (retained) are the same events.
        if !v["topic"].as_str().is_some_and(|t| t.ends_with("/events")) {
            return Ok(None);
        }
        Ok(Some(Row::Event { device, pipeline, run, ts_ms, label, event, score, duration_s }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe;

    /// A payload on a topic, understood, then checked.
    fn check(topic: &str, payload: &str) -> Result<Option<Row>, Malformed> {
        Row::from_message(&describe(topic, payload.as_bytes(), "lepton"))
    }

    #[test]
    fn every_field_a_row_takes_is_checked() {
        let d = "lepton/cam1/front/detections";
        let ok = r#"{"run":3,"seq":1,"ts":"2026-12-01T10:00:00Z","frame":2,"latency_ms":0.5,"detections":[{"label":"p","score":1.0,"box":[0,1,2,3]},{"class":7,"score":0}]}"#;
        match check(d, ok) {
            Ok(Some(Row::Detections { run: 3, seq: 1, frame: Some(2), objects, .. })) => {
                assert_eq!(objects[1], ("7".to_string(), 0.0, None));
            }
            other => panic!("{other:?}"),
        }
        let bad = [
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p"}]}"#, "detections[0].score: missing"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":"x"}]}"#, "not a number"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":1.5}]}"#, "out of 0..1"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"score":0.5}]}"#, "no label"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"class":70000,"score":0.5}]}"#, "class"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"\u001b[2J","score":0.5}]}"#, "control"),
            (
                r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":0.5,"box":[0,0,1]}]}"#,
                "3 numbers",
            ),
            (
                r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":0.5,"box":[0,0,1,1e39]}]}"#,
                "finite",
            ),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[7]}"#, "not an object"),
            (r#"{"ts":"2026-12-01T10:00:00Z","detections":[]}"#, "seq: missing"),
            (r#"{"seq":9223372036854775808,"ts":"2026-12-01T10:00:00Z","detections":[]}"#, "too large"),
            (r#"{"seq":1,"ts":"1969-12-31T23:59:59Z","detections":[]}"#, "ts: "),
            (r#"{"seq":1,"ts":12,"detections":[]}"#, "ts: not a string"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","frame":0.5,"detections":[]}"#, "whole number"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","latency_ms":-1,"detections":[]}"#, "latency_ms"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z"}"#, "detections: missing"),
            (r#"{"seq":1,"run":"a","ts":"2026-12-01T10:00:00Z","detections":[]}"#, "run: not a number"),
            ("[1, 2]", "not a JSON object"),
        ];
        for (payload, why) in bad {
            let e = check(d, payload).expect_err(payload).to_string();
            assert!(e.contains(why), "{payload}: {e}");
        }
        let many = format!(
            r#"{{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{}]}}"#,
            vec![r#"{"label":"p","score":0.5}"#; MAX_OBJECTS + 1].join(",")
        );
        assert!(check(d, &many).is_err());
        let long = format!(
            r#"{{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{{"label":"{}","score":0.5}}]}}"#,
            "x".repeat(MAX_TEXT + 1)
        );
        assert!(check(d, &long).is_err());
        assert!(check("lepton//front/detections", ok).unwrap_err().to_string().contains("device"));
        assert!(check(d, "\u{1}\u{2}").unwrap_err().to_string().contains("neither JSON nor a postcard"));

        let e = "lepton/cam1/front/events";
        assert!(matches!(
            check(e, r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"end","score":0.5,"duration_s":2.5}"#),
            Ok(Some(Row::Event { run: 0, duration_s: Some(_), .. }))
        ));
        for (payload, why) in [
            (r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"start"}"#, "score: missing"),
            (r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"begin","score":0.5}"#, "event: neither"),
            (r#"{"ts":"2026-12-01T10:00:00Z","event":"start","score":0.5}"#, "no label"),
            (r#"{"label":"p","event":"start","score":0.5}"#, "ts: missing"),
            (r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"end","score":0.5,"duration_s":"x"}"#, "duration_s"),
        ] {
            let err = check(e, payload).expect_err(payload).to_string();
            assert!(err.contains(why), "{payload}: {err}");
        }
        // A malformed retained copy is malformed too (it is shown, not stored).
        assert!(check("lepton/cam1/front/events/p", r#"{"ts":"x"}"#).is_err());
    }
}
