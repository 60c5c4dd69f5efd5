//! The bundled demo: the digit classifier on the bundled pictures, published through an embedded
//! broker and printed.

use crate::config::{EngineKind, HomeAssistant};
use crate::run::{self, Broker, ModelRef, Plan, Setup, SourceRef};
use anyhow::{Context, Result};
use lepton_runtime::image::Image;
use std::process::ExitCode;

mod media {
    include!(concat!(env!("OUT_DIR"), "/demo_media.rs"));
}

/// Runs the demo.
pub fn run() -> Result<ExitCode> {
    let images = media::SAMPLES
        .iter()
        .map(|(name, bytes)| Image::decode(bytes, name))
        .collect::<Result<Vec<_>, _>>()
        .context("decoding the bundled pictures")?;
    println!("lepton demo: digit classifier (models/digits) on {} bundled pictures", images.len());
    run::run(Setup {
        device: "lepton-demo".into(),
        device_name: "Lepton demo".into(),
        stats_interval_s: 10,
        broker: Broker::Embedded,
        homeassistant: HomeAssistant::default(),
        plans: vec![Plan {
            name: "digits".into(),
            model: ModelRef::Bundled(media::MODEL, "bundled:models/digits/model.onnx"),
            source: SourceRef::Pictures(images),
            threshold: 0.5,
            hold_s: 2.0,
            engine: EngineKind::Auto,
            print: true,
        }],
    })
}
