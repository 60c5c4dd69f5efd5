//! The newest frame of a live source: a capture thread writes it, the pipeline takes it. A frame
//! replaced before it was taken is counted as dropped (newest frame wins); the two buffers swap on
//! every take, so once frames have their final size nothing is allocated or copied twice.
//! Also counts the source's outages (camera unplugged, stream lost) for the stats.

use super::{Frame, FrameSource};
use lepton_core::error::{LeptonError, Result};
use lepton_core::event::FrameMeta;
use lepton_core::vision::{ImageView, PixelFormat};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A frame's bytes and what they are.
struct Slot {
    data: Vec<u8>,
    width: usize,
    height: usize,
    format: PixelFormat,
    /// `data` is a JPEG picture, decoded only when taken.
    jpeg: bool,
    fresh: bool,
    index: u64,
    timestamp_ms: u64,
}

impl Slot {
    fn empty() -> Self {
        Slot {
            data: vec![],
            width: 0,
            height: 0,
            format: PixelFormat::Rgb8,
            jpeg: false,
            fresh: false,
            index: 0,
            timestamp_ms: 0,
        }
    }
}

/// The state a capture thread and the pipeline share.
pub struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
    ended: AtomicBool,
    dropped: AtomicU64,
    outages: AtomicU64,
    down: AtomicBool,
    decoded: AtomicU64,
    decode_ns: AtomicU64,
}

impl Shared {
    /// Counts one picture decoded in `took` (H.264 on the capture thread, JPEG when taken).
    pub fn decoded(&self, took: Duration) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.decode_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The capture side: `true` once the pipeline stopped the source.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// `true` while the last frame written has not been taken: a frame decoded now would only
    /// replace it, so a source may skip work it can skip (a non-reference H.264 frame).
    pub fn busy(&self) -> bool {
        self.lock().fresh
    }

    /// Counts a frame the source skipped without writing it (it would have been dropped).
    pub fn skipped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one outage (the device or stream went away; the source is reconnecting).
    pub fn outage(&self) {
        self.outages.fetch_add(1, Ordering::Relaxed);
        self.down.store(true, Ordering::Relaxed);
    }

    /// Writes the newest frame: `fill` gets the buffer cleared, with its capacity kept. A frame
    /// still waiting is replaced and counted as dropped.
    pub fn put(
        &self,
        width: usize,
        height: usize,
        format: PixelFormat,
        timestamp_ms: u64,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut slot = self.lock();
        if slot.fresh {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        slot.data.clear();
        fill(&mut slot.data);
        (slot.width, slot.height, slot.format, slot.timestamp_ms, slot.fresh, slot.jpeg) =
            (width, height, format, timestamp_ms, true, false);
        slot.index += 1;
        self.ready.notify_all();
    }

    /// Writes the newest frame as a JPEG picture (`fill` appends its bytes): it is decoded only
    /// if the pipeline takes it, so frames that are dropped cost no decoding.
    pub fn put_jpeg(&self, timestamp_ms: u64, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut slot = self.lock();
        if slot.fresh {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        slot.data.clear();
        fill(&mut slot.data);
        (slot.timestamp_ms, slot.fresh, slot.jpeg) = (timestamp_ms, true, true);
        slot.index += 1;
        self.ready.notify_all();
    }

    /// Waits until the pipeline has taken the last frame (or stopped); `false` when stopped. For
    /// sources that must not drop (a file read as fast as the pipeline goes).
    pub fn wait_taken(&self) -> bool {
        let mut slot = self.lock();
        while slot.fresh && !self.stopped() {
            slot = self.ready.wait_timeout(slot, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
        }
        !self.stopped()
    }

    /// The source has no more frames: the pipeline ends after taking the last one.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
        self.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pipeline's side: takes the newest frame, lends it until the next call.
pub struct Latest {
    shared: Arc<Shared>,
    local: Slot,
    /// A taken JPEG, decoded.
    decoded: Vec<u8>,
    name: String,
}

impl Latest {
    /// A new exchange, named for errors; give [`Latest::shared`] to the capture thread.
    pub fn new(name: impl Into<String>) -> Self {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::empty()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            // Down until the first frame: a camera that never answers is an outage too.
            down: AtomicBool::new(true),
            decoded: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
        });
        Latest { shared, local: Slot::empty(), decoded: vec![], name: name.into() }
    }

    /// The capture thread's handle.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// A handle that stops the source from another thread; `next_frame` then returns `None`.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            shared.stop.store(true, Ordering::Relaxed);
            shared.ready.notify_all();
        }
    }

    /// Stops the source (the capture thread sees it at its next frame).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
    }

    /// The next frame: waits for one; `None` once stopped, or ended with every frame taken.
    pub fn take(&mut self) -> Result<Option<Frame<'_>>> {
        let mut slot = self.shared.lock();
        while !slot.fresh {
            if self.shared.stopped() || self.shared.ended.load(Ordering::Relaxed) {
                return Ok(None);
            }
            slot =
                self.shared.ready.wait_timeout(slot, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
        }
        // Swap buffers: no copy; the capture thread refills the other one.
        std::mem::swap(&mut slot.data, &mut self.local.data);
        let l = &mut self.local;
        (l.width, l.height, l.format, l.index, l.timestamp_ms, l.jpeg) =
            (slot.width, slot.height, slot.format, slot.index, slot.timestamp_ms, slot.jpeg);
        slot.fresh = false;
        self.shared.ready.notify_all();
        drop(slot);
        let pixels = if l.jpeg {
            let t = std::time::Instant::now();
            (l.width, l.height) = crate::image::decode_jpeg_into(&l.data, &mut self.decoded)
                .map_err(|reason| LeptonError::Source { name: self.name.clone(), reason })?;
            self.shared.decoded(t.elapsed());
            l.format = PixelFormat::Rgb8;
            &self.decoded
        } else {
            &l.data
        };
        let image = ImageView::packed(pixels, l.width, l.height, l.format)
            .map_err(|e| LeptonError::core(format!("{} frame", self.name), e))?;
        // The source's name (a camera, a URL without credentials) is what detections say it came from.
        Ok(Some(Frame {
            image,
            meta: FrameMeta { frame: l.index - 1, timestamp_ms: l.timestamp_ms },
            name: Some(&self.name),
        }))
    }

    /// Frames replaced or skipped before the pipeline took them.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Outages so far.
    pub fn outages(&self) -> u64 {
        self.shared.outages.load(Ordering::Relaxed)
    }

    /// A handle for reading the source's connection state from another thread (stats, watchdog).
    pub fn health(&self) -> Health {
        Health(Arc::clone(&self.shared))
    }
}

/// A live source's connection state, readable while the pipeline runs.
#[derive(Clone)]
pub struct Health(Arc<Shared>);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Health {{ outages: {}, down: {} }}", self.outages(), self.down())
    }
}

impl Health {
    /// Outages so far (each logged once, at its start).
    pub fn outages(&self) -> u64 {
        self.0.outages.load(Ordering::Relaxed)
    }

    /// `true` while the source is connecting or reconnecting (no frames can come).
    pub fn down(&self) -> bool {
        self.0.down.load(Ordering::Relaxed)
    }

    /// Pictures decoded so far and their total decoding time.
    pub fn decoding(&self) -> (u64, Duration) {
        (self.0.decoded.load(Ordering::Relaxed), Duration::from_nanos(self.0.decode_ns.load(Ordering::Relaxed)))
    }
}

impl FrameSource for Latest {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        self.take()
    }
    fn dropped(&self) -> u64 {
        Latest::dropped(self)
    }
    fn outages(&self) -> u64 {
        Latest::outages(self)
    }
}

/// A live source: a capture thread writing into a [`Latest`]; stopped and joined when dropped.
pub struct LiveSource {
    latest: Latest,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveSource {
    /// Starts `capture` on a thread named `lepton-{thread}`; `name` (a camera, a URL without
    /// credentials) names the frames and errors.
    pub fn spawn(name: String, thread: &str, capture: impl FnOnce(&Shared) + Send + 'static) -> Result<Self> {
        let latest = Latest::new(name);
        let shared = latest.shared();
        let thread = std::thread::Builder::new()
            .name(format!("lepton-{thread}"))
            .spawn(move || capture(&shared))
            .map_err(|e| LeptonError::io(format!("{thread} thread"), e))?;
        Ok(LiveSource { latest, thread: Some(thread) })
    }

    /// A handle that stops capturing from another thread; `next_frame` then returns `None`.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        self.latest.stopper()
    }

    /// The connection state, for stats and the watchdog.
    pub fn health(&self) -> Health {
        self.latest.health()
    }
}

impl FrameSource for LiveSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        self.latest.take()
    }
    fn dropped(&self) -> u64 {
        self.latest.dropped()
    }
    fn outages(&self) -> u64 {
        self.latest.outages()
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.latest.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reconnection delays: 0.5 s doubling to a ceiling, reset after a success; logs an outage once.
pub struct Backoff {
    next: Duration,
    max: Duration,
    down: bool,
}

impl Backoff {
    /// Starts at 0.5 s, doubles up to `max`.
    pub fn new(max: Duration) -> Self {
        Backoff { next: Duration::from_millis(500), max, down: false }
    }

    /// The source failed: logs `what` at the start of an outage (counted once in `shared`), then
    /// sleeps the current delay (waking early when stopped) and doubles it.
    pub fn failed(&mut self, shared: &Shared, name: &str, what: &dyn std::fmt::Display) {
        if !self.down {
            tracing::warn!("{name}: {what}; reconnecting with backoff");
            shared.outage();
            self.down = true;
        } else {
            tracing::debug!("{name}: {what}");
        }
        let until = std::time::Instant::now() + self.next;
        while std::time::Instant::now() < until && !shared.stopped() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.next = (self.next * 2).min(self.max);
    }

    /// The source works again: logs the end of an outage and resets the delay.
    pub fn connected(&mut self, shared: &Shared, name: &str, what: &dyn std::fmt::Display) {
        shared.down.store(false, Ordering::Relaxed);
        if self.down {
            tracing::info!("{name}: back: {what}");
        } else {
            tracing::info!("{name}: {what}");
        }
        self.down = false;
        self.next = Duration::from_millis(500);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_frame_wins_and_replaced_frames_are_counted() {
        let mut latest = Latest::new("test");
        let shared = latest.shared();
        for v in 1..=3u8 {
            shared.put(2, 1, PixelFormat::Gray8, 1000 + u64::from(v), |d| d.extend_from_slice(&[v, v]));
        }
        let f = latest.take().unwrap().unwrap();
        assert_eq!((f.meta.frame, f.meta.timestamp_ms), (2, 1003), "the third frame, stamped when captured");
        assert_eq!(latest.dropped(), 2);
        shared.end();
        assert!(latest.take().unwrap().is_none(), "ended and taken");
    }
}
