//! Vision stages: preprocessing camera frames into model inputs, and postprocessing model outputs into
//! classes ([`classify`]) or boxes ([`detect`]).

pub mod classify;
pub mod detect;
pub mod preprocess;

pub use preprocess::{ColorOrder, ImageView, Layout, PixelFormat, PreprocessConfig, ResizeMode, Transform};
