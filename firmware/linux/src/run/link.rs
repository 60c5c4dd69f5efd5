//! The MQTT link's settings from `[mqtt]`: brokers, client id, credentials, TLS, protocol,
//! expiries, queue and the last will.

use crate::config;
use crate::mqtt::{ClientOptions, LinkOptions};
use crate::topics::Topics;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// The link's options for device `device`, from `[mqtt]`: the password read from its file or
/// `LEPTON_MQTT_PASSWORD`, the CA certificate read.
pub(super) fn link_options(device: &str, m: &config::Mqtt, topics: &Topics) -> Result<LinkOptions> {
    let password = match (&m.password_file, std::env::var("LEPTON_MQTT_PASSWORD")) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("mqtt.password_file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, Ok(p)) => Some(p),
        (None, Err(_)) => None,
    };
    let credentials = match (&m.username, password) {
        (Some(u), p) => Some((u.clone(), p.unwrap_or_default())),
        (None, Some(_)) => bail!("mqtt: a password is set but no mqtt.username"),
        (None, None) => None,
    };
    let tls_ca = m
        .tls_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("mqtt.tls_ca {}", p.display())))
        .transpose()?;
    Ok(LinkOptions {
        brokers: m.brokers(),
        client: ClientOptions {
            client_id: m.client_id.clone().unwrap_or_else(|| format!("lepton-{device}")),
            credentials,
            tls_ca,
            keepalive: m.keepalive_s.duration(),
            protocol: m.protocol(),
            session_expiry: m.session_expiry_s.duration(),
            max_packet: crate::mqtt::MAX_PACKET,
            inflight: crate::mqtt::INFLIGHT,
            will: (topics.status(), b"offline".to_vec()),
        },
        // Whole seconds on the wire; a fraction rounds up (never to 0, which would mean never).
        detection_expiry_s: (m.detection_expiry_s.get() > 0.0).then(|| m.detection_expiry_s.get().ceil() as u32),
        reconnect_max: m.reconnect_max_s.duration().max(Duration::from_secs(1)),
        qos: if m.qos == 0 { rumqttc::QoS::AtMostOnce } else { rumqttc::QoS::AtLeastOnce },
        capacity: m.queue_capacity,
        status_topic: topics.status(),
    })
}
