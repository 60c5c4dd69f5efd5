//! Engines run a model on input buffers they own. The [`Engine`] trait is deliberately small: fill
//! an input in place, run, read outputs as views. That shape lets the pipeline reuse the same
//! buffers for every frame and lets different engines (the int8 [`micro`] engine here, tract in
//! `lepton-tract`) plug in unchanged.

pub mod micro;

#[cfg(feature = "host")]
pub use self::host_engine::*;

#[cfg(feature = "host")]
mod host_engine {
    use crate::error::Result;
    use crate::tensor::{DType, TensorView, TensorViewMut};

    /// Name, concrete shape, element type and quantization of an engine input or output.
    #[derive(Debug, Clone, PartialEq)]
    pub struct TensorInfo {
        /// Tensor name in the model.
        pub name: String,
        /// Concrete shape.
        pub shape: Vec<usize>,
        /// Element type, or `None` for a type tensor views do not cover (i64, f16, bool...): such
        /// tensors are reachable through `TractEngine::run_tensors` only.
        pub dtype: Option<DType>,
        /// `(scale, zero_point)` for a quantized tensor.
        pub quant: Option<(f32, i32)>,
    }

    /// A spare input buffer: the pipeline's preprocessing thread fills it while the engine runs,
    /// then the engine takes it with [`Engine::swap_input`].
    pub trait StagingBuffer: Send {
        /// The buffer as a writable tensor.
        fn view_mut(&mut self) -> Result<TensorViewMut<'_>>;
    }

    /// A loaded, shape-fixed model that runs on its own input and output buffers.
    pub trait Engine {
        /// Spare input buffers of this engine.
        type Buffer: StagingBuffer;
        /// Inputs, in model order.
        fn inputs(&self) -> &[TensorInfo];
        /// Outputs, in model order.
        fn outputs(&self) -> &[TensorInfo];
        /// The buffer of input `index`, to write the next frame into.
        fn input_mut(&mut self, index: usize) -> Result<TensorViewMut<'_>>;
        /// Runs the model on the current inputs.
        fn run(&mut self) -> Result<()>;
        /// Sets a streaming model's state (kept from one run to the next) to its initial value, to
        /// start a new stream; models without state have nothing to reset.
        fn reset(&mut self) -> Result<()> {
            Ok(())
        }
        /// Output `index` of the last run.
        fn output(&self, index: usize) -> Result<TensorView<'_>>;
        /// A spare buffer shaped like input `index`.
        fn new_buffer(&self, index: usize) -> Result<Self::Buffer>;
        /// Exchanges input `index` with `buffer`: the engine's next run reads what `buffer` held.
        fn swap_input(&mut self, index: usize, buffer: &mut Self::Buffer) -> Result<()>;
    }
}
