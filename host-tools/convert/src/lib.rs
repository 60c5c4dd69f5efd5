//! lepton-convert's library: reading and editing ONNX graphs, `.npy` tensors, model reports,
//! graph optimization, calibration and quantization, evaluation. The `lepton-convert` binary is a
//! thin command line over these modules.

pub mod calibrate;
pub mod eval;
pub mod eval_detect;
pub mod graph;
pub mod inputs;
pub mod inspect;
pub mod model_file;
pub mod npy;
pub mod optimize;
pub mod quantize;
pub mod samples;
