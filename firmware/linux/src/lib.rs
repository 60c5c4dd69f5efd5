//! The parts of the board daemon that other crates use: the config file's schema and checks (the
//! fuzz targets read untrusted configs through it) and the presence events' debouncing. The
//! daemon itself is the `lepton` binary.

pub mod config;
pub mod presence;
