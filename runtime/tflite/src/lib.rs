//! TensorFlow Lite models (`.tflite`) read and checked.
//!
//! A `.tflite` file is a FlatBuffer of the official TFLite schema (read with the module tract
//! generates from it). [`TfliteModel::read`] verifies the buffer under caps, then checks what the
//! verifier cannot: every tensor, buffer and operator-code index in range, shapes and element
//! counts bounded, quantization parameters consistent with their tensor, weights exactly as long
//! as their tensor. What it returns borrows the file's bytes; its tensors keep their TFLite names
//! and types, and its operators their TFLite names, so later stages refuse what they lack by name.
//! Every error names the file and, below it, the subgraph, operator or tensor at fault.

mod check;
pub mod import;
mod types;

pub use check::TfliteError;
pub use types::{ElementType, OpKind, Operator, Quantization, Subgraph, Tensor};

/// The raw schema module, for the operators' builtin options.
pub use tract_tflite::tflite as schema;

use std::path::{Path, PathBuf};

/// The four bytes at offset 4 of every TFLite file (the FlatBuffer file identifier).
pub const IDENTIFIER: &[u8; 4] = b"TFL3";
/// Most subgraphs a model may have (control flow bodies, CALL_ONCE initializers).
pub const MAX_SUBGRAPHS: usize = 256;
/// Most tensors in one subgraph.
pub const MAX_TENSORS: usize = 1 << 16;
/// Most operators in one subgraph.
pub const MAX_OPERATORS: usize = 1 << 16;
/// Highest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Most elements in one tensor (2^31, TFLite's own limit on a buffer's size).
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// True when `bytes` carry the TFLite file identifier (how files are told apart, not by name).
pub fn is_tflite(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&IDENTIFIER[..])
}

/// A checked TFLite model, borrowing the file's bytes.
#[derive(Debug, Clone)]
pub struct TfliteModel<'a> {
    /// Where it was read from (named in every error).
    pub path: PathBuf,
    /// The schema version the file declares (3 for every current converter).
    pub version: u32,
    /// The converter's description (`MLIR Converted.`, `TOCO Converted.`), if any.
    pub description: Option<&'a str>,
    /// Subgraphs; the first is the model's entry point.
    pub subgraphs: Vec<Subgraph<'a>>,
    /// Named metadata entries (`min_runtime_version`, `TFLITE_METADATA`, ...) and their bytes.
    pub metadata: Vec<(&'a str, &'a [u8])>,
}

impl<'a> TfliteModel<'a> {
    /// Reads and checks a `.tflite` file's bytes; errors name `path` and the part at fault.
    pub fn read(bytes: &'a [u8], path: &Path) -> Result<Self, TfliteError> {
        check::read(bytes, path)
    }

    /// The entry subgraph (checked to exist on read).
    pub fn main(&self) -> &Subgraph<'a> {
        &self.subgraphs[0]
    }

    /// The bytes of metadata entry `name`, if present.
    pub fn metadata(&self, name: &str) -> Option<&'a [u8]> {
        self.metadata.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}
