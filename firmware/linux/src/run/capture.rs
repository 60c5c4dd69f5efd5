//! Where a running pipeline's frames and samples come from: pictures, cameras (config, then board
//! profile, then defaults), network cameras, video files, WAV recordings and microphones, each
//! opened from its plan's source.

use super::setup::{source_name, SourceRef};
use super::stop::{register, Stoppers};
use crate::board::CameraDefaults;
use crate::check::stream_url;
use crate::config::{self, Source};
use anyhow::{bail, Result};
use lepton_runtime::source::camera::{self, CameraFormatKind, CameraOptions};
use lepton_runtime::source::clips::ClipTap;
use lepton_runtime::source::http::{self, HttpOptions};
use lepton_runtime::source::latest::{Health, LiveSource};
use lepton_runtime::source::mic::MicSource;
use lepton_runtime::source::rtsp::{self, RtspOptions, RtspTransport};
use lepton_runtime::source::video::{VideoOptions, VideoSource};
use lepton_runtime::source::{AudioSource, Frame, FrameSource, ImageSource, ImageSourceOptions, WavSource};
use std::sync::atomic::AtomicBool;

/// Camera settings: the config's values, else the board profile's, else 0, 640x480, 15 fps, YUYV.
pub fn camera_options(config: &CameraDefaults, board: &CameraDefaults) -> CameraOptions {
    CameraOptions {
        index: config.index.or(board.index).unwrap_or(0),
        width: config.width.or(board.width).unwrap_or(640),
        height: config.height.or(board.height).unwrap_or(480),
        fps: config.fps.or(board.fps).unwrap_or(15),
        format: config.format.or(board.format).unwrap_or(CameraFormatKind::Yuyv),
    }
}

/// The runtime's name for a config's camera pixel format.
fn camera_format(f: config::source::CameraFormat) -> CameraFormatKind {
    use config::source::CameraFormat;
    match f {
        CameraFormat::Yuyv => CameraFormatKind::Yuyv,
        CameraFormat::Mjpeg => CameraFormatKind::Mjpeg,
        CameraFormat::Nv12 => CameraFormatKind::Nv12,
        CameraFormat::Gray => CameraFormatKind::Gray,
        CameraFormat::Rgb => CameraFormatKind::Rgb,
    }
}

/// The runtime's name for a config's RTSP transport.
fn rtsp_transport(t: config::source::RtspTransport) -> RtspTransport {
    match t {
        config::source::RtspTransport::Tcp => RtspTransport::Tcp,
        config::source::RtspTransport::Udp => RtspTransport::Udp,
    }
}

/// Frames from pictures, a camera, a network camera or a video file.
pub(super) enum Frames {
    Pictures(ImageSource),
    /// A camera, an RTSP or an HTTP camera.
    Live(LiveSource),
    Video(Box<VideoSource>),
}

impl Frames {
    fn inner(&mut self) -> &mut dyn FrameSource {
        match self {
            Frames::Pictures(s) => s,
            Frames::Live(s) => s,
            Frames::Video(s) => s.as_mut(),
        }
    }
    fn inner_ref(&self) -> &dyn FrameSource {
        match self {
            Frames::Pictures(s) => s,
            Frames::Live(s) => s,
            Frames::Video(s) => s.as_ref(),
        }
    }
}

impl Frames {
    /// A live source's connection state.
    pub(super) fn health(&self) -> Option<Health> {
        match self {
            Frames::Live(s) => Some(s.health()),
            Frames::Pictures(_) | Frames::Video(_) => None,
        }
    }
}

impl FrameSource for Frames {
    fn next_frame(&mut self) -> lepton_runtime::error::Result<Option<Frame<'_>>> {
        self.inner().next_frame()
    }
    fn dropped(&self) -> u64 {
        self.inner_ref().dropped()
    }
    fn outages(&self) -> u64 {
        self.inner_ref().outages()
    }
    fn own_timeline(&self) -> bool {
        self.inner_ref().own_timeline()
    }
}

/// Opens a vision pipeline's source (network sources start connecting in the background).
pub(super) fn open_frames(
    source: SourceRef,
    board_camera: &CameraDefaults,
    stoppers: &Stoppers,
    stopping: &AtomicBool,
    clips: Option<ClipTap>,
) -> Result<Frames> {
    Ok(match source {
        SourceRef::Pictures(images) => {
            Frames::Pictures(ImageSource::from_images(images, ImageSourceOptions::default()))
        }
        SourceRef::Config(Source::Images { path, fps, looping }) => {
            Frames::Pictures(ImageSource::open(&path, ImageSourceOptions { fps, looping, preload: looping })?)
        }
        SourceRef::Config(Source::Camera { index, width, height, fps, format }) => {
            let asked = CameraDefaults { index, width, height, fps, format: format.map(camera_format) };
            let cam = camera::open(camera_options(&asked, board_camera))?;
            register(stoppers, stopping, cam.stopper());
            Frames::Live(cam)
        }
        SourceRef::Config(ref s @ Source::Rtsp { transport, timeout_s, .. }) => {
            let mut o = RtspOptions::new(stream_url(s)?);
            o.transport = rtsp_transport(transport);
            o.clips = clips;
            if let Some(t) = timeout_s {
                o.timeout = t.duration();
            }
            let src = rtsp::open(o)?;
            register(stoppers, stopping, src.stopper());
            Frames::Live(src)
        }
        SourceRef::Config(ref s @ Source::Http { fps, timeout_s, .. }) => {
            let mut o = HttpOptions::new(stream_url(s)?);
            if let Some(f) = fps {
                o.fps = f;
            }
            if let Some(t) = timeout_s {
                o.timeout = t.duration();
            }
            let src = http::open(o)?;
            register(stoppers, stopping, src.stopper());
            Frames::Live(src)
        }
        SourceRef::Config(Source::Video { path, realtime, looping }) => {
            let video = VideoSource::open(&path, VideoOptions { realtime, looping })?;
            Frames::Video(Box::new(match clips {
                Some(tap) => video.with_clips(tap),
                None => video,
            }))
        }
        other => bail!("an image model cannot take {} (checked at start)", source_name(&other)),
    })
}

/// Samples from a WAV file or a microphone.
pub(super) enum Samples {
    Wav(WavSource),
    Mic(MicSource),
}

impl AudioSource for Samples {
    fn sample_rate(&self) -> u32 {
        match self {
            Samples::Wav(s) => s.sample_rate(),
            Samples::Mic(s) => s.sample_rate(),
        }
    }
    fn read(&mut self, buf: &mut [f32]) -> lepton_runtime::error::Result<usize> {
        match self {
            Samples::Wav(s) => s.read(buf),
            Samples::Mic(s) => s.read(buf),
        }
    }
    fn overruns(&self) -> u64 {
        match self {
            Samples::Wav(s) => s.overruns(),
            Samples::Mic(s) => s.overruns(),
        }
    }
    fn name(&self) -> Option<&str> {
        match self {
            Samples::Wav(s) => s.name(),
            Samples::Mic(s) => s.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Board;

    #[test]
    fn camera_settings_come_from_the_config_then_the_board_then_the_defaults() {
        let rpi4 = Board::load("rpi4").unwrap().camera;
        let none = CameraDefaults::default();
        let o = camera_options(&none, &none);
        assert_eq!((o.index, o.width, o.height, o.fps, o.format), (0, 640, 480, 15, CameraFormatKind::Yuyv));
        let zero = Board::load("rpizero2w").unwrap().camera;
        let o = camera_options(&none, &zero);
        assert_eq!((o.width, o.height, o.fps), (320, 240, 10), "the board's");
        let asked = CameraDefaults { width: Some(1280), height: Some(720), ..Default::default() };
        let o = camera_options(&asked, &rpi4);
        assert_eq!((o.width, o.height, o.fps), (1280, 720, 15), "config over board, board for the rest");
    }
}
