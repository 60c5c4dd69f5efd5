//! The tract engine: loads ONNX with tract-onnx, fixes input shapes, optimizes once, and runs the
//! plan on input tensors it keeps across frames (the caller writes each frame in place).
//!
//! Exported ONNX files often carry intermediate `value_info` that contradicts the graph; when the
//! first load fails, the engine retries ignoring `value_info`, and says so in the log. Constructs
//! tract computes wrong are rewritten or refused first ([`fixes`]).

use crate::fixes;
pub use crate::guard::guarded;
use crate::guard::model_error;
use crate::onnx::{self, ModelProto};
use lepton_core::engine::{Engine, TensorInfo};
use lepton_core::error::{LeptonError, Result};
use lepton_core::tensor::{DType, Quantization, TensorData, TensorDataMut, TensorView, TensorViewMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// tract-onnx itself, for tools and tests that reach past the engine.
pub use tract_onnx;
pub use tract_onnx::prelude::{DatumType, Tensor};

/// A shape (and optionally an element type) to fix on a model input before optimization.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFact {
    /// Input name.
    pub name: String,
    /// Concrete shape.
    pub shape: Vec<usize>,
    /// Element type; default: the type the model declares (f32 if it declares none).
    pub dtype: Option<DatumType>,
}

/// A model loaded into tract, optimized for fixed input shapes, with reusable input buffers.
pub struct TractEngine {
    path: PathBuf,
    state: TypedSimpleState,
    inputs: Vec<Arc<Tensor>>,
    outputs: TVec<TValue>,
    input_info: Vec<TensorInfo>,
    output_info: Vec<TensorInfo>,
    ignored_value_info: bool,
}

impl std::fmt::Debug for TractEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEngine")
            .field("path", &self.path)
            .field("inputs", &self.input_info)
            .field("outputs", &self.output_info)
            .finish()
    }
}

fn dtype_of(dt: DatumType) -> Option<(DType, Option<(f32, i32)>)> {
    let q = |qp: &QParams| {
        let (zp, scale) = qp.zp_scale();
        Some((scale, zp))
    };
    Some(match dt {
        DatumType::F32 => (DType::F32, None),
        DatumType::I8 => (DType::I8, None),
        DatumType::U8 => (DType::U8, None),
        DatumType::I32 => (DType::I32, None),
        DatumType::QI8(qp) => (DType::I8, q(&qp)),
        DatumType::QU8(qp) => (DType::U8, q(&qp)),
        DatumType::QI32(qp) => (DType::I32, q(&qp)),
        _ => return None,
    })
}

fn info(name: &str, t: &Tensor) -> TensorInfo {
    let (dtype, quant) = dtype_of(t.datum_type()).map_or((None, None), |(d, q)| (Some(d), q));
    TensorInfo { name: name.to_string(), shape: t.shape().to_vec(), dtype, quant }
}

fn unsupported_type(info: &TensorInfo, t: Option<&Tensor>) -> LeptonError {
    LeptonError::Tensor {
        tensor: info.name.clone(),
        reason: format!(
            "element type {} has no tensor view (f32, i8, u8, i32 do)",
            t.map_or("?".to_string(), |t| format!("{:?}", t.datum_type()))
        ),
    }
}

impl TractEngine {
    /// Loads `path`, fixing the given input shapes (others must be fully declared in the file).
    pub fn load(path: &Path, facts: &[InputFact]) -> Result<Self> {
        let proto = onnx::read(path)?;
        Self::from_proto(&proto, path, facts)
    }

    /// Builds the engine from an already decoded model; `path` names it in errors and locates
    /// external weight files.
    pub fn from_proto(proto: &ModelProto, path: &Path, facts: &[InputFact]) -> Result<Self> {
        if let Some((node, op)) = onnx::unsupported_ops(proto).into_iter().next() {
            return Err(LeptonError::UnsupportedOp { path: path.to_path_buf(), node, op });
        }
        let proto = &*fixes::prepare(proto, path)?;
        let build =
            |ignore_value_info| guarded(path, "loading it", || Self::build(proto, path, facts, ignore_value_info));
        match build(false) {
            Ok(engine) => Ok(engine),
            Err(first) => match build(true) {
                Ok(engine) => {
                    tracing::info!(
                        "{}: intermediate value_info is inconsistent with the graph; loaded ignoring it",
                        path.display()
                    );
                    Ok(engine)
                }
                Err(_) => Err(first),
            },
        }
    }

    fn build(proto: &ModelProto, path: &Path, facts: &[InputFact], ignore_value_info: bool) -> Result<Self> {
        let framework = tract_onnx::onnx().with_ignore_value_info(ignore_value_info);
        let dir = path.parent().and_then(|d| d.to_str());
        let parsed = framework.parse(proto, dir).map_err(|e| model_error(path, e))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(model_error(path, format!("unresolved graph inputs: {:?}", parsed.unresolved_inputs)));
        }
        let mut model = parsed.model;
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(|e| model_error(path, e))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        for fact in facts {
            let ix = input_names.iter().position(|n| n == &fact.name).ok_or_else(|| LeptonError::Tensor {
                tensor: fact.name.clone(),
                reason: format!("the model has no such input (inputs: {})", input_names.join(", ")),
            })?;
            let declared = model.input_fact(ix).map_err(|e| model_error(path, e))?.datum_type.concretize();
            let dt = fact.dtype.or(declared).unwrap_or(DatumType::F32);
            model
                .set_input_fact(ix, InferenceFact::dt_shape(dt, fact.shape.clone()))
                .map_err(|e| model_error(path, e))?;
        }
        for (ix, name) in input_names.iter().enumerate() {
            let f = model.input_fact(ix).map_err(|e| model_error(path, e))?;
            let concrete = f.shape.concretize().is_some_and(|dims| dims.iter().all(|d| d.to_i64().is_ok()));
            if !concrete {
                return Err(LeptonError::Tensor {
                    tensor: name.clone(),
                    reason: format!(
                        "has a dynamic shape ({:?}); give a concrete shape (manifest `input.size`, a tensor, or --shape)",
                        f.shape
                    ),
                });
            }
        }
        let mut typed = model.into_typed().map_err(|e| model_error(path, e))?;
        stateless_loops(&mut typed);
        let optimized = typed.into_optimized().map_err(|e| model_error(path, e))?;
        let plan = optimized.into_runnable().map_err(|e| model_error(path, e))?;
        let typed = plan.model();
        let mut inputs = Vec::new();
        let mut input_info = Vec::new();
        for (ix, name) in input_names.iter().enumerate() {
            let f = typed.input_fact(ix).map_err(|e| model_error(path, e))?;
            let shape = f.shape.as_concrete().ok_or_else(|| LeptonError::Tensor {
                tensor: name.clone(),
                reason: "shape is not concrete after optimization".into(),
            })?;
            let t = Tensor::zero_dt(f.datum_type, shape).map_err(|e| model_error(path, e))?;
            input_info.push(info(name, &t));
            inputs.push(Arc::new(t));
        }
        let output_names: Vec<String> = typed
            .output_outlets()
            .map_err(|e| model_error(path, e))?
            .iter()
            .map(|o| typed.outlet_label(*o).map(str::to_string).unwrap_or_else(|| typed.node(o.node).name.clone()))
            .collect();
        let state = TypedSimpleState::new(&plan).map_err(|e| model_error(path, e))?;
        let mut engine = TractEngine {
            path: path.to_path_buf(),
            state,
            inputs,
            outputs: tvec!(),
            input_info,
            output_info: vec![],
            ignored_value_info: ignore_value_info,
        };
        // One warm-up run: proves the plan executes and sizes every buffer before the first frame.
        engine.run()?;
        engine.output_info = output_names.iter().zip(engine.outputs.iter()).map(|(n, t)| info(n, t)).collect();
        Ok(engine)
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the model only loaded with its `value_info` ignored.
    pub fn ignored_value_info(&self) -> bool {
        self.ignored_value_info
    }

    /// Runs on arbitrary tensors (any element type tract supports), returning the outputs.
    /// The tensors' shapes must equal the shapes the engine was built for.
    pub fn run_tensors(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let values: TVec<TValue> = inputs.into_iter().map(|t| t.into_tvalue()).collect();
        let out = self.state.run(values).map_err(|e| model_error(&self.path, e))?;
        Ok(out.into_iter().map(|v| v.into_tensor()).collect())
    }

    /// The tract tensor of output `index` of the last run.
    pub fn output_tensor(&self, index: usize) -> Option<&Tensor> {
        self.outputs.get(index).map(|v| &**v)
    }
}

/// ONNX runs are stateless: every run of a recurrent layer starts from its `initial_h`/`initial_c`
/// inputs (or zeros). tract's loops (`Scan`, and `GruSeq` for GRUs) keep the last state for the
/// next run unless told to reset at every run; without this, the second run of an LSTM started
/// where the first one (the load-time warm-up) ended.
fn stateless_loops(model: &mut TypedModel) {
    use tract_onnx::tract_core::ops::gru_seq::GruSeq;
    use tract_onnx::tract_core::ops::scan::Scan;
    for node in &mut model.nodes {
        if let Some(scan) = node.op_as_mut::<Scan>() {
            scan.reset_every_turn = true;
            stateless_loops(&mut scan.body);
        } else if let Some(gru) = node.op_as_mut::<GruSeq>() {
            gru.reset_every_turn = true;
        }
    }
}

impl Engine for TractEngine {
    type Buffer = TractBuffer;

    fn inputs(&self) -> &[TensorInfo] {
        &self.input_info
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.output_info
    }

    fn input_mut(&mut self, index: usize) -> Result<TensorViewMut<'_>> {
        let info = self.input_info.get(index).ok_or_else(|| no_input(index, self.input_info.len()))?;
        view_mut(&mut self.inputs[index], info)
    }

    fn new_buffer(&self, index: usize) -> Result<TractBuffer> {
        let info = self.input_info.get(index).ok_or_else(|| no_input(index, self.input_info.len()))?;
        let tensor = Tensor::clone(&self.inputs[index]);
        Ok(TractBuffer { tensor: Arc::new(tensor), info: info.clone() })
    }

    fn swap_input(&mut self, index: usize, buffer: &mut TractBuffer) -> Result<()> {
        let slot = self.inputs.get_mut(index).ok_or_else(|| no_input(index, self.input_info.len()))?;
        if slot.shape() != buffer.tensor.shape() || slot.datum_type() != buffer.tensor.datum_type() {
            return Err(LeptonError::Tensor {
                tensor: buffer.info.name.clone(),
                reason: "the buffer was made for a different input".into(),
            });
        }
        std::mem::swap(slot, &mut buffer.tensor);
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let inputs: TVec<TValue> = self.inputs.iter().map(|t| Arc::clone(t).into_tvalue()).collect();
        let (state, path) = (&mut self.state, &self.path);
        self.outputs = guarded(path, "running it", || state.run(inputs).map_err(|e| model_error(path, e)))?;
        Ok(())
    }

    fn output(&self, index: usize) -> Result<TensorView<'_>> {
        let info = self.output_info.get(index).ok_or_else(|| LeptonError::Tensor {
            tensor: format!("#{index}"),
            reason: format!("the model has {} outputs", self.output_info.len()),
        })?;
        let dtype = info.dtype.ok_or_else(|| unsupported_type(info, self.outputs.get(index).map(|v| &**v)))?;
        let t: &Tensor = self.outputs.get(index).ok_or_else(|| LeptonError::Tensor {
            tensor: info.name.clone(),
            reason: "the model has not run yet".into(),
        })?;
        let bad = |e: TractError| LeptonError::Tensor { tensor: info.name.clone(), reason: format!("{e:#}") };
        let plain = t.try_as_plain_ram().map_err(bad)?;
        let data = match dtype {
            DType::F32 => TensorData::F32(plain.as_slice::<f32>().map_err(bad)?),
            DType::I8 => TensorData::I8(plain.as_slice::<i8>().map_err(bad)?),
            DType::U8 => TensorData::U8(plain.as_slice::<u8>().map_err(bad)?),
            DType::I32 => TensorData::I32(plain.as_slice::<i32>().map_err(bad)?),
        };
        let quant =
            info.quant.map_or(Quantization::None, |(scale, zero_point)| Quantization::PerTensor { scale, zero_point });
        TensorView::new(t.shape(), data, quant).map_err(|e| LeptonError::core(format!("output `{}`", info.name), e))
    }
}

/// A spare input tensor of a [`TractEngine`], exchanged with the engine's input without copying.
#[derive(Debug)]
pub struct TractBuffer {
    tensor: Arc<Tensor>,
    info: TensorInfo,
}

impl lepton_core::engine::StagingBuffer for TractBuffer {
    fn view_mut(&mut self) -> Result<TensorViewMut<'_>> {
        view_mut(&mut self.tensor, &self.info)
    }
}

fn no_input(index: usize, count: usize) -> LeptonError {
    LeptonError::Tensor { tensor: format!("#{index}"), reason: format!("the model has {count} inputs") }
}

/// A writable view of an input tensor (copied first only if the plan still holds a reference).
fn view_mut<'a>(tensor: &'a mut Arc<Tensor>, info: &TensorInfo) -> Result<TensorViewMut<'a>> {
    let dtype = info.dtype.ok_or_else(|| unsupported_type(info, Some(tensor)))?;
    // The plan releases its references after each run, so this is unique and no copy happens.
    let tensor = Arc::make_mut(tensor);
    let bad = |e: TractError| LeptonError::Tensor { tensor: info.name.clone(), reason: format!("{e:#}") };
    let not_contiguous = || LeptonError::Tensor { tensor: info.name.clone(), reason: "not contiguous".into() };
    let data = match dtype {
        DType::F32 => TensorDataMut::F32(
            tensor.to_plain_array_view_mut::<f32>().map_err(bad)?.into_slice().ok_or_else(not_contiguous)?,
        ),
        DType::I8 => TensorDataMut::I8(
            tensor.to_plain_array_view_mut::<i8>().map_err(bad)?.into_slice().ok_or_else(not_contiguous)?,
        ),
        DType::U8 => TensorDataMut::U8(
            tensor.to_plain_array_view_mut::<u8>().map_err(bad)?.into_slice().ok_or_else(not_contiguous)?,
        ),
        DType::I32 => TensorDataMut::I32(
            tensor.to_plain_array_view_mut::<i32>().map_err(bad)?.into_slice().ok_or_else(not_contiguous)?,
        ),
    };
    let quant =
        info.quant.map_or(Quantization::None, |(scale, zero_point)| Quantization::PerTensor { scale, zero_point });
    TensorViewMut::new(&info.shape, data, quant).map_err(|e| LeptonError::core(format!("input `{}`", info.name), e))
}
