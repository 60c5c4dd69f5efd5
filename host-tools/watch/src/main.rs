//! `lepton-watch`: subscribes to Lepton devices and prints detections, events, stats and status,
//! as a live table or JSON lines. It decodes both payload formats (JSON and postcard).

use anyhow::{bail, Context, Result};
use clap::Parser;
use lepton_watch::store::{Row, Store};
use lepton_watch::{describe, event_key, line, parse_host, Recent};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Watch Lepton devices: print what they detect, as it happens, or store it in a database.
///
/// Subscribes to `<prefix>/<device>/#` and prints every detection, presence event, stats and
/// status message, one line each (or one JSON object per line with --json). Payloads in JSON or
/// postcard (`format = "postcard"` in the device's config) are both decoded; postcard messages
/// carry class indices instead of labels.
///
/// With --snapshots DIR, the JPEG snapshots devices publish (`[pipeline.snapshot]`) are saved
/// there as DEVICE_PIPELINE_LABEL_TIME.jpg (LABEL `all` for a pipeline's latest picture).
///
/// A fleet: give every node of a clustered broker with --host (tried in order; on the loss of
/// the node in use, the next). Several watchers with the same --group share the fleet's
/// messages (an MQTT 5 shared subscription, `$share/GROUP/<prefix>/...`): each message goes to
/// one of them. With --store, detections and events are written into SQLite or PostgreSQL,
/// each message once however often the broker delivers it (see README, "The event store").
/// A PostgreSQL URL takes `sslmode=disable|prefer|require|verify-ca|verify-full` and
/// `sslrootcert=FILE` (the CA's PEM certificate, or `system`) for TLS.
///
/// Each event is shown once (devices publish it on the events topic and as its label's retained
/// state). A detection or event message with a field missing, of the wrong type or out of range
/// is reported, skipped and counted; the watcher goes on.
///
/// Example, one device: lepton-watch --host 192.168.1.20 --device porch-cam --snapshots ./pictures
///
/// Example, a fleet's store (run several): lepton-watch --host node1 --host node2 --group store
/// --store postgres://lepton@db/lepton --quiet
#[derive(Parser, Debug)]
#[command(name = "lepton-watch", version, about, long_about)]
struct Args {
    /// Broker host, or HOST:PORT (not a URL); repeat for the nodes of a cluster, tried in order.
    #[arg(long, default_value = "127.0.0.1")]
    host: Vec<String>,
    /// Broker port (of --host values without one).
    #[arg(long, short, default_value_t = 1883)]
    port: u16,
    /// MQTT version: 3.1.1 or 5 (default 3.1.1; 5 with --group).
    #[arg(long, value_parser = ["3.1.1", "5"])]
    protocol: Option<String>,
    /// Share the messages with the other watchers of this group (MQTT 5 shared subscription).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Write detections and events into sqlite:FILE or postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…].
    #[arg(long, value_name = "DATABASE")]
    store: Option<String>,
    /// Only this device (default: all).
    #[arg(long)]
    device: Option<String>,
    /// Topic prefix the devices use.
    #[arg(long, default_value = "lepton")]
    prefix: String,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Print nothing per message (with --store: only the summary at exit).
    #[arg(long, short)]
    quiet: bool,
    /// Exit after this many messages (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Save the snapshots received in this folder (created if missing).
    #[arg(long, value_name = "DIR")]
    snapshots: Option<std::path::PathBuf>,
}

/// Standard output: the lines shown. SIGPIPE stays ignored (Rust's default), so a broker that
/// resets the connection is an error the connection thread handles, not a signal that kills the
/// store; a reader that goes away (`| head`) is seen here instead.
#[derive(Default)]
struct Shown {
    /// Standard output failed (its reader is gone): nothing more is written.
    closed: bool,
}

impl Shown {
    /// Writes one line; false once standard output has failed.
    fn line(&mut self, args: std::fmt::Arguments<'_>) -> bool {
        use std::io::Write;
        if !self.closed {
            let mut out = std::io::stdout().lock();
            self.closed = out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()).is_err();
        }
        !self.closed
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A received message and what acknowledges it (after its row is committed, with --store).
enum Received {
    V311(rumqttc::Publish),
    V5(p5::Publish),
}

/// The client side of the connection: what acknowledges messages.
#[derive(Clone)]
enum Client {
    V311(rumqttc::Client),
    V5(rumqttc::v5::Client),
}

impl Client {
    fn ack(&self, r: &Received) {
        match (self, r) {
            (Client::V311(c), Received::V311(p)) => drop(c.ack(p)),
            (Client::V5(c), Received::V5(p)) => drop(c.ack(p)),
            _ => {}
        }
    }
}

/// What the connection reports.
enum Got {
    /// Connected (and subscribed) to this node.
    Connected(usize),
    Message(String, Vec<u8>, Box<Received>),
    /// Lost or refused by this node; the next is tried.
    Failed(usize, String),
}

/// Connects to `hosts[0]`, subscribes to `filter` after each connection, and fails over to the
/// next host on loss, in a thread of its own; its reports arrive on the channel. The thread
/// blocks on the connection without a timeout: one would cut a slow handshake short (a cluster
/// node takes a few hundred ms) and start it again, for ever.
fn connect(v5: bool, id: &str, hosts: Vec<(String, u16)>, filter: String) -> (Client, std::sync::mpsc::Receiver<Got>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (h, p) = (&hosts[0].0, hosts[0].1);
    let id = id.to_string();
    if v5 {
        let (client, mut conn) = rumqttc::v5::Client::new(options_v5(&id, h, p), 256);
        let c = client.clone();
        std::thread::spawn(move || {
            let (mut node, mut tried) = (0, 0);
            while let Ok(event) = conn.recv() {
                let got = match event {
                    Ok(rumqttc::v5::Event::Incoming(p5::Packet::ConnAck(_))) => {
                        let _ = c.subscribe(filter.as_str(), Q5::AtLeastOnce);
                        tried = 0;
                        Got::Connected(node)
                    }
                    // The real topic, not the `$share/...` filter it matched: routing is by topic.
                    Ok(rumqttc::v5::Event::Incoming(p5::Packet::Publish(p))) => Got::Message(
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                        Box::new(Received::V5(p)),
                    ),
                    Ok(_) => continue,
                    Err(e) => {
                        let lost = node;
                        (node, tried) = next_node(node, tried, hosts.len());
                        conn.eventloop.options = options_v5(&id, &hosts[node].0, hosts[node].1);
                        Got::Failed(lost, e.to_string())
                    }
                };
                if tx.send(got).is_err() {
                    break;
                }
            }
        });
        (Client::V5(client), rx)
    } else {
        let (client, mut conn) = rumqttc::Client::new(options_v311(&id, h, p), 256);
        let c = client.clone();
        std::thread::spawn(move || {
            let (mut node, mut tried) = (0, 0);
            while let Ok(event) = conn.recv() {
                let got = match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = c.subscribe(filter.as_str(), rumqttc::QoS::AtLeastOnce);
                        tried = 0;
                        Got::Connected(node)
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        Got::Message(p.topic.clone(), p.payload.to_vec(), Box::new(Received::V311(p)))
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let lost = node;
                        (node, tried) = next_node(node, tried, hosts.len());
                        conn.eventloop.mqtt_options = options_v311(&id, &hosts[node].0, hosts[node].1);
                        Got::Failed(lost, e.to_string())
                    }
                };
                if tx.send(got).is_err() {
                    break;
                }
            }
        });
        (Client::V311(client), rx)
    }
}

/// After a failure on `node`: the next node to try, and the attempts in this round; a whole
/// round without a connection waits half a second.
fn next_node(node: usize, tried: usize, nodes: usize) -> (usize, usize) {
    let tried = tried + 1;
    if tried >= nodes {
        std::thread::sleep(Duration::from_millis(500));
        return ((node + 1) % nodes, 0);
    }
    ((node + 1) % nodes, tried)
}

fn options_v311(id: &str, host: &str, port: u16) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    // Snapshots are JPEG pictures of up to a megabyte (the daemon's limit); the default is 10 KiB.
    o.set_max_packet_size(16 << 20, 64 << 10);
    // Acknowledged by this program: at once, or after the message's row is committed.
    o.set_manual_acks(true);
    o
}

fn options_v5(id: &str, host: &str, port: u16) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(Some(16 << 20));
    o.set_manual_acks(true);
    o
}

/// `s` with control characters shown as `?` (topics come from any client of the broker).
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn run(args: Args) -> Result<()> {
    // Checked before anything else: a URL here would otherwise be retried for ever.
    let hosts = args.host.iter().map(|h| parse_host(h, args.port)).collect::<Result<Vec<_>, _>>()?;
    if let Some(dir) = &args.snapshots {
        std::fs::create_dir_all(dir).with_context(|| format!("--snapshots {}", dir.display()))?;
    }
    let v5 = match (args.protocol.as_deref(), &args.group) {
        (Some("3.1.1"), Some(_)) => bail!("--group needs MQTT 5 (shared subscriptions): drop --protocol 3.1.1"),
        (Some(p), _) => p == "5",
        (None, g) => g.is_some(),
    };
    let id = format!("lepton-watch-{}", std::process::id());
    let mut store = match &args.store {
        Some(spec) => Some(Store::open(spec, &id)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed)).context("installing the signal handler")?;
    }
    let topics = format!("{}/{}/#", args.prefix, args.device.as_deref().unwrap_or("+"));
    let filter = match &args.group {
        Some(g) => format!("$share/{g}/{topics}"),
        None => topics,
    };
    let (client, events) = connect(v5, &id, hosts.clone(), filter.clone());
    let mut pending: Vec<Box<Received>> = vec![];
    let mut seen = 0u64;
    let mut warned = false;
    let mut shown = Recent::default();
    let mut out = Shown::default();
    let mut stdout_gone = false;
    let result = loop {
        if stop.load(Ordering::Relaxed) || args.count.is_some_and(|c| seen >= c) {
            break Ok(());
        }
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Got::Connected(node)) => {
                if !args.json {
                    let into = store.as_ref().map_or(String::new(), |s| format!(" into {}", s.name()));
                    let proto = if v5 { "5" } else { "3.1.1" };
                    eprintln!("watching {filter} on {}:{} (MQTT {proto}){into}", hosts[node].0, hosts[node].1);
                }
                warned = false;
            }
            Ok(Got::Message(topic, payload, received)) => {
                let mut v = describe(&topic, &payload, &args.prefix);
                if let (Some(dir), "snapshot") = (&args.snapshots, v["kind"].as_str().unwrap_or("")) {
                    v["saved"] = save_snapshot(dir, &v, &payload);
                }
                let malformed = match (&mut store, Row::from_message(&v)) {
                    (Some(s), Ok(Some(row))) => {
                        s.add(row);
                        pending.push(received);
                        None
                    }
                    (store, Err(e)) => {
                        client.ack(&received);
                        if let Some(s) = store {
                            s.stats.malformed += 1;
                        }
                        Some(e)
                    }
                    (_, Ok(_)) => {
                        client.ack(&received);
                        None
                    }
                };
                if let Some(e) = malformed {
                    if !args.quiet {
                        eprintln!("{}: malformed: {e}; skipped", printable(&topic));
                        if args.json {
                            v["malformed"] = e.to_string().into();
                            out.line(format_args!("{v}"));
                        }
                    }
                    seen += 1;
                } else if event_key(&v).is_some_and(|k| !shown.first(k)) {
                    // An event arrives on its topic and as its label's retained copy: shown once.
                } else {
                    if args.quiet {
                    } else if args.json {
                        out.line(format_args!("{v}"));
                    } else {
                        match v["saved"].as_str() {
                            Some(path) => out.line(format_args!("{} -> {path}", line(&v))),
                            None => out.line(format_args!("{}", line(&v))),
                        };
                    }
                    seen += 1;
                }
                if out.closed && !stdout_gone {
                    stdout_gone = true;
                    if store.is_none() {
                        // Like other Unix tools piped into one that stopped reading: done.
                        break Ok(());
                    }
                    eprintln!("standard output closed: no more lines are shown; storing goes on");
                }
            }
            Ok(Got::Failed(node, e)) => {
                if !warned || hosts.len() > 1 {
                    let next = if hosts.len() > 1 {
                        let n = (node + 1) % hosts.len();
                        format!("; trying {}:{}", hosts[n].0, hosts[n].1)
                    } else {
                        "; retrying".into()
                    };
                    eprintln!("{}:{}: {e}{next}", hosts[node].0, hosts[node].1);
                    warned = true;
                }
                // What was not acknowledged is delivered again (to this watcher or another of
                // its group); the rows already added are kept, the key makes them harmless.
                pending.clear();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the MQTT connection ended"))
            }
        }
        if let Some(s) = &mut store {
            if s.due() {
                if let Err(e) = s.commit() {
                    break Err(e.into());
                }
                for r in pending.drain(..) {
                    client.ack(&r);
                }
            }
        }
    };
    if let Some(s) = &mut store {
        s.commit()?;
        for r in pending.drain(..) {
            client.ack(&r);
        }
        // Let the acknowledgements leave before the process does.
        std::thread::sleep(Duration::from_millis(300));
        let st = s.stats;
        eprintln!(
            "stored {} detection messages and {} events in {} ({} duplicates ignored, {} malformed skipped, {} transactions)",
            st.messages,
            st.events,
            s.name(),
            st.duplicates,
            st.malformed,
            st.commits
        );
    }
    result
}

/// Writes a snapshot's JPEG into `dir`; the path written, or null (not a JPEG, or the write
/// failed: said on stderr).
fn save_snapshot(dir: &std::path::Path, v: &serde_json::Value, payload: &[u8]) -> serde_json::Value {
    if !lepton_watch::is_jpeg(payload) {
        eprintln!("{}: not a JPEG picture ({} bytes); not saved", v["topic"].as_str().unwrap_or(""), payload.len());
        return serde_json::Value::Null;
    }
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let name = lepton_watch::snapshot_file_name(
        v["device"].as_str().unwrap_or(""),
        v["pipeline"].as_str().unwrap_or(""),
        v["message"]["label"].as_str(),
        ms,
    );
    let path = dir.join(name);
    match std::fs::write(&path, payload) {
        Ok(()) => serde_json::Value::String(path.display().to_string()),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            serde_json::Value::Null
        }
    }
}
