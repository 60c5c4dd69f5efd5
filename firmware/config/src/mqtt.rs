//! `[mqtt]`: the broker (one host or a cluster), protocol version, topics, queue, payload
//! format, TLS and credentials.

use crate::broker::{check_host, BrokerUrl};
use crate::duration::{Seconds, HOUR, U32_MAX};
use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON objects (default).
    #[default]
    Json,
    /// postcard-encoded `DetectionMessage`/`Event` (see README).
    Postcard,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// Broker host (one broker; else `hosts`).
    #[serde(default)]
    pub host: Option<String>,
    /// Broker nodes of a cluster, `host` or `host:port`, tried in order: the first that
    /// answers is used, the next on its loss.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Broker port (default 1883, 8883 with TLS); the port of `hosts` entries without one.
    pub port: Option<u16>,
    /// Protocol: `"3.1.1"` (default) or `5`.
    #[serde(default)]
    pub protocol: ProtocolSetting,
    /// MQTT 5: seconds after which a detection not yet delivered is dropped by the broker
    /// (default 600; 0: never).
    #[serde(default = "default_detection_expiry")]
    pub detection_expiry_s: Seconds<U32_MAX>,
    /// MQTT 5: seconds the broker keeps the device's session after a disconnection (default 3600).
    #[serde(default = "default_session_expiry")]
    pub session_expiry_s: Seconds<U32_MAX>,
    /// First topic level (default `lepton`).
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// 0 or 1 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Messages kept while the broker is unreachable; past it the oldest are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// `json` or `postcard`.
    #[serde(default)]
    pub format: Format,
    /// CA certificate (PEM) to verify the broker with TLS.
    pub tls_ca: Option<PathBuf>,
    /// User name.
    pub username: Option<String>,
    /// File holding the password (else `LEPTON_MQTT_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Client id (default `lepton-<device id>`).
    pub client_id: Option<String>,
    /// Keep-alive in seconds (default 30; MQTT's limit is 65535).
    #[serde(default = "default_keepalive")]
    pub keepalive_s: Seconds<{ u16::MAX as u64 }>,
    /// Longest wait between reconnection attempts, in seconds (default 30).
    #[serde(default = "default_backoff")]
    pub reconnect_max_s: Seconds<HOUR>,
}

impl Mqtt {
    /// The broker port: as configured, else 8883 with TLS, 1883 without.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls_ca.is_some() { 8883 } else { 1883 })
    }

    /// The broker nodes, in the order they are tried (checked by [`Config::check`](crate::Config::check)).
    pub fn brokers(&self) -> Vec<(String, u16)> {
        match &self.host {
            Some(h) => vec![(h.clone(), self.port())],
            None => self.hosts.iter().map(|h| split_host_port(h, self.port())).collect(),
        }
    }

    /// The brokers as the user wrote them: `host:port, host:port`.
    pub fn brokers_text(&self) -> String {
        self.brokers().iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(", ")
    }

    /// The protocol version (checked by [`Config::check`](crate::Config::check)).
    pub fn protocol(&self) -> Protocol {
        match &self.protocol {
            ProtocolSetting::Number(5) => Protocol::V5,
            ProtocolSetting::Text(t) if t == "5" || t == "5.0" => Protocol::V5,
            _ => Protocol::V311,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        match (&self.host, self.hosts.is_empty()) {
            (Some(_), false) => {
                bail!("mqtt: both host and hosts are set; use host for one broker, hosts for a cluster")
            }
            (None, true) => {
                bail!("mqtt: no broker; set host = \"NAME\" (one broker) or hosts = [\"NODE:PORT\", ...] (a cluster)")
            }
            (Some(h), true) => {
                if let Some(url) = BrokerUrl::parse(h) {
                    bail!("mqtt.host {}: a URL; write its parts as keys: {}", url.shown(h), url.suggestion(false));
                }
                check_host(h).map_err(|e| anyhow::anyhow!("mqtt.host = \"{h}\": {e}"))?
            }
            (None, false) => {
                for h in &self.hosts {
                    if let Some(url) = BrokerUrl::parse(h) {
                        bail!(
                            "mqtt.hosts entry {}: a URL; write its parts as keys: {}",
                            url.shown(h),
                            url.suggestion(true)
                        );
                    }
                    let bad =
                        || anyhow::anyhow!("mqtt.hosts entry \"{h}\": write \"HOST\" or \"HOST:PORT\" (port 1-65535)");
                    let (name, port) = match h.strip_prefix('[') {
                        Some(rest) => {
                            let (addr, tail) = rest.split_once(']').ok_or_else(bad)?;
                            (format!("[{addr}]"), tail.strip_prefix(':'))
                        }
                        None => match h.rsplit_once(':') {
                            Some((n, p)) if !n.contains(':') => (n.to_string(), Some(p)),
                            _ => (h.clone(), None),
                        },
                    };
                    if h.contains("://") || port.is_some_and(|p| !p.parse::<u16>().is_ok_and(|p| p > 0)) {
                        return Err(bad());
                    }
                    check_host(&name).map_err(|e| anyhow::anyhow!("mqtt.hosts entry \"{h}\": {e}"))?;
                }
            }
        }
        let ok = match &self.protocol {
            ProtocolSetting::Number(n) => *n == 4 || *n == 5,
            ProtocolSetting::Text(t) => ["3.1.1", "4", "5", "5.0"].contains(&t.as_str()),
        };
        if !ok {
            bail!("mqtt.protocol = {}: use \"3.1.1\" (the default) or 5", self.protocol);
        }
        Ok(())
    }
}

/// `host` or `host:port` (an IPv6 address in brackets: `[::1]:1883`); `port` when none is given.
fn split_host_port(entry: &str, port: u16) -> (String, u16) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            let p = tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(port);
            return (addr.to_string(), p);
        }
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(port)),
        _ => (entry.to_string(), port),
    }
}

/// The MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4), the default.
    V311,
    /// MQTT 5: message expiry, content type, session expiry.
    V5,
}

impl Protocol {
    /// The name users write and read: `3.1.1` or `5`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// `[mqtt] protocol`, as written: `"3.1.1"`, `"5"` or `5`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ProtocolSetting {
    /// `protocol = 5` (or 4, MQTT 3.1.1's protocol level).
    Number(u8),
    /// `protocol = "3.1.1"`.
    Text(String),
}

impl Default for ProtocolSetting {
    fn default() -> Self {
        ProtocolSetting::Text("3.1.1".into())
    }
}

impl std::fmt::Display for ProtocolSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolSetting::Number(n) => write!(f, "{n}"),
            ProtocolSetting::Text(t) => write!(f, "\"{t}\""),
        }
    }
}

fn default_detection_expiry() -> Seconds<U32_MAX> {
    Seconds(600.0)
}
fn default_session_expiry() -> Seconds<U32_MAX> {
    Seconds(3600.0)
}

fn default_prefix() -> String {
    "lepton".into()
}
fn default_qos() -> u8 {
    1
}
fn default_queue() -> usize {
    1000
}
fn default_keepalive() -> Seconds<{ u16::MAX as u64 }> {
    Seconds(30.0)
}
fn default_backoff() -> Seconds<HOUR> {
    Seconds(30.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::Config;
    #[test]
    fn a_cluster_is_a_list_of_nodes_and_the_protocol_is_3_1_1_or_5() {
        let d = dir();
        let with = |mqtt: &str| {
            let text = GOOD.replace("host = \"127.0.0.1\"\nport = 1883", mqtt);
            Config::load(&write(&d, &text)).map_err(|e| format!("{e:#}"))
        };
        let c = with("hosts = [\"node1:1884\", \"node2\", \"10.0.0.3:1885\", \"[::1]:1886\"]\nport = 1999").unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(
            m.brokers(),
            vec![("node1".into(), 1884), ("node2".into(), 1999), ("10.0.0.3".into(), 1885), ("::1".into(), 1886)]
        );
        assert_eq!(m.brokers_text(), "node1:1884, node2:1999, 10.0.0.3:1885, ::1:1886");
        assert_eq!(
            (m.protocol(), m.detection_expiry_s.get(), m.session_expiry_s.get()),
            (Protocol::V311, 600.0, 3600.0)
        );
        let single = with("host = \"broker.lan\"\nprotocol = 5").unwrap().mqtt.unwrap();
        assert_eq!((single.brokers(), single.protocol()), (vec![("broker.lan".into(), 1883)], Protocol::V5));
        assert_eq!(with("host = \"b\"\nprotocol = \"3.1.1\"").unwrap().mqtt.unwrap().protocol(), Protocol::V311);
        let e = with("host = \"a\"\nhosts = [\"b\"]").unwrap_err();
        assert!(e.contains("both host and hosts"), "{e}");
        let e = with("topic_prefix = \"x\"").unwrap_err();
        assert!(e.contains("no broker") && e.contains("hosts = ["), "{e}");
        let e = with("hosts = [\"node1:99999\"]").unwrap_err();
        assert!(e.contains("mqtt.hosts entry \"node1:99999\""), "{e}");
        let e = with("hosts = [\"mqtt://node1\"]").unwrap_err();
        assert!(e.contains("mqtt.hosts entry"), "{e}");
        let e = with("host = \"b\"\nprotocol = 3").unwrap_err();
        assert!(e.contains("mqtt.protocol = 3") && e.contains("\"3.1.1\""), "{e}");
    }
}
