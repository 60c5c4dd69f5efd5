//! The stats chart: each pipeline's frame rate and mean inference time, sampled every
//! [`SAMPLE_S`] seconds, the last [`POINTS`] kept.

use super::State;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds between the chart's points.
const SAMPLE_S: u64 = 2;
/// Points kept per pipeline: ten minutes.
pub(super) const POINTS: usize = 300;

/// One point of a pipeline's chart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Point {
    pub(super) t_ms: u64,
    pub(super) fps: f64,
    pub(super) latency_ms: f64,
}

/// Samples each pipeline's frame rate and mean inference time every [`SAMPLE_S`] seconds.
pub(super) async fn sample(st: Arc<State>) {
    let mut last: Vec<(u64, Duration, u64)> = vec![(0, Duration::ZERO, 0); st.pipelines.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(SAMPLE_S));
    let mut at = Instant::now();
    loop {
        tick.tick().await;
        let dt = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let now = crate::status::now_ms();
        let mut series = st.series.lock().unwrap_or_else(|p| p.into_inner());
        for (k, p) in st.pipelines.iter().enumerate() {
            let (processed, total, count) = {
                let s = p.status.lock().unwrap_or_else(|p| p.into_inner());
                (s.processed, s.inference.total(), s.inference.count())
            };
            let (p0, t0, c0) = last[k];
            last[k] = (processed, total, count);
            let n = count.saturating_sub(c0);
            let latency_ms = if n > 0 { (total.saturating_sub(t0)).as_secs_f64() * 1e3 / n as f64 } else { 0.0 };
            let s = &mut series[k];
            if s.len() == POINTS {
                s.pop_front();
            }
            s.push_back(Point { t_ms: now, fps: processed.saturating_sub(p0) as f64 / dt, latency_ms });
        }
    }
}
