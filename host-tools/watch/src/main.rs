//! `lepton-watch`: subscribes to Lepton devices and prints detections, events, stats and status,
//! as a live table or JSON lines. It decodes both payload formats (JSON and postcard).

use anyhow::{Context, Result};
use clap::Parser;
use lepton_runtime::event::{decode, DetectionMessage, EventKind};
use lepton_runtime::Event;
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
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

/// A message, understood.
fn describe(topic: &str, payload: &[u8], prefix: &str) -> Value {
    let levels: Vec<&str> = topic.strip_prefix(prefix).unwrap_or(topic).trim_start_matches('/').split('/').collect();
    let device = levels.first().copied().unwrap_or("");
    let kind = match levels.as_slice() {
        [_, "status"] => "status",
        [_, "stats"] => "stats",
        [_, _, "detections"] => "detections",
        [_, _, "events", ..] => "events",
        _ => "other",
    };
    let pipeline = if levels.len() >= 3 { levels[1] } else { "" };
    let body = match serde_json::from_slice::<Value>(payload) {
        Ok(v) => v,
        Err(_) if kind == "status" => Value::String(String::from_utf8_lossy(payload).into_owned()),
        Err(_) if kind == "detections" => match decode::<DetectionMessage>(payload) {
            Ok(m) => json!({
                "format": "postcard", "seq": m.seq, "frame": m.meta.frame,
                "ts": humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(m.meta.timestamp_ms)).to_string(),
                "latency_ms": m.latency_us as f64 / 1e3,
                "detections": m.detections.iter().map(|d| match d.bbox {
                    Some(b) => json!({"class": d.class, "score": d.score, "box": [b.x0, b.y0, b.x1, b.y1]}),
                    None => json!({"class": d.class, "score": d.score}),
                }).collect::<Vec<_>>(),
            }),
            Err(_) => json!({"undecodable": payload.len()}),
        },
        Err(_) if kind == "events" => match decode::<Event>(payload) {
            Ok(e) => {
                json!({"format": "postcard", "class": e.class, "event": if e.kind == EventKind::Start { "start" } else { "end" }, "score": e.score})
            }
            Err(_) => json!({"undecodable": payload.len()}),
        },
        Err(_) => json!({"undecodable": payload.len()}),
    };
    json!({"topic": topic, "kind": kind, "device": device, "pipeline": pipeline, "message": body})
}

fn line(v: &Value) -> String {
    let m = &v["message"];
    let who = format!("{}/{}", v["device"].as_str().unwrap_or(""), v["pipeline"].as_str().unwrap_or(""));
    match v["kind"].as_str().unwrap_or("") {
        "detections" => {
            let dets: Vec<String> = m["detections"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| {
                            let label =
                                d["label"].as_str().map(str::to_string).unwrap_or_else(|| format!("#{}", d["class"]));
                            let score = d["score"].as_f64().unwrap_or(0.0);
                            match d["box"].as_array() {
                                Some(b) => format!(
                                    "{label} {score:.2} [{}]",
                                    b.iter()
                                        .map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0)))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                ),
                                None => format!("{label} {score:.2}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{:<24} {:<20} #{:<5} frame {:<6} {}",
                m["ts"].as_str().unwrap_or(""),
                who,
                m["seq"],
                m["frame"],
                dets.join("  ")
            )
        }
        "events" => {
            let label = m["label"].as_str().map(str::to_string).unwrap_or_else(|| format!("#{}", m["class"]));
            format!(
                "{:<24} {:<20} {} {label} ({:.2})",
                m["ts"].as_str().unwrap_or(""),
                who,
                m["event"].as_str().unwrap_or("?").to_uppercase(),
                m["score"].as_f64().unwrap_or(0.0)
            )
        }
        "stats" => {
            let p: Vec<String> = m["pipelines"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, s)| {
                            format!(
                                "{k}: {} fps, p50 {:.2} ms, dropped {}",
                                s["fps"],
                                s["inference_p50_ms"].as_f64().unwrap_or(0.0),
                                s["dropped"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{:<24} {:<20} stats  {}  queue {} dropped {}",
                m["ts"].as_str().unwrap_or(""),
                v["device"].as_str().unwrap_or(""),
                p.join("; "),
                m["queue_depth"],
                m["messages_dropped"]
            )
        }
        "status" => {
            format!("{:<24} {:<20} status {}", "", v["device"].as_str().unwrap_or(""), m.as_str().unwrap_or(""))
        }
        _ => format!("{} {}", v["topic"].as_str().unwrap_or(""), m),
    }
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
