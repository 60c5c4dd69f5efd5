//! Vision stages: the motion gate ([`motion`]: which frames reach the model), preprocessing camera
//! frames into model inputs, and postprocessing model outputs into classes ([`classify`]) or boxes
//! ([`detect`]); [`track`]: identities of detected objects across frames; [`region`]: polygons in
//! frame fractions (motion masks).

pub mod classify;
pub mod detect;
pub mod motion;
pub mod preprocess;
pub mod region;
pub mod track;

pub use preprocess::{ColorOrder, ImageView, Layout, PixelFormat, PreprocessConfig, ResizeMode, Transform};
