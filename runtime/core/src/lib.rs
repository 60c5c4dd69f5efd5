//! Lepton's core: everything between a sensor and an event that runs on a microcontroller too.
//!
//! Without features the crate is `#![no_std]` and never allocates: tensors, quantization
//! arithmetic, the `.lpm` format and the int8 micro engine with its kernel sets, vision
//! pre/post-processing, the audio frontend, keyword/VAD postprocessing, event types and alerts all
//! work on caller-owned buffers and const-generic capacities, so the same code runs on a Cortex-M
//! part and on a Linux board. The `host` feature adds the std error type, the [`engine::Engine`]
//! trait and the micro engine loaded from `.lpm` bytes on a host (kernel set chosen by CPU
//! detection).
//!
//! | stage        | module |
//! |--------------|--------|
//! | motion gate  | [`vision::motion`] (masks: [`vision::region`]) |
//! | preprocess   | [`vision::preprocess`], [`audio::frontend`] |
//! | engine       | [`engine::micro`]: format, interpreter, ops, kernel sets |
//! | postprocess  | [`vision::classify`], [`vision::detect`], [`audio::keyword`], [`audio::vad`] |
//! | events       | [`event`] values; [`alert`] drives a GPIO from events |
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

pub use error::Error;
pub use event::{BBox, Detection, Event, EventKind, FrameMeta};
pub use tensor::{DType, Quantization, Shape, TensorView, TensorViewMut};

#[cfg(feature = "host")]
pub use error::LeptonError;
