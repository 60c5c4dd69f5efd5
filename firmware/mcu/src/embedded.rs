//! What the build script embedded (see `build.rs`): the model, its arena size and tensor count,
//! and the inputs (classifier mode) or the audio with its settings (speaker mode).

#[cfg(feature = "speaker")]
use crate::speaker::Decision;
#[cfg(feature = "speaker")]
use lepton_runtime::audio::FrontendConfig;
#[cfg(feature = "speaker")]
use lepton_runtime::vision::classify::Scores;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
