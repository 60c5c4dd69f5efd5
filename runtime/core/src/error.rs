//! Errors. The core's [`Error`] is a small `Copy` enum (no strings, usable without a heap); with
//! `std`, [`LeptonError`] adds the file, field, tensor or node an error is about.

use core::fmt;

/// An error from the no_std core. Each variant states what was wrong with the caller's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A buffer holds a different number of elements than its shape or format requires.
    LengthMismatch {
        /// Elements (or bytes) required.
        expected: usize,
        /// Elements (or bytes) given.
        actual: usize,
    },
    /// A fixed-capacity buffer or table is too small for the request.
    CapacityExceeded {
        /// Capacity needed.
        needed: usize,
        /// Capacity available.
        capacity: usize,
    },
    /// A tensor has more dimensions than a shape may hold.
    RankTooLarge {
        /// The rank asked for.
        rank: usize,
        /// The most dimensions a shape holds (`tensor::MAX_RANK`).
        max: usize,
    },
    /// A tensor's shape does not fit the operation (wrong rank or dimension).
    BadShape,
    /// A quantization scale is zero, negative or not finite.
    InvalidScale,
    /// A zero point lies outside the range of its integer type.
    ZeroPointOutOfRange,
    /// A width, height, stride or size is zero or inconsistent with the pixel format.
    BadImageGeometry,
    /// A configuration value is out of its valid range; the string names the field.
    InvalidConfig(&'static str),
    /// A postcard encoding did not fit the output buffer or could not be decoded.
    Encoding,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LengthMismatch { expected, actual } => {
                write!(f, "buffer holds {actual} elements, {expected} expected")
            }
            Error::CapacityExceeded { needed, capacity } => {
                write!(f, "needs capacity {needed}, only {capacity} available")
            }
            Error::RankTooLarge { rank, max } => write!(f, "rank {rank} exceeds the maximum of {max}"),
            Error::BadShape => write!(f, "tensor shape does not fit the operation"),
            Error::InvalidScale => write!(f, "quantization scale must be finite and > 0"),
            Error::ZeroPointOutOfRange => write!(f, "zero point outside the integer type's range"),
            Error::BadImageGeometry => {
                write!(f, "image width/height/stride inconsistent with its buffer")
            }
            Error::InvalidConfig(field) => write!(f, "invalid value for `{field}`"),
            Error::Encoding => write!(f, "postcard encoding failed (buffer too small or bad data)"),
        }
    }
}

#[cfg(feature = "host")]
impl std::error::Error for Error {}

#[cfg(feature = "host")]
mod with_std {
    use std::path::PathBuf;

    /// An error from the std layer: loading models, reading media, running the engine.
    /// Every variant names the file, field, tensor or node involved.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum LeptonError {
        /// A file could not be read or written. The OS error is part of the message, so it is not
        /// also a [`source`](std::error::Error::source): a chain printer (anyhow's `{:#}`) would
        /// print it twice.
        #[error("{path}: {error}")]
        Io {
            /// The file.
            path: PathBuf,
            /// The OS error.
            error: std::io::Error,
        },
        /// A TFLite file that cannot be read or translated for the engines.
        #[error("{path}: TFLite model not usable: {reason} (`lepton-convert inspect` describes TFLite files)")]
        Tflite {
            /// The file.
            path: PathBuf,
            /// What is wrong or not translated, naming the operator or tensor.
            reason: String,
        },
        /// A file is not a valid ONNX model (truncated, wrong format, no graph).
        #[error("{path}: not a valid ONNX model: {reason}")]
        NotOnnx {
            /// The file.
            path: PathBuf,
            /// What the decoder reported.
            reason: String,
        },
        /// The model uses an operator the engine does not implement.
        #[error("{path}: node `{node}` uses operator `{op}`, which the tract engine does not support (try `lepton-convert optimize`, or re-export with a lower opset)")]
        UnsupportedOp {
            /// The model file.
            path: PathBuf,
            /// The node name.
            node: String,
            /// The operator type.
            op: String,
        },
        /// A node uses an attribute the engine would ignore or get wrong: refused rather than run.
        #[error("{path}: node `{node}`: {op} attribute `{attribute}` is not supported by the tract engine ({op} here {reason}; its results would be wrong)")]
        UnsupportedAttribute {
            /// The model file.
            path: PathBuf,
            /// The node name.
            node: String,
            /// The operator type.
            op: String,
            /// The attribute.
            attribute: String,
            /// What the attribute does in this node.
            reason: String,
        },
        /// The engine could not analyse, optimize or run the model.
        #[error("{path}: {reason}")]
        Model {
            /// The model file.
            path: PathBuf,
            /// The engine's explanation (with its context chain).
            reason: String,
        },
        /// The manifest is not valid TOML or has unknown keys or wrong types (message has line and key).
        #[error("{path}: manifest: {message}")]
        ManifestSyntax {
            /// The file the manifest came from.
            path: PathBuf,
            /// The parser's message, with line, column and key.
            message: String,
        },
        /// The manifest is malformed or disagrees with the model; `field` is the manifest key.
        #[error("{path}: manifest field `{field}`: {reason}")]
        Manifest {
            /// The file the manifest came from (model or TOML).
            path: PathBuf,
            /// The manifest key at fault, dotted (`input.size`).
            field: String,
            /// What is wrong with it.
            reason: String,
        },
        /// A tensor given to the model does not match what the model takes.
        #[error("tensor `{tensor}`: {reason}")]
        Tensor {
            /// The input or output name.
            tensor: String,
            /// What is wrong with it.
            reason: String,
        },
        /// An image could not be decoded.
        #[error("{path}: cannot decode image: {reason}")]
        Image {
            /// The file.
            path: PathBuf,
            /// The decoder's explanation.
            reason: String,
        },
        /// A WAV file could not be read or has an unsupported format.
        #[error("{path}: cannot read WAV: {reason}")]
        Wav {
            /// The file.
            path: PathBuf,
            /// What is wrong with it.
            reason: String,
        },
        /// A camera stream or video file failed (connection, protocol, codec, container).
        #[error("{name}: {reason}")]
        Source {
            /// The source: a URL without credentials, or a file.
            name: String,
            /// What went wrong.
            reason: String,
        },
        /// An operation needs a manifest and the model carries none.
        #[error("{path}: the model carries no manifest (`lepton.manifest`); embed one with `lepton-convert pack`")]
        NoManifest {
            /// The model file.
            path: PathBuf,
        },
        /// The kernel set asked for (`LEPTON_KERNELS`) is unknown or this CPU cannot run it (the
        /// micro engine's `KernelsError`, which converts into this).
        #[error("{reason}")]
        Kernels {
            /// Which set, and what to do instead.
            reason: String,
        },
        /// An error from the no_std core, with what it was about (in the message, not also a
        /// `source`, for the reason given at [`LeptonError::Io`]).
        #[error("{context}: {error}")]
        Core {
            /// What was being processed (file, stage).
            context: String,
            /// The core error.
            error: super::Error,
        },
    }

    impl LeptonError {
        /// Wraps an I/O error with the path it concerns.
        pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
            LeptonError::Io { path: path.into(), error: source }
        }

        /// Wraps a core error with a description of what was being processed.
        pub fn core(context: impl Into<String>, source: super::Error) -> Self {
            LeptonError::Core { context: context.into(), error: source }
        }
    }
}

#[cfg(feature = "host")]
pub use with_std::LeptonError;

/// Result alias of the std layer.
#[cfg(feature = "host")]
pub type Result<T, E = LeptonError> = std::result::Result<T, E>;
