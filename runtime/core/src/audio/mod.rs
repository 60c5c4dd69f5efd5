//! Audio stages: the sample ring a microphone fills, the incremental log-mel/MFCC frontend, TFLite
//! Micro's fixed-point frontend (microWakeWord's features), and the postprocessing of
//! keyword-spotting, wake-word and voice-activity models into events.

pub mod frontend;
pub mod keyword;
pub mod micro_frontend;
pub mod ring;
pub mod vad;
pub mod wake_word;

pub use frontend::{FeatureWindow, Frontend, FrontendConfig};
pub use keyword::{KeywordConfig, KeywordSpotter};
pub use micro_frontend::{MicroFrontend, MicroFrontendConfig};
pub use ring::SampleRing;
pub use vad::{Vad, VadConfig};
pub use wake_word::{InputQuant, WakeWord, WakeWordConfig};
