//! tract's panics, caught: a malformed model that tract does not check for becomes an error that
//! names the file, never a crash.

use lepton_core::error::{LeptonError, Result};
use std::path::Path;

pub(crate) fn model_error(path: &Path, e: impl std::fmt::Display) -> LeptonError {
    LeptonError::Model { path: path.to_path_buf(), reason: format!("{e:#}") }
}

/// Runs a call into tract, turning a panic inside it (a malformed model that tract does not check
/// for) into an error naming the model, so that a crafted file cannot take the process down.
/// Release builds unwind for this (`[profile.release]`).
pub fn guarded<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = panic_message(&*payload);
        Err(model_error(
            path,
            format!(
                "tract failed while {what} ({message}): the file is malformed or uses something tract does not support"
            ),
        ))
    })
}

/// The text a panic carried (`panic!("…")` payloads are `&str` or `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
