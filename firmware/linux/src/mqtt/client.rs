//! The two protocol versions behind one client: MQTT 3.1.1 (rumqttc's v4 client) and MQTT 5
//! (rumqttc's v5 client). This module owns what differs between them (options, properties,
//! packet types) and reports what the outbox needs to know as one [`Happening`]; the outbox in
//! `mqtt/mod.rs` does not know which protocol it speaks.

pub use crate::config::Protocol;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::{Outgoing, QoS, Transport};
use std::time::Duration;

/// How to connect, whatever the broker node.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Client id.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// CA certificate (PEM bytes) for TLS.
    pub tls_ca: Option<Vec<u8>>,
    /// Keep-alive.
    pub keepalive: Duration,
    /// Protocol version.
    pub protocol: Protocol,
    /// MQTT 5: how long the broker keeps the session after a disconnection (0: not at all).
    pub session_expiry: Duration,
    /// Largest packet sent or received.
    pub max_packet: usize,
    /// Publishes in flight at most.
    pub inflight: u16,
    /// Last will: topic and payload (retained, QoS 1).
    pub will: (String, Vec<u8>),
}

/// Properties of one message (MQTT 5 sends them; MQTT 3.1.1 has no place for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// MIME type of the payload.
    pub content_type: &'static str,
    /// Seconds after which the broker must not deliver the message (None: never expires).
    pub expiry_s: Option<u32>,
}

impl Meta {
    /// A JSON payload that does not expire.
    pub const JSON: Meta = Meta { content_type: "application/json", expiry_s: None };
    /// A postcard payload that does not expire.
    pub const POSTCARD: Meta = Meta { content_type: "application/x-postcard", expiry_s: None };
    /// A JPEG picture.
    pub const JPEG: Meta = Meta { content_type: "image/jpeg", expiry_s: None };
    /// Plain text (the status topic).
    pub const TEXT: Meta = Meta { content_type: "text/plain", expiry_s: None };
}

/// What the connection reports, in protocol-neutral terms.
#[derive(Debug)]
pub enum Happening {
    /// Connected; `resumed` when the broker kept the session.
    Connected { resumed: bool },
    /// A publish was written to the network with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// A message on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
    /// Anything else (pings, subscription acks).
    Other,
    /// The connection failed or was lost.
    Failed(Failure),
}

/// Why a connection failed.
#[derive(Debug)]
pub enum Failure {
    /// The broker refused the user name or password.
    Credentials(String),
    /// TLS failed.
    Tls(String),
    /// Any other error (network, protocol).
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Credentials(e) | Failure::Tls(e) | Failure::Other(e) => f.write_str(e),
        }
    }
}

/// A handle that queues requests to the connection.
#[derive(Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::Client),
    /// MQTT 5.
    V5(rumqttc::v5::Client),
}

/// The connection, driven by one thread (one per link: the size of the larger variant is no cost).
#[allow(clippy::large_enum_variant)]
pub enum Connection {
    /// MQTT 3.1.1.
    V311(rumqttc::Connection),
    /// MQTT 5.
    V5(rumqttc::v5::Connection),
}

/// A client and its connection to `host:port`; `capacity` bounds the request channel.
pub fn connect(o: &ClientOptions, host: &str, port: u16, capacity: usize) -> (Client, Connection) {
    match o.protocol {
        Protocol::V311 => {
            let (c, n) = rumqttc::Client::new(options_v311(o, host, port), capacity);
            (Client::V311(c), Connection::V311(n))
        }
        Protocol::V5 => {
            let (c, n) = rumqttc::v5::Client::new(options_v5(o, host, port), capacity);
            (Client::V5(c), Connection::V5(n))
        }
    }
}

fn transport(o: &ClientOptions) -> Option<Transport> {
    o.tls_ca.as_ref().map(|ca| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Transport::tls(ca.clone(), None, None)
    })
}

fn options_v311(o: &ClientOptions, host: &str, port: u16) -> rumqttc::MqttOptions {
    let mut mo = rumqttc::MqttOptions::new(&o.client_id, host, port);
    mo.set_keep_alive(o.keepalive.max(Duration::from_secs(5)));
    // A clean session: after a reconnection the outbox resends what was not acknowledged.
    mo.set_clean_session(true);
    mo.set_inflight(o.inflight);
    mo.set_max_packet_size(o.max_packet, o.max_packet);
    mo.set_last_will(rumqttc::LastWill::new(&o.will.0, o.will.1.clone(), QoS::AtLeastOnce, true));
    if let Some((u, p)) = &o.credentials {
        mo.set_credentials(u, p);
    }
    if let Some(t) = transport(o) {
        mo.set_transport(t);
    }
    mo
}

fn options_v5(o: &ClientOptions, host: &str, port: u16) -> rumqttc::v5::MqttOptions {
    let mut mo = rumqttc::v5::MqttOptions::new(&o.client_id, host, port);
    mo.set_keep_alive(o.keepalive.max(Duration::from_secs(5)));
    // The broker keeps the session (subscriptions, messages for this device) for
    // `session_expiry`, so a reconnecting device resumes it; what this device publishes is
    // resent by the outbox either way.
    let expiry = o.session_expiry.as_secs().min(u64::from(u32::MAX)) as u32;
    mo.set_clean_start(expiry == 0);
    mo.set_session_expiry_interval(Some(expiry));
    mo.set_outgoing_inflight_upper_limit(o.inflight);
    mo.set_max_packet_size(Some(o.max_packet as u32));
    let will_props = p5::LastWillProperties {
        delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: None,
        content_type: Some(Meta::TEXT.content_type.into()),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    };
    mo.set_last_will(p5::LastWill::new(&o.will.0, o.will.1.clone(), Q5::AtLeastOnce, true, Some(will_props)));
    if let Some((u, p)) = &o.credentials {
        mo.set_credentials(u, p);
    }
    if let Some(t) = transport(o) {
        mo.set_transport(t);
    }
    mo
}

fn qos5(q: QoS) -> Q5 {
    match q {
        QoS::AtMostOnce => Q5::AtMostOnce,
        QoS::AtLeastOnce => Q5::AtLeastOnce,
        QoS::ExactlyOnce => Q5::ExactlyOnce,
    }
}

impl Client {
    /// Queues a publish; an error when the request channel is full or closed.
    pub fn try_publish(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>, meta: Meta) -> Result<(), ()> {
        match self {
            Client::V311(c) => c.try_publish(topic, qos, retain, payload).map_err(drop),
            Client::V5(c) => {
                let props = p5::PublishProperties {
                    payload_format_indicator: Some(u8::from(
                        meta.content_type.starts_with("application/json") || meta.content_type.starts_with("text/"),
                    )),
                    message_expiry_interval: meta.expiry_s,
                    content_type: Some(meta.content_type.into()),
                    ..Default::default()
                };
                c.try_publish_with_properties(topic, qos5(qos), retain, payload, props).map_err(drop)
            }
        }
    }

    /// Queues a subscription (QoS 1).
    pub fn try_subscribe(&self, filter: &str) -> Result<(), ()> {
        match self {
            Client::V311(c) => c.try_subscribe(filter, QoS::AtLeastOnce).map_err(drop),
            Client::V5(c) => c.try_subscribe(filter, Q5::AtLeastOnce).map_err(drop),
        }
    }

    /// Queues a disconnection.
    pub fn try_disconnect(&self) {
        match self {
            Client::V311(c) => drop(c.try_disconnect()),
            Client::V5(c) => drop(c.try_disconnect()),
        }
    }
}

impl Connection {
    /// The next happening (blocking), or None once the client is gone. Never a timeout: a
    /// poll cut short by one would abandon a connection attempt that takes longer (a cluster
    /// node's handshake, TLS over a slow link) and start it again, for ever.
    pub fn next(&mut self) -> Option<Happening> {
        match self {
            Connection::V311(c) => c.recv().ok().map(|e| match e {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    Happening::Connected { resumed: a.session_present }
                }
                Ok(rumqttc::Event::Outgoing(Outgoing::Publish(id))) => Happening::Sent(id),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a))) => Happening::Acked(a.pkid),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    Happening::Message { topic: p.topic, payload: p.payload.to_vec() }
                }
                Ok(_) => Happening::Other,
                Err(e) => Happening::Failed(match &e {
                    rumqttc::ConnectionError::ConnectionRefused(
                        code @ (rumqttc::ConnectReturnCode::BadUserNamePassword
                        | rumqttc::ConnectReturnCode::NotAuthorized),
                    ) => Failure::Credentials(format!("{code:?}")),
                    rumqttc::ConnectionError::Tls(_) => Failure::Tls(e.to_string()),
                    _ => Failure::Other(e.to_string()),
                }),
            }),
            Connection::V5(c) => c.recv().ok().map(|e| match e {
                Ok(rumqttc::v5::Event::Incoming(p5::Packet::ConnAck(a))) => {
                    Happening::Connected { resumed: a.session_present }
                }
                Ok(rumqttc::v5::Event::Outgoing(Outgoing::Publish(id))) => Happening::Sent(id),
                Ok(rumqttc::v5::Event::Incoming(p5::Packet::PubAck(a))) => Happening::Acked(a.pkid),
                Ok(rumqttc::v5::Event::Incoming(p5::Packet::Publish(p))) => Happening::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                },
                Ok(_) => Happening::Other,
                Err(e) => Happening::Failed(match &e {
                    rumqttc::v5::ConnectionError::ConnectionRefused(
                        code @ (p5::ConnectReturnCode::BadUserNamePassword | p5::ConnectReturnCode::NotAuthorized),
                    ) => Failure::Credentials(format!("{code:?}")),
                    rumqttc::v5::ConnectionError::Tls(_) => Failure::Tls(e.to_string()),
                    _ => Failure::Other(e.to_string()),
                }),
            }),
        }
    }

    /// Forgets the publishes rumqttc kept from the last connection: the outbox resends them
    /// itself, in order, so that each `Sent` maps to the message the outbox expects.
    pub fn forget_pending(&mut self) {
        match self {
            Connection::V311(c) => c.eventloop.pending.clear(),
            Connection::V5(c) => c.eventloop.pending.clear(),
        }
    }

    /// Points the next connection attempt at another broker node.
    pub fn retarget(&mut self, o: &ClientOptions, host: &str, port: u16) {
        match self {
            Connection::V311(c) => c.eventloop.mqtt_options = options_v311(o, host, port),
            Connection::V5(c) => c.eventloop.options = options_v5(o, host, port),
        }
    }
}
