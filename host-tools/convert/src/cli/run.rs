//! `lepton-convert run`.

use super::EngineArg;
use anyhow::{bail, Context, Result};
use clap::Args;
use lepton_convert::inputs::{self, InputKind};
use lepton_convert::model_file::{shape_text, ModelFile};
use lepton_convert::npy;
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::{AnyEngine, Engine};
use lepton_runtime::image::Image;
use lepton_runtime::pipeline::{AudioPipeline, FrameReport, Sink};
use lepton_runtime::source::{AudioSource, Resampled, WavSource};
use lepton_runtime::tensor::{Quantization, TensorData, TensorDataMut};
use lepton_runtime::{LeptonError, Model};
use serde_json::json;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

/// Run a model once on given inputs and show (or save) its outputs.
///
/// MODEL is an ONNX file, a TFLite file or a micro model (.lpm); a quantized TFLite file runs on
/// the micro engine with TFLite's arithmetic, bit for bit as LiteRT's reference kernels. Inputs
/// are `.npy` tensors of the element type the input takes (f32, i64, int8, uint8, ...; a micro
/// model takes float tensors, quantized with the input's scale, or int8/uint8 ones as they are);
/// shapes come from the tensors, so dynamic dimensions just work. A micro model also takes a
/// stream: tensors with one more leading axis than the input run once per entry, the model's
/// state (a streaming wake word's) carried from one run to the next, and the outputs gain that
/// axis. When the model carries a manifest, an input may instead be a picture
/// (.png/.jpg) or a recording (.wav, resampled to the model's rate if needed): it is
/// preprocessed as on the device and the result is printed as labels, boxes or keyword/VAD
/// events. With --output-dir, every output is written to DIR/<output name>.npy (for a
/// recording, one row per model run).
///
/// Examples:
///
///   lepton-convert run model.onnx --input x=x.npy --output-dir out/
///
///   lepton-convert run models/digits/model.onnx --input models/digits/samples/frame-00-digit-6.png
///
///   lepton-convert run okay_nabu.tflite --input features.npy --output-dir out/   (features: N x 1x3x40 int8)
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The model: ONNX, TFLite or .lpm.
    model: PathBuf,
    /// An input: NAME=FILE (FILE alone for single-input models). Repeat for several inputs.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE", required = true)]
    inputs: Vec<String>,
    /// Write each output to DIR/<output name>.npy (characters outside A-Za-z0-9._- become _).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long)]
    json: bool,
    /// Engine: `auto` runs int8 models on the micro engine when it takes them, others on tract;
    /// `tract` and `micro` force one.
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
}

/// Runs `run`.
pub fn run(args: RunArgs) -> Result<u8> {
    let file = ModelFile::read(&args.model)?;
    let named = inputs::split_named(&args.inputs, &file.inputs, "input")?;
    let files: Vec<(String, PathBuf)> = named.into_iter().map(|(n, f)| (n, PathBuf::from(f))).collect();
    let kinds = files.iter().map(|(_, f)| inputs::kind(f)).collect::<Result<Vec<_>>>()?;
    if kinds.iter().all(|k| *k == InputKind::Tensor) {
        return run_tensors(&args, &file, &files);
    }
    if files.len() != 1 {
        bail!("a picture or recording is the model's only input; give one --input");
    }
    let Some(manifest) = &file.manifest else {
        bail!(
            "{}: a picture or recording input needs the model's manifest; pack one (lepton-convert pack) or give a .npy tensor",
            args.model.display()
        );
    };
    match (kinds[0], manifest.task) {
        (InputKind::Image, t) if t.is_vision() => run_image(&args, &files[0].1),
        (InputKind::Wav, t) if t.is_audio() => run_wav(&args, &files[0].1),
        (_, t) => bail!(
            "{}: {} is a {} model, which takes {}",
            files[0].1.display(),
            args.model.display(),
            t.name(),
            if t.is_vision() {
                "pictures (.png, .jpg)"
            } else if t.is_audio() {
                "recordings (.wav)"
            } else {
                ".npy tensors"
            }
        ),
    }
}

fn summary(v: &[f32]) -> String {
    if v.is_empty() {
        return "empty".into();
    }
    let (mut min, mut max, mut sum, mut arg) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64, 0);
    for (i, &x) in v.iter().enumerate() {
        if x > max {
            arg = i;
        }
        min = min.min(x);
        max = max.max(x);
        sum += x as f64;
    }
    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.5}")).collect();
    format!(
        "min {min:.5} max {max:.5} mean {:.5} argmax {arg}  [{}{}]",
        sum / v.len() as f64,
        head.join(", "),
        if v.len() > 6 { ", ..." } else { "" }
    )
}

/// One output of a run, ready to print and save.
struct Output {
    name: String,
    shape: Vec<usize>,
    /// `FLOAT`, `INT8`, ...
    dtype: String,
    /// The quantization `(scale, zero point)` an int8 engine computed it with (its step).
    quant: Option<(f32, i32)>,
    /// Per-channel quantization instead: the axis, then each channel's scale and zero point.
    per_channel: Option<(usize, Vec<f32>, Vec<i32>)>,
    /// The tensor as stored (what --output-dir writes).
    tensor: Tensor,
    /// Real values (dequantized), when the type converts to float.
    values: Option<Vec<f32>>,
}

fn float_values(t: &Tensor) -> Option<Vec<f32>> {
    let f = t.cast_to::<f32>().ok()?;
    let v = f.to_plain_array_view::<f32>().ok()?;
    Some(v.iter().copied().collect())
}

fn run_tensors(args: &RunArgs, file: &ModelFile, files: &[(String, PathBuf)]) -> Result<u8> {
    let tensors = inputs::read_tensors(file, files)?;
    // A stream (one more leading axis than a micro model's input) runs the input's own shape.
    let one_run = |n: &String, t: &Tensor| -> Vec<usize> {
        let rank = file.inputs.iter().find(|s| &s.name == n).and_then(|s| s.dims.as_ref()).map(Vec::len);
        match rank {
            Some(r) if file.is_lpm() && t.rank() == r + 1 => t.shape()[1..].to_vec(),
            _ => t.shape().to_vec(),
        }
    };
    let facts: Vec<InputFact> = tensors
        .iter()
        .map(|(n, t)| InputFact { name: n.clone(), shape: one_run(n, t), dtype: Some(t.datum_type()) })
        .collect();
    let mut engine = file.engine(&facts, args.engine.into())?;
    let t0 = std::time::Instant::now();
    let outputs: Vec<Output> = match &mut engine {
        AnyEngine::Tract(tract) => {
            let names: Vec<String> = tract.outputs().iter().map(|o| o.name.clone()).collect();
            let out = tract.run_tensors(tensors.into_iter().map(|(_, t)| t).collect())?;
            names
                .into_iter()
                .zip(out)
                .map(|(name, tensor)| Output {
                    name,
                    shape: tensor.shape().to_vec(),
                    dtype: inputs::onnx_name(tensor.datum_type()).to_string(),
                    quant: None,
                    per_channel: None,
                    values: float_values(&tensor),
                    tensor,
                })
                .collect()
        }
        AnyEngine::Micro(micro) => run_micro(micro, &tensors, file)?,
    };
    let elapsed = t0.elapsed();
    report(args, &engine, elapsed, &outputs)
}

/// Fills a micro engine's inputs (float tensors quantized with the input's scale, int8 or uint8
/// as they are), runs it, and returns the outputs: as stored for a `.lpm` or a TFLite file (int8,
/// or uint8 where TFLite declares it), dequantized to float for an ONNX model (whose outputs are
/// float after their DequantizeLinear). Inputs with one more leading axis than the model's are
/// a stream: one run per entry, in order, the model's state carried from one to the next; the
/// outputs gain that axis.
fn run_micro(
    engine: &mut lepton_runtime::engine::micro::host::MicroEngine,
    tensors: &[(String, Tensor)],
    file: &ModelFile,
) -> Result<Vec<Output>> {
    let lpm = file.is_lpm();
    let infos = engine.inputs().to_vec();
    let mut steps = None;
    for ((name, t), info) in tensors.iter().zip(&infos) {
        let s = if t.rank() == info.shape.len() + 1 { t.shape()[0] } else { 0 };
        if steps.is_some_and(|k| k != s) {
            bail!("input `{name}`: every input is a stream of the same length, or none is");
        }
        steps = Some(s);
    }
    let stream = steps.unwrap_or(0);
    let out_infos = engine.outputs().to_vec();
    let uint8_out: Vec<bool> =
        out_infos.iter().map(|o| file.outputs.iter().any(|s| s.name == o.name && s.elem_type == "UINT8")).collect();
    let mut stored: Vec<Vec<u8>> = vec![vec![]; out_infos.len()];
    let mut reals: Vec<Vec<f32>> = vec![vec![]; out_infos.len()];
    let mut per_channel = vec![None; out_infos.len()];
    for step in 0..stream.max(1) {
        for (i, (name, t)) in tensors.iter().enumerate() {
            let t = if stream > 0 { t.slice(0, step, step + 1)?.into_shape(&infos[i].shape)? } else { t.clone() };
            let mut view = engine.input_mut(i)?;
            match (t.datum_type(), view.data_mut()) {
                (DatumType::I8, TensorDataMut::I8(d)) => {
                    d.iter_mut().zip(t.to_plain_array_view::<i8>()?.iter()).for_each(|(d, s)| *d = *s)
                }
                // uint8 (TFLite's legacy quantization) is held as int8 with the zero point moved by 128.
                (DatumType::U8, TensorDataMut::I8(d)) => {
                    d.iter_mut().zip(t.to_plain_array_view::<u8>()?.iter()).for_each(|(d, s)| *d = (*s ^ 0x80) as i8)
                }
                (DatumType::I8 | DatumType::U8, _) => bail!("input `{name}`: micro model inputs are int8"),
                _ => {
                    let f = t.cast_to::<f32>()?;
                    let v: Vec<f32> = f.to_plain_array_view::<f32>()?.iter().copied().collect();
                    view.quantize_from(&v).map_err(|e| anyhow::anyhow!("input `{name}`: {e}"))?;
                }
            }
        }
        engine.run()?;
        for (i, info) in out_infos.iter().enumerate() {
            let out = engine.output(i)?;
            let mut real = vec![0f32; out.len()];
            out.dequantize_into(&mut real).map_err(|e| anyhow::anyhow!("output `{}`: {e}", info.name))?;
            reals[i].extend_from_slice(&real);
            if let TensorData::I8(d) = out.data() {
                stored[i].extend(d.iter().map(|&v| if uint8_out[i] { v as u8 ^ 0x80 } else { v as u8 }));
            }
            if let Quantization::PerChannel { axis, scale, zero_point } = out.quantization() {
                per_channel[i] = Some((axis, scale.to_vec(), zero_point.to_vec()));
            }
        }
    }
    let mut outputs = vec![];
    for (i, info) in out_infos.into_iter().enumerate() {
        let shape: Vec<usize> =
            if stream > 0 { std::iter::once(stream).chain(info.shape.clone()).collect() } else { info.shape.clone() };
        let tensor = match (lpm, uint8_out[i]) {
            (true, true) => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), stored[i].clone())?.into_tensor(),
            (true, false) => tract_ndarray::ArrayD::from_shape_vec(
                shape.clone(),
                stored[i].iter().map(|&v| v as i8).collect::<Vec<i8>>(),
            )?
            .into_tensor(),
            _ => tract_ndarray::ArrayD::from_shape_vec(shape.clone(), reals[i].clone())?.into_tensor(),
        };
        let dtype = match (lpm, uint8_out[i]) {
            (true, true) => "UINT8",
            (true, false) => "INT8",
            _ => "FLOAT",
        };
        outputs.push(Output {
            dtype: dtype.into(),
            quant: info.quant.map(|(s, z)| (s, if uint8_out[i] { z + 128 } else { z })),
            per_channel: per_channel[i].take(),
            name: info.name,
            shape,
            values: Some(reals[i].clone()),
            tensor,
        });
    }
    Ok(outputs)
}

/// Prints (and saves) the outputs of a tensor run.
fn report(args: &RunArgs, engine: &AnyEngine, elapsed: std::time::Duration, outputs: &[Output]) -> Result<u8> {
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut rows = vec![];
    for o in outputs {
        let file = match &args.output_dir {
            Some(dir) => {
                let p = dir.join(npy::file_name(&o.name));
                npy::write(&p, &o.tensor)?;
                Some(p)
            }
            None => None,
        };
        if args.json {
            let small = |v: &Vec<f32>| (v.len() <= 64).then(|| v.clone());
            rows.push(json!({
                "name": o.name, "shape": o.shape, "dtype": o.dtype,
                "scale": o.quant.map(|q| q.0), "zero_point": o.quant.map(|q| q.1),
                "channel_axis": o.per_channel.as_ref().map(|c| c.0),
                "scales": o.per_channel.as_ref().map(|c| c.1.clone()),
                "zero_points": o.per_channel.as_ref().map(|c| c.2.clone()),
                "file": file, "values": o.values.as_ref().and_then(small),
            }));
        } else {
            let quant = match (&o.per_channel, o.quant) {
                (Some((axis, s, z)), _) => {
                    format!(" (int8 quantized per channel along axis {axis}: scales {s:?}, zero points {z:?})")
                }
                (None, Some((s, z))) => format!(" ({} scale {s}, zero point {z})", o.dtype.to_lowercase()),
                (None, None) => String::new(),
            };
            let values = o.values.as_deref().map_or(String::new(), summary);
            println!("{}  {} {}{quant}  {values}", o.name, shape_text(&o.shape), o.dtype);
            if let Some(f) = file {
                println!("  written to {}", f.display());
            }
        }
    }
    let ms = elapsed.as_secs_f64() * 1e3;
    if args.json {
        let j = json!({
            "model": args.model, "engine": engine.name(), "kernels": engine.kernels().map(|k| k.name()),
            "latency_ms": ms, "outputs": rows,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("({}, {ms:.3} ms)", engine.describe());
    }
    Ok(0)
}

fn run_image(args: &RunArgs, file: &Path) -> Result<u8> {
    let model = Model::load_with(&args.model, args.engine.into())?;
    let image = Image::open(file)?;
    let p = model.predict(std::slice::from_ref(&image))?.remove(0);
    let written = match &args.output_dir {
        Some(dir) => {
            let outputs = model.last_outputs()?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut written = vec![];
            for (info, values) in outputs {
                let path = dir.join(npy::file_name(&info.name));
                npy::write(&path, &tract_ndarray::ArrayD::from_shape_vec(info.shape.clone(), values)?.into_tensor())?;
                written.push(path);
            }
            written
        }
        None => vec![],
    };
    let (engine, kernels) = model.engine_name();
    if args.json {
        let results: Vec<_> = p
            .results
            .iter()
            .map(|r| json!({"label": r.label, "class": r.class, "score": r.score, "box": r.bbox.map(|b| [b.x0, b.y0, b.x1, b.y1])}))
            .collect();
        let j = json!({
            "input": file, "engine": engine, "kernels": kernels.map(|k| k.name()),
            "latency_ms": p.latency.as_secs_f64() * 1e3, "results": results, "files": written,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{}: {p}  ({:.3} ms)", image.name, p.latency.as_secs_f64() * 1e3);
        for w in &written {
            println!("  raw output written to {} (dequantized float, before postprocessing)", w.display());
        }
    }
    Ok(0)
}

/// Collects audio results with their time in the recording.
struct Collect {
    started_ms: Option<u64>,
    lines: Vec<serde_json::Value>,
    labels: Vec<String>,
}

impl Sink for Collect {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        // Times from the start of the recording (a report's clock is the audio consumed).
        let start = *self.started_ms.get_or_insert(r.meta.timestamp_ms.saturating_sub(r.clock.as_millis() as u64));
        let label = |c: u16| self.labels.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
        for d in r.detections {
            self.lines.push(json!({"t_ms": r.meta.timestamp_ms - start, "kind": "keyword", "label": label(d.class), "score": d.score}));
        }
        for e in r.events {
            self.lines.push(json!({"t_ms": e.timestamp_ms.saturating_sub(start), "kind": e.kind.name(), "label": label(e.class), "score": e.score}));
        }
        Ok(())
    }
}

fn run_wav(args: &RunArgs, file: &Path) -> Result<u8> {
    let model = Model::load_with(&args.model, args.engine.into())?;
    let manifest = model.manifest().cloned().context("checked by the caller")?;
    let rate = manifest.audio.as_ref().map_or(16000, |a| a.sample_rate);
    let (engine_name, kernels) = model.engine_name();
    let engine = model.into_engine()?;
    let wav = WavSource::open(file)?;
    let from = wav.sample_rate();
    let source = Resampled::new(wav, rate)?;
    if from != rate {
        eprintln!("{}: resampled from {from} Hz to the model's {rate} Hz", file.display());
    }
    let sink = Collect { started_ms: None, lines: vec![], labels: manifest.labels.clone() };
    let mut p = AudioPipeline::new(source, engine, sink, &manifest, &args.model)?;
    // Step by step, to keep each run's raw outputs when they are to be written.
    let mut rows: Vec<Vec<Vec<f32>>> = vec![];
    let mut runs = 0;
    while p.step()? {
        if args.output_dir.is_some() && p.stats().runs.frames_processed > runs {
            runs = p.stats().runs.frames_processed;
            let e = p.engine();
            let mut run = vec![];
            for i in 0..e.outputs().len() {
                let view = e.output(i)?;
                let mut v = vec![0f32; view.len()];
                view.dequantize_into(&mut v).map_err(|e| anyhow::anyhow!("{e}"))?;
                run.push(v);
            }
            rows.push(run);
        }
    }
    p.finish()?;
    let stats = p.stats().clone();
    let mut written = vec![];
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, info) in p.engine().outputs().iter().enumerate() {
            let mut shape = vec![rows.len()];
            shape.extend_from_slice(&info.shape);
            let data: Vec<f32> = rows.iter().flat_map(|r| r[i].iter().copied()).collect();
            let path = dir.join(npy::file_name(&info.name));
            npy::write(&path, &tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into_tensor())?;
            written.push(path);
        }
    }
    let lines = &p.sink().lines;
    if args.json {
        let j = json!({
            "input": file, "engine": engine_name, "kernels": kernels.map(|k| k.name()),
            "runs": stats.runs.frames_processed, "events": lines, "files": written,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        for l in lines {
            println!(
                "{:>8} ms  {:<8} {} {:.3}",
                l["t_ms"],
                l["kind"].as_str().unwrap_or(""),
                l["label"].as_str().unwrap_or(""),
                l["score"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "{} model runs over {:.2} s of audio, {} results",
            stats.runs.frames_processed,
            stats.samples as f64 / rate as f64,
            lines.len()
        );
        for w in &written {
            println!("  raw outputs written to {} (one row per model run, dequantized float)", w.display());
        }
    }
    Ok(0)
}
