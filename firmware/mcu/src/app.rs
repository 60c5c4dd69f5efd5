//! What both modes share: the error type and the model check done before a run.

use core::fmt;
use lepton_core::engine::micro::{Interpreter, MicroError};

/// Why the firmware stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppError {
    /// The model could not be loaded or run.
    Model(MicroError),
    /// A runtime stage rejected its settings or data.
    Core(lepton_core::Error),
    /// The embedded inputs do not cover the model's inputs (classifier mode).
    #[cfg_attr(feature = "speaker", allow(dead_code))]
    Inputs,
    /// The static arena is taken or smaller than the model needs.
    Arena,
    /// A peripheral or static was already taken (what).
    #[cfg_attr(not(target_os = "none"), allow(dead_code))]
    Taken(&'static str),
    /// The alert pin could not be driven (speaker mode).
    #[cfg_attr(not(feature = "speaker"), allow(dead_code))]
    Pin,
    /// The console could not be written.
    Console,
    /// The microphone's sample rate is not the model's (speaker mode).
    #[cfg_attr(not(feature = "speaker"), allow(dead_code))]
    SampleRate {
        /// Samples per second the microphone delivers.
        microphone: u32,
        /// Samples per second the model was trained on.
        model: u32,
    },
    /// The live audio stream broke its protocol (speaker mode, `live`): what was wrong.
    #[cfg_attr(not(feature = "live"), allow(dead_code))]
    Stream(&'static str),
    /// Conformance mode: this many cases or model outputs differ from the reference.
    #[cfg_attr(not(feature = "conformance"), allow(dead_code))]
    Conformance(usize),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Model(e) => write!(f, "model: {e}"),
            AppError::Core(e) => write!(f, "{e}"),
            AppError::Inputs => write!(f, "the embedded inputs are shorter than the model's inputs"),
            AppError::Arena => write!(f, "the arena is unavailable or too small"),
            AppError::Taken(what) => write!(f, "{what} already taken"),
            AppError::Pin => write!(f, "the alert pin could not be driven"),
            AppError::Console => write!(f, "the console could not be written"),
            AppError::SampleRate { microphone, model } => {
                write!(f, "the microphone delivers {microphone} Hz but the model needs {model} Hz")
            }
            AppError::Stream(what) => write!(f, "audio stream: {what}"),
            AppError::Conformance(n) => write!(f, "{n} results differ from the reference kernels"),
        }
    }
}

impl From<MicroError> for AppError {
    fn from(e: MicroError) -> Self {
        AppError::Model(e)
    }
}

impl From<lepton_core::Error> for AppError {
    fn from(e: lepton_core::Error) -> Self {
        AppError::Core(e)
    }
}

impl From<fmt::Error> for AppError {
    fn from(_: fmt::Error) -> Self {
        AppError::Console
    }
}

/// Figures of a run, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Model runs.
    pub runs: u64,
    /// Cycles of all model runs together (the board's cycle counter).
    pub cycles: u64,
    /// Cycles of the slowest model run.
    pub max_cycles: u64,
}

impl Stats {
    /// Adds one model run that took `cycles`.
    pub fn record(&mut self, cycles: u64) {
        self.runs += 1;
        self.cycles += cycles;
        self.max_cycles = self.max_cycles.max(cycles);
    }
}

/// Runs the model once: with the DSP kernel set (the firmware's default on a Cortex-M4/M7), or
/// the reference kernels with feature `reference-kernels`.
pub fn infer<const T: usize>(model: &Interpreter<'_, T>, arena: &mut [u8]) -> Result<(), AppError> {
    if cfg!(feature = "reference-kernels") {
        model.run_reference(arena)?;
    } else {
        model.run(arena)?;
    }
    Ok(())
}

/// Loads the embedded model with an interpreter holding exactly its tensors.
pub fn load(bytes: &[u8]) -> Result<Interpreter<'_, { crate::embedded::TENSORS }>, AppError> {
    Ok(Interpreter::new(bytes)?)
}

/// Writes a tensor name with whitespace replaced by `_`, so console lines split on spaces.
pub fn write_name(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    for c in name.chars() {
        out.write_char(if c.is_whitespace() { '_' } else { c })?;
    }
    Ok(())
}
