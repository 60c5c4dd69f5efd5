//! The bundled demo: the meter-digit detector on the bundled camera frames and the keyword spotter
//! on the bundled recording, both published through an embedded broker and printed.

use crate::board::Board;
use crate::config::{EngineKind, HomeAssistant};
use crate::console::say;
use crate::run::{self, Broker, ModelRef, Plan, Setup, SourceRef};
use anyhow::{Context, Result};
use lepton_runtime::image::Image;
use std::process::ExitCode;

mod media {
    include!(concat!(env!("OUT_DIR"), "/demo_media.rs"));
}

/// Runs the demo (with a board profile's threads when one is given).
pub fn run(board: Option<&str>) -> Result<ExitCode> {
    let board = board.map(Board::load_linux).transpose()?;
    let frames = media::FRAMES
        .iter()
        .map(|(name, bytes)| Image::decode(bytes, name))
        .collect::<Result<Vec<_>, _>>()
        .context("decoding the bundled frames")?;
    say!(
        "lepton demo: meter-digit detector (models/detector) on {} bundled frames, keyword spotter (models/keywords) on a bundled recording",
        frames.len()
    );
    run::run(Setup {
        device: "lepton-demo".into(),
        device_name: "Lepton demo".into(),
        stats_interval: std::time::Duration::from_secs(10),
        stall: std::time::Duration::from_secs(30),
        broker: Broker::Embedded,
        homeassistant: HomeAssistant::default(),
        plans: vec![
            Plan {
                name: "meter".into(),
                model: ModelRef::Bundled(media::DETECTOR, "bundled:models/detector/model.int8.onnx"),
                source: SourceRef::Pictures(frames),
                threshold: 0.5,
                hold: std::time::Duration::from_secs(2),
                engine: EngineKind::Auto,
                print: true,
                alerts: vec![],
                // A picture of the frame each digit appeared on, boxes drawn, on .../meter/snapshot.
                snapshot: Some(crate::config::Snapshot {
                    on: None,
                    every_s: None,
                    annotate: true,
                    quality: 80,
                    max_width: 1280,
                }),
                motion: None,
                masks: Vec::new(),
                track: Default::default(),
                zones: Vec::new(),
                clips: None,
            },
            Plan {
                name: "keywords".into(),
                model: ModelRef::Bundled(media::KEYWORDS, "bundled:models/keywords/model.int8.onnx"),
                source: SourceRef::Recording(media::RECORDING, "demo.wav"),
                threshold: 0.5,
                hold: std::time::Duration::from_secs(1),
                engine: EngineKind::Auto,
                print: true,
                alerts: vec![],
                snapshot: None,
                motion: None,
                masks: Vec::new(),
                track: Default::default(),
                zones: Vec::new(),
                clips: None,
            },
        ],
        board,
        trust: Default::default(),
        // The device page on 127.0.0.1:8080 (or the next free port), its history kept between runs.
        web: Some(run::WebSetup {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            search: true,
            database: database(),
            token: None,
            session: crate::web::Access::open().session,
            secure_cookie: false,
            retention: crate::web::history::Retention {
                max_age: std::time::Duration::from_secs(30 * 86_400),
                max_bytes: 100 << 20,
            },
        }),
    })
}

/// The demo's event history: `$XDG_STATE_HOME/lepton/demo.db`, else `~/.local/state/lepton/demo.db`.
fn database() -> std::path::PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("lepton").join("demo.db")
}
