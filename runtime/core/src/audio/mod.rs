//! Audio stages: the sample ring a microphone fills, the incremental log-mel/MFCC frontend, and the
//! postprocessing of keyword-spotting and voice-activity models into events.

pub mod frontend;
pub mod keyword;
pub mod ring;
pub mod vad;

pub use frontend::{FeatureWindow, Frontend, FrontendConfig};
pub use keyword::{KeywordConfig, KeywordSpotter};
pub use ring::SampleRing;
pub use vad::{Vad, VadConfig};
