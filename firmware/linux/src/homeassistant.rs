//! Home Assistant MQTT discovery: one device per Lepton device, a presence binary sensor per
//! pipeline label (following that label's events topic, with an off delay), fps and latency
//! sensors per pipeline, an `image` entity per vision pipeline with snapshots (its snapshot
//! topic, raw JPEG), and an `event` entity per keyword pipeline (event types = the words; each
//! word heard is one event that automations can trigger on), all available while the status
//! topic says `online`. Configs are retained
//! and published again whenever Home Assistant announces itself on `<prefix>/status`.

use crate::mqtt::{Link, Meta};
use crate::topics::{topic_safe, Topics};
use serde_json::{json, Value};

/// What to announce for one pipeline.
pub struct PipelineEntities {
    /// Pipeline name.
    pub name: String,
    /// Labels of its model that can produce events (`Manifest::event_labels`): background classes
    /// that never fire get no sensor.
    pub labels: Vec<String>,
    /// Presence hold, seconds (the off delay adds a margin to it).
    pub hold_s: f64,
    /// It publishes snapshots: an `image` entity shows the latest.
    pub snapshot: bool,
    /// It spots keywords: an `event` entity fires per word heard.
    pub keyword: bool,
}

/// The discovery messages: (topic, retained JSON config).
pub fn configs(
    ha_prefix: &str,
    device_id: &str,
    device_name: &str,
    topics: &Topics,
    pipelines: &[PipelineEntities],
) -> Vec<(String, Vec<u8>)> {
    let device = json!({
        "identifiers": [format!("lepton_{device_id}")],
        "name": device_name,
        "manufacturer": "Lepton",
        "model": "lepton",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let availability =
        json!([{ "topic": topics.status(), "payload_available": "online", "payload_not_available": "offline" }]);
    let mut out = vec![];
    let mut push = |component: &str, object: String, mut config: Value| {
        config["device"] = device.clone();
        config["availability"] = availability.clone();
        out.push((format!("{ha_prefix}/{component}/{device_id}/{object}/config"), config.to_string().into_bytes()));
    };
    for p in pipelines {
        for label in &p.labels {
            let object = format!("{}_{}", p.name, topic_safe(label));
            push(
                "binary_sensor",
                object.clone(),
                json!({
                    "name": format!("{} {label}", p.name),
                    "unique_id": format!("lepton_{device_id}_{object}"),
                    "state_topic": topics.label_events(&p.name, label),
                    "value_template": "{{ 'ON' if value_json.event == 'start' else 'OFF' }}",
                    "device_class": "occupancy",
                    "off_delay": (p.hold_s * 2.0 + 5.0).ceil() as u64,
                }),
            );
        }
        if p.snapshot {
            let object = format!("{}_snapshot", p.name);
            push(
                "image",
                object.clone(),
                json!({
                    "name": format!("{} snapshot", p.name),
                    "unique_id": format!("lepton_{device_id}_{object}"),
                    "image_topic": topics.snapshot(&p.name),
                    "content_type": "image/jpeg",
                }),
            );
        }
        if p.keyword {
            let object = format!("{}_heard", p.name);
            push(
                "event",
                object.clone(),
                json!({
                    "name": format!("{} heard", p.name),
                    "unique_id": format!("lepton_{device_id}_{object}"),
                    "state_topic": topics.heard(&p.name),
                    "event_types": p.labels,
                }),
            );
        }
        for (what, template, unit) in [
            ("fps", format!("{{{{ value_json.pipelines['{}'].fps }}}}", p.name), "fps"),
            ("latency", format!("{{{{ value_json.pipelines['{}'].inference_p50_ms }}}}", p.name), "ms"),
        ] {
            let object = format!("{}_{what}", p.name);
            push(
                "sensor",
                object.clone(),
                json!({
                    "name": format!("{} {what}", p.name),
                    "unique_id": format!("lepton_{device_id}_{object}"),
                    "state_topic": topics.stats(),
                    "value_template": template,
                    "unit_of_measurement": unit,
                    "state_class": "measurement",
                }),
            );
        }
    }
    out
}

/// Publishes the configs now and after every reconnection, and again when Home Assistant comes
/// online (`<prefix>/status` = `online`).
pub fn announce(link: &Link, ha_prefix: &str, configs: Vec<(String, Vec<u8>)>) {
    for (topic, payload) in &configs {
        link.publish_on_connect(topic, payload.clone(), true, Meta::JSON);
    }
    let again = link.clone();
    link.subscribe(&format!("{ha_prefix}/status"), move |payload| {
        if payload == b"online" {
            tracing::info!("Home Assistant came online: announcing {} entities again", configs.len());
            for (topic, p) in &configs {
                again.publish(topic, p.clone(), true, Meta::JSON);
            }
        }
    });
}
