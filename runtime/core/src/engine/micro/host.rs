//! The micro engine on a host (Linux board, workstation): owns the model bytes and the arena and
//! implements [`Engine`], so pipelines run int8 models with it like any other engine.

use super::format::{Layout, Op, TensorDesc};
use super::kernels::prepared::{self, Step};
use super::kernels::{Isa, Kernels};
use super::Interpreter;
use crate::engine::{Engine, StagingBuffer, TensorInfo};
use crate::error::{LeptonError, Result};
use crate::tensor::{DType, Quantization, TensorData, TensorDataMut, TensorView, TensorViewMut};
use std::path::{Path, PathBuf};

/// Most tensors a host-side micro model may have.
pub const MAX_TENSORS: usize = 1024;

/// Most bytes of arena (and of kernel scratch) a micro model may ask a host for (64 MiB: a
/// hundred times what the shipped models use); a header asking for more is refused before anything
/// is allocated.
pub const MAX_ARENA_BYTES: usize = 64 << 20;

/// The interpreter and its ops prepared for this CPU.
struct Program<'a> {
    interp: Interpreter<'a, MAX_TENSORS>,
    steps: Vec<(Op<'a>, Step)>,
}

self_cell::self_cell!(
    struct Loaded {
        owner: Vec<u8>,
        #[covariant]
        dependent: Program,
    }
);

/// A micro model with its arena.
pub struct MicroEngine {
    path: PathBuf,
    model: Loaded,
    arena: Vec<u8>,
    scratch: Vec<u8>,
    kernels: &'static Kernels,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    /// Per output: its per-channel quantization, if it has one.
    output_channels: Vec<Option<Channels>>,
}

impl std::fmt::Debug for MicroEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroEngine").field("path", &self.path).field("arena", &self.arena.len()).finish()
    }
}

/// Shape in ONNX order of a tensor stored NHWC.
pub fn onnx_shape(t: &TensorDesc<'_>) -> Vec<usize> {
    let (dims, rank) = t.onnx_dims();
    dims[..rank].to_vec()
}

/// The engine's description of a tensor; one quantized per channel has `quant: None` (its views
/// carry the scales).
fn info(t: &TensorDesc<'_>) -> TensorInfo {
    TensorInfo {
        name: t.name.to_string(),
        shape: onnx_shape(t),
        dtype: Some(DType::I8),
        quant: (!t.per_channel()).then_some((t.scale, t.zero_point)),
    }
}

/// Per-channel quantization of an output, as its views give it.
#[derive(Debug, Clone)]
struct Channels {
    axis: usize,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl Channels {
    fn of(t: &TensorDesc<'_>) -> Option<Self> {
        let rank = t.onnx_dims().1;
        let c = t.shape[3] as usize;
        t.per_channel().then(|| Channels {
            // The channel axis in ONNX order: the last for channels-last tensors, else axis 1.
            axis: if t.layout == Layout::ChannelsLast || rank < 2 { rank.saturating_sub(1) } else { 1 },
            scales: (0..c).map(|i| t.channel_quant(i).0).collect(),
            zero_points: (0..c).map(|i| t.channel_quant(i).1).collect(),
        })
    }
}

fn micro_err(path: &Path, e: super::MicroError) -> LeptonError {
    LeptonError::Model { path: path.to_path_buf(), reason: e.to_string() }
}

impl MicroEngine {
    /// Loads `.lpm` bytes with the kernel set of [`Isa::selected`]; `path` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        Self::with_isa(bytes, path, Isa::selected()?)
    }

    /// Loads `.lpm` bytes with kernels for `isa` ([`Isa::Reference`]: the portable reference);
    /// a set this CPU cannot run is refused.
    pub fn with_isa(bytes: Vec<u8>, path: &Path, isa: Isa) -> Result<Self> {
        let kernels = isa.kernels()?;
        let model = Loaded::try_new(bytes, |b| -> std::result::Result<Program<'_>, super::MicroError> {
            let interp = Interpreter::new(b)?;
            let ops = interp.ops().collect::<std::result::Result<Vec<_>, _>>()?;
            let steps = prepared::prepare(ops.into_iter(), interp.tensors(), kernels);
            Ok(Program { interp, steps })
        })
        .map_err(|e| micro_err(path, e))?;
        let interp = &model.borrow_dependent().interp;
        let collect = |ids: &[u16]| ids.iter().map(|&i| &interp.tensors()[i as usize]).collect::<Vec<_>>();
        let inputs = collect(&interp.header().inputs).into_iter().map(info).collect();
        let outputs = collect(&interp.header().outputs).into_iter().map(info).collect();
        let output_channels = collect(&interp.header().outputs).into_iter().map(Channels::of).collect();
        let scratch_bytes = prepared::scratch_bytes(&model.borrow_dependent().steps, interp.tensors());
        for (what, bytes) in [("arena", interp.arena_bytes()), ("scratch", scratch_bytes)] {
            if bytes > MAX_ARENA_BYTES {
                return Err(LeptonError::Model {
                    path: path.to_path_buf(),
                    reason: format!("asks for a {bytes}-byte {what}; a micro model may use at most {MAX_ARENA_BYTES}"),
                });
            }
        }
        let mut arena = vec![0u8; interp.arena_bytes()];
        interp.reset(&mut arena).map_err(|e| micro_err(path, e))?;
        let scratch = vec![0u8; scratch_bytes];
        Ok(MicroEngine { path: path.to_path_buf(), model, arena, scratch, kernels, inputs, outputs, output_channels })
    }

    /// The interpreter (header, tensors, ops).
    pub fn interpreter(&self) -> &Interpreter<'_, MAX_TENSORS> {
        &self.model.borrow_dependent().interp
    }

    /// Runs once and returns the time each op took, with its kind and how it ran.
    pub fn run_profiled(&mut self) -> Vec<(&'static str, &'static str, std::time::Duration)> {
        let program = self.model.borrow_dependent();
        let tensors = program.interp.tensors();
        let mut out = Vec::with_capacity(program.steps.len());
        for (op, step) in &program.steps {
            let t = std::time::Instant::now();
            prepared::run(op, step, tensors, &mut self.arena, &mut self.scratch, self.kernels);
            out.push((op.name(), Step::kind(step), t.elapsed()));
        }
        out
    }

    /// The kernel set in use.
    pub fn isa(&self) -> Isa {
        self.kernels.isa()
    }

    /// Arena size in bytes.
    pub fn arena_bytes(&self) -> usize {
        self.arena.len()
    }
}

/// A spare input buffer of a [`MicroEngine`] (copied into the arena on swap).
#[derive(Debug)]
pub struct MicroBuffer {
    data: Vec<i8>,
    info: TensorInfo,
}

impl StagingBuffer for MicroBuffer {
    fn view_mut(&mut self) -> Result<TensorViewMut<'_>> {
        let quant = self
            .info
            .quant
            .map_or(Quantization::None, |(scale, zero_point)| Quantization::PerTensor { scale, zero_point });
        TensorViewMut::new(&self.info.shape, TensorDataMut::I8(&mut self.data), quant)
            .map_err(|e| LeptonError::core("micro buffer", e))
    }
}

impl Engine for MicroEngine {
    type Buffer = MicroBuffer;

    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn input_mut(&mut self, index: usize) -> Result<TensorViewMut<'_>> {
        let info = self
            .inputs
            .get(index)
            .ok_or_else(|| LeptonError::Tensor { tensor: format!("#{index}"), reason: "no such input".into() })?;
        let interp = &self.model.borrow_dependent().interp;
        let range = interp.input(index).map_err(|e| micro_err(&self.path, e))?.range();
        let data: &mut [i8] = bytemuck::cast_slice_mut(&mut self.arena[range]);
        let quant =
            info.quant.map_or(Quantization::None, |(scale, zero_point)| Quantization::PerTensor { scale, zero_point });
        TensorViewMut::new(&info.shape, TensorDataMut::I8(data), quant)
            .map_err(|e| LeptonError::core(format!("input `{}`", info.name), e))
    }

    fn reset(&mut self) -> Result<()> {
        let interp = &self.model.borrow_dependent().interp;
        interp.reset(&mut self.arena).map_err(|e| micro_err(&self.path, e))
    }

    fn run(&mut self) -> Result<()> {
        let program = self.model.borrow_dependent();
        let tensors = program.interp.tensors();
        for (op, step) in &program.steps {
            prepared::run(op, step, tensors, &mut self.arena, &mut self.scratch, self.kernels);
        }
        Ok(())
    }

    fn output(&self, index: usize) -> Result<TensorView<'_>> {
        let info = self
            .outputs
            .get(index)
            .ok_or_else(|| LeptonError::Tensor { tensor: format!("#{index}"), reason: "no such output".into() })?;
        let interp = &self.model.borrow_dependent().interp;
        let bytes = interp.output(&self.arena, index).map_err(|e| micro_err(&self.path, e))?;
        let data: &[i8] = bytemuck::cast_slice(bytes);
        let quant = match &self.output_channels[index] {
            Some(c) => Quantization::PerChannel { axis: c.axis, scale: &c.scales, zero_point: &c.zero_points },
            None => info
                .quant
                .map_or(Quantization::None, |(scale, zero_point)| Quantization::PerTensor { scale, zero_point }),
        };
        TensorView::new(&info.shape, TensorData::I8(data), quant)
            .map_err(|e| LeptonError::core(format!("output `{}`", info.name), e))
    }

    fn new_buffer(&self, index: usize) -> Result<MicroBuffer> {
        let info = self
            .inputs
            .get(index)
            .cloned()
            .ok_or_else(|| LeptonError::Tensor { tensor: format!("#{index}"), reason: "no such input".into() })?;
        Ok(MicroBuffer { data: vec![0; info.shape.iter().product()], info })
    }

    fn swap_input(&mut self, index: usize, buffer: &mut MicroBuffer) -> Result<()> {
        let mut view = self.input_mut(index)?;
        match view.data_mut() {
            TensorDataMut::I8(d) if d.len() == buffer.data.len() => d.copy_from_slice(&buffer.data),
            _ => {
                return Err(LeptonError::Tensor {
                    tensor: buffer.info.name.clone(),
                    reason: "buffer made for another input".into(),
                })
            }
        }
        Ok(())
    }
}
