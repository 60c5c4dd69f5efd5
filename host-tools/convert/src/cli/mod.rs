//! One module per verb: clap arguments, then calls into the library, then output.

pub mod bench;
pub mod compile;
pub mod eval;
pub mod inspect;
pub mod optimize;
pub mod pack;
pub mod quantize;
pub mod run;
