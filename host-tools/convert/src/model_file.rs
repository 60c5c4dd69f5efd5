//! A model file as the verbs read it: ONNX (the decoded protobuf) or a Lepton micro model
//! (`.lpm`), with its declared inputs and outputs and its manifest, read once. Every verb that
//! takes a model takes both kinds through this type.

use anyhow::{bail, Result};
use lepton_runtime::engine::micro::format::MAGIC;
use lepton_runtime::engine::micro::host::{onnx_shape, MicroEngine, MAX_TENSORS};
use lepton_runtime::engine::micro::Interpreter;
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::{AnyEngine, EngineChoice};
use lepton_runtime::manifest::Manifest;
use lepton_runtime::model::quantized_tflite;
use lepton_runtime::onnx::{Dim, ModelProto, OnnxModel, TensorSpec};
use lepton_runtime::wake_word;
use lepton_runtime::LeptonError;
use std::path::{Path, PathBuf};

/// What the file holds.
#[derive(Debug)]
pub enum Format {
    /// An ONNX model, described once.
    Onnx(Box<OnnxModel>),
    /// A Lepton micro model (its bytes).
    Lpm(Vec<u8>),
}

/// A model file with its declared inputs, outputs and manifest.
#[derive(Debug)]
pub struct ModelFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents.
    pub format: Format,
    /// Declared inputs (initializers excluded). A micro model's are fixed int8 tensors.
    pub inputs: Vec<TensorSpec>,
    /// Declared outputs.
    pub outputs: Vec<TensorSpec>,
    /// The embedded manifest, completed from the model and checked against it.
    pub manifest: Option<Manifest>,
    /// The micro model was compiled on read from a quantized TFLite file.
    pub from_tflite: bool,
}

/// A TFLite file's input and output element types (`INT8`, `UINT8`...), in order.
fn io_types(bytes: &[u8], path: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let model = lepton_tflite::TfliteModel::read(bytes, path)
        .map_err(|e| LeptonError::Model { path: path.to_path_buf(), reason: e.reason })?;
    let g = model.main();
    let types = |ids: &[usize]| ids.iter().map(|&i| g.tensors[i].element.name().to_string()).collect::<Vec<_>>();
    Ok((types(&g.inputs), types(&g.outputs)))
}

impl ModelFile {
    /// Reads an ONNX, TFLite, microWakeWord JSON or `.lpm` file (told apart by content, not by
    /// name). A quantized TFLite file (or the one a wake-word JSON names) is compiled for the micro
    /// engine on read, and is a micro model from then on, its inputs and outputs typed as TFLite
    /// types them (int8 or uint8).
    pub fn read(path: &Path) -> Result<Self> {
        let mut bytes = std::fs::read(path).map_err(|e| LeptonError::io(path, e))?;
        let mut tflite_types = None;
        if let Some(lpm) = quantized_tflite(&bytes, path, EngineChoice::Auto)? {
            tflite_types = Some(io_types(&bytes, path)?);
            bytes = lpm;
        } else if wake_word::is_json(&bytes) {
            // A microWakeWord description: the .tflite beside it, with the wake-word manifest.
            let (_, tflite) = wake_word::read(&bytes, path)?;
            let lpm = wake_word::compile(&bytes, path)?;
            tflite_types = Some(io_types(&std::fs::read(&tflite).map_err(|e| LeptonError::io(&tflite, e))?, &tflite)?);
            bytes = lpm;
        }
        if !bytes.starts_with(&MAGIC) {
            let onnx = OnnxModel::decode(&bytes, path)?;
            return Ok(ModelFile {
                path: path.to_path_buf(),
                inputs: onnx.inputs.clone(),
                outputs: onnx.outputs.clone(),
                manifest: onnx.manifest.clone(),
                format: Format::Onnx(Box::new(onnx)),
                from_tflite: false,
            });
        }
        let interp = Interpreter::<MAX_TENSORS>::new(&bytes)
            .map_err(|e| LeptonError::Model { path: path.to_path_buf(), reason: e.to_string() })?;
        let spec = |t: &lepton_runtime::engine::micro::format::TensorDesc<'_>| TensorSpec {
            name: t.name.to_string(),
            elem_type: "INT8".into(),
            dims: Some(onnx_shape(t).into_iter().map(Dim::Fixed).collect()),
        };
        let ids = |ids: &[u16]| ids.iter().map(|&i| spec(&interp.tensors()[i as usize])).collect::<Vec<_>>();
        let (mut inputs, mut outputs) = (ids(&interp.header().inputs), ids(&interp.header().outputs));
        let from_tflite = tflite_types.is_some();
        if let Some((ti, to)) = tflite_types {
            for (spec, t) in inputs.iter_mut().zip(ti).chain(outputs.iter_mut().zip(to)) {
                spec.elem_type = t;
            }
        }
        let text = interp.header().manifest;
        let manifest = if text.is_empty() {
            None
        } else {
            Some(Manifest::from_toml(text, path)?.resolve(&inputs, &outputs, path)?)
        };
        drop(interp);
        Ok(ModelFile { path: path.to_path_buf(), format: Format::Lpm(bytes), inputs, outputs, manifest, from_tflite })
    }

    /// True for a `.lpm` micro model.
    pub fn is_lpm(&self) -> bool {
        matches!(self.format, Format::Lpm(_))
    }

    /// The ONNX model, if it is one.
    pub fn proto(&self) -> Option<&ModelProto> {
        match &self.format {
            Format::Onnx(p) => Some(&p.proto),
            Format::Lpm(_) => None,
        }
    }

    /// An engine for the given input shapes: an ONNX model on the engine `choice` picks, a
    /// micro model on the micro engine (its shapes are fixed; `tract` is refused).
    pub fn engine(&self, facts: &[InputFact], choice: EngineChoice) -> Result<AnyEngine> {
        match &self.format {
            Format::Onnx(onnx) => Ok(AnyEngine::from_onnx(onnx, &self.path, facts, choice)?),
            Format::Lpm(bytes) => {
                if choice == EngineChoice::Tract && self.from_tflite {
                    bail!(
                        "{}: a quantized TFLite model runs on the micro engine (TFLite's integer arithmetic, bit for bit); tract takes float TFLite models only: use --engine micro (or auto)",
                        self.path.display()
                    );
                }
                if choice == EngineChoice::Tract {
                    bail!(
                        "{}: a micro model (.lpm) runs on the micro engine only; use --engine micro (or auto), or give the ONNX file to run it on tract",
                        self.path.display()
                    );
                }
                for f in facts {
                    let declared = self.inputs.iter().find(|s| s.name == f.name);
                    let fixed = declared
                        .and_then(|s| s.dims.as_ref())
                        .map(|d| d.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 0 }).collect::<Vec<_>>());
                    if fixed.as_deref() != Some(f.shape.as_slice()) {
                        bail!(
                            "{}: input `{}` of this micro model is {}, fixed when it was compiled; {} was asked",
                            self.path.display(),
                            f.name,
                            declared.map_or("(none)".to_string(), TensorSpec::shape_text),
                            shape_text(&f.shape)
                        );
                    }
                }
                Ok(AnyEngine::Micro(MicroEngine::from_bytes(bytes.clone(), &self.path)?))
            }
        }
    }
}

/// `1x3x224x224`.
pub fn shape_text(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}
