//! Duration keys (`hold_s`, `blink_ms`, `retain_days`...): finite, bounded numbers checked as they
//! are read, so that an error names the key and its line and a conversion never panics.

use serde::Deserialize;

/// A day in seconds: the longest hold, stall, interval or snapshot period.
pub const DAY: u64 = 86_400;
/// An hour in seconds: the longest reconnection wait and network timeout.
pub const HOUR: u64 = 3_600;
/// A year in seconds: the longest microphone capture.
pub const YEAR: u64 = 365 * DAY;
/// MQTT 5's longest expiry interval (a four-byte integer).
pub const U32_MAX: u64 = u32::MAX as u64;
/// A minute in milliseconds: the longest blink phase.
pub const MINUTE_MS: u64 = 60_000;

/// A duration key's value in seconds (`hold_s = 2`, `stall_s = 0.5`): an integer or a float,
/// finite, from 0 to `MAX`. Checked as it is read, so an error names the key and its line, and
/// [`Seconds::duration`] never panics (`inf` or `1e300` would in `Duration::from_secs_f64`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds<const MAX: u64>(pub(crate) f64);

/// A duration key's value in milliseconds (`blink_ms`), with the same rules as [`Seconds`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Millis<const MAX: u64>(pub(crate) f64);

/// A duration key's value in days (`retain_days`), with the same rules as [`Seconds`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Days<const MAX: u64>(pub(crate) f64);

/// Reads a finite number from 0 to `max` (integer or float) for a key in `unit`.
fn bounded<'de, D: serde::Deserializer<'de>>(d: D, max: u64, unit: &str) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if x.is_finite() && x >= 0.0 && x <= max as f64 {
        Ok(x)
    } else {
        let shown = if x.is_finite() && x.abs() >= 1e9 { format!("{x:e}") } else { x.to_string() };
        Err(serde::de::Error::custom(format!("{shown} {NOT_A_DURATION}: give {unit} from 0 to {max}")))
    }
}

/// What a duration error says, to find its key again ([`duration_key_line`]).
pub(crate) const NOT_A_DURATION: &str = "is not a duration here";

/// A duration error inside a tagged table (`[pipeline.source]`) is reported by the TOML reader at
/// the table's header: the line of the key whose value is out of bounds, found below `line` in the
/// same table, and that line's text.
pub(crate) fn duration_key_line(text: &str, line: usize, message: &str) -> Option<(usize, String)> {
    let max: f64 = message.rsplit("from 0 to ").next()?.trim().parse().ok()?;
    let lines: Vec<&str> = text.lines().collect();
    for (k, l) in lines.iter().enumerate().skip(line) {
        let l = l.trim();
        if l.starts_with('[') {
            return None;
        }
        let Some((_, value)) = l.split_once('=') else { continue };
        let value = value.split('#').next().unwrap_or("").trim();
        let Ok(v) = toml::from_str::<toml::Table>(&format!("v = {value}")) else { continue };
        let x = match v.get("v") {
            Some(toml::Value::Float(x)) => *x,
            Some(toml::Value::Integer(i)) => *i as f64,
            _ => continue,
        };
        if !(x.is_finite() && x >= 0.0 && x <= max) {
            return Some((k + 1, l.to_string()));
        }
    }
    None
}

macro_rules! duration_unit {
    ($t:ident, $unit:literal, $secs:expr) => {
        impl<const MAX: u64> $t<MAX> {
            /// The value, checked at construction to be finite and within 0..=MAX; `None` otherwise.
            pub fn new(x: f64) -> Option<Self> {
                (x.is_finite() && x >= 0.0 && x <= MAX as f64).then_some($t(x))
            }

            /// The number as written.
            pub fn get(self) -> f64 {
                self.0
            }

            /// As a `Duration` (cannot panic: the value is finite and bounded).
            pub fn duration(self) -> std::time::Duration {
                std::time::Duration::try_from_secs_f64(self.0 * $secs).unwrap_or(std::time::Duration::MAX)
            }
        }

        impl<'de, const MAX: u64> Deserialize<'de> for $t<MAX> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                bounded(d, MAX, $unit).map($t)
            }
        }

        impl<const MAX: u64> std::fmt::Display for $t<MAX> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

duration_unit!(Seconds, "seconds", 1.0);
duration_unit!(Millis, "milliseconds", 1e-3);
duration_unit!(Days, "days", 86_400.0);

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;
    #[test]
    fn every_duration_key_is_finite_bounded_and_named_with_its_line() {
        let d = dir();
        let load = |text: &str| Config::load(&write(&d, text)).map_err(|e| format!("{e:#}"));
        // Integers and floats alike.
        let c = load(&GOOD.replace("fps = 5", "fps = 5\n[pipeline.snapshot]\nevery_s = 60")).unwrap();
        assert_eq!(
            c.pipelines[0].snapshot.as_ref().unwrap().every_s.unwrap().duration(),
            std::time::Duration::from_secs(60)
        );
        let c = load(&GOOD.replace("[mqtt]", "stall_s = 0.5\n[mqtt]")).unwrap();
        assert_eq!(c.device.stall_s.duration(), std::time::Duration::from_millis(500));
        let device = |kv: &str| GOOD.replace("[mqtt]", &format!("{kv}\n[mqtt]"));
        let mqtt = |kv: &str| GOOD.replace("port = 1883", &format!("port = 1883\n{kv}"));
        let pipeline = |kv: &str| GOOD.replace("model = \"m.onnx\"", &format!("model = \"m.onnx\"\n{kv}"));
        let snapshot = |kv: &str| format!("{GOOD}[pipeline.snapshot]\n{kv}\n");
        let alert = |kv: &str| format!("{GOOD}[[pipeline.alert]]\nline = 17\n{kv}\n");
        let source = |kind: &str, kv: &str| {
            GOOD.replace("kind = \"images\"\npath = \"frames\"\nfps = 5", &format!("kind = \"{kind}\"\n{kv}"))
        };
        let web = |kv: &str| format!("{GOOD}[web]\n{kv}\n");
        type Place = Box<dyn Fn(&str) -> String>;
        let cases: Vec<(&str, Place)> = vec![
            ("stall_s", Box::new(device)),
            ("stats_interval_s", Box::new(device)),
            ("keepalive_s", Box::new(mqtt)),
            ("reconnect_max_s", Box::new(mqtt)),
            ("detection_expiry_s", Box::new(mqtt)),
            ("session_expiry_s", Box::new(mqtt)),
            ("hold_s", Box::new(pipeline)),
            ("every_s", Box::new(snapshot)),
            ("hold_s", Box::new(alert)),
            ("timeout_s", Box::new(move |kv| source("rtsp", &format!("url = \"rtsp://cam/s\"\n{kv}")))),
            ("timeout_s", Box::new(move |kv| source("http", &format!("url = \"http://cam/s\"\n{kv}")))),
            ("duration_s", Box::new(move |kv| source("mic", kv))),
            ("retain_days", Box::new(web)),
        ];
        for (key, place) in &cases {
            for bad in ["inf", "-inf", "nan", "1e300", "-1", "1e10"] {
                let text = place(&format!("{key} = {bad}"));
                let line = text.lines().position(|l| l.starts_with(&format!("{key} ="))).unwrap() + 1;
                let e = load(&text).expect_err(&format!("{key} = {bad} accepted"));
                assert!(e.contains(&format!("line {line} (`{key} = {bad}`)")), "{key} = {bad}: {e}");
            }
            load(&place(&format!("{key} = 1"))).unwrap_or_else(|e| panic!("{key} = 1: {e}"));
        }
        let e = load(&alert("blink_ms = [250, 1e300]")).unwrap_err();
        assert!(e.contains("blink_ms = [250, 1e300]") && e.contains("milliseconds"), "{e}");
        // The largest value each allows converts without a panic.
        let c = load(&mqtt("session_expiry_s = 4294967295\nkeepalive_s = 65535")).unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(m.session_expiry_s.duration().as_secs(), u64::from(u32::MAX));
        assert!(load(&mqtt("keepalive_s = 65536")).unwrap_err().contains("keepalive_s"));
    }
}
