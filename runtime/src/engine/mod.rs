//! Engines run a model on input buffers they own. The [`Engine`] trait is deliberately small: fill
//! an input in place, run, read outputs as views. That shape lets the pipeline reuse the same
//! buffers for every frame and lets different engines (tract today, the int8 micro engine next)
//! plug in unchanged.

pub mod micro;
#[cfg(feature = "std")]
pub mod tract;

#[cfg(feature = "host")]
pub use self::host_engine::*;

#[cfg(feature = "std")]
pub use self::tract::{TractBuffer, TractEngine};

/// Sets how many threads tract's matrix products use from now on, process-wide (1: the calling
/// thread only, the default). Multi-core boards gain on large convolutions.
#[cfg(feature = "std")]
pub fn set_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    if threads <= 1 {
        set_default_executor(Executor::SingleThread);
    } else {
        set_default_executor(Executor::multithread(threads));
    }
}

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

    impl TensorInfo {
        /// The tensor as a declared input or output (fixed dimensions; int8 for quantized ones).
        #[cfg(feature = "std")]
        pub fn spec(&self) -> crate::onnx::TensorSpec {
            let elem_type = match (self.dtype, self.quant) {
                (Some(DType::F32), _) => "FLOAT",
                (Some(DType::I8), _) => "INT8",
                (Some(DType::U8), _) => "UINT8",
                (Some(DType::I32), _) => "INT32",
                (None, _) => "UNDEFINED",
            };
            crate::onnx::TensorSpec {
                name: self.name.clone(),
                elem_type: elem_type.into(),
                dims: Some(self.shape.iter().map(|&d| crate::onnx::Dim::Fixed(d)).collect()),
            }
        }
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
        /// Output `index` of the last run.
        fn output(&self, index: usize) -> Result<TensorView<'_>>;
        /// A spare buffer shaped like input `index`.
        fn new_buffer(&self, index: usize) -> Result<Self::Buffer>;
        /// Exchanges input `index` with `buffer`: the engine's next run reads what `buffer` held.
        fn swap_input(&mut self, index: usize, buffer: &mut Self::Buffer) -> Result<()>;
    }
}

#[cfg(feature = "std")]
pub use self::any::{AnyBuffer, AnyEngine, EngineChoice};

/// One engine type for every model: tract for float models and the micro engine for int8 ones.
#[cfg(feature = "std")]
mod any {
    use super::micro::host::{MicroBuffer, MicroEngine};
    use super::micro::kernels::Isa;
    use super::tract::{InputFact, TractBuffer, TractEngine};
    use super::{Engine, StagingBuffer, TensorInfo};
    use crate::error::{LeptonError, Result};
    use crate::onnx::OnnxModel;
    use crate::tensor::{TensorView, TensorViewMut};
    use std::path::Path;

    /// Which engine runs a model.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum EngineChoice {
        /// Integer models on the micro engine where this CPU has a vector kernel set for it,
        /// everything else on tract (the default).
        Auto,
        /// tract, always.
        Tract,
        /// The micro engine (the model must be fully int8).
        Micro,
    }

    /// tract or the micro engine.
    #[derive(Debug)]
    pub enum AnyEngine {
        /// tract.
        Tract(Box<TractEngine>),
        /// The int8 micro engine.
        Micro(MicroEngine),
    }

    /// A spare input buffer of either engine.
    #[derive(Debug)]
    pub enum AnyBuffer {
        /// tract's.
        Tract(TractBuffer),
        /// The micro engine's.
        Micro(MicroBuffer),
    }

    impl StagingBuffer for AnyBuffer {
        fn view_mut(&mut self) -> Result<TensorViewMut<'_>> {
            match self {
                AnyBuffer::Tract(b) => b.view_mut(),
                AnyBuffer::Micro(b) => b.view_mut(),
            }
        }
    }

    impl AnyEngine {
        /// Builds the engine for a model. `Auto` puts a quantized (QDQ) model on the micro engine
        /// when it lowers completely and this CPU has a vector kernel set for it; tract runs it
        /// otherwise (a log line says why). The rule is measured: every vector set runs the
        /// shipped and test models faster than tract runs their QDQ files, while the portable
        /// reference kernels are several times slower than tract (README, "Int8").
        pub fn from_onnx(model: &OnnxModel, path: &Path, facts: &[InputFact], choice: EngineChoice) -> Result<Self> {
            if choice != EngineChoice::Tract && model.quantized {
                let shapes: Vec<(String, Vec<usize>)> =
                    facts.iter().map(|f| (f.name.clone(), f.shape.clone())).collect();
                match MicroEngine::from_onnx(&model.proto, path, &shapes) {
                    Ok((engine, _)) if choice == EngineChoice::Micro || engine.isa() != Isa::Reference => {
                        return Ok(AnyEngine::Micro(engine))
                    }
                    Ok(_) => {
                        tracing::info!(
                            "{}: running on tract: the int8 micro engine has only its portable kernels on this CPU, slower than tract (--engine micro forces it)",
                            path.display()
                        );
                    }
                    Err(e) if choice == EngineChoice::Auto => {
                        tracing::info!("{}: running on tract: the int8 engine cannot take it: {e}", path.display());
                    }
                    Err(e) => return Err(e),
                }
            } else if choice == EngineChoice::Micro {
                return Err(LeptonError::Model {
                    path: path.to_path_buf(),
                    reason: "the micro engine runs quantized models; quantize it first (lepton-convert quantize)"
                        .into(),
                });
            }
            Ok(AnyEngine::Tract(Box::new(TractEngine::from_proto(&model.proto, path, facts)?)))
        }

        /// Short name: `tract` or `micro`.
        pub fn name(&self) -> &'static str {
            match self {
                AnyEngine::Tract(_) => "tract",
                AnyEngine::Micro(_) => "micro",
            }
        }

        /// The micro engine's kernel set (`None` on tract).
        pub fn kernels(&self) -> Option<crate::engine::micro::kernels::Isa> {
            match self {
                AnyEngine::Tract(_) => None,
                AnyEngine::Micro(m) => Some(m.isa()),
            }
        }

        /// `tract`, or `micro (<set> kernels)`.
        pub fn describe(&self) -> String {
            match self.kernels() {
                Some(isa) => format!("{} ({isa} kernels)", self.name()),
                None => self.name().to_string(),
            }
        }
    }

    impl Engine for AnyEngine {
        type Buffer = AnyBuffer;

        fn inputs(&self) -> &[TensorInfo] {
            match self {
                AnyEngine::Tract(e) => e.inputs(),
                AnyEngine::Micro(e) => e.inputs(),
            }
        }

        fn outputs(&self) -> &[TensorInfo] {
            match self {
                AnyEngine::Tract(e) => e.outputs(),
                AnyEngine::Micro(e) => e.outputs(),
            }
        }

        fn input_mut(&mut self, index: usize) -> Result<TensorViewMut<'_>> {
            match self {
                AnyEngine::Tract(e) => e.input_mut(index),
                AnyEngine::Micro(e) => e.input_mut(index),
            }
        }

        fn run(&mut self) -> Result<()> {
            match self {
                AnyEngine::Tract(e) => e.run(),
                AnyEngine::Micro(e) => e.run(),
            }
        }

        fn output(&self, index: usize) -> Result<TensorView<'_>> {
            match self {
                AnyEngine::Tract(e) => e.output(index),
                AnyEngine::Micro(e) => e.output(index),
            }
        }

        fn new_buffer(&self, index: usize) -> Result<AnyBuffer> {
            Ok(match self {
                AnyEngine::Tract(e) => AnyBuffer::Tract(e.new_buffer(index)?),
                AnyEngine::Micro(e) => AnyBuffer::Micro(e.new_buffer(index)?),
            })
        }

        fn swap_input(&mut self, index: usize, buffer: &mut AnyBuffer) -> Result<()> {
            match (self, buffer) {
                (AnyEngine::Tract(e), AnyBuffer::Tract(b)) => e.swap_input(index, b),
                (AnyEngine::Micro(e), AnyBuffer::Micro(b)) => e.swap_input(index, b),
                _ => Err(LeptonError::Tensor {
                    tensor: format!("#{index}"),
                    reason: "buffer made by another engine".into(),
                }),
            }
        }
    }
}
