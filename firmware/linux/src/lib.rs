//! The parts of the board daemon that other crates use: the config file's schema and checks
//! (re-exported from `lepton-config`) and the presence events' debouncing. The daemon itself is
//! the `lepton` binary.

pub use lepton_config as config;
pub mod presence;
