//! Lepton runtime: everything between a sensor and an event, as one API over the crates that hold
//! each stage.
//!
//! This crate owns what ties the stages together: a model file with its manifest ([`manifest`],
//! [`model`]; a microWakeWord description beside its `.tflite`: [`wake_word`]) on the right engine
//! ([`engine::AnyEngine`]), the pipeline that runs a source through
//! preprocessing, the engine and postprocessing to a sink ([`pipeline`]), and boxes drawn on
//! pictures ([`draw`]). It re-exports the crates below it under the paths their users know:
//!
//! | stage        | crate (re-exported as) |
//! |--------------|--------|
//! | source       | `lepton-sources` ([`source`], [`image`]): image folders, WAV, cameras, streams, video, mic |
//! | motion gate  | `lepton-core` ([`vision::motion`]): which frames reach the model |
//! | preprocess   | `lepton-core` ([`vision::preprocess`], [`audio::frontend`], [`audio::micro_frontend`]) |
//! | engine       | `lepton-core` ([`engine::micro`]: int8), `lepton-tract` ([`engine::tract`]: float), `lepton-compile` ([`compile`]: ONNX → `.lpm`) |
//! | postprocess  | `lepton-core` ([`vision::classify`], [`vision::detect`], [`audio::keyword`], [`audio::vad`], [`audio::wake_word`]) |
//! | track        | `lepton-core` ([`vision::track`]): identities of detected objects across frames |
//! | sink         | [`pipeline::Sink`] consumes [`event`] values; [`alert`] drives a GPIO from events |
//!
//! `ARCHITECTURE.md` at the repository's root draws the crates and the data path.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod draw;
pub mod engine;
pub mod manifest;
pub mod model;
pub mod onnx;
pub mod pipeline;
pub mod wake_word;

pub use lepton_compile as compile;
pub use lepton_core::{alert, audio, error, event, quant, tensor, vision};
#[cfg(feature = "signature")]
pub use lepton_signature as signature;
pub use lepton_sources as source;
pub use lepton_sources::image;

pub use error::{Error, LeptonError};
pub use event::{BBox, Detection, Event, EventKind, FrameMeta};
pub use manifest::Manifest;
pub use model::{Model, Prediction};
pub use tensor::{DType, Quantization, Shape, TensorView, TensorViewMut};
