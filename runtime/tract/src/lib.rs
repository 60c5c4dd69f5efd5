//! ONNX models through tract: the protobuf read and written with clear errors ([`onnx`]), shape
//! analysis, rewrites of constructs tract computes wrong ([`fixes`]), tract's panics caught at the
//! boundary ([`guard`]), and the float engine ([`engine::TractEngine`]) that runs what the int8
//! micro engine does not.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod engine;
pub mod fixes;
pub mod guard;
pub mod onnx;

pub use engine::{InputFact, TractBuffer, TractEngine};

/// Sets how many threads tract's matrix products use from now on, process-wide (1: the calling
/// thread only, the default). Multi-core boards gain on large convolutions.
pub fn set_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    if threads <= 1 {
        set_default_executor(Executor::SingleThread);
    } else {
        set_default_executor(Executor::multithread(threads));
    }
}
