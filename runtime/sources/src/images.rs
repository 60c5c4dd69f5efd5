//! Image sources: a folder of PNG/JPEG files (processed in file-name order) or images already in
//! memory, optionally paced at a frame rate and looped. Paced like a camera, they drop frames the
//! way a camera does: when processing falls behind, the newest frame wins and the skipped ones are
//! counted.

use super::{now_ms, Frame, FrameSource};
use crate::image::{list_dir, Image};
use lepton_core::error::Result;
use lepton_core::event::FrameMeta;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How an image source delivers its frames.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImageSourceOptions {
    /// Frames per second, as a camera would deliver them; `None`: as fast as they are consumed.
    pub fps: Option<f32>,
    /// Start again after the last image (never ends).
    pub looping: bool,
    /// Decode every image once at open instead of on each use (no decoding per frame).
    pub preload: bool,
}

enum Files {
    Paths(Vec<PathBuf>),
    Decoded(Vec<Image>),
}

/// Frames from image files or decoded images.
pub struct ImageSource {
    files: Files,
    opts: ImageSourceOptions,
    current: Option<Image>,
    frame_index: u64,
    started: Option<Instant>,
    dropped: u64,
}

impl ImageSource {
    /// Images of a folder, in file-name order.
    pub fn open(dir: &Path, opts: ImageSourceOptions) -> Result<Self> {
        let paths = list_dir(dir)?;
        let files = if opts.preload {
            Files::Decoded(paths.iter().map(|p| Image::open(p)).collect::<Result<_>>()?)
        } else {
            Files::Paths(paths)
        };
        Ok(Self::new(files, opts))
    }

    /// Images already decoded (bundled demo media, tests, benchmarks).
    pub fn from_images(images: Vec<Image>, opts: ImageSourceOptions) -> Self {
        Self::new(Files::Decoded(images), opts)
    }

    fn new(files: Files, opts: ImageSourceOptions) -> Self {
        ImageSource { files, opts, current: None, frame_index: 0, started: None, dropped: 0 }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.files {
            Files::Paths(p) => p.len(),
            Files::Decoded(d) => d.len(),
        }
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position `k` of the stream, or `None` past the end of a non-looping source.
    fn image_at(&self, k: u64) -> Option<usize> {
        let n = self.len() as u64;
        if n == 0 || (!self.opts.looping && k >= n) {
            return None;
        }
        Some((k % n) as usize)
    }
}

impl FrameSource for ImageSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        let mut k = self.frame_index;
        if let Some(fps) = self.opts.fps.filter(|f| *f > 0.0) {
            let start = *self.started.get_or_insert_with(Instant::now);
            let due = |k: u64| start + Duration::from_secs_f64(k as f64 / fps as f64);
            let now = Instant::now();
            // The newest frame "captured" by now wins; older ones are dropped.
            let newest = (now.duration_since(start).as_secs_f64() * fps as f64) as u64;
            if newest > k {
                self.dropped += newest - k;
                k = newest;
            } else if due(k) > now {
                std::thread::sleep(due(k) - now);
            }
        }
        let Some(index) = self.image_at(k) else {
            return Ok(None);
        };
        self.frame_index = k + 1;
        let meta = FrameMeta { frame: k, timestamp_ms: now_ms() };
        let image: &Image = match &self.files {
            Files::Decoded(images) => &images[index],
            Files::Paths(paths) => &*self.current.insert(Image::open(&paths[index])?),
        };
        Ok(Some(Frame { image: image.view()?, meta, name: Some(image.name.as_str()) }))
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepton_core::vision::PixelFormat;

    fn images(n: usize) -> Vec<Image> {
        (0..n)
            .map(|i| Image {
                name: format!("{i}.png"),
                width: 1,
                height: 1,
                format: PixelFormat::Gray8,
                data: vec![i as u8],
            })
            .collect()
    }

    #[test]
    fn unpaced_sources_deliver_every_frame_in_order_then_end() {
        let mut s = ImageSource::from_images(images(3), ImageSourceOptions::default());
        let mut names = vec![];
        while let Some(f) = s.next_frame().unwrap() {
            names.push((f.meta.frame, f.name.unwrap().to_string()));
        }
        assert_eq!(names, vec![(0, "0.png".into()), (1, "1.png".into()), (2, "2.png".into())]);
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn looping_wraps_and_keeps_counting_frames() {
        let mut s = ImageSource::from_images(images(2), ImageSourceOptions { looping: true, ..Default::default() });
        let frames: Vec<(u64, String)> = (0..5)
            .map(|_| s.next_frame().unwrap().map(|f| (f.meta.frame, f.name.unwrap().to_string())).unwrap())
            .collect();
        assert_eq!(frames[4], (4, "0.png".into()));
    }

    #[test]
    fn a_slow_consumer_of_a_paced_source_drops_frames_and_counts_them() {
        let opts = ImageSourceOptions { fps: Some(100.0), looping: true, ..Default::default() };
        let mut s = ImageSource::from_images(images(4), opts);
        let first = s.next_frame().unwrap().unwrap().meta.frame;
        assert_eq!(first, 0);
        std::thread::sleep(Duration::from_millis(55));
        let later = s.next_frame().unwrap().unwrap().meta.frame;
        assert!(later >= 5, "the newest frame wins: got {later}");
        assert_eq!(s.dropped(), later - 1, "every skipped frame is counted");
    }
}
