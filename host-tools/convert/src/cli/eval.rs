//! `lepton-convert eval`.

use anyhow::Result;
use clap::Args;
use lepton_convert::eval::{dataset, evaluate, failure_line, plot, Classifier};
use lepton_convert::eval_detect::{self, is_detection_dataset};
use lepton_runtime::manifest::Task;
use std::path::PathBuf;

/// Measure a model on a labelled folder: a classifier's accuracy, per-class recall and confusion
/// matrix, or a detector's mAP@0.5, precision and recall.
///
/// MODEL (and the reference) may be ONNX files or micro models (.lpm).
///
/// Classifiers: DIR holds one folder per label, named like the manifest's labels (or class
/// indices for models without a manifest, whose classes are then the values of their output),
/// each with samples: pictures (.png/.jpg), recordings (.wav, resampled to the model's rate if
/// needed) or tensors (.npy). With `--reference`, the top-1 agreement between the two models is
/// reported too (for example int8 against its float original). `--plot` draws the confusion
/// matrix with the class names along its axes.
///
/// Detectors: DIR is YOLO-labelled: DIR/images/*.{png,jpg} and DIR/labels/<name>.txt with one
/// `class cx cy w h` line per object (normalized to the picture). Reported: mAP at IoU 0.5
/// (VOC all-point), per-class AP, precision and recall at the manifest's score threshold, and
/// how many pictures read exactly (classes left to right equal the labels'). With `--reference`,
/// the reference's mAP is reported too.
///
/// A sample that fails is reported and the evaluation continues; the exit code is then 2.
///
/// Examples:
///
///   lepton-convert eval model.int8.onnx --dataset models/digits/test --reference model.onnx --plot confusion.png
///
///   lepton-convert eval models/detector/model.int8.onnx --dataset models/detector/test
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model to evaluate.
    model: PathBuf,
    /// The labelled folder: DIR/<label>/*.{png,jpg,wav,npy}.
    #[arg(long, value_name = "DIR")]
    dataset: PathBuf,
    /// A model to compare top-1 predictions with.
    #[arg(long, value_name = "MODEL")]
    reference: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Draw the confusion matrix to this PNG.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// Engine: `auto` runs int8 models on the micro engine where this CPU has a vector kernel
    /// set, others on tract; `tract` and `micro` force one (for both models).
    #[arg(long, value_enum, default_value_t = super::EngineArg::Auto)]
    engine: super::EngineArg,
}

/// Runs `eval`.
pub fn run(args: EvalArgs) -> Result<u8> {
    if is_detection_dataset(&args.dataset) {
        return run_detect(&args);
    }
    let samples = dataset(&args.dataset)?;
    let mut model = Classifier::load(&args.model, args.engine.into())?;
    let mut reference = args.reference.as_deref().map(|r| Classifier::load(r, args.engine.into())).transpose()?;
    let bar = indicatif::ProgressBar::new(samples.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} samples {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let m = evaluate(&mut model, reference.as_mut(), &samples, || bar.inc(1))?;
    bar.finish_and_clear();
    if let Some(p) = &args.plot {
        plot(&m, p)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!("{}: accuracy {:.2} % ({}/{})", args.model.display(), m.accuracy * 100.0, m.correct, m.samples);
        if let Some(a) = m.agreement {
            println!(
                "top-1 agreement with {}: {:.2} %",
                args.reference.as_ref().map_or(String::new(), |r| r.display().to_string()),
                a * 100.0
            );
        }
        let name = class_name;
        let width = m.labels.iter().enumerate().map(|(i, l)| name(i, l).chars().count()).max().unwrap_or(3);
        println!("per-class recall:");
        for (i, (label, recall, support)) in m.per_class.iter().enumerate() {
            let r = recall.map_or("   -  ".to_string(), |r| format!("{:6.2}", r * 100.0));
            println!("  {:<width$} {r} %  ({support} samples)", name(i, label));
        }
        println!("confusion matrix (rows: true class, columns: predicted class index):");
        let header: Vec<String> = (0..m.labels.len()).map(|j| format!("{j:>4}")).collect();
        println!("  {:<width$} {}", "", header.join(""));
        for (i, row) in m.confusion.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|c| format!("{c:>4}")).collect();
            println!("  {:<width$} {}", name(i, &m.labels[i]), cells.join(""));
        }
        if let Some(p) = &args.plot {
            println!("confusion matrix drawn to {}", p.display());
        }
    }
    for (file, e) in &m.failed {
        eprintln!("error: {}", failure_line(file, e));
    }
    Ok(if m.failed.is_empty() { 0 } else { 2 })
}

/// A class as printed in tables: its index, then its label unless the label is the index itself
/// (digit classes, or a model without a manifest), so that "1" prints once, not as "1 1".
fn class_name(i: usize, label: &str) -> String {
    if label == i.to_string() {
        format!("{i:>3}")
    } else {
        format!("{i:>3} {label}")
    }
}

fn progress_bar(len: usize, hidden: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} pictures {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Loads a model that must be a detector with a manifest.
fn load_detector(path: &std::path::Path, engine: super::EngineArg) -> Result<lepton_runtime::Model> {
    let model = lepton_runtime::Model::load_with(path, engine.into())?;
    match model.manifest().map(|m| m.task) {
        Some(Task::Detect) => Ok(model),
        Some(t) => anyhow::bail!(
            "{}: a {} model, but the dataset is YOLO-labelled for detectors (images/ and labels/)",
            path.display(),
            t.name()
        ),
        None => anyhow::bail!("{}: no manifest; pack one with `lepton-convert pack` to evaluate", path.display()),
    }
}

/// `eval` of a detector on a YOLO-labelled folder.
fn run_detect(args: &EvalArgs) -> Result<u8> {
    if args.plot.is_some() {
        anyhow::bail!("--plot draws a classifier's confusion matrix; detectors have none");
    }
    let mut models = vec![(args.model.clone(), load_detector(&args.model, args.engine)?)];
    if let Some(r) = &args.reference {
        models.push((r.clone(), load_detector(r, args.engine)?));
    }
    let classes = models[0].1.manifest().map_or(0, |m| m.labels.len());
    let data = eval_detect::dataset(&args.dataset, classes)?;
    let mut results = vec![];
    for (path, model) in &models {
        let bar = progress_bar(data.len(), args.json);
        let m = eval_detect::evaluate(model, &data, || bar.inc(1))?;
        bar.finish_and_clear();
        results.push((path.clone(), m));
    }
    if args.json {
        let out: Vec<serde_json::Value> =
            results.iter().map(|(p, m)| serde_json::json!({"model": p, "metrics": m})).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (path, m) in &results {
            println!(
                "{}: mAP@0.5 {:.2} % ({} pictures, {} objects)",
                path.display(),
                m.map50 * 100.0,
                m.images,
                m.objects
            );
            println!(
                "  at score threshold {}: precision {:.2} %, recall {:.2} %, exact readings {}/{}",
                m.threshold,
                m.precision * 100.0,
                m.recall * 100.0,
                m.exact_readings,
                m.images
            );
            println!("  per-class AP@0.5 (class index and label, AP, objects in the dataset):");
            let width = m.per_class.iter().enumerate().map(|(i, (l, _, _))| class_name(i, l).chars().count()).max();
            let width = width.unwrap_or(3);
            for (i, (label, ap, n)) in m.per_class.iter().enumerate() {
                let ap = ap.map_or("   -  ".to_string(), |a| format!("{:6.2}", a * 100.0));
                println!("    {:<width$} {ap} %  ({n} objects)", class_name(i, label));
            }
        }
    }
    let mut code = 0;
    for (_, m) in &results {
        for (file, e) in &m.failed {
            eprintln!("error: {}", failure_line(file, e));
            code = 2;
        }
    }
    Ok(code)
}
