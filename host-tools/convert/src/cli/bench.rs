//! `lepton-convert bench`.

use super::EngineArg;
use anyhow::{Context, Result};
use clap::Args;
use lepton_convert::inputs;
use lepton_convert::model_file::ModelFile;
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::{AnyEngine, Engine};
use lepton_runtime::tensor::TensorDataMut;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

/// Measure load time, inference latency and peak memory of a model.
///
/// MODEL is an ONNX file or a micro model (.lpm). Inputs come from `--input NAME=FILE.npy`, or
/// are seeded random tensors of the shapes given by `--shape NAME=1x3x224x224`, the manifest's
/// input size, or the shapes the model declares (a symbolic batch dimension taken as 1); a shape
/// must fit the model's declared dimensions, as `run`'s tensors must. Latency is measured over
/// `--runs` runs after `--warmup` runs, on the same inputs. The engine and, for the micro
/// engine, the kernel set in use are reported (`LEPTON_KERNELS=reference` forces the portable
/// kernels, to see what a CPU without vector extensions gets).
///
/// Example: lepton-convert bench model.onnx --shape x=1x3x48x192 --runs 200 --json
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model: ONNX or .lpm.
    model: PathBuf,
    /// An input tensor: NAME=FILE.npy.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// An input shape for random data: NAME=DIMS, e.g. x=1x3x224x224.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Timed runs.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Threads for matrix products (1: single-threaded).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the figures as JSON (engine, kernels, load_ms, p50_ms, p90_ms, min_ms, mean_ms,
    /// runs, peak_rss_mb; arena_bytes on the micro engine).
    #[arg(long)]
    json: bool,
    /// Micro engine: also print where the time goes, per op kind.
    #[arg(long)]
    profile: bool,
    /// Engine: `auto` runs quantized models on the int8 micro engine when they lower completely,
    /// others on tract; `tract` and `micro` force one (a .lpm runs on the micro engine only).
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `bench`.
pub fn run(args: BenchArgs) -> Result<u8> {
    lepton_runtime::engine::set_threads(args.threads);
    let file = ModelFile::read(&args.model)?;
    let specs = &file.inputs;
    let files: Vec<(String, PathBuf)> =
        inputs::split_named(&args.inputs, specs, "input")?.into_iter().map(|(n, f)| (n, PathBuf::from(f))).collect();
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for (n, d) in inputs::split_named(&args.shapes, specs, "shape")? {
        let dims = inputs::parse_dims(&d)?;
        let spec = specs.iter().find(|s| s.name == n).context("split_named names an input")?;
        inputs::check_shape(spec, &dims, Path::new("--shape"))?;
        shapes.insert(n, dims);
    }
    if let Some(m) = &file.manifest {
        if let (Some(shape), Some(first)) = (m.image_input_shape(), specs.first()) {
            let name = m.input.as_ref().and_then(|i| i.name.clone()).unwrap_or_else(|| first.name.clone());
            shapes.entry(name).or_insert_with(|| shape.to_vec());
        }
    }
    let given = inputs::read_tensors_partial(&file, &files)?;
    let mut tensors: Vec<(String, Tensor)> = vec![];
    for (i, spec) in specs.iter().enumerate() {
        if let Some((_, t)) = given.iter().find(|(n, _)| n == &spec.name) {
            tensors.push((spec.name.clone(), t.clone()));
            continue;
        }
        let shape = shapes.get(&spec.name).cloned().or_else(|| spec.concrete_shape()).with_context(|| {
            format!(
                "input `{}` has dynamic shape {}; give --shape {}=DIMS or --input {}=FILE.npy",
                spec.name,
                spec.shape_text(),
                spec.name,
                spec.name
            )
        })?;
        // A micro model's int8 inputs get float data spread over their quantized range.
        let dt =
            if file.is_lpm() { DatumType::F32 } else { inputs::datum_type(&spec.elem_type).unwrap_or(DatumType::F32) };
        tensors.push((spec.name.clone(), inputs::random_tensor(dt, &shape, i as u64 + 1)?));
    }
    let facts: Vec<InputFact> = tensors
        .iter()
        .map(|(n, t)| InputFact { name: n.clone(), shape: t.shape().to_vec(), dtype: Some(t.datum_type()) })
        .collect();
    let t0 = Instant::now();
    let mut engine = file.engine(&facts, args.engine.into())?;
    let load = t0.elapsed();
    let values: Vec<Tensor> = tensors.into_iter().map(|(_, t)| t).collect();
    // Fill the engine's own input buffers once (quantized for an int8 engine), then time runs.
    let in_place = engine.inputs().iter().all(|i| i.dtype.is_some());
    if in_place {
        for (i, v) in values.iter().enumerate() {
            let mut view = engine.input_mut(i)?;
            if let (TensorDataMut::F32(d), Ok(src)) = (view.data_mut(), v.to_plain_array_view::<f32>()) {
                d.iter_mut().zip(src.iter()).for_each(|(a, b)| *a = *b);
                continue;
            }
            let f: Vec<f32> = v.cast_to::<f32>()?.to_plain_array_view::<f32>()?.iter().copied().collect();
            view.quantize_from(&f).map_err(|e| anyhow::anyhow!("input {i}: {e}"))?;
        }
    }
    let run_once = |engine: &mut AnyEngine| -> Result<()> {
        match engine {
            AnyEngine::Tract(t) if !in_place => {
                t.run_tensors(values.clone())?;
            }
            e => e.run()?,
        }
        Ok(())
    };
    for _ in 0..args.warmup {
        run_once(&mut engine)?;
    }
    let mut times: Vec<Duration> = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        let t = Instant::now();
        run_once(&mut engine)?;
        times.push(t.elapsed());
    }
    if args.profile {
        match &mut engine {
            AnyEngine::Micro(m) => print_profile(m, args.runs),
            AnyEngine::Tract(_) => eprintln!("--profile: per-op times are reported for the micro engine only"),
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let rss = peak_rss_mb();
    let arena = match &engine {
        AnyEngine::Micro(m) => Some(m.arena_bytes()),
        AnyEngine::Tract(_) => None,
    };
    if args.json {
        let j = json!({
            "model": args.model, "engine": engine.name(), "kernels": engine.kernels().map(|k| k.name()),
            "threads": args.threads, "arena_bytes": arena,
            "load_ms": ms(load), "p50_ms": ms(pick(0.5)), "p90_ms": ms(pick(0.9)), "min_ms": ms(times[0]),
            "mean_ms": ms(mean), "runs": times.len(), "peak_rss_mb": rss,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "{} ({} engine, {} thread{}{})",
            args.model.display(),
            engine.describe(),
            args.threads,
            if args.threads == 1 { "" } else { "s" },
            arena.map_or(String::new(), |a| format!(", arena {a} bytes"))
        );
        println!("  load      {:.1} ms", ms(load));
        println!(
            "  inference p50 {:.3} ms  p90 {:.3} ms  min {:.3} ms  mean {:.3} ms  ({} runs)",
            ms(pick(0.5)),
            ms(pick(0.9)),
            ms(times[0]),
            ms(mean),
            times.len()
        );
        if let Some(r) = rss {
            println!("  peak RSS  {r:.1} MiB");
        }
    }
    Ok(0)
}

/// Prints where the micro engine's time goes, per op kind (mean per inference).
fn print_profile(engine: &mut lepton_runtime::engine::micro::host::MicroEngine, runs: usize) {
    let mut total: std::collections::BTreeMap<(&str, &str), (Duration, usize)> = Default::default();
    let runs = runs.max(1);
    for _ in 0..runs {
        for (kind, how, d) in engine.run_profiled() {
            let e = total.entry((kind, how)).or_default();
            e.0 += d;
            e.1 += 1;
        }
    }
    let mut rows: Vec<_> = total.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    println!("per op kind (mean per inference):");
    for ((kind, how), (d, n)) in rows {
        println!("  {kind:<15} {how:<10} {:>3} ops  {:.3} ms", n / runs, (d / runs as u32).as_secs_f64() * 1e3);
    }
}
