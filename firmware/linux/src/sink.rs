//! The console sink: one line per frame on stdout, a summary at the end.

use lepton_runtime::pipeline::{FrameReport, Sink, Stats};
use lepton_runtime::LeptonError;
use std::io::Write;

/// Prints results on stdout.
pub struct ConsoleSink {
    labels: Vec<String>,
}

impl ConsoleSink {
    /// A sink naming classes with `labels`.
    pub fn new(labels: Vec<String>) -> Self {
        ConsoleSink { labels }
    }
}

fn stdout_error(e: std::io::Error) -> LeptonError {
    LeptonError::io("<stdout>", e)
}

impl Sink for ConsoleSink {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        let mut out = std::io::stdout().lock();
        write!(out, "frame {:>4}  {:<28}", r.meta.frame, r.source.unwrap_or("-")).map_err(stdout_error)?;
        if r.detections.is_empty() {
            write!(out, "  (nothing)").map_err(stdout_error)?;
        }
        for d in r.detections {
            let label = self.labels.get(d.class as usize).map_or("?", String::as_str);
            write!(out, "  {label} {:.3}", d.score).map_err(stdout_error)?;
            if let Some(b) = d.bbox {
                write!(out, " [{:.0},{:.0},{:.0},{:.0}]", b.x0, b.y0, b.x1, b.y1).map_err(stdout_error)?;
            }
        }
        writeln!(out, "  inference {:.3} ms", r.inference.as_secs_f64() * 1e3).map_err(stdout_error)
    }

    fn finish(&mut self, stats: &Stats) -> Result<(), LeptonError> {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let (mut pre, mut inference) = (stats.preprocess.clone(), stats.inference.clone());
        println!(
            "{} frames processed, {} dropped, {} failed; inference p50 {:.3} ms p99 {:.3} ms; preprocess p50 {:.3} ms{}",
            stats.frames_processed,
            stats.frames_dropped,
            stats.frames_failed,
            ms(inference.percentile(50.0)),
            ms(inference.percentile(99.0)),
            ms(pre.percentile(50.0)),
            if stats.overlapped { " (overlapped with inference)" } else { "" },
        );
        Ok(())
    }
}
