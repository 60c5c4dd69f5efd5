//! Home Assistant MQTT discovery: one device per Lepton device (with a link to its device page
//! when it serves one), a presence binary sensor per label of a vision pipeline (`occupancy`) or
//! voice activity detector (`sound`), following that label's retained events topic: on at
//! `start`, off at `end`, with no off delay (events are published at start and end only, so an
//! off delay would turn a long presence off while it lasts); fps and latency sensors per
//! pipeline; an `image` entity per vision pipeline with snapshots (its snapshot topic, raw JPEG);
//! an `event` entity per keyword pipeline (event types = the words; each word heard is one event
//! that automations can trigger on; words are not presences, so they get no binary sensor); per
//! zone, an `occupancy` binary sensor (on while any object is inside) and a count sensor per
//! label, both reading the zone's retained count topic; all
//! available while the status topic says `online`. Configs are retained and published again
//! whenever Home Assistant announces itself on `<prefix>/status`.
//!
//! Removal: the device reads the retained configs under its own node id
//! (`<prefix>/+/<device id>/+/config`) and clears (an empty retained payload, which Home Assistant
//! takes as "remove the entity") every one it no longer publishes: the entities of a renamed or
//! removed pipeline, of a label the model lost, of a snapshot table taken out. The broker is the
//! record, so nothing is kept on the device, and a config published by an older version or by
//! hand is found the same way. The subscription stays for the run, so a stale config that shows
//! up later is cleared too.

use crate::mqtt::{Link, Meta};
use crate::topics::{topic_safe, Topics};
use lepton_runtime::manifest::Task;
use serde_json::{json, Value};
use std::collections::HashSet;

/// What to announce for one pipeline.
pub struct PipelineEntities {
    /// Pipeline name.
    pub name: String,
    /// Labels of its model that can produce events (`Manifest::event_labels`): background classes
    /// that never fire get no sensor.
    pub labels: Vec<String>,
    /// It publishes snapshots: an `image` entity shows the latest.
    pub snapshot: bool,
    /// Its model's task: presences for vision models and voice activity, an `event` entity for
    /// keyword spotters.
    pub task: Task,
    /// Its zones, each with the labels it counts.
    pub zones: Vec<(String, Vec<String>)>,
}

/// The Home Assistant device class of a pipeline's presence sensors; `None`: it has none.
fn presence_class(task: Task) -> Option<&'static str> {
    match task {
        Task::Classify | Task::Detect => Some("occupancy"),
        Task::Vad => Some("sound"),
        Task::Keyword | Task::Raw => None,
    }
}

/// The device page's address as a link for Home Assistant: `http://ADDR:PORT/`, with the host's
/// name for an unspecified address (`0.0.0.0`, `::`), which no browser can reach.
pub fn page_url(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{}/", addr.port())
    } else {
        format!("http://{addr}/")
    }
}

/// The discovery messages: (topic, retained JSON config).
pub fn configs(
    ha_prefix: &str,
    device_id: &str,
    device_name: &str,
    topics: &Topics,
    pipelines: &[PipelineEntities],
    page: Option<&str>,
) -> Vec<(String, Vec<u8>)> {
    let mut device = json!({
        "identifiers": [format!("lepton_{device_id}")],
        "name": device_name,
        "manufacturer": "Lepton",
        "model": "lepton",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(url) = page {
        device["configuration_url"] = json!(url);
    }
    let availability =
        json!([{ "topic": topics.status(), "payload_available": "online", "payload_not_available": "offline" }]);
    let mut out = vec![];
    let mut taken: HashSet<(String, String)> = HashSet::new();
    let mut push = |component: &str, object: String, mut config: Value| {
        // Names made safe for ids can meet (zone `a` with label `b_c`, zone `a_b` with label
        // `c`): the later entity, in config order, takes the next free `_2`, `_3`...
        let mut id = object.clone();
        let mut n = 2;
        while !taken.insert((component.to_string(), id.clone())) {
            id = format!("{object}_{n}");
            n += 1;
        }
        if id != object {
            tracing::warn!("Home Assistant: two {component} entities would be `{object}`; the second is `{id}`");
            config["unique_id"] = json!(format!("lepton_{device_id}_{id}"));
        }
        config["device"] = device.clone();
        config["availability"] = availability.clone();
        out.push((format!("{ha_prefix}/{component}/{device_id}/{id}/config"), config.to_string().into_bytes()));
    };
    for p in pipelines {
        for label in presence_class(p.task).map_or(&[][..], |_| &p.labels[..]) {
            let object = format!("{}_{}", p.name, topic_safe(label));
            push(
                "binary_sensor",
                object.clone(),
                json!({
                    "name": format!("{} {label}", p.name),
                    "unique_id": format!("lepton_{device_id}_{object}"),
                    "state_topic": topics.label_events(&p.name, label),
                    "value_template": "{{ 'ON' if value_json.event == 'start' else 'OFF' }}",
                    "device_class": presence_class(p.task),
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
        if p.task == Task::Keyword {
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
        for (zone, labels) in &p.zones {
            // `zone_` keeps zone ids apart from the label sensors' (`{pipeline}_{label}`).
            let object = format!("{}_zone_{zone}", p.name);
            let state_topic = topics.zone_count(&p.name, zone);
            push(
                "binary_sensor",
                object.clone(),
                json!({
                    "name": format!("{} {zone}", p.name),
                    "unique_id": format!("lepton_{device_id}_{object}"),
                    "state_topic": state_topic,
                    "value_template": "{{ 'ON' if (value_json.values() | sum) > 0 else 'OFF' }}",
                    "device_class": "occupancy",
                }),
            );
            for label in labels {
                let object = format!("{}_zone_{zone}_{}", p.name, topic_safe(label));
                // The label as a JSON string literal, which Jinja reads the same: quotes in a
                // label stay inside it.
                let key = serde_json::to_string(label).unwrap_or_default();
                push(
                    "sensor",
                    object.clone(),
                    json!({
                        "name": format!("{} {zone} {label}", p.name),
                        "unique_id": format!("lepton_{device_id}_{object}"),
                        "state_topic": state_topic,
                        "value_template": format!("{{{{ value_json[{key}] | default(0) }}}}"),
                        "state_class": "measurement",
                    }),
                );
            }
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
/// online (`<prefix>/status` = `online`); clears the retained configs of this device's node that
/// are not among them (entities it no longer has).
pub fn announce(link: &Link, ha_prefix: &str, device_id: &str, configs: Vec<(String, Vec<u8>)>) {
    for (topic, payload) in &configs {
        link.publish_on_connect(topic, payload.clone(), true, Meta::JSON);
    }
    let current: HashSet<String> = configs.iter().map(|(t, _)| t.clone()).collect();
    let clear = link.clone();
    link.subscribe_filter(&format!("{ha_prefix}/+/{device_id}/+/config"), move |topic, payload| {
        // Our own configs come back, and so do the empty payloads that clear.
        if !payload.is_empty() && !current.contains(topic) {
            tracing::info!("Home Assistant: removing {topic}, which this device no longer has");
            clear.publish(topic, vec![], true, Meta::JSON);
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_whose_names_meet_get_distinct_ids() {
        let topics = Topics::new("lepton", "cam");
        let p = PipelineEntities {
            name: "yard".into(),
            labels: vec!["b_c".into(), "c".into()],
            snapshot: false,
            task: Task::Detect,
            zones: vec![("a".into(), vec!["b_c".into()]), ("a_b".into(), vec!["c".into()])],
        };
        let configs = configs("homeassistant", "cam", "Cam", &topics, &[p], None);
        let sensors: Vec<(String, Value)> = configs
            .iter()
            .filter(|(t, _)| t.starts_with("homeassistant/sensor/cam/yard_zone_"))
            .map(|(t, c)| (t.clone(), serde_json::from_slice(c).unwrap()))
            .collect();
        assert_eq!(sensors.len(), 2, "{sensors:?}");
        assert_eq!(sensors[0].0, "homeassistant/sensor/cam/yard_zone_a_b_c/config");
        assert_eq!(sensors[1].0, "homeassistant/sensor/cam/yard_zone_a_b_c_2/config");
        assert_eq!(sensors[0].1["unique_id"], "lepton_cam_yard_zone_a_b_c");
        assert_eq!(sensors[1].1["unique_id"], "lepton_cam_yard_zone_a_b_c_2");
        assert_eq!(sensors[1].1["name"], "yard a_b c");
        let topics: HashSet<&String> = configs.iter().map(|(t, _)| t).collect();
        assert_eq!(topics.len(), configs.len(), "every config topic once");
    }
}
