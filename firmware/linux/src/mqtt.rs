//! MQTT delivery that loses nothing within its queue: every message waits in a bounded outbox
//! until the broker acknowledges it (QoS 1), is resent after a reconnection, and goes out in order.
//! Past the capacity the oldest message is dropped and counted. rumqttc speaks the protocol; this
//! module owns the outbox, the connection state, the status topic (retained `online`, last will
//! `offline`) and the subscriptions other modules ask for.

use anyhow::{Context, Result};
use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Transport,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Publishes sent but not yet acknowledged, at most.
const WINDOW: usize = 32;

/// Largest MQTT packet sent or received (1 MiB, also the embedded broker's limit): a payload
/// near it (a snapshot) is refused by the sender, not sent to break the connection.
pub const MAX_PACKET: usize = 1 << 20;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// CA certificate (PEM bytes) for TLS.
    pub tls_ca: Option<Vec<u8>>,
    /// Keep-alive.
    pub keepalive: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// QoS of queued messages.
    pub qos: QoS,
    /// Outbox capacity.
    pub capacity: usize,
    /// `<prefix>/<device>/status`.
    pub status_topic: String,
}

/// One message in the outbox.
#[derive(Debug, Clone)]
struct Message {
    id: u64,
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    qos: QoS,
}

/// Counters, for the stats topic.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LinkStats {
    /// Messages waiting (sent or not) for an acknowledgement.
    pub queue_depth: usize,
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages dropped because the outbox was full (oldest first).
    pub dropped: u64,
    /// Connections made (1 + reconnections).
    pub connections: u64,
    /// Whether the broker is connected now.
    pub connected: bool,
}

struct State {
    outbox: VecDeque<Message>,
    /// Index in `outbox` of the first message not yet handed to rumqttc.
    next: usize,
    /// Ids handed to rumqttc, waiting for their `Outgoing::Publish` (None: a direct publish).
    unsent: VecDeque<Option<u64>>,
    /// Packet id → message id, waiting for PubAck.
    inflight: HashMap<u16, u64>,
    next_id: u64,
    stats: LinkStats,
    /// Messages re-published after each connection (retained status, discovery).
    on_connect: Vec<(String, Vec<u8>, bool)>,
    /// Topics to subscribe to after each connection.
    subscriptions: Vec<String>,
}

/// A callback for messages on a subscribed topic.
type Handler = Box<dyn Fn(&[u8]) + Send>;

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    client: Client,
    opts: LinkOptions,
    /// Incoming messages on subscribed topics.
    handlers: Mutex<Vec<(String, Handler)>>,
}

/// A connection to a broker with a bounded, acknowledged outbox.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Link {
    /// Connects in the background (retrying with backoff) and starts delivering.
    pub fn start(opts: LinkOptions) -> Result<Link> {
        let mut mo = MqttOptions::new(&opts.client_id, &opts.host, opts.port);
        mo.set_keep_alive(opts.keepalive.max(Duration::from_secs(5)));
        // A clean session: after a reconnection this module resends what was not acknowledged.
        mo.set_clean_session(true);
        mo.set_inflight(WINDOW as u16 + 8);
        mo.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        mo.set_last_will(LastWill::new(&opts.status_topic, "offline", QoS::AtLeastOnce, true));
        if let Some((u, p)) = &opts.credentials {
            mo.set_credentials(u, p);
        }
        if let Some(ca) = &opts.tls_ca {
            let _ = rustls::crypto::ring::default_provider().install_default();
            mo.set_transport(Transport::tls(ca.clone(), None, None));
        }
        let (client, connection) = Client::new(mo, WINDOW * 4 + 64);
        let state = State {
            outbox: VecDeque::new(),
            next: 0,
            unsent: VecDeque::new(),
            inflight: HashMap::new(),
            next_id: 0,
            stats: LinkStats::default(),
            on_connect: vec![(opts.status_topic.clone(), b"online".to_vec(), true)],
            subscriptions: vec![],
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            client,
            opts,
            handlers: Mutex::new(vec![]),
        });
        let link = Link { shared: Arc::clone(&shared), threads: Arc::new(Mutex::new(vec![])) };
        let events = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("lepton-mqtt-events".into())
                .spawn(move || event_loop(&shared, connection))
                .context("starting the MQTT thread")?
        };
        let sender = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("lepton-mqtt-send".into())
                .spawn(move || send_loop(&shared))
                .context("starting the MQTT thread")?
        };
        link.threads.lock().unwrap_or_else(|p| p.into_inner()).extend([events, sender]);
        Ok(link)
    }

    /// Queues a message; returns false if the outbox was full and its oldest message was dropped.
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = true;
        if s.outbox.len() >= self.shared.opts.capacity {
            s.outbox.pop_front();
            s.next = s.next.saturating_sub(1);
            s.stats.dropped += 1;
            kept = false;
        }
        let id = s.next_id;
        s.next_id += 1;
        s.outbox.push_back(Message { id, topic: topic.to_string(), payload, retain, qos: self.shared.opts.qos });
        drop(s);
        self.shared.changed.notify_all();
        kept
    }

    /// A message (retained, usually) to publish at once and again after every reconnection.
    pub fn publish_on_connect(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.on_connect.push((topic.to_string(), payload.clone(), retain));
        if s.stats.connected {
            direct(&self.shared, &mut s, topic, payload, retain);
        }
    }

    /// Calls `handler` with every message on `topic` (subscribed after each connection).
    pub fn subscribe(&self, topic: &str, handler: impl Fn(&[u8]) + Send + 'static) {
        self.shared.handlers.lock().unwrap_or_else(|p| p.into_inner()).push((topic.to_string(), Box::new(handler)));
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.subscriptions.push(topic.to_string());
        if s.stats.connected {
            let _ = self.shared.client.try_subscribe(topic, QoS::AtLeastOnce);
        }
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        LinkStats { queue_depth: s.outbox.len(), ..s.stats }
    }

    /// Waits until every queued message is acknowledged, or `timeout`; returns the messages left.
    pub fn flush(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        while !s.outbox.is_empty() && Instant::now() < deadline {
            s = self.shared.changed.wait_timeout(s, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
        s.outbox.len()
    }

    /// Publishes `offline` (retained), disconnects and stops the threads.
    pub fn close(&self) {
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let connected = s.stats.connected;
            if connected {
                let topic = self.shared.opts.status_topic.clone();
                direct(&self.shared, &mut s, &topic, b"offline".to_vec(), true);
            }
        }
        // Give the offline status a moment to leave before the disconnect.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.unsent.is_empty() || !s.stats.connected || Instant::now() > deadline {
                break;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.shared.client.try_disconnect();
        self.shared.changed.notify_all();
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = t.join();
        }
    }
}

/// Publishes outside the outbox (status, discovery); its `Outgoing` event is expected in order.
fn direct(shared: &Shared, s: &mut State, topic: &str, payload: Vec<u8>, retain: bool) {
    if shared.client.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_ok() {
        s.unsent.push_back(None);
    }
}

/// Hands queued messages to rumqttc while connected and the window has room.
fn send_loop(shared: &Shared) {
    let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    while !shared.stop.load(Ordering::Relaxed) {
        let window_full = s.unsent.len() + s.inflight.len() >= WINDOW;
        if !s.stats.connected || s.next >= s.outbox.len() || window_full {
            s = shared.changed.wait_timeout(s, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
            continue;
        }
        let m = s.outbox[s.next].clone();
        // Under the lock, so the order of `unsent` is the order rumqttc sends in.
        match shared.client.try_publish(&m.topic, m.qos, m.retain, m.payload) {
            Ok(()) => {
                s.unsent.push_back(Some(m.id));
                s.next += 1;
            }
            Err(_) => {
                s = shared.changed.wait_timeout(s, Duration::from_millis(10)).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
    }
}

/// Removes an acknowledged message from the outbox.
fn acknowledge(s: &mut State, id: u64) {
    if let Some(pos) = s.outbox.iter().position(|m| m.id == id) {
        s.outbox.remove(pos);
        if pos < s.next {
            s.next -= 1;
        }
        s.stats.delivered += 1;
    }
}

/// Drives the connection: acknowledgements, reconnections with backoff, subscriptions.
fn event_loop(shared: &Shared, mut connection: Connection) {
    let mut backoff = Duration::from_millis(250);
    let mut outage_logged = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let event = match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(_) => continue, // timeout: check the stop flag
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                s.stats.connected = true;
                s.stats.connections += 1;
                // Everything not acknowledged is sent again, in order.
                s.next = 0;
                s.unsent.clear();
                s.inflight.clear();
                for t in s.subscriptions.clone() {
                    let _ = shared.client.try_subscribe(t, QoS::AtLeastOnce);
                }
                for (topic, payload, retain) in s.on_connect.clone() {
                    direct(shared, &mut s, &topic, payload, retain);
                }
                if outage_logged {
                    tracing::info!(
                        "MQTT: reconnected to {}:{}; resending {} queued message(s)",
                        shared.opts.host,
                        shared.opts.port,
                        s.outbox.len()
                    );
                } else {
                    tracing::info!("MQTT: connected to {}:{}", shared.opts.host, shared.opts.port);
                }
                outage_logged = false;
                backoff = Duration::from_millis(250);
                drop(s);
                shared.changed.notify_all();
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Some(id)) = s.unsent.pop_front() {
                    if shared.opts.qos == QoS::AtMostOnce {
                        acknowledge(&mut s, id);
                    } else {
                        s.inflight.insert(pkid, id);
                    }
                }
                drop(s);
                shared.changed.notify_all();
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(id) = s.inflight.remove(&ack.pkid) {
                    acknowledge(&mut s, id);
                }
                drop(s);
                shared.changed.notify_all();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let handlers = shared.handlers.lock().unwrap_or_else(|p| p.into_inner());
                for (topic, h) in handlers.iter() {
                    if *topic == p.topic {
                        h(&p.payload);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                {
                    let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    s.stats.connected = false;
                    s.unsent.clear();
                    s.inflight.clear();
                    s.next = 0;
                }
                shared.changed.notify_all();
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                if !outage_logged {
                    // The error text carries no credentials (rumqttc reports network and protocol errors).
                    let (host, port) = (&shared.opts.host, shared.opts.port);
                    match &e {
                        ConnectionError::ConnectionRefused(
                            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
                        ) => tracing::error!(
                            "MQTT: {host}:{port} refused the credentials ({code:?}): check mqtt.username and the password \
                             (mqtt.password_file or LEPTON_MQTT_PASSWORD); queueing and retrying with backoff"
                        ),
                        ConnectionError::Tls(_) => tracing::error!(
                            "MQTT: TLS with {host}:{port} failed ({e}): is mqtt.tls_ca the CA that signed the broker's \
                             certificate, and does the certificate name {host}? Queueing and retrying with backoff"
                        ),
                        _ => tracing::warn!("MQTT: {host}:{port} unreachable ({e}); queueing and retrying with backoff"),
                    }
                    outage_logged = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(shared.opts.reconnect_max);
            }
        }
    }
}
