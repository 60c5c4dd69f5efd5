//! Engines run a model on input buffers they own ([`Engine`], from `lepton-core`): the int8
//! [`micro`] engine, the float [`tract`] engine, and [`AnyEngine`], which picks one for a model.

pub use lepton_core::engine::{Engine, StagingBuffer, TensorInfo};

/// The int8 micro engine (`lepton-core`), with the compiler that lowers ONNX to it
/// ([`lower`](mod@micro::lower), from `lepton-compile`).
pub mod micro {
    pub use lepton_compile::lower;
    pub use lepton_core::engine::micro::*;
}
pub use lepton_tract::engine as tract;
pub use lepton_tract::set_threads;
pub use lepton_tract::{TractBuffer, TractEngine};

pub use self::any::{AnyBuffer, AnyEngine, EngineChoice};

/// One engine type for every model: tract for float models and the micro engine for int8 ones.
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
                match lepton_compile::micro_engine(&model.proto, path, &shapes) {
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

        fn reset(&mut self) -> Result<()> {
            match self {
                AnyEngine::Tract(e) => e.reset(),
                AnyEngine::Micro(e) => e.reset(),
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
