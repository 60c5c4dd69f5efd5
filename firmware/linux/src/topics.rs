//! Every MQTT topic the daemon uses, built in one place.

/// Topic builder for one device.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
    device: String,
}

impl Topics {
    /// Topics under `<prefix>/<device>`.
    pub fn new(prefix: &str, device: &str) -> Self {
        Topics { prefix: prefix.to_string(), device: device.to_string() }
    }

    /// Retained `online`/`offline`.
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.device)
    }

    /// Periodic counters.
    pub fn stats(&self) -> String {
        format!("{}/{}/stats", self.prefix, self.device)
    }

    /// One message per processed frame with detections.
    pub fn detections(&self, pipeline: &str) -> String {
        format!("{}/{}/{pipeline}/detections", self.prefix, self.device)
    }

    /// Presence start/end events of every label.
    pub fn events(&self, pipeline: &str) -> String {
        format!("{}/{}/{pipeline}/events", self.prefix, self.device)
    }

    /// Presence start/end events of one label (what Home Assistant's binary sensors follow).
    pub fn label_events(&self, pipeline: &str, label: &str) -> String {
        format!("{}/{}/{pipeline}/events/{}", self.prefix, self.device, topic_safe(label))
    }
}

impl Topics {
    /// The latest snapshot of a vision pipeline (retained JPEG).
    pub fn snapshot(&self, pipeline: &str) -> String {
        format!("{}/{}/{pipeline}/snapshot", self.prefix, self.device)
    }

    /// The latest snapshot showing one label (retained JPEG).
    pub fn label_snapshot(&self, pipeline: &str, label: &str) -> String {
        format!("{}/{}/{pipeline}/snapshot/{}", self.prefix, self.device, topic_safe(label))
    }

    /// Tracked objects' lives (start, stationary, moving, end), one message each.
    pub fn objects(&self, pipeline: &str) -> String {
        format!("{}/{}/{pipeline}/objects", self.prefix, self.device)
    }

    /// Objects entering and leaving a zone, one message each.
    pub fn zone(&self, pipeline: &str, zone: &str) -> String {
        format!("{}/{}/{pipeline}/zone/{zone}", self.prefix, self.device)
    }

    /// The objects in a zone now, per label (retained JSON object).
    pub fn zone_count(&self, pipeline: &str, zone: &str) -> String {
        format!("{}/{}/{pipeline}/zone/{zone}/count", self.prefix, self.device)
    }

    /// Words a keyword pipeline heard, one message each: `{"event_type": word, ...}` (what a Home
    /// Assistant event entity reads).
    pub fn heard(&self, pipeline: &str) -> String {
        format!("{}/{}/{pipeline}/heard", self.prefix, self.device)
    }
}

/// A label as a topic level: `/`, `+`, `#` and spaces become `_`.
pub fn topic_safe(label: &str) -> String {
    label.chars().map(|c| if matches!(c, '/' | '+' | '#' | ' ') { '_' } else { c }).collect()
}
