//! `lepton-convert eval`.

use anyhow::Result;
use clap::Args;
use lepton_convert::eval::{dataset, evaluate, plot, Classifier};
use std::path::PathBuf;

/// Measure a classifier on a labelled folder: accuracy, per-class recall, confusion matrix.
///
/// DIR holds one folder per label, named like the manifest's labels (or class indices for
/// models without a manifest), each with samples: pictures (.png/.jpg), recordings (.wav) or
/// tensors (.npy). With `--reference`, the top-1 agreement between the two models is reported too
/// (for example int8 against its float original). A sample that fails is reported and the
/// evaluation continues; the exit code is then 2.
///
/// Example: lepton-convert eval model.int8.onnx --dataset models/digits/test --reference model.onnx --plot confusion.png
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
}

/// Runs `eval`.
pub fn run(args: EvalArgs) -> Result<u8> {
    let samples = dataset(&args.dataset)?;
    let mut model = Classifier::load(&args.model)?;
    let mut reference = args.reference.as_deref().map(Classifier::load).transpose()?;
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
        println!("per-class recall:");
        for (i, (label, recall, support)) in m.per_class.iter().enumerate() {
            let r = recall.map_or("   -  ".to_string(), |r| format!("{:6.2}", r * 100.0));
            println!("  {i:>3} {label:<16} {r} %  ({support} samples)");
        }
        println!("confusion matrix (rows: true class, columns: predicted):");
        for (i, row) in m.confusion.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|c| format!("{c:>4}")).collect();
            println!("  {i:>3} {}", cells.join(""));
        }
        if let Some(p) = &args.plot {
            println!("confusion matrix drawn to {}", p.display());
        }
    }
    for (file, e) in &m.failed {
        eprintln!("error: {file}: {e}");
    }
    Ok(if m.failed.is_empty() { 0 } else { 2 })
}
