//! The embedded MQTT broker (rumqttd), for running without any infrastructure: `lepton run` with no
//! `[mqtt]` section starts it on 127.0.0.1, on the first free port from 1883.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// First free TCP port on 127.0.0.1 from `start`.
pub fn free_port(start: u16) -> Result<u16> {
    for port in start..start.saturating_add(200) {
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 in {start}..{}", start.saturating_add(200))
}

/// Starts a broker on 127.0.0.1 (first free port from 1883) in a background thread and waits
/// until it accepts connections; returns its port.
///
/// The port is probed before rumqttd binds it, so another process (a second daemon starting at
/// the same moment) can take it in between: then rumqttd's bind fails at once, and a connection
/// to the port would reach the other process's broker. A broker whose thread ends within
/// [`BIND_GRACE`] of answering is taken for such a loss, and the next free port is tried.
pub fn start() -> Result<u16> {
    let mut from = 1883;
    for _ in 0..20 {
        let port = free_port(from)?;
        match start_on(port)? {
            Some(port) => return Ok(port),
            None => from = port.saturating_add(1),
        }
    }
    bail!("the embedded broker lost its port to another process 20 times in a row")
}

/// How long a broker thread must stay up after its port answers to count as the one listening.
const BIND_GRACE: Duration = Duration::from_millis(300);

/// Starts rumqttd on `port`; `None` if its bind failed (the port was taken meanwhile).
fn start_on(port: u16) -> Result<Option<u16>> {
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: crate::mqtt::MAX_PACKET,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server =
        rumqttd::ServerSettings { name: "lepton".into(), listen, tls: None, next_connection_delay_ms: 1, connections };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("lepton".to_string(), server)])),
        ..Default::default()
    };
    let thread = std::thread::Builder::new()
        .name("lepton-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .context("starting the embedded broker")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if thread.is_finished() {
            return Ok(None);
        }
        if Instant::now() > deadline {
            bail!("the embedded broker did not start listening on {listen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered = Instant::now();
    while answered.elapsed() < BIND_GRACE {
        if thread.is_finished() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_started_at_the_same_moment_get_ports_of_their_own() {
        // Both probe the same first free port; the one whose bind loses moves on.
        let starts: Vec<_> = (0..2).map(|_| std::thread::spawn(start)).collect();
        let ports: Vec<u16> = starts.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert_ne!(ports[0], ports[1], "{ports:?}");
    }
}
