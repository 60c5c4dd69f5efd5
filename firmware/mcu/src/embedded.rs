//! What the build script embedded (see `build.rs`): the model, its arena size and tensor count,
//! and the inputs (classifier mode) or the audio with its settings (speaker mode).

#[cfg(all(feature = "speaker", not(lepton_wake_word)))]
use lepton_core::audio::{FrontendConfig, KeywordConfig, VadConfig};
#[cfg(all(feature = "speaker", not(lepton_wake_word)))]
use lepton_core::vision::classify::Scores;

#[cfg(all(feature = "speaker", not(lepton_wake_word)))]
/// What turns posteriors into events (from the model's manifest).
#[derive(Debug, Clone, Copy, PartialEq)]
// Each build embeds one model, so one variant is never constructed.
#[allow(dead_code)]
pub enum Decision {
    /// Keyword spotting: a keyword that fires is a `Start` event and triggers the alert.
    Keyword(KeywordConfig),
    /// Voice activity: speech start and end events; the alert is on while speech lasts.
    Vad(VadConfig),
}

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
