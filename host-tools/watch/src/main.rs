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
/// With --snapshots DIR, the JPEG snapshots devices publish (`[pipeline.snapshot]`) are saved
/// there as DEVICE_PIPELINE_LABEL_TIME.jpg (LABEL `all` for a pipeline's latest picture).
///
/// Example: lepton-watch --host 192.168.1.20 --device porch-cam --snapshots ./pictures
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
    /// Save the snapshots received in this folder (created if missing).
    #[arg(long, value_name = "DIR")]
    snapshots: Option<std::path::PathBuf>,
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
    if let Some(dir) = &args.snapshots {
        std::fs::create_dir_all(dir).with_context(|| format!("--snapshots {}", dir.display()))?;
    }
    let mut opts = MqttOptions::new(format!("lepton-watch-{}", std::process::id()), &args.host, args.port);
    opts.set_keep_alive(Duration::from_secs(30));
    // Snapshots are JPEG pictures of up to a megabyte (the daemon's limit); the default is 10 KiB.
    opts.set_max_packet_size(16 << 20, 64 << 10);
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
                let mut v = describe(&p.topic, &p.payload, &args.prefix);
                if let (Some(dir), "snapshot") = (&args.snapshots, v["kind"].as_str().unwrap_or("")) {
                    v["saved"] = save_snapshot(dir, &v, &p.payload);
                }
                if args.json {
                    println!("{v}");
                } else {
                    match v["saved"].as_str() {
                        Some(path) => println!("{} -> {path}", line(&v)),
                        None => println!("{}", line(&v)),
                    }
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
