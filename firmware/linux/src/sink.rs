//! Where results go: stdout, MQTT detections and events, and the counters the stats topic reports.
//! Presence events are debounced here ([`Presence`]): a label starts when it is detected at or
//! above the threshold and ends after `hold` without it, measured on the pipeline's monotonic
//! clock (a recording's own timeline), never the wall clock. With tracking, each object's life
//! goes to the `objects` topic and zone entries and exits to the zones' topics, with the counts
//! they change ([`Zoned`]).

use crate::alert::AlertHandle;
use crate::config::Format;
use crate::console::say;
use crate::mqtt::{Link, Meta};
use crate::snapshot::Snapshotter;
use crate::status::{now_ms, rfc3339, SharedStatus, LATENCY_BUCKETS};
use crate::topics::Topics;
use crate::web::history::{Record, Writer};
use crate::web::live::SharedLast;
use lepton_firmware::presence::{Change, Presence};
use lepton_runtime::event::{DetectionMessage, Detections, EventKind, EventMessage};
use lepton_runtime::pipeline::{FrameReport, Sink, Stats};
use lepton_runtime::source::clips::{ClipDone, ClipTap, Clips};
use lepton_runtime::vision::track::{TrackEvent, TrackEventKind, TrackTag};
use lepton_runtime::vision::zone::{ZoneEvent, ZoneEventKind};
use lepton_runtime::{Detection, Event, LeptonError};
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// This daemon's run: a random non-zero number fixed at its start and carried by every detection
/// and event message (`run`), so that `seq`, which starts at 0 again after a restart, and `run`
/// together name one message (the event store's key). Random rather than the start time: a
/// board without a real-time clock can start at the same time after every boot.
pub fn run_id() -> u32 {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        use std::io::Read;
        let mut b = [0u8; 4];
        let random =
            std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map(|()| u32::from_le_bytes(b));
        // Without /dev/urandom: the start time and the process id.
        random.unwrap_or_else(|_| (now_ms() as u32) ^ std::process::id().rotate_left(16)).max(1)
    })
}

/// The daemon's sink for one pipeline.
pub struct DaemonSink {
    device: String,
    pipeline: String,
    model: String,
    labels: Vec<String>,
    threshold: f32,
    print: bool,
    format: Format,
    link: Option<Link>,
    topics: Topics,
    seq: u32,
    run: u32,
    presence: Presence,
    changes: Vec<Change>,
    status: SharedStatus,
    alerts: Vec<AlertHandle>,
    snapshots: Option<Snapshotter>,
    publish_snapshots: bool,
    keyword: bool,
    history: Option<Writer>,
    history_full: bool,
    live: Option<SharedLast>,
    zones: Vec<Zoned>,
    clips: Option<EventClips>,
}

/// Clips of a pipeline's events (`[pipeline.clips]`): one per tracked object, or per presence
/// event of a label when the pipeline does not track.
pub struct EventClips {
    /// The recorder.
    pub clips: Clips,
    /// Objects (tracking on) rather than presence events.
    pub per_object: bool,
}

/// A zone as the sink publishes it: its name and the objects in it now, per counted label.
#[derive(Debug, Clone)]
pub struct Zoned {
    /// The zone's name (`[[pipeline.zone]]` name).
    pub name: String,
    /// Each counted label and how many of its objects are inside (every label the zone counts,
    /// zeros included, so that a Home Assistant sensor reads 0 rather than nothing).
    pub counts: Vec<(String, u32)>,
}

/// What a [`DaemonSink`] needs.
pub struct SinkOptions {
    /// Device id.
    pub device: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Model file name (in messages).
    pub model: String,
    /// Class names.
    pub labels: Vec<String>,
    /// Publication threshold.
    pub threshold: f32,
    /// Presence hold.
    pub hold: Duration,
    /// Print on stdout.
    pub print: bool,
    /// Payload encoding.
    pub format: Format,
    /// The broker link (none: stdout only).
    pub link: Option<Link>,
    /// Topics.
    pub topics: Topics,
    /// GPIO outputs switched on by event starts; turned off at the end.
    pub alerts: Vec<AlertHandle>,
    /// Snapshot pictures (vision pipelines with `[pipeline.snapshot]`).
    pub snapshots: Option<Snapshotter>,
    /// Publish the snapshots on MQTT (`[pipeline.snapshot]`); without, they are taken for the
    /// event history only.
    pub publish_snapshots: bool,
    /// A keyword spotter: each word heard also goes to the `heard` topic (Home Assistant event).
    pub keyword: bool,
    /// The device page's event history.
    pub history: Option<Writer>,
    /// The device page's view of the newest frame and its detections.
    pub live: Option<SharedLast>,
    /// The pipeline's zones, in the order of the config (counts at zero).
    pub zones: Vec<Zoned>,
    /// Event clips (`[pipeline.clips]`).
    pub clips: Option<EventClips>,
}

impl DaemonSink {
    /// A sink and the counters it updates.
    pub fn new(o: SinkOptions) -> (Self, SharedStatus) {
        let status = SharedStatus::default();
        let sink = DaemonSink {
            device: o.device,
            pipeline: o.pipeline,
            model: o.model,
            labels: o.labels,
            threshold: o.threshold,
            print: o.print,
            format: o.format,
            link: o.link,
            topics: o.topics,
            seq: 0,
            run: run_id(),
            presence: Presence::new(o.hold),
            changes: Vec::new(),
            status: Arc::clone(&status),
            alerts: o.alerts,
            snapshots: o.snapshots,
            publish_snapshots: o.publish_snapshots,
            keyword: o.keyword,
            history: o.history,
            history_full: false,
            live: o.live,
            zones: o.zones,
            clips: o.clips,
        };
        if let Some(c) = &sink.clips {
            status.lock().unwrap_or_else(|p| p.into_inner()).clips = Some(c.clips.stats());
        }
        // Every zone starts empty: retained zero counts replace a previous run's.
        for z in 0..sink.zones.len() {
            sink.publish_count(z);
        }
        (sink, status)
    }

    /// The counters this sink updates.
    pub fn status(&self) -> SharedStatus {
        Arc::clone(&self.status)
    }

    /// Where the pipeline's source hands its encoded stream, with `[pipeline.clips]`.
    pub fn clip_tap(&self) -> Option<ClipTap> {
        self.clips.as_ref().map(|c| c.clips.tap())
    }

    /// Starts a clip for an event (`track`: the object's id; `None`: the label's presence).
    fn clip_start(&self, label: &str, track: Option<u32>, ts_ms: u64) {
        let Some(c) = &self.clips else { return };
        if c.per_object != track.is_some() {
            return;
        }
        // 2026-12-07T15:30:12.345Z -> 20261207T153012Z
        let stamp: String = rfc3339(ts_ms).chars().take(19).filter(|c| c.is_ascii_alphanumeric()).collect();
        let stem = match track {
            Some(id) => format!("{}-{stamp}Z-{label}-{id}", self.pipeline),
            None => format!("{}-{stamp}Z-{label}", self.pipeline),
        };
        c.clips.start_event(&clip_key(label, track), &stem, ts_ms);
    }

    /// Ends an event's clip (`post_s` later).
    fn clip_end(&self, label: &str, track: Option<u32>, ts_ms: u64) {
        if let Some(c) = self.clips.as_ref().filter(|c| c.per_object == track.is_some()) {
            c.clips.end_event(&clip_key(label, track), ts_ms);
        }
    }

    /// Publishes the clips written since the last frame.
    fn publish_clips(&mut self, written: Vec<ClipDone>) {
        for d in written {
            // The key says which event: `track:{id}:{label}` or `label:{label}`.
            let (track, label) = match d.key.split_once(':') {
                Some(("track", rest)) => match rest.split_once(':') {
                    Some((id, label)) => (id.parse::<u32>().ok(), label.to_string()),
                    None => (None, rest.to_string()),
                },
                Some((_, label)) => (None, label.to_string()),
                None => (None, d.key.clone()),
            };
            if self.print {
                say!(
                    "{} clip {} of {label}{}: {:.2} s, {} frames, {} bytes, written in {:.2} ms",
                    self.pipeline,
                    d.file,
                    track.map_or(String::new(), |t| format!(" #{t}")),
                    d.duration_s,
                    d.frames,
                    d.bytes,
                    d.write_time.as_secs_f64() * 1e3
                );
            }
            self.store(Record {
                ts_ms: d.event_ms,
                pipeline: self.pipeline.clone(),
                label: label.clone(),
                kind: "clip",
                score: 0.0,
                duration_s: Some(d.duration_s),
                picture: None,
                zone: None,
                clip: Some(d.file.clone()),
            });
            let Some(link) = &self.link else { continue };
            let mut j = json!({
                "device": self.device, "pipeline": self.pipeline, "run": self.run, "ts": rfc3339(d.event_ms),
                "label": label, "event": "clip", "clip": d.file, "duration_s": d.duration_s,
                "frames": d.frames, "bytes": d.bytes, "start": rfc3339(d.first_ms),
                "write_ms": d.write_time.as_secs_f64() * 1e3,
            });
            if let Some(t) = track {
                j["track"] = json!(t);
            }
            link.publish(&self.topics.objects(&self.pipeline), j.to_string().into_bytes(), false, Meta::JSON);
        }
    }

    fn label(&self, class: u16) -> String {
        self.labels.get(class as usize).cloned().unwrap_or_else(|| class.to_string())
    }

    /// Publishes one frame's detections; returns the message's `seq`.
    fn publish_detections(&mut self, r: &FrameReport<'_>, kept: &[Detection], tracks: &[Option<TrackTag>]) -> u32 {
        let seq = self.seq;
        self.seq += 1;
        let latency_ms = r.inference.as_secs_f64() * 1e3;
        if self.print {
            let mut out = std::io::stdout().lock();
            let _ =
                write!(out, "{} #{seq:<5} frame {:<5} {:<24}", self.pipeline, r.meta.frame, r.source.unwrap_or("-"));
            // Boxes left to right, so a row of digits prints as it reads; classes best first.
            let mut order: Vec<&Detection> = kept.iter().collect();
            order.sort_by(|a, b| a.bbox.map_or(0.0, |b| b.x0).total_cmp(&b.bbox.map_or(0.0, |b| b.x0)));
            for d in order {
                let _ = write!(out, "  {} {:.3}", self.label(d.class), d.score);
                if let Some(b) = d.bbox {
                    let _ = write!(out, " [{:.0},{:.0},{:.0},{:.0}]", b.x0, b.y0, b.x1, b.y1);
                }
            }
            let _ = writeln!(out, "  ({latency_ms:.2} ms)");
        }
        let Some(link) = &self.link else { return seq };
        let payload = match self.format {
            Format::Json => {
                let dets: Vec<_> = kept
                    .iter()
                    .zip(tracks.iter().chain(std::iter::repeat(&None)))
                    .map(|(d, t)| {
                        let mut j = json!({"label": self.label(d.class), "score": d.score});
                        if let Some(b) = d.bbox {
                            j["box"] = json!([b.x0, b.y0, b.x1, b.y1]);
                        }
                        // A confirmed track's id, and whether the object has stayed in place.
                        if let Some(TrackTag { id: Some(id), stationary }) = t {
                            j["track"] = json!(id);
                            j["stationary"] = json!(stationary);
                        }
                        j
                    })
                    .collect();
                json!({
                    "device": self.device, "pipeline": self.pipeline, "run": self.run, "seq": seq,
                    "ts": rfc3339(r.meta.timestamp_ms),
                    "frame": r.meta.frame, "source": r.source, "model": self.model, "latency_ms": latency_ms,
                    "detections": dets,
                })
                .to_string()
                .into_bytes()
            }
            Format::Postcard => {
                let mut detections = Detections::new();
                for d in kept.iter().take(detections.capacity()) {
                    let _ = detections.push(*d);
                }
                let m = DetectionMessage {
                    seq,
                    meta: r.meta,
                    latency_us: r.inference.as_micros() as u32,
                    detections,
                    run: self.run,
                };
                postcard::to_stdvec(&m).unwrap_or_default()
            }
        };
        let meta = link.detection_meta(self.format == Format::Postcard);
        link.publish(&self.topics.detections(&self.pipeline), payload, false, meta);
        seq
    }

    /// Takes a snapshot of the frame `r` reports when one is due, and publishes it (with
    /// `[pipeline.snapshot]`); returns the picture, and the frame's detection `seq` when the
    /// picture went out on MQTT.
    fn snapshot(
        &mut self,
        r: &FrameReport<'_>,
        kept: &[Detection],
        seq: Option<u32>,
    ) -> Option<(Option<u32>, Arc<Vec<u8>>)> {
        let starts = kept.iter().any(|d| !self.presence.is_present(d.class));
        let shot = self.snapshots.as_mut()?;
        // Intervals on the pipeline's monotonic clock, like the presence hold.
        let clock_ms = r.clock.as_millis() as u64;
        if !shot.due(clock_ms, starts) {
            return None;
        }
        let labels = &self.labels;
        let label = |c: u16| labels.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
        let Some(pic) = shot.take(r.meta.frame, clock_ms, kept, label) else {
            tracing::warn!("pipeline {}: frame {} was no longer kept for its snapshot", self.pipeline, r.meta.frame);
            return None;
        };
        // Topic, headers and the packet's framing fit in the remaining kilobyte.
        if pic.jpeg.len() > crate::mqtt::MAX_PACKET - 1024 {
            tracing::warn!(
                "pipeline {}: a snapshot of {} bytes is over the MQTT packet limit of {} bytes; not published (lower [pipeline.snapshot] quality or max_width)",
                self.pipeline,
                pic.jpeg.len(),
                crate::mqtt::MAX_PACKET
            );
            self.status.lock().unwrap_or_else(|p| p.into_inner()).snapshots_dropped += 1;
            return None;
        }
        let jpeg = Arc::new(pic.jpeg);
        if !self.publish_snapshots {
            return Some((None, jpeg));
        }
        let mut shown: Vec<String> = kept.iter().map(|d| self.label(d.class)).collect();
        shown.sort();
        shown.dedup();
        if self.print {
            say!(
                "{} snapshot of frame {} ({}x{}, {} bytes{}{})",
                self.pipeline,
                r.meta.frame,
                pic.width,
                pic.height,
                jpeg.len(),
                seq.map_or(String::new(), |s| format!(", detections #{s}")),
                if shown.is_empty() { String::new() } else { format!(": {}", shown.join(", ")) },
            );
        }
        self.status.lock().unwrap_or_else(|p| p.into_inner()).snapshots += 1;
        let Some(link) = &self.link else { return Some((None, jpeg)) };
        for l in &shown {
            link.publish(&self.topics.label_snapshot(&self.pipeline, l), jpeg.to_vec(), true, Meta::JPEG);
        }
        link.publish(&self.topics.snapshot(&self.pipeline), jpeg.to_vec(), true, Meta::JPEG);
        Some((seq, jpeg))
    }

    fn publish_event(
        &mut self,
        e: &Event,
        duration_ms: Option<u64>,
        snapshot_seq: Option<u32>,
        picture: Option<Arc<Vec<u8>>>,
    ) {
        let label = self.label(e.class);
        self.store(Record {
            ts_ms: e.timestamp_ms,
            pipeline: self.pipeline.clone(),
            label: label.clone(),
            kind: e.kind.name(),
            score: e.score,
            duration_s: duration_ms.map(|d| d as f64 / 1e3),
            picture,
            zone: None,
            clip: None,
        });
        if e.kind == EventKind::Start {
            for a in &self.alerts {
                a.event_started(&label);
            }
            self.clip_start(&label, None, e.timestamp_ms);
        } else {
            self.clip_end(&label, None, e.timestamp_ms);
        }
        if self.print {
            say!("{} event {} {label} {:.3} at {}", self.pipeline, e.kind.name(), e.score, rfc3339(e.timestamp_ms));
        }
        let Some(link) = &self.link else { return };
        let payload = match self.format {
            Format::Json => {
                let mut j = json!({
                    "device": self.device, "pipeline": self.pipeline, "run": self.run, "ts": rfc3339(e.timestamp_ms),
                    "label": label,
                    "event": e.kind.name(), "score": e.score,
                    "duration_s": duration_ms.map(|d| d as f64 / 1e3),
                });
                if let Some(s) = snapshot_seq {
                    j["snapshot_seq"] = json!(s);
                }
                j.to_string().into_bytes()
            }
            Format::Postcard => postcard::to_stdvec(&EventMessage { event: *e, run: self.run }).unwrap_or_default(),
        };
        if self.keyword && e.kind == EventKind::Start {
            let heard = json!({"event_type": label, "score": e.score, "ts": rfc3339(e.timestamp_ms)});
            link.publish(&self.topics.heard(&self.pipeline), heard.to_string().into_bytes(), false, Meta::JSON);
        }
        let meta = if self.format == Format::Postcard { Meta::POSTCARD } else { Meta::JSON };
        link.publish(&self.topics.events(&self.pipeline), payload.clone(), false, meta);
        link.publish(&self.topics.label_events(&self.pipeline, &label), payload, true, meta);
    }

    /// Stores an event in the device page's history (when it has one); counts what the writer,
    /// behind, could not take.
    fn store(&mut self, record: Record) {
        let Some(h) = &self.history else { return };
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if h.send(record) {
            s.history += 1;
            self.history_full = false;
        } else {
            s.history_dropped += 1;
            if !self.history_full {
                self.history_full = true;
                tracing::warn!(
                    "pipeline {}: the event history's writer is behind; events not stored are counted (history_dropped)",
                    self.pipeline
                );
            }
        }
    }

    /// Publishes what happened to tracked objects at `ts_ms` (`objects` topic, JSON).
    fn publish_objects(&mut self, ts_ms: u64, events: &[TrackEvent]) {
        for e in events {
            let label = self.label(e.class);
            let event = match e.kind {
                TrackEventKind::Confirmed => "start",
                TrackEventKind::Stationary => "stationary",
                TrackEventKind::Moving => "moving",
                TrackEventKind::Lost => "end",
            };
            match e.kind {
                TrackEventKind::Confirmed => self.clip_start(&label, Some(e.id), ts_ms),
                TrackEventKind::Lost => self.clip_end(&label, Some(e.id), ts_ms),
                TrackEventKind::Stationary | TrackEventKind::Moving => {}
            }
            if self.print {
                say!("{} object #{} {label} {event} {:.3} at {}", self.pipeline, e.id, e.score, rfc3339(ts_ms));
            }
            let Some(link) = &self.link else { continue };
            let b = e.bbox;
            let j = json!({
                "device": self.device, "pipeline": self.pipeline, "run": self.run, "ts": rfc3339(ts_ms),
                "track": e.id, "label": label, "event": event, "score": e.score, "box": [b.x0, b.y0, b.x1, b.y1],
            });
            link.publish(&self.topics.objects(&self.pipeline), j.to_string().into_bytes(), false, Meta::JSON);
        }
    }

    /// Publishes zone entries and exits at `ts_ms` (the zone's topic) and the counts they changed
    /// (retained).
    fn publish_zones(&mut self, ts_ms: u64, events: &[ZoneEvent]) {
        if events.is_empty() {
            return;
        }
        let mut changed = vec![false; self.zones.len()];
        for e in events {
            let label = self.label(e.class);
            let Some(zone) = self.zones.get_mut(e.zone as usize) else { continue };
            let count = match zone.counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => n,
                None => {
                    zone.counts.push((label.clone(), 0));
                    &mut zone.counts.last_mut().expect("just pushed").1
                }
            };
            *count = match e.kind {
                ZoneEventKind::Enter => count.saturating_add(1),
                ZoneEventKind::Leave => count.saturating_sub(1),
            };
            changed[e.zone as usize] = true;
            let name = zone.name.clone();
            if e.kind == ZoneEventKind::Enter {
                for a in &self.alerts {
                    a.zone_entered(&name, &label);
                }
            }
            self.store(Record {
                ts_ms,
                pipeline: self.pipeline.clone(),
                label: label.clone(),
                kind: e.kind.name(),
                score: e.score,
                duration_s: None,
                picture: None,
                zone: Some(name.clone()),
                clip: None,
            });
            if self.print {
                say!(
                    "{} zone {name}: {label} #{} {} {:.3} at {}",
                    self.pipeline,
                    e.track,
                    e.kind.name(),
                    e.score,
                    rfc3339(ts_ms)
                );
            }
            if let Some(link) = &self.link {
                let j = json!({
                    "device": self.device, "pipeline": self.pipeline, "run": self.run, "ts": rfc3339(ts_ms),
                    "zone": name, "event": e.kind.name(), "label": label, "track": e.track, "score": e.score,
                });
                link.publish(&self.topics.zone(&self.pipeline, &name), j.to_string().into_bytes(), false, Meta::JSON);
            }
        }
        for (z, changed) in changed.into_iter().enumerate() {
            if changed {
                self.publish_count(z);
            }
        }
    }

    /// Publishes zone `z`'s counts, retained: `{"label": n, ...}`.
    fn publish_count(&self, z: usize) {
        let (Some(link), Some(zone)) = (&self.link, self.zones.get(z)) else { return };
        let counts: serde_json::Map<String, serde_json::Value> =
            zone.counts.iter().map(|(l, n)| (l.clone(), json!(n))).collect();
        let payload = serde_json::Value::Object(counts).to_string().into_bytes();
        link.publish(&self.topics.zone_count(&self.pipeline, &zone.name), payload, true, Meta::JSON);
    }

    /// Starts presence for detected labels, ends it for labels absent longer than the hold, and
    /// publishes those events (the picture goes with the starts).
    fn update_presence(
        &mut self,
        r: &FrameReport<'_>,
        seen: &[Detection],
        snapshot_seq: Option<u32>,
        picture: Option<Arc<Vec<u8>>>,
    ) {
        let mut changes = std::mem::take(&mut self.changes);
        self.presence.update(r.clock, r.meta.timestamp_ms, seen, &mut changes);
        self.publish_changes(&mut changes, snapshot_seq, picture);
        self.changes = changes;
    }

    fn publish_changes(&mut self, changes: &mut Vec<Change>, snapshot_seq: Option<u32>, picture: Option<Arc<Vec<u8>>>) {
        for c in changes.drain(..) {
            let e = Event { class: c.class, kind: c.kind, timestamp_ms: c.timestamp_ms, score: c.score };
            match c.duration {
                None => self.publish_event(&e, None, snapshot_seq, picture.clone()),
                Some(d) => self.publish_event(&e, Some(d.as_millis() as u64), None, None),
            }
        }
    }
}

/// The recorder's key of an event's clip.
fn clip_key(label: &str, track: Option<u32>) -> String {
    match track {
        Some(id) => format!("track:{id}:{label}"),
        None => format!("label:{label}"),
    }
}

impl Sink for DaemonSink {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        let kept: heapless::Vec<Detection, 32> =
            r.detections.iter().filter(|d| d.score >= self.threshold).copied().collect();
        // Each kept detection's track (none without tracking).
        let tracks: heapless::Vec<Option<TrackTag>, 32> = r
            .detections
            .iter()
            .enumerate()
            .filter(|(_, d)| d.score >= self.threshold)
            .map(|(i, _)| r.tracks.get(i).copied())
            .collect();
        let seq = (!kept.is_empty()).then(|| self.publish_detections(r, &kept, &tracks));
        // The picture goes out before the events it illustrates, so it is there when they arrive.
        let (snapshot_seq, picture) = self.snapshot(r, &kept, seq).map_or((None, None), |(s, p)| (s, Some(p)));
        // Model-made events (speech start/end) go out as they are.
        for e in r.events {
            self.publish_event(e, None, None, None);
        }
        self.update_presence(r, &kept, snapshot_seq, picture);
        self.publish_objects(r.meta.timestamp_ms, r.track_events);
        self.publish_zones(r.meta.timestamp_ms, r.zone_events);
        if let Some(written) = self.clips.as_ref().map(|c| c.clips.written()) {
            self.publish_clips(written);
        }
        if let Some(live) = &self.live {
            let ids: heapless::Vec<Option<u32>, 32> = tracks.iter().map(|t| t.and_then(|t| t.id)).collect();
            live.lock().unwrap_or_else(|p| p.into_inner()).update(r.meta.frame, r.meta.timestamp_ms, &kept, &ids);
        }
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.processed += 1;
        s.dropped = r.dropped;
        s.failed = r.failed;
        s.messages += u64::from(!kept.is_empty());
        if r.inferred {
            s.inferred += 1;
            s.inference.record(r.inference);
            let secs = r.inference.as_secs_f64();
            if let Some(b) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
                s.histogram[b] += 1;
            }
        }
        Ok(())
    }

    fn tracks_ended(
        &mut self,
        stats: &Stats,
        track_events: &[TrackEvent],
        zone_events: &[ZoneEvent],
    ) -> Result<(), LeptonError> {
        // Stamped like the presence ends of `finish`.
        let now = stats.end_ms.unwrap_or_else(now_ms);
        self.publish_objects(now, track_events);
        self.publish_zones(now, zone_events);
        Ok(())
    }

    fn finish(&mut self, stats: &Stats) -> Result<(), LeptonError> {
        // Stamped on the source's own timeline (a recording's end), else the wall clock of live
        // frames; the durations on the pipeline's clock.
        let now = stats.end_ms.unwrap_or_else(now_ms);
        let mut changes = std::mem::take(&mut self.changes);
        self.presence.finish(stats.end_clock, now, &mut changes);
        self.publish_changes(&mut changes, None, None);
        // The stream has ended: clips still recording close with what they have.
        if let Some(written) = self.clips.as_mut().map(|c| c.clips.finish()) {
            self.publish_clips(written);
        }
        for a in std::mem::take(&mut self.alerts) {
            a.stop();
        }
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.finished = true;
        s.dropped = s.dropped.max(stats.frames_dropped);
        s.failed = s.failed.max(stats.frames_failed);
        let mut inference = stats.inference.clone();
        if let Some(h) = &s.source {
            say!("{}: source outages: {}", self.pipeline, h.outages());
        }
        // Behind a motion gate, the frames the model ran on too.
        let mut gated = if stats.frames_inferred < stats.frames_processed {
            format!("; {} through the model (motion gate)", stats.frames_inferred)
        } else {
            String::new()
        };
        if stats.untracked > 0 {
            gated += &format!(
                "; {} boxes without a track (over {} objects at once)",
                stats.untracked,
                lepton_runtime::vision::track::MAX_TRACKS
            );
        }
        say!(
            "{}: {} processed, {} dropped, {} failed, {} published; inference p50 {:.3} ms p99 {:.3} ms{gated}",
            self.pipeline,
            stats.frames_processed,
            stats.frames_dropped,
            stats.frames_failed,
            s.messages,
            inference.percentile(50.0).as_secs_f64() * 1e3,
            inference.percentile(99.0).as_secs_f64() * 1e3,
        );
        Ok(())
    }
}
