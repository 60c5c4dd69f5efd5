//! `lepton-watch`: subscribes to Lepton devices and prints detections, events, stats and status,
//! as a live table or JSON lines. It decodes both payload formats (JSON and postcard).

use anyhow::{Context, Result};
use clap::Parser;
use lepton_watch::{describe, line};
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::process::ExitCode;
use std::time::Duration;

/// Watch Lepton devices: print what they detect, as it happens.
///
/// Subscribes to `<prefix>/<device>/#` and prints every detection, presence event, stats and
/// status message, one line each (or one JSON object per line with --json). Payloads in JSON or
/// postcard (`format = "postcard"` in the device's config) are both decoded; postcard messages
/// carry class indices instead of labels.
///
/// Example: lepton-watch --host 192.168.1.20 --device porch-cam
#[derive(Parser, Debug)]
#[command(name = "lepton-watch", version, about, long_about)]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, short, default_value_t = 1883)]
    port: u16,
    /// Only this device (default: all).
    #[arg(long)]
    device: Option<String>,
    /// Topic prefix the devices use.
    #[arg(long, default_value = "lepton")]
    prefix: String,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Exit after this many messages (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
}

/// Output piped into a program that stops reading (`| head`) ends this one quietly, like other
/// Unix tools, instead of a panic on the failed write.
fn restore_sigpipe() {
    // SAFETY: sets the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    restore_sigpipe();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<()> {
    let mut opts = MqttOptions::new(format!("lepton-watch-{}", std::process::id()), &args.host, args.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(opts, 64);
    let filter = format!("{}/{}/#", args.prefix, args.device.as_deref().unwrap_or("+"));
    let mut seen = 0u64;
    let mut warned = false;
    for event in connection.iter() {
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                client.subscribe(&filter, QoS::AtLeastOnce).context("subscribing")?;
                if !args.json {
                    eprintln!("watching {filter} on {}:{}", args.host, args.port);
                }
                warned = false;
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let v = describe(&p.topic, &p.payload, &args.prefix);
                if args.json {
                    println!("{v}");
                } else {
                    println!("{}", line(&v));
                }
                seen += 1;
                if args.count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !warned {
                    eprintln!("{}:{}: {e}; retrying", args.host, args.port);
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(())
}
