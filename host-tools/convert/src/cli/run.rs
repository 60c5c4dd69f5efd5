//! `lepton-convert run`.

use anyhow::{bail, Context, Result};
use clap::Args;
use lepton_convert::inputs::{self, InputKind};
use lepton_convert::npy;
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::TractEngine;
use lepton_runtime::image::Image;
use lepton_runtime::pipeline::{AudioPipeline, FrameReport, Sink};
use lepton_runtime::source::WavSource;
use lepton_runtime::{onnx, LeptonError, Model};
use serde_json::json;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

/// Run a model once on given inputs and show (or save) its outputs.
///
/// Inputs are `.npy` tensors of the element type the input takes (f32, i64, int8, uint8, ...);
/// shapes come from the tensors, so dynamic dimensions just work. When the model carries a
/// manifest, an input may instead be a picture (.png/.jpg) or a recording (.wav): it is
/// preprocessed as on the device and the result is printed as labels, boxes or keyword/VAD events.
///
/// Examples:
///   lepton-convert run model.onnx --input x=x.npy --output-dir out/
///   lepton-convert run models/digits/model.onnx --input models/digits/samples/frame-00-digit-6.png
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The ONNX model.
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
}

/// Runs `run`.
pub fn run(args: RunArgs) -> Result<u8> {
    if args.model.extension().is_some_and(|e| e == "lpm") {
        return run_micro(&args);
    }
    let proto = onnx::read(&args.model)?;
    let (specs, _) = onnx::io_specs(&proto);
    let named = inputs::split_named(&args.inputs, &specs, "input")?;
    let files: Vec<(String, PathBuf)> = named.into_iter().map(|(n, f)| (n, PathBuf::from(f))).collect();
    let kinds = files.iter().map(|(_, f)| inputs::kind(f)).collect::<Result<Vec<_>>>()?;
    if kinds.iter().all(|k| *k == InputKind::Tensor) {
        return run_tensors(&args, &proto, &files);
    }
    if files.len() != 1 {
        bail!("a picture or recording is the model's only input; give one --input");
    }
    match kinds[0] {
        InputKind::Image => run_image(&args, &files[0].1),
        InputKind::Wav => run_wav(&args, &files[0].1),
        InputKind::Tensor => unreachable!("handled above"),
    }
}

fn summary(t: &Tensor) -> String {
    let Ok(f) = t.cast_to::<f32>() else {
        return String::new();
    };
    let Ok(v) = f.to_plain_array_view::<f32>() else {
        return String::new();
    };
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

fn run_tensors(args: &RunArgs, proto: &onnx::ModelProto, files: &[(String, PathBuf)]) -> Result<u8> {
    let tensors = inputs::read_tensors(proto, files)?;
    let facts: Vec<InputFact> = tensors
        .iter()
        .map(|(n, t)| InputFact { name: n.clone(), shape: t.shape().to_vec(), dtype: Some(t.datum_type()) })
        .collect();
    let mut engine = TractEngine::from_proto(proto, &args.model, &facts)?;
    let names: Vec<String> = lepton_runtime::engine::Engine::outputs(&engine).iter().map(|o| o.name.clone()).collect();
    let outputs = engine.run_tensors(tensors.into_iter().map(|(_, t)| t).collect())?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let mut report = vec![];
    for (name, t) in names.iter().zip(&outputs) {
        let file = match &args.output_dir {
            Some(dir) => {
                let p = dir.join(npy::file_name(name));
                npy::write(&p, t)?;
                Some(p)
            }
            None => None,
        };
        if args.json {
            let values = if t.len() <= 64 {
                t.cast_to::<f32>()
                    .ok()
                    .and_then(|f| f.to_plain_array_view::<f32>().ok().map(|v| v.iter().copied().collect::<Vec<_>>()))
            } else {
                None
            };
            report.push(json!({"name": name, "shape": t.shape(), "dtype": format!("{:?}", t.datum_type()), "file": file, "values": values}));
        } else {
            println!("{name}  {:?} {:?}  {}", t.shape(), t.datum_type(), summary(t));
            if let Some(f) = file {
                println!("  written to {}", f.display());
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "model": args.model, "outputs": report }))?);
    }
    Ok(0)
}

fn run_image(args: &RunArgs, file: &Path) -> Result<u8> {
    let model = Model::load(&args.model)?;
    if model.manifest().is_none() {
        bail!(
            "{}: a picture input needs the model's manifest; pack one (lepton-convert pack) or give a .npy tensor",
            args.model.display()
        );
    }
    let image = Image::open(file)?;
    let p = model.predict(std::slice::from_ref(&image))?.remove(0);
    if args.json {
        let results: Vec<_> = p
            .results
            .iter()
            .map(|r| json!({"label": r.label, "class": r.class, "score": r.score, "box": r.bbox.map(|b| [b.x0, b.y0, b.x1, b.y1])}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"input": file, "latency_ms": p.latency.as_secs_f64() * 1e3, "results": results})
            )?
        );
    } else {
        println!("{}: {p}  ({:.3} ms)", image.name, p.latency.as_secs_f64() * 1e3);
    }
    Ok(0)
}

/// Collects audio results with their stream time.
struct Collect {
    started_ms: Option<u64>,
    lines: Vec<serde_json::Value>,
    labels: Vec<String>,
}

impl Sink for Collect {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        let start = *self.started_ms.get_or_insert(r.meta.timestamp_ms);
        let label = |c: u16| self.labels.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
        for d in r.detections {
            self.lines.push(json!({"t_ms": r.meta.timestamp_ms - start, "kind": "keyword", "label": label(d.class), "score": d.score}));
        }
        for e in r.events {
            self.lines.push(json!({"t_ms": e.timestamp_ms.saturating_sub(start), "kind": format!("{:?}", e.kind).to_lowercase(), "label": label(e.class), "score": e.score}));
        }
        Ok(())
    }
}

fn run_wav(args: &RunArgs, file: &Path) -> Result<u8> {
    let model = Model::load(&args.model)?;
    let Some(manifest) = model.manifest().cloned() else {
        bail!("{}: a WAV input needs the model's manifest (task keyword or vad); pack one", args.model.display());
    };
    let engine = model.into_engine()?;
    let source = WavSource::open(file)?;
    let sink = Collect { started_ms: None, lines: vec![], labels: manifest.labels.clone() };
    let mut p = AudioPipeline::new(source, engine, sink, &manifest, &args.model)?;
    let stats = p.run()?.clone();
    let lines = &p.sink().lines;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"input": file, "runs": stats.runs.frames_processed, "events": lines})
            )?
        );
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
            stats.samples as f64 / manifest.audio.as_ref().map_or(16000, |a| a.sample_rate) as f64,
            lines.len()
        );
    }
    Ok(0)
}

/// A `.lpm` model: inputs are `.npy` tensors, float (quantized here with the input's scale) or
/// int8 (used as they are); outputs are written as stored (int8) and summarized dequantized.
fn run_micro(args: &RunArgs) -> Result<u8> {
    use lepton_runtime::engine::micro::host::MicroEngine;
    use lepton_runtime::engine::Engine;
    let bytes = std::fs::read(&args.model).with_context(|| format!("{}", args.model.display()))?;
    let mut engine = MicroEngine::from_bytes(bytes, &args.model)?;
    let specs: Vec<onnx::TensorSpec> = engine
        .inputs()
        .iter()
        .map(|i| onnx::TensorSpec {
            name: i.name.clone(),
            elem_type: "UNDEFINED".into(),
            dims: Some(i.shape.iter().map(|&d| onnx::Dim::Fixed(d)).collect()),
        })
        .collect();
    let named = inputs::split_named(&args.inputs, &specs, "input")?;
    for (i, spec) in specs.iter().enumerate() {
        let (_, file) = named
            .iter()
            .find(|(n, _)| n == &spec.name)
            .with_context(|| format!("input `{}` is not given", spec.name))?;
        let t = npy::read(Path::new(file))?;
        inputs::check(spec, &t, Path::new(file))?;
        let mut view = engine.input_mut(i)?;
        if t.datum_type() == DatumType::I8 {
            let v: Vec<i8> = t.to_plain_array_view::<i8>()?.iter().copied().collect();
            match view.data_mut() {
                lepton_runtime::tensor::TensorDataMut::I8(d) => d.copy_from_slice(&v),
                _ => bail!("micro model inputs are int8"),
            }
        } else {
            let f = t.cast_to::<f32>()?;
            let v: Vec<f32> = f.to_plain_array_view::<f32>()?.iter().copied().collect();
            view.quantize_from(&v).map_err(|e| anyhow::anyhow!("{}: {e}", file))?;
        }
    }
    let t0 = std::time::Instant::now();
    engine.run()?;
    let elapsed = t0.elapsed();
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let mut report = vec![];
    for (i, info) in engine.outputs().to_vec().iter().enumerate() {
        let out = engine.output(i)?;
        let mut real = vec![0f32; out.len()];
        out.dequantize_into(&mut real).map_err(|e| anyhow::anyhow!("{e}"))?;
        let stored: Vec<i8> = match out.data() {
            lepton_runtime::tensor::TensorData::I8(d) => d.to_vec(),
            _ => vec![],
        };
        let t = tract_ndarray::ArrayD::from_shape_vec(info.shape.clone(), real.clone())?.into_tensor();
        let file = match &args.output_dir {
            Some(dir) => {
                let p = dir.join(npy::file_name(&info.name));
                npy::write(
                    &p,
                    &tract_ndarray::ArrayD::from_shape_vec(info.shape.clone(), stored.clone())?.into_tensor(),
                )?;
                Some(p)
            }
            None => None,
        };
        if args.json {
            report.push(json!({"name": info.name, "shape": info.shape, "stored": if stored.len() <= 64 { Some(&stored) } else { None }, "values": if real.len() <= 64 { Some(&real) } else { None }, "file": file}));
        } else {
            println!("{}  {:?} int8 (scale {:?})  {}", info.name, info.shape, info.quant, summary(&t));
            if let Some(f) = file {
                println!("  written to {} (int8 as stored)", f.display());
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"model": args.model, "engine": "micro", "latency_ms": elapsed.as_secs_f64() * 1e3, "outputs": report})
            )?
        );
    } else {
        println!("(micro engine, {:.3} ms)", elapsed.as_secs_f64() * 1e3);
    }
    Ok(0)
}
