//! One module per verb: clap arguments, then calls into the library, then output.

pub mod bench;
pub mod compile;
pub mod eval;
pub mod import;
pub mod inspect;
pub mod kernels;
pub mod optimize;
pub mod pack;
pub mod quantize;
pub mod run;
pub mod sign;

use lepton_runtime::engine::EngineChoice;

/// `--engine` values of the verbs that run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// The runtime's own choice: int8 models on the micro engine when it takes them.
    Auto,
    /// tract.
    Tract,
    /// The int8 micro engine.
    Micro,
}

impl From<EngineArg> for EngineChoice {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Tract => EngineChoice::Tract,
            EngineArg::Micro => EngineChoice::Micro,
        }
    }
}
