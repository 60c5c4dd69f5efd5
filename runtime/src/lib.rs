//! Lepton runtime: everything between a sensor and an event.
//!
//! Without features the crate is `#![no_std]` and never allocates: tensors, quantization arithmetic,
//! vision pre/post-processing, the audio frontend, keyword/VAD postprocessing and event types all work
//! on caller-owned buffers and const-generic capacities, so the same code runs on a Cortex-M part and on
//! a Linux board. The `std` feature adds the tract engine, model loading with the embedded manifest,
//! file sources (image folders, WAV) and the pipeline that ties the stages together.
//!
//! The data path, left to right, and where each stage lives:
//!
//! | stage        | module |
//! |--------------|--------|
//! | source       | [`source`] (std): image folders, WAV files |
//! | preprocess   | [`vision::preprocess`], [`audio::frontend`] |
//! | engine       | [`engine`] (std): the [`engine::Engine`] trait and the tract engine |
//! | postprocess  | [`vision::classify`], [`vision::detect`], [`audio::keyword`], [`audio::vad`] |
//! | sink         | [`pipeline::Sink`] (std) consumes [`event`] values; [`alert`] drives a GPIO from events |
#![cfg_attr(not(feature = "host"), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "host")]
extern crate std;

pub mod alert;
pub mod audio;
pub mod engine;
pub mod error;
pub mod event;
pub mod quant;
pub mod tensor;
pub mod vision;

#[cfg(feature = "std")]
pub mod draw;
#[cfg(feature = "std")]
pub mod image;
#[cfg(feature = "std")]
pub mod manifest;
#[cfg(feature = "std")]
pub mod model;
#[cfg(feature = "std")]
pub mod onnx;
#[cfg(feature = "std")]
pub mod pipeline;
#[cfg(feature = "signature")]
pub mod signature;
#[cfg(feature = "std")]
pub mod source;

pub use error::Error;
pub use event::{BBox, Detection, Event, EventKind, FrameMeta};
pub use tensor::{DType, Quantization, Shape, TensorView, TensorViewMut};

#[cfg(feature = "host")]
pub use error::LeptonError;
#[cfg(feature = "std")]
pub use manifest::Manifest;
#[cfg(feature = "std")]
pub use model::{Model, Prediction};
