//! Vision stages: the motion gate ([`motion`]: which frames reach the model), preprocessing camera
//! frames into model inputs, and postprocessing model outputs into classes ([`classify`]) or boxes
//! ([`detect`]); [`track`]: identities of detected objects across frames; [`zone`]: tracked objects
//! entering and leaving parts of the frame; [`region`]: polygons in frame fractions (motion masks,
//! zones).

pub mod classify;
pub mod detect;
pub mod motion;
pub mod preprocess;
pub mod region;
pub mod track;
pub mod zone;

pub use preprocess::{ColorOrder, ImageView, Layout, PixelFormat, PreprocessConfig, ResizeMode, Transform};
