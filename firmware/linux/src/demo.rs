//! The bundled demo: the digit classifier on the bundled pictures, results printed per frame.

use crate::sink::ConsoleSink;
use anyhow::{Context, Result};
use lepton_runtime::image::Image;
use lepton_runtime::pipeline::Pipeline;
use lepton_runtime::source::{ImageSource, ImageSourceOptions};
use lepton_runtime::Model;
use std::process::ExitCode;

mod media {
    include!(concat!(env!("OUT_DIR"), "/demo_media.rs"));
}

/// Runs the demo; exit code 0, or 2 when a frame failed.
pub fn run() -> Result<ExitCode> {
    let model = Model::from_bytes(media::MODEL, "bundled:models/digits/model.onnx")?;
    let labels = model.manifest().map(|m| m.labels.clone()).unwrap_or_default();
    let images = media::SAMPLES
        .iter()
        .map(|(name, bytes)| Image::decode(bytes, name))
        .collect::<Result<Vec<_>, _>>()
        .context("decoding the bundled pictures")?;
    println!("lepton demo: digit classifier (models/digits) on {} bundled pictures", images.len());
    let source = ImageSource::from_images(images, ImageSourceOptions::default());
    let stages = model.into_vision_stages()?;
    let sink = ConsoleSink::new(labels);
    let mut pipeline = Pipeline::new(source, stages.pre, stages.engine, stages.post, sink);
    let stats = pipeline.run()?;
    Ok(if stats.frames_failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
