//! Sources: where frames and samples come from (image folders and pictures, WAV files, cameras,
//! RTSP and HTTP streams, video files, microphones). A source owns its buffers and lends each
//! frame until the next call, so the pipeline never copies or allocates for it.
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "camera")]
pub mod camera;
#[cfg(feature = "video")]
pub mod clips;
#[cfg(feature = "video")]
pub mod h264;
#[cfg(feature = "video")]
pub mod http;
pub mod image;
pub mod images;
pub mod latest;
#[cfg(feature = "mic")]
pub mod mic;
pub mod resample;
pub mod retain;
#[cfg(feature = "video")]
pub mod rtsp;
#[cfg(feature = "video")]
pub mod stream_url;
#[cfg(feature = "video")]
pub mod video;
pub mod wav;

use lepton_core::error::Result;
use lepton_core::event::FrameMeta;
use lepton_core::vision::ImageView;

pub use images::{ImageSource, ImageSourceOptions};
pub use resample::Resampled;
pub use wav::WavSource;

/// A frame lent by a source.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The pixels.
    pub image: ImageView<'a>,
    /// Index in the source and capture time.
    pub meta: FrameMeta,
    /// File name for file sources.
    pub name: Option<&'a str>,
}

/// A stream of frames (camera, image folder, in-memory replay).
pub trait FrameSource {
    /// The next frame, `Ok(None)` when the source is exhausted. An `Err` concerns this frame
    /// only (a file that does not decode); the caller may continue.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>>;

    /// Frames skipped because the consumer was slower than the source (newest frame wins).
    fn dropped(&self) -> u64 {
        0
    }

    /// Times a live source went away (camera unplugged, stream lost) and was reconnected or is
    /// being reconnected.
    fn outages(&self) -> u64 {
        0
    }

    /// True when frame timestamps are on the source's own timeline (a recording: its start plus
    /// each frame's position), which only moves forward; false (the default) when they are
    /// wall-clock capture times, which step when the system clock is set. The pipeline measures
    /// durations on the former, and on a monotonic clock for the latter.
    fn own_timeline(&self) -> bool {
        false
    }
}

/// A stream of mono audio samples (microphone, WAV file), floats in [-1, 1).
pub trait AudioSource {
    /// Sample rate in Hz.
    fn sample_rate(&self) -> u32;

    /// Fills `buf` with the next samples; returns how many, 0 at the end of a finite source.
    fn read(&mut self, buf: &mut [f32]) -> Result<usize>;

    /// Samples lost because the consumer fell behind (overruns); audio is never dropped silently.
    fn overruns(&self) -> u64 {
        0
    }

    /// A name for logs and messages (the file name for files).
    fn name(&self) -> Option<&str> {
        None
    }
}

/// Reads a finite source to its end.
pub fn read_all(source: &mut impl AudioSource) -> Result<Vec<f32>> {
    let mut out = vec![];
    let mut buf = vec![0.0f32; 4096];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
