//! MQTT delivery that loses nothing within its queue: every message waits in a bounded outbox
//! until the broker acknowledges it (QoS 1), is resent after a reconnection, and goes out in order.
//! Past the capacity the oldest message is dropped and counted. rumqttc speaks the protocol; this
//! module owns the outbox, the connection state, the status topic (retained `online`, last will
//! `offline`), the subscriptions other modules ask for, and the choice of broker node: with
//! several (`[mqtt] hosts`), it connects to the first that answers and fails over to the next
//! when the one in use is lost. `client.rs` speaks MQTT 3.1.1 or 5.

mod client;

pub use client::{ClientOptions, Meta};

use anyhow::{Context, Result};
use client::{Client, Connection, Failure, Happening};
use rumqttc::QoS;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Publishes sent but not yet acknowledged, at most.
const WINDOW: usize = 32;

/// How long an acknowledged message is kept for a replay after a failover. A cluster node
/// acknowledges a message when it has it, then forwards it to the nodes of its subscribers (rmqtt
/// does so after the acknowledgement); a node killed in between loses it. The next node is sent
/// again what the lost one acknowledged within this window: consumers drop the copies by
/// (device, pipeline, seq).
const REPLAY: Duration = Duration::from_secs(2);

/// The in-flight limit given to rumqttc: the window and the status/discovery messages.
pub const INFLIGHT: u16 = WINDOW as u16 + 8;

/// Largest MQTT packet sent or received (1 MiB, also the embedded broker's limit): a payload
/// near it (a snapshot) is refused by the sender, not sent to break the connection.
pub const MAX_PACKET: usize = 1 << 20;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Broker nodes (host, port), tried in this order; at least one.
    pub brokers: Vec<(String, u16)>,
    /// Client id, credentials, TLS, protocol.
    pub client: ClientOptions,
    /// MQTT 5: seconds after which the broker drops an undelivered detection (None: never).
    pub detection_expiry_s: Option<u32>,
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
    meta: Meta,
    /// Sent again after a failover (already counted as delivered).
    replay: bool,
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
    /// Index in `LinkOptions::brokers` of the node in use (or being tried).
    pub node: usize,
    /// Connections made to another node than the one lost.
    pub failovers: u64,
    /// The last failover's time from the loss to the first message acknowledged by the next node.
    pub failover_ms: Option<u64>,
    /// Messages sent again to the next node because the lost one had acknowledged them within
    /// the replay window before the loss (see `REPLAY`).
    pub replayed: u64,
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
    on_connect: Vec<(String, Vec<u8>, bool, Meta)>,
    /// Queues requests to the connection (the same across reconnections and failovers).
    client: Client,
    /// With several nodes: messages acknowledged within `REPLAY`, oldest first, for a replay.
    recent: VecDeque<(Instant, Message)>,
    /// Topics to subscribe to after each connection.
    subscriptions: Vec<String>,
}

impl State {
    fn new(client: Client) -> State {
        State {
            outbox: VecDeque::new(),
            next: 0,
            unsent: VecDeque::new(),
            inflight: HashMap::new(),
            next_id: 0,
            stats: LinkStats::default(),
            on_connect: vec![],
            subscriptions: vec![],
            client,
            recent: VecDeque::new(),
        }
    }
}

/// A callback for messages on a subscribed topic filter: the topic and the payload.
type Handler = Box<dyn Fn(&str, &[u8]) + Send>;

/// Whether `topic` matches an MQTT topic filter (`+`: one level, `#`: the rest).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
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
        anyhow::ensure!(!opts.brokers.is_empty(), "no MQTT broker to connect to");
        let (host, port) = &opts.brokers[0];
        let (client, connection) = client::connect(&opts.client, host, *port, WINDOW * 4 + 64);
        let mut state = State::new(client);
        state.on_connect.push((opts.status_topic.clone(), b"online".to_vec(), true, Meta::TEXT));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
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
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool, meta: Meta) -> bool {
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
        s.outbox.push_back(Message {
            id,
            topic: topic.to_string(),
            payload,
            retain,
            qos: self.shared.opts.qos,
            meta,
            replay: false,
        });
        drop(s);
        self.shared.changed.notify_all();
        kept
    }

    /// A message (retained, usually) to publish at once and again after every reconnection.
    pub fn publish_on_connect(&self, topic: &str, payload: Vec<u8>, retain: bool, meta: Meta) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.on_connect.push((topic.to_string(), payload.clone(), retain, meta));
        if s.stats.connected {
            direct(&mut s, topic, payload, retain, meta);
        }
    }

    /// The properties of a detection message in `format`'s content type (expiring after
    /// `[mqtt] detection_expiry_s` under MQTT 5).
    pub fn detection_meta(&self, postcard: bool) -> Meta {
        let base = if postcard { Meta::POSTCARD } else { Meta::JSON };
        Meta { expiry_s: self.shared.opts.detection_expiry_s, ..base }
    }

    /// The broker node in use (or being tried), as `host:port`.
    pub fn broker(&self) -> String {
        let node = self.stats().node;
        let (h, p) = &self.shared.opts.brokers[node];
        format!("{h}:{p}")
    }

    /// Calls `handler` with every message on `topic` (subscribed after each connection).
    pub fn subscribe(&self, topic: &str, handler: impl Fn(&[u8]) + Send + 'static) {
        self.subscribe_filter(topic, move |_, payload| handler(payload));
    }

    /// Calls `handler` with the topic and payload of every message matching `filter` (MQTT
    /// wildcards `+` and `#`; subscribed after each connection).
    pub fn subscribe_filter(&self, filter: &str, handler: impl Fn(&str, &[u8]) + Send + 'static) {
        let topic = filter;
        self.shared.handlers.lock().unwrap_or_else(|p| p.into_inner()).push((topic.to_string(), Box::new(handler)));
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.subscriptions.push(topic.to_string());
        if s.stats.connected {
            let _ = s.client.try_subscribe(topic);
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
                direct(&mut s, &topic, b"offline".to_vec(), true, Meta::TEXT);
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
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).client.try_disconnect();
        self.shared.changed.notify_all();
        // The connection thread may be inside a connection attempt (up to rumqttc's 5 s timeout
        // when the broker is unreachable): wait a second for it, then leave it to the exit.
        let deadline = Instant::now() + Duration::from_secs(1);
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Publishes outside the outbox (status, discovery); its `Outgoing` event is expected in order.
fn direct(s: &mut State, topic: &str, payload: Vec<u8>, retain: bool, meta: Meta) {
    if s.client.try_publish(topic, QoS::AtLeastOnce, retain, payload, meta).is_ok() {
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
        match s.client.try_publish(&m.topic, m.qos, m.retain, m.payload, m.meta) {
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

/// Removes an acknowledged message from the outbox (keeping it for a replay when `cluster`).
fn acknowledge(s: &mut State, id: u64, cluster: bool) {
    if let Some(pos) = s.outbox.iter().position(|m| m.id == id) {
        let Some(m) = s.outbox.remove(pos) else { return };
        if pos < s.next {
            s.next -= 1;
        }
        if !m.replay {
            s.stats.delivered += 1;
        }
        if cluster {
            let now = Instant::now();
            while s.recent.front().is_some_and(|(t, _)| now.duration_since(*t) > REPLAY) {
                s.recent.pop_front();
            }
            s.recent.push_back((now, Message { replay: true, ..m }));
        }
    }
}

/// Puts the messages the lost node acknowledged within `REPLAY` before `lost_at` back at the
/// front of the outbox, in their order; returns how many.
fn replay(s: &mut State, lost_at: Instant) -> usize {
    let recent: Vec<Message> = std::mem::take(&mut s.recent)
        .into_iter()
        .filter(|(t, _)| lost_at.saturating_duration_since(*t) <= REPLAY)
        .map(|(_, m)| m)
        .collect();
    let n = recent.len();
    for m in recent.into_iter().rev() {
        s.outbox.push_front(m);
    }
    s.stats.replayed += n as u64;
    n
}

/// Drives the connection: acknowledgements, reconnections with backoff, failover between
/// nodes, subscriptions.
fn event_loop(shared: &Shared, mut connection: Connection) {
    let brokers = &shared.opts.brokers;
    let name = |node: usize| format!("{}:{}", brokers[node].0, brokers[node].1);
    let mut backoff = Duration::from_millis(250);
    let mut outage_logged = false;
    let mut node = 0usize;
    // Nodes tried since the last connection; a whole round without one waits `backoff`.
    let mut tried = 0usize;
    // When and which node was lost, until a connection to another node is made.
    let mut lost: Option<(Instant, usize)> = None;
    // A failover waiting for its first acknowledged message: since when, from which node.
    let mut failing_over: Option<(Instant, usize)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(happening) = connection.next() else { break };
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match happening {
            Happening::Connected { resumed } => {
                connection.forget_pending();
                let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                s.stats.connected = true;
                s.stats.connections += 1;
                s.stats.node = node;
                // Everything not acknowledged is sent again, in order.
                s.next = 0;
                s.unsent.clear();
                s.inflight.clear();
                for t in s.subscriptions.clone() {
                    let _ = s.client.try_subscribe(&t);
                }
                for (topic, payload, retain, meta) in s.on_connect.clone() {
                    direct(&mut s, &topic, payload, retain, meta);
                }
                let session = if resumed { "session resumed" } else { "new session" };
                match lost.take() {
                    Some((since, from)) if from != node => {
                        s.stats.failovers += 1;
                        failing_over = Some((since, from));
                        let replayed = replay(&mut s, since);
                        tracing::warn!(
                            "MQTT: failed over from {} to {} ({} of {}, {session}) {:.0} ms after the loss; resending {} queued message(s), {replayed} of them acknowledged by {} in the last {} s before its loss",
                            name(from),
                            name(node),
                            node + 1,
                            brokers.len(),
                            since.elapsed().as_secs_f64() * 1e3,
                            s.outbox.len(),
                            name(from),
                            REPLAY.as_secs()
                        );
                    }
                    Some(_) => tracing::info!(
                        "MQTT: reconnected to {} ({session}); resending {} queued message(s)",
                        name(node),
                        s.outbox.len()
                    ),
                    None if outage_logged => tracing::info!(
                        "MQTT: connected to {} ({session}); sending {} queued message(s)",
                        name(node),
                        s.outbox.len()
                    ),
                    None => tracing::info!(
                        "MQTT: connected to {} (MQTT {})",
                        name(node),
                        shared.opts.client.protocol.name()
                    ),
                }
                outage_logged = false;
                tried = 0;
                backoff = Duration::from_millis(250);
                drop(s);
                shared.changed.notify_all();
            }
            Happening::Sent(pkid) => {
                let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Some(id)) = s.unsent.pop_front() {
                    if shared.opts.qos == QoS::AtMostOnce {
                        acknowledge(&mut s, id, false);
                    } else {
                        s.inflight.insert(pkid, id);
                    }
                }
                drop(s);
                shared.changed.notify_all();
            }
            Happening::Acked(pkid) => {
                let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(id) = s.inflight.remove(&pkid) {
                    acknowledge(&mut s, id, brokers.len() > 1);
                    if let Some((since, from)) = failing_over.take() {
                        let ms = since.elapsed().as_millis() as u64;
                        s.stats.failover_ms = Some(ms);
                        tracing::info!(
                            "MQTT: failover from {} to {}: first message acknowledged {ms} ms after the loss",
                            name(from),
                            name(node)
                        );
                    }
                }
                drop(s);
                shared.changed.notify_all();
            }
            Happening::Message { topic, payload } => {
                let handlers = shared.handlers.lock().unwrap_or_else(|p| p.into_inner());
                for (filter, h) in handlers.iter() {
                    if filter_matches(filter, &topic) {
                        h(&topic, &payload);
                    }
                }
            }
            Happening::Other => {}
            Happening::Failed(e) => {
                let was_connected = {
                    let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    let was = s.stats.connected;
                    s.stats.connected = false;
                    s.unsent.clear();
                    s.inflight.clear();
                    s.next = 0;
                    was
                };
                shared.changed.notify_all();
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                if was_connected && lost.is_none() {
                    lost = Some((Instant::now(), node));
                }
                if !outage_logged {
                    // The error text carries no credentials (rumqttc reports network and protocol errors).
                    let at = name(node);
                    match &e {
                        Failure::Credentials(code) => tracing::error!(
                            "MQTT: {at} refused the credentials ({code}): check mqtt.username and the password \
                             (mqtt.password_file or LEPTON_MQTT_PASSWORD); queueing and retrying with backoff"
                        ),
                        Failure::Tls(_) => tracing::error!(
                            "MQTT: TLS with {at} failed ({e}): is mqtt.tls_ca the CA that signed the broker's \
                             certificate, and does the certificate name the host? Queueing and retrying with backoff"
                        ),
                        Failure::Other(_) if brokers.len() > 1 => {
                            tracing::warn!("MQTT: {at} unreachable ({e}); queueing and trying the other nodes in order")
                        }
                        Failure::Other(_) => {
                            tracing::warn!("MQTT: {at} unreachable ({e}); queueing and retrying with backoff")
                        }
                    }
                    outage_logged = true;
                }
                tried += 1;
                if brokers.len() > 1 {
                    // Fail over to the next node at once; after a whole round, wait.
                    node = (node + 1) % brokers.len();
                    connection.retarget(&shared.opts.client, &brokers[node].0, brokers[node].1);
                    shared.state.lock().unwrap_or_else(|p| p.into_inner()).stats.node = node;
                    if tried < brokers.len() {
                        tracing::info!("MQTT: trying {} ({} of {})", name(node), node + 1, brokers.len());
                        continue;
                    }
                }
                tried = 0;
                interruptible_sleep(shared, backoff);
                backoff = (backoff * 2).min(shared.opts.reconnect_max);
            }
        }
    }
}

/// Sleeps `d`, or less when the link is closed meanwhile.
fn interruptible_sleep(shared: &Shared, d: Duration) {
    let deadline = Instant::now() + d;
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_match_like_a_broker() {
        assert!(filter_matches("homeassistant/status", "homeassistant/status"));
        assert!(filter_matches("ha/+/cam1/+/config", "ha/binary_sensor/cam1/front_person/config"));
        assert!(!filter_matches("ha/+/cam1/+/config", "ha/binary_sensor/cam2/front_person/config"));
        assert!(!filter_matches("ha/+/cam1/+/config", "ha/binary_sensor/cam1/config"));
        assert!(!filter_matches("ha/+/cam1/+/config", "ha/binary_sensor/cam1/a/config/x"));
        assert!(filter_matches("lepton/#", "lepton/cam1/status"));
        assert!(!filter_matches("a/b", "a/b/c"));
    }

    fn state() -> State {
        let opts = ClientOptions {
            client_id: "t".into(),
            credentials: None,
            tls_ca: None,
            keepalive: Duration::from_secs(30),
            protocol: client::Protocol::V311,
            session_expiry: Duration::ZERO,
            max_packet: MAX_PACKET,
            inflight: INFLIGHT,
            will: ("s".into(), b"offline".to_vec()),
        };
        // Nothing connects: the connection is never polled.
        let (client, _connection) = client::connect(&opts, "127.0.0.1", 1, 8);
        State::new(client)
    }

    fn message(id: u64) -> Message {
        Message {
            id,
            topic: format!("t/{id}"),
            payload: vec![],
            retain: false,
            qos: QoS::AtLeastOnce,
            meta: Meta::JSON,
            replay: false,
        }
    }

    #[test]
    fn what_the_lost_node_acknowledged_just_before_its_loss_is_sent_again_in_order() {
        let mut s = state();
        s.outbox.extend((0..4).map(message));
        s.next = 4;
        // Acknowledged long before the loss: safe, not replayed.
        acknowledge(&mut s, 0, true);
        s.recent[0].0 -= REPLAY * 2;
        acknowledge(&mut s, 1, true);
        acknowledge(&mut s, 2, true);
        assert_eq!((s.stats.delivered, s.outbox.len(), s.next), (3, 1, 1));
        let n = replay(&mut s, Instant::now());
        assert_eq!(n, 2);
        let ids: Vec<(u64, bool)> = s.outbox.iter().map(|m| (m.id, m.replay)).collect();
        assert_eq!(ids, vec![(1, true), (2, true), (3, false)], "replayed first, in their order");
        assert_eq!(s.stats.replayed, 2);
        // Acknowledged again by the next node: not counted twice.
        acknowledge(&mut s, 1, true);
        acknowledge(&mut s, 2, true);
        acknowledge(&mut s, 3, true);
        assert_eq!((s.stats.delivered, s.outbox.len()), (4, 0));
    }

    #[test]
    fn a_single_broker_keeps_nothing_for_a_replay() {
        let mut s = state();
        s.outbox.extend((0..2).map(message));
        acknowledge(&mut s, 0, false);
        acknowledge(&mut s, 1, false);
        assert!(s.recent.is_empty());
        assert_eq!(replay(&mut s, Instant::now()), 0);
    }
}
