//! Clips: the H.264 a network camera or video file sends, kept in a ring from the key frame
//! before `pre`, and remuxed (never re-encoded) into an MP4 file around each event, from `pre`
//! before its start to `post` after its end. Sources hand their access units to a [`ClipTap`]
//! (never waiting: a full queue is counted, and the clips being written resume at the next key
//! frame); the sink starts and ends recordings through [`Clips`]; one recorder thread per
//! pipeline owns the ring, writes the files (under a `.part` name until complete), keeps the
//! folder within its disk budget (oldest first) and reports each clip written. A failed write
//! (a full disk) is logged once, counted, and never stalls the pipeline.

use crate::h264;
use lepton_core::error::{LeptonError, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The clock of the MP4 files' samples and of [`Unit`]'s times: 90 kHz, RTP's video clock.
pub const TIMESCALE: u32 = 90_000;
/// Access units queued between the source and the recorder before new ones are dropped (see
/// also [`QUEUE_BYTES`]).
const UNIT_QUEUE: usize = 512;
/// Bytes of access units queued for the recorder before new ones are dropped.
const QUEUE_BYTES: u64 = 64 << 20;
/// Starts and ends queued for the recorder before new ones are dropped.
const EVENT_QUEUE: usize = 1024;
/// The ring's limit in bytes, whatever `pre` asks (older groups of pictures go first).
pub const MAX_RING_BYTES: usize = 64 << 20;
/// Clips written at once; an event beyond gets none (counted as skipped).
pub const MAX_RECORDINGS: usize = 16;
/// Longest file stem accepted for a clip.
const MAX_STEM: usize = 160;

/// What to record and keep.
#[derive(Debug, Clone)]
pub struct ClipOptions {
    /// The folder of the clips (created when missing).
    pub dir: PathBuf,
    /// The pipeline's name: clips are named `{pipeline}-...mp4`, and the budget covers those.
    pub pipeline: String,
    /// Video kept before an event's start.
    pub pre: Duration,
    /// Video kept after an event's end.
    pub post: Duration,
    /// A clip is cut at this length.
    pub max: Duration,
    /// Clips older than this are deleted.
    pub retain_age: Duration,
    /// The pipeline's clips are kept under this many bytes, oldest deleted first.
    pub retain_bytes: u64,
}

/// One access unit of the stream, as a source hands it over.
#[derive(Debug, Clone)]
pub struct Unit {
    /// On the frames' timeline (ms since the Unix epoch): the time a frame decoded from it gets.
    pub ts_ms: u64,
    /// Decoding time, [`TIMESCALE`] units (increasing).
    pub dts: i64,
    /// Presentation time, [`TIMESCALE`] units (at or after `dts`).
    pub pts: i64,
    /// A key frame (IDR): a clip can start here.
    pub key: bool,
    /// Annex B NAL units; a key frame's carry their parameter sets (SPS, PPS).
    pub data: Vec<u8>,
}

/// A clip written.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipDone {
    /// The event's key ([`Clips::start_event`]).
    pub key: String,
    /// The file's name in the clips folder.
    pub file: String,
    /// Its path.
    pub path: PathBuf,
    /// The event's start (ms since the Unix epoch).
    pub event_ms: u64,
    /// The clip's first frame on the frames' timeline (ms since the Unix epoch).
    pub first_ms: u64,
    /// Length in seconds (from the samples' times).
    pub duration_s: f64,
    /// Frames in it.
    pub frames: u32,
    /// Size in bytes.
    pub bytes: u64,
    /// Time spent writing it (remuxing and file writes), summed over the clip.
    pub write_time: Duration,
}

/// The recorder's counters.
#[derive(Debug, Default)]
pub struct ClipStats {
    /// Clips written.
    pub written: AtomicU64,
    /// Clips that failed to write (a full disk, a folder gone).
    pub failed: AtomicU64,
    /// Events that got no clip: too many at once, or no video came.
    pub skipped: AtomicU64,
    /// Access units the recorder could not take in time (the clips resume at the next key frame).
    pub units_dropped: AtomicU64,
    /// Starts and ends the recorder could not take in time.
    pub events_dropped: AtomicU64,
    /// Clips deleted to stay within the budget.
    pub deleted: AtomicU64,
    /// Bytes of clips written.
    pub bytes: AtomicU64,
    /// Bytes of access units queued for the recorder now.
    queued: AtomicU64,
}

impl ClipStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    /// A counter's value.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

enum Event {
    Start { key: String, stem: String, ts_ms: u64 },
    End { key: String, ts_ms: u64 },
    Finish,
}

/// The sources' end: hands access units to the recorder without waiting.
#[derive(Clone)]
pub struct ClipTap {
    tx: SyncSender<(u64, Unit)>,
    seq: Arc<AtomicU64>,
    stats: Arc<ClipStats>,
}

impl ClipTap {
    /// Queues a unit; a full queue drops it (counted; clips resume at the next key frame).
    pub fn push(&self, unit: Unit) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // Bounded in bytes as well as in units (a camera's key frames can be megabytes).
        let len = unit.data.len() as u64;
        if self.stats.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.stats.queued.fetch_sub(len, Ordering::Relaxed);
            ClipStats::add(&self.stats.units_dropped, 1);
            return;
        }
        match self.tx.try_send((seq, unit)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queued.fetch_sub(len, Ordering::Relaxed);
                ClipStats::add(&self.stats.units_dropped, 1);
            }
            // The recorder has finished: the pipeline is ending.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl ClipTap {
    /// The stream restarted (a reconnected camera): the clips being written resume at the next
    /// key frame.
    pub fn discontinuity(&self) {
        self.seq.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ClipTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClipTap")
    }
}

/// The sink's end: starts and ends recordings, and collects the clips written.
pub struct Clips {
    events: SyncSender<Event>,
    done: Receiver<ClipDone>,
    tap: ClipTap,
    stats: Arc<ClipStats>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl Clips {
    /// Creates the folder, deletes what the budget and a previous run's unfinished files ask,
    /// and starts the recorder; errors name the folder.
    pub fn start(opts: ClipOptions) -> Result<Clips> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| LeptonError::io(&opts.dir, e))?;
        let stats = Arc::new(ClipStats::default());
        let (unit_tx, unit_rx) = mpsc::sync_channel(UNIT_QUEUE);
        let (event_tx, event_rx) = mpsc::sync_channel(EVENT_QUEUE);
        let (done_tx, done_rx) = mpsc::channel();
        let dir = opts.dir.clone();
        let mut recorder = Recorder::new(opts, Arc::clone(&stats), done_tx);
        recorder.remove_parts();
        recorder.retain();
        let thread = std::thread::Builder::new()
            .name("lepton-clips".into())
            .spawn(move || recorder.run(&unit_rx, &event_rx))
            .map_err(|e| LeptonError::io(&dir, e))?;
        let tap = ClipTap { tx: unit_tx, seq: Arc::new(AtomicU64::new(0)), stats: Arc::clone(&stats) };
        Ok(Clips { events: event_tx, done: done_rx, tap, stats, thread: Some(thread), dir: dir.clone() })
    }

    /// The tap the pipeline's source feeds.
    pub fn tap(&self) -> ClipTap {
        self.tap.clone()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ClipStats> {
        Arc::clone(&self.stats)
    }

    /// The clips folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An event started at `ts_ms` (on the frames' timeline): a clip named `stem` (letters,
    /// digits, `-`, `_`, `.`; `.mp4` is added) begins `pre` before. `key` names the event for
    /// [`Clips::end_event`]; a key already recording is ignored.
    pub fn start_event(&self, key: &str, stem: &str, ts_ms: u64) {
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .take(MAX_STEM)
            .collect();
        let stem = match stem.trim_start_matches('.') {
            "" => "clip".to_string(),
            s => s.to_string(),
        };
        self.send(Event::Start { key: key.into(), stem, ts_ms });
    }

    /// The event `key` ended at `ts_ms`: its clip goes on for `post`.
    pub fn end_event(&self, key: &str, ts_ms: u64) {
        self.send(Event::End { key: key.into(), ts_ms });
    }

    fn send(&self, e: Event) {
        if self.events.try_send(e).is_err() {
            ClipStats::add(&self.stats.events_dropped, 1);
        }
    }

    /// Clips written since the last call.
    pub fn written(&self) -> Vec<ClipDone> {
        self.done.try_iter().collect()
    }

    /// The stream has ended: the clips being recorded are closed with what they have; returns
    /// the clips written since the last [`Clips::written`].
    pub fn finish(&mut self) -> Vec<ClipDone> {
        let _ = self.events.send(Event::Finish);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.written()
    }
}

impl Drop for Clips {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

/// One clip being written.
struct Recording {
    key: String,
    stem: String,
    event_ms: u64,
    end_ms: Option<u64>,
    /// Waiting for a key frame (at the start, or after units were dropped).
    need_key: bool,
    file: Option<Mp4File>,
    /// Its file could not be written (counted once); the rest of it is ignored.
    failed: bool,
}

/// The recorder thread's state.
struct Recorder {
    opts: ClipOptions,
    stats: Arc<ClipStats>,
    done: Sender<ClipDone>,
    /// Units from a key frame on, in decoding order.
    ring: VecDeque<Arc<Unit>>,
    ring_bytes: usize,
    next_seq: u64,
    recordings: Vec<Recording>,
    /// A write failed and was logged; logged again only after a clip is written.
    failing: bool,
    skip_logged: bool,
    /// Numbers the files being written, so two clips of one name never share one.
    parts: u64,
    /// The stream's last parameter sets.
    sets: ParameterSets,
}

impl Recorder {
    fn new(opts: ClipOptions, stats: Arc<ClipStats>, done: Sender<ClipDone>) -> Self {
        Recorder {
            opts,
            stats,
            done,
            ring: VecDeque::new(),
            ring_bytes: 0,
            next_seq: 0,
            recordings: vec![],
            failing: false,
            skip_logged: false,
            parts: 0,
            sets: ParameterSets::default(),
        }
    }

    fn run(&mut self, units: &Receiver<(u64, Unit)>, events: &Receiver<Event>) {
        let mut retained = std::time::Instant::now();
        loop {
            // Events first: a start looks back into the ring, an end only sets a limit.
            while let Ok(e) = events.try_recv() {
                if !self.event(e) {
                    // The end: what is queued still goes into the clips, then they are closed.
                    while let Ok((seq, u)) = units.try_recv() {
                        self.unit(seq, u);
                    }
                    for r in std::mem::take(&mut self.recordings) {
                        self.close(r);
                    }
                    return;
                }
            }
            // Age limits hold while nothing is recorded, too.
            if retained.elapsed() > Duration::from_secs(600) {
                self.retain();
                retained = std::time::Instant::now();
            }
            match units.recv_timeout(Duration::from_millis(50)) {
                Ok((seq, u)) => self.unit(seq, u),
                Err(RecvTimeoutError::Timeout) => {}
                // The source has gone; events may still come until Finish.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Handles an event; `false` at the end.
    fn event(&mut self, e: Event) -> bool {
        match e {
            Event::Start { key, stem, ts_ms } => {
                // The same event again while its clip still runs (a presence back within
                // `post`): the clip goes on.
                if let Some(r) = self.recordings.iter_mut().find(|r| r.key == key) {
                    r.end_ms = None;
                    return true;
                }
                if self.recordings.len() >= MAX_RECORDINGS {
                    ClipStats::add(&self.stats.skipped, 1);
                    if !self.skip_logged {
                        self.skip_logged = true;
                        tracing::warn!(
                            "pipeline {}: over {MAX_RECORDINGS} clips at once; events beyond get none (counted: clips_skipped)",
                            self.opts.pipeline
                        );
                    }
                    return true;
                }
                let mut r =
                    Recording { key, stem, event_ms: ts_ms, end_ms: None, need_key: true, file: None, failed: false };
                // From the last key frame at or before `pre` ahead of the start (or the oldest
                // one kept).
                let from = ts_ms.saturating_sub(self.opts.pre.as_millis() as u64);
                let start = self.ring.iter().rposition(|u| u.key && u.ts_ms <= from).unwrap_or(0);
                let units: Vec<Arc<Unit>> = self.ring.iter().skip(start).cloned().collect();
                for u in &units {
                    self.write(&mut r, u);
                }
                self.recordings.push(r);
            }
            Event::End { key, ts_ms } => {
                if let Some(r) = self.recordings.iter_mut().find(|r| r.key == key) {
                    r.end_ms = Some(ts_ms);
                }
            }
            Event::Finish => return false,
        }
        true
    }

    fn unit(&mut self, seq: u64, u: Unit) {
        self.stats.queued.fetch_sub(u.data.len() as u64, Ordering::Relaxed);
        if seq != self.next_seq {
            // Units were dropped: a clip cannot go on until the next key frame.
            self.ring.clear();
            self.ring_bytes = 0;
            for r in &mut self.recordings {
                r.need_key = true;
            }
        }
        self.next_seq = seq + 1;
        self.sets.update(&u.data);
        let u = Arc::new(u);
        if u.key || !self.ring.is_empty() {
            self.ring_bytes += u.data.len();
            self.ring.push_back(Arc::clone(&u));
        }
        self.trim(u.ts_ms);
        let post = self.opts.post.as_millis() as u64;
        let max = self.opts.max.as_millis() as u64;
        let span_limit = (self.opts.pre + self.opts.max).as_millis() as i64 * i64::from(TIMESCALE) / 1000;
        for mut r in std::mem::take(&mut self.recordings) {
            // The first unit past the end (or the length limit) is a reference frame (the frames
            // shown before it came earlier in decoding order): it is left out, so every frame of
            // the clip decodes and shows within its duration.
            // Also on the clip's own media time: a wall clock set back must not let it grow.
            let over = r.end_ms.is_some_and(|e| u.ts_ms > e.saturating_add(post))
                || u.ts_ms > r.event_ms.saturating_add(max)
                || r.file.as_ref().is_some_and(|f| f.last_dts - f.first_dts > span_limit);
            if over {
                self.close(r);
            } else {
                self.write(&mut r, &u);
                self.recordings.push(r);
            }
        }
    }

    /// Keeps the ring from the last key frame at or before `pre` (plus a margin for the
    /// pipeline's lag) ahead of `now_ms`, within [`MAX_RING_BYTES`].
    fn trim(&mut self, now_ms: u64) {
        let keep_from = now_ms.saturating_sub(self.opts.pre.as_millis() as u64 + 2_000);
        loop {
            // The second key frame: everything before it can go when it is old enough.
            let Some(next_key) = self.ring.iter().skip(1).position(|u| u.key).map(|i| i + 1) else {
                if self.ring_bytes > MAX_RING_BYTES {
                    self.ring.clear();
                    self.ring_bytes = 0;
                }
                return;
            };
            if self.ring[next_key].ts_ms > keep_from && self.ring_bytes <= MAX_RING_BYTES {
                return;
            }
            for u in self.ring.drain(..next_key) {
                self.ring_bytes -= u.data.len();
            }
        }
    }

    /// Appends a unit to a recording (opening its file at its first key frame).
    fn write(&mut self, r: &mut Recording, u: &Unit) {
        if r.failed {
            return;
        }
        if r.need_key {
            if !u.key {
                return;
            }
            r.need_key = false;
        }
        if r.file.is_none() {
            self.parts += 1;
            match Mp4File::create(&self.opts, &format!("{}.{}", r.stem, self.parts), u, &self.sets) {
                Ok(f) => r.file = Some(f),
                Err(e) => {
                    self.failed(&e);
                    r.failed = true;
                    return;
                }
            }
        }
        let Some(f) = &mut r.file else { return };
        if let Err(e) = f.push(u) {
            self.failed(&e);
            if let Some(f) = r.file.take() {
                let _ = std::fs::remove_file(&f.part);
            }
            r.failed = true;
        }
    }

    fn failed(&mut self, e: &LeptonError) {
        ClipStats::add(&self.stats.failed, 1);
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                "pipeline {}: clip not written: {e} (a full disk? failures are counted: clips_failed)",
                self.opts.pipeline
            );
        }
    }

    /// Finishes a recording's file and reports it.
    fn close(&mut self, r: Recording) {
        let Some(f) = r.file else {
            if !r.failed {
                // No key frame came: nothing to play.
                ClipStats::add(&self.stats.skipped, 1);
            }
            return;
        };
        let part = f.part.clone();
        match f.finish(&self.opts.dir, &r.stem) {
            Ok((file, path, mut done)) => {
                done.key = r.key;
                done.event_ms = r.event_ms;
                done.file = file;
                done.path = path;
                ClipStats::add(&self.stats.written, 1);
                ClipStats::add(&self.stats.bytes, done.bytes);
                self.failing = false;
                tracing::debug!("pipeline {}: clip {} ({:.1} s)", self.opts.pipeline, done.file, done.duration_s);
                let _ = self.done.send(done);
                self.retain();
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                self.failed(&e);
            }
        }
    }

    /// This pipeline's clips in the folder: (modified, size, path).
    fn clips(&self) -> Vec<(SystemTime, u64, PathBuf)> {
        let Ok(dir) = std::fs::read_dir(&self.opts.dir) else { return vec![] };
        let prefix = format!("{}-", self.opts.pipeline);
        dir.filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".mp4")
            })
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file().then(|| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect()
    }

    /// Deletes clips older than the age limit, then the oldest until the rest fit the budget
    /// (the newest is kept even when it alone is over: it was just reported).
    fn retain(&self) {
        let mut clips = self.clips();
        clips.sort();
        let now = SystemTime::now();
        let mut total: u64 = clips.iter().map(|c| c.1).sum();
        let newest = clips.last().map(|c| c.2.clone());
        for (modified, len, path) in clips {
            let old = now.duration_since(modified).is_ok_and(|age| age > self.opts.retain_age);
            if !old && (total <= self.opts.retain_bytes || Some(&path) == newest.as_ref()) {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    ClipStats::add(&self.stats.deleted, 1);
                    tracing::debug!("pipeline {}: deleted clip {}", self.opts.pipeline, path.display());
                }
                Err(e) => tracing::warn!("pipeline {}: could not delete {}: {e}", self.opts.pipeline, path.display()),
            }
        }
    }

    /// Deletes the unfinished files a stopped run left.
    fn remove_parts(&self) {
        let Ok(dir) = std::fs::read_dir(&self.opts.dir) else { return };
        let prefix = format!(".{}-", self.opts.pipeline);
        for e in dir.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".mp4.part") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The stream's last parameter sets (a source may send them once, not with every key frame).
#[derive(Debug, Default, Clone)]
struct ParameterSets {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl ParameterSets {
    /// Takes the first SPS and PPS of an access unit, when it has them.
    fn update(&mut self, annex_b: &[u8]) {
        let (mut sps, mut pps) = (None, None);
        for nal in h264::nal_units(annex_b) {
            match nal.first().map(|h| h & 0x1f) {
                Some(7) if sps.is_none() => sps = Some(nal),
                Some(8) if pps.is_none() => pps = Some(nal),
                _ => {}
            }
        }
        if let Some(s) = sps {
            if self.sps.as_deref() != Some(s) {
                self.sps = Some(s.to_vec());
            }
        }
        if let Some(p) = pps {
            if self.pps.as_deref() != Some(p) {
                self.pps = Some(p.to_vec());
            }
        }
    }
}

/// A sample held until the next one's time gives its duration.
struct Held {
    dts: i64,
    pts: i64,
    key: bool,
    bytes: Vec<u8>,
}

/// An MP4 file being written: one H.264 track, samples in decoding order.
struct Mp4File {
    part: PathBuf,
    writer: mp4::Mp4Writer<BufWriter<File>>,
    held: Option<Held>,
    first_dts: i64,
    /// The first sample's composition offset: presentation starts at 0.
    first_offset: Option<i64>,
    /// Added to the source's times: a stream whose clock started over (a new RTSP session)
    /// goes on from the clip's last frame.
    shift: i64,
    /// A composition offset went below 0 (the table is then written as version 1, signed).
    negative: bool,
    last_dts: i64,
    last_duration: u32,
    first_ms: u64,
    frames: u32,
    sps: Vec<u8>,
    pps: Vec<u8>,
    spent: Duration,
}

fn clip_err(path: &Path, reason: impl std::fmt::Display) -> LeptonError {
    LeptonError::Source { name: path.display().to_string(), reason: reason.to_string() }
}

impl Mp4File {
    /// Opens `.{part}.mp4.part` for a clip starting at key frame `u` (its parameter sets make
    /// the track's configuration).
    fn create(opts: &ClipOptions, part: &str, u: &Unit, seen: &ParameterSets) -> Result<Self> {
        let t = std::time::Instant::now();
        let part = opts.dir.join(format!(".{part}.mp4.part"));
        // The key frame's own parameter sets, else the stream's last ones.
        let mut sets = ParameterSets::default();
        sets.update(&u.data);
        let (Some(sps), Some(pps)) = (sets.sps.or_else(|| seen.sps.clone()), sets.pps.or_else(|| seen.pps.clone()))
        else {
            return Err(clip_err(&part, "no SPS and PPS came before the key frame"));
        };
        let (width, height) = dimensions(&sps).ok_or_else(|| clip_err(&part, "unreadable SPS"))?;
        // Read back at the end to mark signed composition offsets.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part)
            .map_err(|e| LeptonError::io(&part, e))?;
        let config = mp4::Mp4Config {
            major_brand: str::parse("isom").expect("four letters"),
            minor_version: 512,
            compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                .iter()
                .map(|b| str::parse(b).expect("four letters"))
                .collect(),
            timescale: 1000,
        };
        let mut writer = mp4::Mp4Writer::write_start(BufWriter::new(file), &config).map_err(|e| clip_err(&part, e))?;
        let track = mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: TIMESCALE,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width,
                height,
                seq_param_set: sps.clone(),
                pic_param_set: pps.clone(),
            }),
        };
        writer.add_track(&track).map_err(|e| clip_err(&part, e))?;
        Ok(Mp4File {
            part,
            writer,
            held: None,
            first_dts: u.dts,
            first_offset: None,
            shift: 0,
            negative: false,
            last_dts: u.dts,
            last_duration: TIMESCALE / 25,
            first_ms: u.ts_ms,
            frames: 0,
            sps,
            pps,
            spent: t.elapsed(),
        })
    }

    /// Adds an access unit (length-prefixed NAL units; parameter sets and delimiters left out
    /// unless they change).
    fn push(&mut self, u: &Unit) -> Result<()> {
        let t = std::time::Instant::now();
        let mut bytes = Vec::with_capacity(u.data.len());
        for nal in h264::nal_units(&u.data) {
            let Some(&h) = nal.first() else { continue };
            let kind = h & 0x1f;
            // Parameter sets go in the track's configuration; in band only when they differ.
            if kind == 9 || (kind == 7 && nal == self.sps) || (kind == 8 && nal == self.pps) {
                continue;
            }
            bytes.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            bytes.extend_from_slice(nal);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // Decoding times only move forward. A step back of up to a second is a reordered frame
        // of a source that gives presentation times only (Matroska, RTSP): it decodes next and
        // shows at its own time. A longer one is a clock that started over.
        let mut dts = u.dts + self.shift;
        if self.frames > 0 && dts <= self.last_dts {
            if self.last_dts - dts <= i64::from(TIMESCALE) {
                dts = self.last_dts + 1;
            } else {
                self.shift = self.last_dts + i64::from(self.last_duration) - u.dts;
                dts = u.dts + self.shift;
            }
        }
        let pts = if u.pts == u.dts { u.pts + self.shift } else { (u.pts + self.shift).max(dts) };
        self.write_held(Some(dts))?;
        self.held = Some(Held { dts, pts, key: u.key, bytes });
        self.last_dts = dts;
        self.frames += 1;
        self.spent += t.elapsed();
        Ok(())
    }

    /// Writes the held sample, its duration up to `next_dts` (the last one's, at the end).
    fn write_held(&mut self, next_dts: Option<i64>) -> Result<()> {
        let Some(h) = self.held.take() else { return Ok(()) };
        let duration = match next_dts {
            Some(n) => u32::try_from(n - h.dts).unwrap_or(u32::MAX).max(1),
            None => self.last_duration,
        };
        self.last_duration = duration;
        let first = *self.first_offset.get_or_insert(h.pts - h.dts);
        let offset = i32::try_from(h.pts - h.dts - first).unwrap_or(0);
        self.negative |= offset < 0;
        let sample = mp4::Mp4Sample {
            start_time: (h.dts - self.first_dts).max(0) as u64,
            duration,
            rendering_offset: offset,
            is_sync: h.key,
            bytes: mp4::Bytes::from(h.bytes),
        };
        self.writer.write_sample(1, &sample).map_err(|e| clip_err(&self.part, e))
    }

    /// Writes the index and renames the file to `{stem}.mp4` (or `{stem}-2.mp4`... when taken).
    fn finish(mut self, dir: &Path, stem: &str) -> Result<(String, PathBuf, ClipDone)> {
        let t = std::time::Instant::now();
        self.write_held(None)?;
        self.writer.write_end().map_err(|e| clip_err(&self.part, e))?;
        let mut out = self.writer.into_writer();
        out.flush().map_err(|e| LeptonError::io(&self.part, e))?;
        let mut file = out.into_inner().map_err(|e| LeptonError::io(&self.part, e.into_error()))?;
        if self.negative {
            signed_offsets(&mut file).map_err(|e| LeptonError::io(&self.part, e))?;
        }
        file.sync_data().map_err(|e| LeptonError::io(&self.part, e))?;
        let bytes = file.metadata().map_err(|e| LeptonError::io(&self.part, e))?.len();
        drop(file);
        let mut name = format!("{stem}.mp4");
        let mut n = 2;
        while dir.join(&name).exists() {
            name = format!("{stem}-{n}.mp4");
            n += 1;
        }
        let path = dir.join(&name);
        std::fs::rename(&self.part, &path).map_err(|e| LeptonError::io(&path, e))?;
        let span = self.last_dts - self.first_dts + i64::from(self.last_duration);
        let done = ClipDone {
            key: String::new(),
            file: name.clone(),
            path: path.clone(),
            event_ms: 0,
            first_ms: self.first_ms,
            duration_s: span as f64 / f64::from(TIMESCALE),
            frames: self.frames,
            bytes,
            write_time: self.spent + t.elapsed(),
        };
        Ok((name, path, done))
    }
}

/// Marks the composition offsets table (`moov/trak/mdia/minf/stbl/ctts`, written last) as
/// version 1: its offsets are signed (the writer stores them as two's complement already).
fn signed_offsets(file: &mut File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let len = file.seek(SeekFrom::End(0))?;
    // The top-level boxes: ftyp, mdat, moov.
    let mut at = 0u64;
    let moov = loop {
        if at + 8 > len {
            return Err(bad("no moov box"));
        }
        file.seek(SeekFrom::Start(at))?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head[..8])?;
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        if size == 1 {
            file.read_exact(&mut head[8..16])?;
            size = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
        }
        if size < 8 || at + size > len {
            return Err(bad("a box runs past the file"));
        }
        if &head[4..8] == b"moov" {
            break (at, size);
        }
        at += size;
    };
    let mut bytes = vec![0u8; moov.1 as usize];
    file.seek(SeekFrom::Start(moov.0))?;
    file.read_exact(&mut bytes)?;
    // Down the path, each box's children after its 8-byte header.
    let mut range = (8usize, bytes.len());
    for name in [&b"trak"[..], b"mdia", b"minf", b"stbl", b"ctts"] {
        let mut p = range.0;
        let found = loop {
            if p + 8 > range.1 {
                return Err(bad("no ctts box"));
            }
            let size = u32::from_be_bytes(bytes[p..p + 4].try_into().expect("4 bytes")) as usize;
            if size < 8 || p + size > range.1 {
                return Err(bad("a box runs past its parent"));
            }
            if &bytes[p + 4..p + 8] == name {
                break (p, p + size);
            }
            p += size;
        };
        range = (found.0 + 8, found.1);
    }
    // The version byte follows the ctts header.
    file.seek(SeekFrom::Start(moov.0 + range.0 as u64))?;
    file.write_all(&[1])?;
    Ok(())
}

/// A picture's size from its SPS.
fn dimensions(sps: &[u8]) -> Option<(u16, u16)> {
    let rbsp = h264_reader::rbsp::decode_nal(sps).ok()?;
    let sps = h264_reader::nal::sps::SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(&rbsp[..])).ok()?;
    let (w, h) = sps.pixel_dimensions().ok()?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

/// Converts a time in `timescale` units to [`TIMESCALE`] units.
pub fn to_90k(t: i64, timescale: u64) -> i64 {
    if timescale == 0 {
        return 0;
    }
    (i128::from(t) * i128::from(TIMESCALE) / i128::from(timescale)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::encoder::{Encoder, EncoderConfig, FrameType};
    use openh264::formats::YUVBuffer;
    use openh264::OpenH264API;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lepton-clips-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn options(dir: &Path) -> ClipOptions {
        ClipOptions {
            dir: dir.to_path_buf(),
            pipeline: "yard".into(),
            pre: Duration::from_millis(300),
            post: Duration::from_millis(300),
            max: Duration::from_secs(60),
            retain_age: Duration::from_secs(86_400),
            retain_bytes: 1 << 30,
        }
    }

    /// `n` frames of 64x48 H.264 from OpenH264, an IDR every 10, 10 fps from 1 s on the frames'
    /// timeline.
    fn stream(n: usize) -> Vec<Unit> {
        let config = EncoderConfig::new();
        let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
        (0..n)
            .map(|i| {
                let mut yuv = vec![128u8; 64 * 48 * 3 / 2];
                // A bright square moving right.
                for y in 16..32 {
                    for x in 0..16 {
                        yuv[y * 64 + (x + i * 2) % 64] = 250;
                    }
                }
                if i % 10 == 0 {
                    enc.force_intra_frame();
                }
                let bits = enc.encode(&YUVBuffer::from_vec(yuv, 64, 48)).unwrap();
                let key = bits.frame_type() == FrameType::IDR;
                assert_eq!(key, i % 10 == 0, "frame {i}");
                let t = i as i64 * 9000;
                Unit { ts_ms: 1000 + i as u64 * 100, dts: t, pts: t, key, data: bits.to_vec() }
            })
            .collect()
    }

    /// The frames of an MP4 file, decoded; and its duration, sample count and first sync flag.
    fn read_back(path: &Path) -> (f64, u32, bool, usize) {
        let len = std::fs::metadata(path).unwrap().len();
        let mut r = mp4::Mp4Reader::read_header(std::io::BufReader::new(File::open(path).unwrap()), len).unwrap();
        let t = r.tracks().values().next().unwrap();
        let (id, count, secs) = (t.track_id(), t.sample_count(), t.duration().as_secs_f64());
        let avcc = t.trak.mdia.minf.stbl.stsd.avc1.as_ref().unwrap().avcc.clone();
        let sets: Vec<Vec<u8>> = avcc
            .sequence_parameter_sets
            .iter()
            .chain(avcc.picture_parameter_sets.iter())
            .map(|n| n.bytes.clone())
            .collect();
        let mut dec = h264::H264::new("clip").unwrap();
        let (mut pictures, mut first_sync) = (0, false);
        let mut out = vec![];
        for s in 1..=count {
            let sample = r.read_sample(id, s).unwrap().unwrap();
            if s == 1 {
                first_sync = sample.is_sync;
            }
            let mut au = vec![];
            if sample.is_sync {
                h264::append_parameter_sets(sets.iter().map(Vec::as_slice), &mut au);
            }
            h264::append_annex_b(&sample.bytes, 4, &mut au, "clip").unwrap();
            if let Some(p) = dec.decode(&au, &mut out).unwrap() {
                assert_eq!((p.width, p.height), (64, 48));
                pictures += 1;
            }
        }
        pictures += dec.flush().unwrap();
        (secs, count, first_sync, pictures)
    }

    #[test]
    fn a_clip_starts_at_the_key_frame_before_pre_and_ends_post_after_the_event() {
        let dir = scratch("event");
        let mut clips = Clips::start(options(&dir)).unwrap();
        let tap = clips.tap();
        let units = stream(60);
        let settle = || std::thread::sleep(Duration::from_millis(300));
        // Frames 0-15 (1.0-2.5 s) first; the event starts at frame 15 (2.5 s): from 2.2 s, the
        // key frame before is frame 10 (2.0 s).
        for u in &units[..16] {
            tap.push(u.clone());
        }
        settle();
        clips.start_event("track:1:car", "yard-x-car-1", 2500);
        settle();
        for u in &units[16..31] {
            tap.push(u.clone());
        }
        // Ends at frame 30 (4.0 s): goes on to 4.3 s, closed by frame 34 (4.4 s), left out.
        clips.end_event("track:1:car", 4000);
        settle();
        for u in &units[31..] {
            tap.push(u.clone());
        }
        settle();
        let done = clips.written();
        assert_eq!(done.len(), 1, "{done:?}");
        let d = &done[0];
        assert_eq!(
            (d.key.as_str(), d.file.as_str(), d.event_ms, d.first_ms),
            ("track:1:car", "yard-x-car-1.mp4", 2500, 2000)
        );
        assert_eq!(d.frames, 24, "frames 10 to 33");
        assert!((d.duration_s - 2.4).abs() < 1e-9, "{}", d.duration_s);
        let (secs, count, first_sync, pictures) = read_back(&d.path);
        assert!((secs - 2.4).abs() < 1e-6, "{secs}");
        assert_eq!((count, first_sync, pictures), (24, true, 24), "every sample decodes");
        assert_eq!(std::fs::metadata(&d.path).unwrap().len(), d.bytes);
        // An event at the end of the stream: closed with what there is.
        clips.start_event("label:car", "yard-y-car", 6500);
        let done = clips.finish();
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!((done[0].first_ms, done[0].frames), (6000, 10), "from the key frame of 6.0 s to the last frame");
        assert_eq!(ClipStats::get(&clips.stats().written), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dropped_units_resume_the_clip_at_the_next_key_frame() {
        let dir = scratch("gap");
        let mut clips = Clips::start(options(&dir)).unwrap();
        let tap = clips.tap();
        let units = stream(40);
        for u in &units[..5] {
            tap.push(u.clone());
        }
        std::thread::sleep(Duration::from_millis(300));
        clips.start_event("label:car", "yard-gap", 1400);
        for u in &units[5..12] {
            tap.push(u.clone());
        }
        // Units 12 and 13 never reach the recorder (as when its queue is full).
        tap.seq.fetch_add(2, Ordering::Relaxed);
        for u in &units[14..] {
            tap.push(u.clone());
        }
        std::thread::sleep(Duration::from_millis(300));
        let done = clips.finish();
        assert_eq!(done.len(), 1);
        // Frames 0-11, then from the key frame of frame 20 to 39: nothing undecodable in between.
        assert_eq!(done[0].frames, 12 + 20);
        let (_, count, _, pictures) = read_back(&done[0].path);
        assert_eq!((count, pictures), (32, 32));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_presence_back_within_post_extends_its_clip() {
        let dir = scratch("again");
        let mut clips = Clips::start(options(&dir)).unwrap();
        let tap = clips.tap();
        let units = stream(60);
        let settle = || std::thread::sleep(Duration::from_millis(300));
        let push = |r: std::ops::Range<usize>| r.for_each(|i| tap.push(units[i].clone()));
        push(0..16);
        settle();
        clips.start_event("label:car", "yard-again", 2500);
        push(16..21);
        settle();
        clips.end_event("label:car", 3000);
        settle();
        push(21..23);
        settle();
        // Back at 3.2 s, before the clip's post (3.3 s) ran out: one clip goes on.
        clips.start_event("label:car", "yard-again-2", 3200);
        settle();
        push(23..60);
        let done = clips.finish();
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!((done[0].first_ms, done[0].frames), (2000, 50), "frames 10 to 59");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wall_clock_set_back_cannot_make_a_clip_longer_than_pre_and_max() {
        let dir = scratch("clock");
        let opts = ClipOptions { max: Duration::from_secs(2), ..options(&dir) };
        let mut clips = Clips::start(opts).unwrap();
        let tap = clips.tap();
        let mut units = stream(60);
        for (i, u) in units.iter_mut().enumerate() {
            // An hour back from frame 10 on (NTP on a board without a clock chip).
            u.ts_ms += if i < 10 { 10_000_000 } else { 10_000_000 - 3_600_000 };
        }
        units[..5].iter().for_each(|u| tap.push(u.clone()));
        std::thread::sleep(Duration::from_millis(300));
        clips.start_event("label:car", "yard-clock", 10_001_400);
        units[5..].iter().for_each(|u| tap.push(u.clone()));
        std::thread::sleep(Duration::from_millis(300));
        let done = clips.written();
        let st = clips.stats();
        let g = |c: &AtomicU64| ClipStats::get(c);
        assert_eq!(
            done.len(),
            1,
            "closed on its media time, before the stream ended: written {} failed {} skipped {}",
            g(&st.written),
            g(&st.failed),
            g(&st.skipped)
        );
        // Frames 0 to 24: 2.5 s, the first past pre + max (2.3 s) of media time.
        assert_eq!(done[0].frames, 25);
        let rest = clips.finish();
        assert!(rest.is_empty(), "{rest:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reordered_frames_of_a_source_with_presentation_times_only_keep_their_times() {
        let dir = scratch("reorder");
        let mut clips = Clips::start(options(&dir)).unwrap();
        let tap = clips.tap();
        // Decoding order 0 3 1 2 6 4 5 9 7 8, each unit stamped with its presentation time only
        // (dts = pts), as Matroska and RTSP give them; the parameter sets only in the first unit.
        let units = stream(10);
        let order = [0usize, 3, 1, 2, 6, 4, 5, 9, 7, 8];
        for (k, &i) in order.iter().enumerate() {
            let t = i as i64 * 9000;
            let mut u = Unit { ts_ms: 1000 + i as u64 * 100, dts: t, pts: t, ..units[k].clone() };
            if k > 0 {
                // Later units without SPS and PPS: the recorder remembers the stream's.
                let kept: Vec<u8> = h264::nal_units(&u.data)
                    .filter(|n| !matches!(n.first().map(|h| h & 0x1f), Some(7 | 8)))
                    .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
                    .collect();
                u.data = kept;
            }
            tap.push(u);
        }
        std::thread::sleep(Duration::from_millis(300));
        clips.start_event("label:car", "yard-reorder", 1000);
        let done = clips.finish();
        assert_eq!(done.len(), 1, "{done:?}");
        let len = std::fs::metadata(&done[0].path).unwrap().len();
        let mut r =
            mp4::Mp4Reader::read_header(std::io::BufReader::new(File::open(&done[0].path).unwrap()), len).unwrap();
        let (id, count) = {
            let t = r.tracks().values().next().unwrap();
            (t.track_id(), t.sample_count())
        };
        let mut shown = vec![];
        let mut decode = vec![];
        for s in 1..=count {
            let sample = r.read_sample(id, s).unwrap().unwrap();
            decode.push(sample.start_time as i64);
            shown.push(sample.start_time as i64 + i64::from(sample.rendering_offset));
        }
        let want: Vec<i64> = order.iter().map(|&i| i as i64 * 9000).collect();
        assert_eq!(shown, want, "each frame shows at its own time");
        assert!(decode.windows(2).all(|w| w[0] < w[1]), "decoding times rise: {decode:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let dir = scratch("queue");
        let clips = Clips::start(options(&dir)).unwrap();
        let tap = clips.tap();
        let huge = Unit { ts_ms: 0, dts: 0, pts: 0, key: true, data: vec![0; (QUEUE_BYTES + 1) as usize] };
        tap.push(huge);
        assert_eq!(ClipStats::get(&clips.stats().units_dropped), 1);
        assert_eq!(clips.stats().queued.load(Ordering::Relaxed), 0);
        drop(clips);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_budget_deletes_old_clips_then_the_oldest_of_this_pipeline_only() {
        let dir = scratch("retain");
        let make = |name: &str, len: usize, age_s: u64| {
            let p = dir.join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
        };
        make("yard-a.mp4", 1000, 10 * 86_400);
        make("yard-b.mp4", 600_000, 300);
        make("yard-c.mp4", 600_000, 200);
        make("porch-a.mp4", 900_000, 20 * 86_400);
        make("notes.txt", 10, 20 * 86_400);
        make(".yard-d.mp4.part", 10, 100);
        let opts =
            ClipOptions { retain_age: Duration::from_secs(7 * 86_400), retain_bytes: 1_000_000, ..options(&dir) };
        let clips = Clips::start(opts).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "porch-a.mp4", "yard-c.mp4"]);
        assert_eq!(ClipStats::get(&clips.stats().deleted), 2);
        drop(clips);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_are_kept_plain() {
        let dir = scratch("names");
        let mut clips = Clips::start(options(&dir)).unwrap();
        let tap = clips.tap();
        for u in stream(12) {
            tap.push(u);
        }
        std::thread::sleep(Duration::from_millis(300));
        clips.start_event("label:x", "../../etc/passwd", 1500);
        clips.start_event("label:y", "../../etc/passwd", 1500);
        let mut done = clips.finish();
        done.sort_by(|a, b| a.file.cmp(&b.file));
        let names: Vec<&str> = done.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(names, ["_.._etc_passwd-2.mp4", "_.._etc_passwd.mp4"]);
        assert!(done.iter().all(|d| d.path.parent() == Some(dir.as_path())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
