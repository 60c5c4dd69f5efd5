//! WAV files as an audio source (through `hound`): 8/16/24/32-bit integer or 32-bit float PCM,
//! any channel count (mixed down to mono).

use super::AudioSource;
use lepton_core::error::{LeptonError, Result};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Mono float samples read from a WAV file.
pub struct WavSource {
    path: PathBuf,
    name: String,
    reader: hound::WavReader<Box<dyn Read + Send>>,
    spec: hound::WavSpec,
    total_frames: u64,
    /// Looping at real time: when it started and how many samples it has delivered.
    looping: Option<(std::time::Instant, u64)>,
}

impl WavSource {
    /// Opens a WAV file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| LeptonError::io(path, e))?;
        Self::from_reader(Box::new(BufReader::new(file)), path)
    }

    /// Reads WAV bytes held in memory (bundled media, or bytes received); `name` labels them in
    /// errors and events.
    pub fn from_bytes(bytes: impl Into<std::borrow::Cow<'static, [u8]>>, name: &str) -> Result<Self> {
        Self::from_reader(Box::new(std::io::Cursor::new(bytes.into())), Path::new(name))
    }

    fn from_reader(input: Box<dyn Read + Send>, path: &Path) -> Result<Self> {
        let wav_err = |reason: String| LeptonError::Wav { path: path.to_path_buf(), reason };
        let reader = hound::WavReader::new(input).map_err(|e| match e {
            hound::Error::IoError(io) => LeptonError::io(path, io),
            other => wav_err(other.to_string()),
        })?;
        let spec = reader.spec();
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 8 | 16 | 24 | 32) | (hound::SampleFormat::Float, 32) => {}
            (f, b) => return Err(wav_err(format!("unsupported sample format {f:?} with {b} bits"))),
        }
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(wav_err("zero channels or sample rate in the header".into()));
        }
        let total_frames = reader.duration() as u64;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(WavSource { path: path.to_path_buf(), name, reader, spec, total_frames, looping: None })
    }

    /// Plays the file over and over at its own rate, like a microphone (a stand-in input for
    /// demos and soak tests); only for files opened with [`open`](Self::open).
    pub fn looping(mut self) -> Self {
        self.looping = Some((std::time::Instant::now(), 0));
        self
    }

    /// Waits until `want` more samples are due at real time; returns how many may be read now.
    fn paced(&mut self, want: usize) -> usize {
        let Some((started, delivered)) = self.looping else { return want };
        let rate = u64::from(self.spec.sample_rate);
        let due = |started: std::time::Instant| (started.elapsed().as_secs_f64() * rate as f64) as u64;
        // Wait for at least a quarter of the window (or all of it when small), in short sleeps.
        let need = (want as u64).min(rate / 4).max(1);
        while due(started).saturating_sub(delivered) < need {
            let missing = need - due(started).saturating_sub(delivered);
            std::thread::sleep(std::time::Duration::from_secs_f64((missing as f64 / rate as f64).min(0.25)));
        }
        (due(started) - delivered).min(want as u64) as usize
    }

    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.total_frames as f64 / self.spec.sample_rate as f64
    }

    /// Channels in the file (mixed down to mono when read).
    pub fn channels(&self) -> u16 {
        self.spec.channels
    }

    /// Reads the whole remaining file as mono samples.
    pub fn read_all(&mut self) -> Result<Vec<f32>> {
        super::read_all(self)
    }
}

impl AudioSource for WavSource {
    fn sample_rate(&self) -> u32 {
        self.spec.sample_rate
    }

    fn read(&mut self, buf: &mut [f32]) -> Result<usize> {
        let want = self.paced(buf.len());
        let mut n = self.read_file(&mut buf[..want])?;
        if n == 0 && want > 0 {
            if let Some(l) = self.looping {
                // The end of the file: open it again and go on from its first sample.
                *self = WavSource::open(&self.path.clone())?;
                self.looping = Some(l);
                n = self.read_file(&mut buf[..want])?;
                if n == 0 {
                    return Err(LeptonError::Wav { path: self.path.clone(), reason: "no samples to loop over".into() });
                }
            }
        }
        if let Some((_, delivered)) = &mut self.looping {
            *delivered += n as u64;
        }
        Ok(n)
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl WavSource {
    /// Reads up to `buf.len()` mono samples from the file; 0 at its end.
    fn read_file(&mut self, buf: &mut [f32]) -> Result<usize> {
        let channels = self.spec.channels as usize;
        let bits = self.spec.bits_per_sample;
        let path = &self.path;
        let bad = |e: hound::Error| LeptonError::Wav { path: path.clone(), reason: e.to_string() };
        let mut n = 0;
        match self.spec.sample_format {
            hound::SampleFormat::Float => {
                let mut it = self.reader.samples::<f32>();
                'outer: while n < buf.len() {
                    let mut acc = 0.0;
                    for c in 0..channels {
                        match it.next() {
                            Some(s) => acc += s.map_err(bad)?,
                            None if c == 0 => break 'outer,
                            None => {
                                return Err(LeptonError::Wav { path: path.clone(), reason: "truncated frame".into() })
                            }
                        }
                    }
                    buf[n] = acc / channels as f32;
                    n += 1;
                }
            }
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (bits - 1)) as f32;
                let mut it = self.reader.samples::<i32>();
                'outer: while n < buf.len() {
                    let mut acc = 0.0;
                    for c in 0..channels {
                        match it.next() {
                            Some(s) => acc += s.map_err(bad)? as f32 * scale,
                            None if c == 0 => break 'outer,
                            None => {
                                return Err(LeptonError::Wav { path: path.clone(), reason: "truncated frame".into() })
                            }
                        }
                    }
                    buf[n] = acc / channels as f32;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stereo_int16_as_mono_floats() {
        let dir = std::env::temp_dir().join(format!("lepton-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..100i16 {
            w.write_sample(i * 100).unwrap();
            w.write_sample(-i * 100 + 16384).unwrap();
        }
        w.finalize().unwrap();
        let mut s = WavSource::open(&path).unwrap();
        assert_eq!((s.sample_rate(), s.channels()), (8000, 2));
        let all = s.read_all().unwrap();
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|&v| (v - 0.25).abs() < 1e-6), "L + R averages to 16384 / 2 / 32768");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_non_wav_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("lepton-wav-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not.wav");
        std::fs::write(&path, b"this is text").unwrap();
        let err = WavSource::open(&path).err().unwrap().to_string();
        assert!(err.contains("not.wav"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
