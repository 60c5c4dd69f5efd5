//! Video files: H.264 in MP4 (mp4) or Matroska/WebM (matroska-demuxer), decoded by OpenH264 on
//! the pipeline's thread. Paced at the file's frame rate like a camera (a frame whose successor is
//! already due is dropped and counted; one nothing refers to is not even decoded), or read as fast
//! as the pipeline goes (`realtime = false`, nothing dropped). Finite like an image folder, or
//! looping. A frame's timestamp is the run's start plus the frame's presentation time.

use super::clips::{self, ClipTap, Unit};
use super::h264::{self, H264};
use super::{now_ms, Frame, FrameSource};
use lepton_core::error::{LeptonError, Result};
use lepton_core::event::FrameMeta;
use lepton_core::vision::{ImageView, PixelFormat};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoOptions {
    /// Pace frames at the file's rate (default true); false: as fast as the pipeline goes.
    pub realtime: bool,
    /// Start over after the last frame (default false).
    pub looping: bool,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions { realtime: true, looping: false }
    }
}

/// A file's video track, as `lepton probe` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Container (`MP4`, `Matroska`).
    pub container: &'static str,
    /// Codec (`H.264`).
    pub codec: &'static str,
    /// Picture size from the container.
    pub width: usize,
    /// Picture size from the container.
    pub height: usize,
    /// Frames in the track, when the container says.
    pub frames: Option<u64>,
    /// Frames per second, when the container says or the first frames tell.
    pub fps: Option<f64>,
}

/// One demuxed access unit's times.
struct Sample {
    pts_ms: u64,
    /// Decoding and presentation times in 90 kHz units (for clips).
    dts: i64,
    pts: i64,
}

/// The container readers, writing Annex B access units (parameter sets before key frames).
enum Demuxer {
    Mp4 {
        reader: Box<mp4::Mp4Reader<BufReader<File>>>,
        track: u32,
        next: u32,
        count: u32,
        timescale: u64,
        length_size: usize,
        sets: Vec<Vec<u8>>,
        file_len: u64,
    },
    Mkv {
        file: Box<matroska_demuxer::MatroskaFile<BufReader<File>>>,
        track: u64,
        scale_ns: u64,
        length_size: usize,
        sets: Vec<Vec<u8>>,
        frame: matroska_demuxer::Frame,
        first_key_sent: bool,
    },
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> LeptonError {
    LeptonError::Source { name: path.display().to_string(), reason: reason.to_string() }
}

/// Runs a container reader call, turning a panic inside it (malformed files) into an error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(bad(path, "malformed video file (the container reader failed)")))
}

/// Length size and parameter sets of an AVCDecoderConfigurationRecord.
fn avcc(path: &Path, record: &[u8]) -> Result<(usize, Vec<Vec<u8>>)> {
    let r = h264_reader::avcc::AvcDecoderConfigurationRecord::try_from(record)
        .map_err(|e| bad(path, format!("H.264 configuration record: {e:?}")))?;
    let mut sets = vec![];
    for s in r.sequence_parameter_sets().chain(r.picture_parameter_sets()) {
        sets.push(s.map_err(|e| bad(path, format!("H.264 parameter set: {e:?}")))?.to_vec());
    }
    Ok((usize::from(r.length_size_minus_one()) + 1, sets))
}

impl Demuxer {
    fn open(path: &Path) -> Result<(Self, VideoInfo)> {
        let file = File::open(path).map_err(|e| LeptonError::io(path, e))?;
        let len = file.metadata().map_err(|e| LeptonError::io(path, e))?.len();
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = File::open(path).map_err(|e| LeptonError::io(path, e))?;
            let _ = f.read(&mut magic);
        }
        if magic == [0x1A, 0x45, 0xDF, 0xA3] {
            return guarded(path, || Self::open_mkv(path, file));
        }
        guarded(path, || Self::open_mp4(path, file, len))
    }

    fn open_mp4(path: &Path, file: File, len: u64) -> Result<(Self, VideoInfo)> {
        let reader = mp4::Mp4Reader::read_header(BufReader::new(file), len)
            .map_err(|e| bad(path, format!("not an MP4 or Matroska file ({e})")))?;
        let video: Vec<&mp4::Mp4Track> =
            reader.tracks().values().filter(|t| t.trak.mdia.minf.stbl.stsd.avc1.is_some() || t.width() > 0).collect();
        let Some(t) = video.iter().find(|t| t.trak.mdia.minf.stbl.stsd.avc1.is_some()) else {
            let what = if reader.tracks().values().any(|t| t.trak.mdia.minf.stbl.stsd.hev1.is_some()) {
                "its video is H.265; Lepton decodes H.264 (re-encode: ffmpeg -i IN -c:v libx264 OUT.mp4)".to_string()
            } else if video.is_empty() {
                "no video track".to_string()
            } else {
                "its video is not H.264 (re-encode: ffmpeg -i IN -c:v libx264 OUT.mp4)".to_string()
            };
            return Err(bad(path, what));
        };
        let Some(avc1) = &t.trak.mdia.minf.stbl.stsd.avc1 else { return Err(bad(path, "no H.264 track")) };
        let sets: Vec<Vec<u8>> = avc1
            .avcc
            .sequence_parameter_sets
            .iter()
            .chain(avc1.avcc.picture_parameter_sets.iter())
            .map(|n| n.bytes.clone())
            .collect();
        let timescale = u64::from(t.timescale());
        if timescale == 0 {
            return Err(bad(path, "the video track's timescale is 0"));
        }
        // Every sample must fit in the file before the reader is asked to allocate it.
        let stsz = &t.trak.mdia.minf.stbl.stsz;
        if u64::from(stsz.sample_size) > len || stsz.sample_sizes.iter().any(|&s| u64::from(s) > len) {
            return Err(bad(path, "a sample larger than the file"));
        }
        let count = t.sample_count();
        let secs = t.duration().as_secs_f64();
        let info = VideoInfo {
            container: "MP4",
            codec: "H.264",
            width: usize::from(t.width()),
            height: usize::from(t.height()),
            frames: Some(u64::from(count)),
            fps: (secs > 0.0).then(|| f64::from(count) / secs),
        };
        let (track, length_size) = (t.track_id(), usize::from(avc1.avcc.length_size_minus_one & 3) + 1);
        Ok((
            Demuxer::Mp4 {
                reader: Box::new(reader),
                track,
                next: 1,
                count,
                timescale,
                length_size,
                sets,
                file_len: len,
            },
            info,
        ))
    }

    fn open_mkv(path: &Path, file: File) -> Result<(Self, VideoInfo)> {
        let mkv = matroska_demuxer::MatroskaFile::open(BufReader::new(file))
            .map_err(|e| bad(path, format!("not a Matroska file ({e})")))?;
        let scale_ns = mkv.info().timestamp_scale().get();
        let video: Vec<&matroska_demuxer::TrackEntry> =
            mkv.tracks().iter().filter(|t| t.track_type() == matroska_demuxer::TrackType::Video).collect();
        // Codec ids may carry the EBML string's padding.
        let codec = |t: &matroska_demuxer::TrackEntry| t.codec_id().trim_end_matches(['\0', ' ']).to_string();
        let Some(t) = video.iter().find(|t| codec(t) == "V_MPEG4/ISO/AVC") else {
            let what = match video.first() {
                Some(t) => format!("its video is {}; Lepton decodes H.264 (V_MPEG4/ISO/AVC)", codec(t)),
                None => "no video track".into(),
            };
            return Err(bad(path, what));
        };
        let record = t.codec_private().ok_or_else(|| bad(path, "the H.264 track has no configuration record"))?;
        let (length_size, sets) = avcc(path, record)?;
        let (w, h) = t.video().map_or((0, 0), |v| (v.pixel_width().get() as usize, v.pixel_height().get() as usize));
        let fps = t.default_duration().map(|d| 1e9 / d.get() as f64);
        let info = VideoInfo { container: "Matroska", codec: "H.264", width: w, height: h, frames: None, fps };
        let track = t.track_number().get();
        Ok((
            Demuxer::Mkv {
                file: Box::new(mkv),
                track,
                scale_ns,
                length_size,
                sets,
                frame: matroska_demuxer::Frame::default(),
                first_key_sent: false,
            },
            info,
        ))
    }

    /// Appends the next access unit to `out` as Annex B; `None` at the end.
    fn next(&mut self, path: &Path, out: &mut Vec<u8>) -> Result<Option<Sample>> {
        guarded(path, || match self {
            Demuxer::Mp4 { reader, track, next, count, timescale, length_size, sets, file_len } => {
                while *next <= *count {
                    let id = *next;
                    *next += 1;
                    let Some(s) = reader.read_sample(*track, id).map_err(|e| bad(path, e))? else { continue };
                    if s.bytes.len() as u64 > *file_len {
                        return Err(bad(path, "a sample larger than the file"));
                    }
                    if s.is_sync {
                        h264::append_parameter_sets(sets.iter().map(Vec::as_slice), out);
                    }
                    h264::append_annex_b(&s.bytes, *length_size, out, &path.display().to_string())?;
                    let dts = i64::try_from(s.start_time).unwrap_or(i64::MAX / 2);
                    let pts = (dts + i64::from(s.rendering_offset)).max(0);
                    return Ok(Some(Sample {
                        pts_ms: (pts as u64).saturating_mul(1000) / *timescale,
                        dts: clips::to_90k(dts, *timescale),
                        pts: clips::to_90k(pts, *timescale),
                    }));
                }
                Ok(None)
            }
            Demuxer::Mkv { file, track, scale_ns, length_size, sets, frame, first_key_sent } => {
                while file.next_frame(frame).map_err(|e| bad(path, e))? {
                    if frame.track != *track {
                        continue;
                    }
                    // Key frames are flagged in SimpleBlocks; send the parameter sets before the
                    // first frame in any case.
                    let key = frame.is_keyframe == Some(true) || !*first_key_sent;
                    if key {
                        h264::append_parameter_sets(sets.iter().map(Vec::as_slice), out);
                        *first_key_sent = true;
                    }
                    h264::append_annex_b(&frame.data, *length_size, out, &path.display().to_string())?;
                    let ns = frame.timestamp.saturating_mul(*scale_ns);
                    // Matroska gives presentation times only: decoding follows them.
                    let t = clips::to_90k(i64::try_from(ns).unwrap_or(i64::MAX / 2), 1_000_000_000);
                    return Ok(Some(Sample { pts_ms: ns / 1_000_000, dts: t, pts: t }));
                }
                Ok(None)
            }
        })
    }
}

/// Frames of a video file.
pub struct VideoSource {
    path: PathBuf,
    name: String,
    opts: VideoOptions,
    demuxer: Demuxer,
    info: VideoInfo,
    decoder: H264,
    access_unit: Vec<u8>,
    picture: Vec<u8>,
    size: (usize, usize),
    /// The run's start: wall clock (for timestamps) and monotonic (for pacing).
    started: Option<(u64, Instant)>,
    /// Presentation time added by earlier passes of a looping file.
    offset_ms: u64,
    /// Presentation times of the access units decoded whose pictures have not come out yet:
    /// pictures come out in display order, so each takes the earliest.
    pending: std::collections::BinaryHeap<std::cmp::Reverse<u64>>,
    /// The file's last access unit was read; the decoder's held pictures are being returned.
    draining: bool,
    last_pts_ms: u64,
    index: u64,
    dropped: u64,
    /// Where the encoded stream also goes (`[pipeline.clips]`).
    clips: Option<ClipTap>,
}

impl VideoSource {
    /// Opens a file: its container and H.264 track are checked here; errors name the file.
    pub fn open(path: &Path, opts: VideoOptions) -> Result<Self> {
        let (demuxer, info) = Demuxer::open(path)?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(VideoSource {
            path: path.to_path_buf(),
            decoder: H264::new(&path.display().to_string())?,
            name,
            opts,
            demuxer,
            info,
            access_unit: vec![],
            picture: vec![],
            size: (0, 0),
            started: None,
            offset_ms: 0,
            pending: Default::default(),
            draining: false,
            last_pts_ms: 0,
            index: 0,
            dropped: 0,
            clips: None,
        })
    }

    /// Hands every access unit, in decoding order, to a clip recorder too.
    pub fn with_clips(mut self, tap: ClipTap) -> Self {
        self.clips = Some(tap);
        self
    }

    /// The file's video track.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn frame_period_ms(&self) -> u64 {
        self.info.fps.filter(|f| *f > 0.0).map_or(40, |f| (1000.0 / f) as u64)
    }
}

impl VideoSource {
    /// The next picture in display order and its presentation time on the run's timeline;
    /// `None` at the end of the file (after a loop's restart, the next pass).
    fn next_picture(&mut self) -> Result<Option<(h264::Picture, u64)>> {
        loop {
            if self.draining {
                if let Some(p) = self.decoder.next_flushed(&mut self.picture) {
                    return Ok(Some((p, self.take_pts())));
                }
                if !self.opts.looping || self.index == 0 {
                    return Ok(None);
                }
                // Start over; the timeline continues after the last frame.
                self.offset_ms += self.last_pts_ms + self.frame_period_ms();
                self.last_pts_ms = 0;
                self.pending.clear();
                self.draining = false;
                self.demuxer = Demuxer::open(&self.path)?.0;
                self.decoder = H264::new(&self.path.display().to_string())?;
                continue;
            }
            self.access_unit.clear();
            let Some(sample) = self.demuxer.next(&self.path, &mut self.access_unit)? else {
                self.decoder.flush()?;
                self.draining = true;
                continue;
            };
            self.last_pts_ms = self.last_pts_ms.max(sample.pts_ms);
            let t_ms = self.offset_ms + sample.pts_ms;
            if let Some(tap) = &self.clips {
                let (wall, _) = *self.started.get_or_insert_with(|| (now_ms(), Instant::now()));
                let offset = clips::to_90k(self.offset_ms as i64, 1000);
                tap.push(Unit {
                    ts_ms: wall + t_ms,
                    dts: offset + sample.dts,
                    pts: offset + sample.pts,
                    // From the stream itself: Matroska BlockGroups carry no key flag, and an
                    // MP4 sync sample need not be an IDR.
                    key: h264::has_idr(&self.access_unit),
                    data: self.access_unit.clone(),
                });
            }
            // Paced and behind: a frame nothing refers to need not be decoded at all.
            if self.late(t_ms) && h264::disposable(&self.access_unit) {
                self.dropped += 1;
                continue;
            }
            self.pending.push(std::cmp::Reverse(t_ms));
            if let Some(p) = self.decoder.decode(&self.access_unit, &mut self.picture)? {
                return Ok(Some((p, self.take_pts())));
            }
        }
    }

    /// The earliest presentation time not yet given to a picture.
    fn take_pts(&mut self) -> u64 {
        self.pending.pop().map_or(self.offset_ms + self.last_pts_ms, |std::cmp::Reverse(t)| t)
    }

    /// Paced, and the frame after the one at `t_ms` is already due: this one would be replaced
    /// before the pipeline used it.
    fn late(&mut self, t_ms: u64) -> bool {
        if !self.opts.realtime {
            return false;
        }
        let (_, start) = *self.started.get_or_insert_with(|| (now_ms(), Instant::now()));
        Instant::now() > start + Duration::from_millis(t_ms + self.frame_period_ms())
    }
}

impl FrameSource for VideoSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        loop {
            let Some((p, t_ms)) = self.next_picture()? else { return Ok(None) };
            if self.late(t_ms) {
                self.dropped += 1;
                continue;
            }
            let (wall, start) = *self.started.get_or_insert_with(|| (now_ms(), Instant::now()));
            if self.opts.realtime {
                let due = start + Duration::from_millis(t_ms);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            self.size = (p.width, p.height);
            self.index += 1;
            let image = ImageView::packed(&self.picture, p.width, p.height, PixelFormat::I420)
                .map_err(|e| LeptonError::core(format!("{} frame", self.name), e))?;
            return Ok(Some(Frame {
                image,
                meta: FrameMeta { frame: self.index - 1, timestamp_ms: wall + t_ms },
                name: Some(&self.name),
            }));
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The run's start plus each frame's presentation time.
    fn own_timeline(&self) -> bool {
        true
    }
}

/// Opens a file's container and checks that it has an H.264 video track the source can read,
/// without decoding anything: what `lepton check` (and the start of `lepton run`) verify before
/// the device goes online. The same path [`VideoSource::open`] takes, so a file that passes here
/// opens there.
pub fn inspect(path: &Path) -> Result<VideoInfo> {
    Demuxer::open(path).map(|(_, info)| info)
}

/// Opens a file and decodes its first picture: what `lepton probe FILE` prints.
pub fn probe(path: &Path) -> Result<VideoInfo> {
    let mut s = VideoSource::open(path, VideoOptions { realtime: false, looping: false })?;
    let first = s.next_frame()?.ok_or_else(|| bad(path, "no picture decodes"))?;
    let (w, h) = (first.image.width(), first.image.height());
    let mut info = s.info.clone();
    (info.width, info.height) = (w, h);
    Ok(info)
}
