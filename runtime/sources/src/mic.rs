//! Microphone samples through cpal (ALSA on Linux). The audio callback mixes to mono and writes
//! into a bounded ring; when the pipeline falls behind, the oldest samples are overwritten and
//! counted as overruns, never lost silently.

use super::AudioSource;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use lepton_core::audio::SampleRing;
use lepton_core::error::{LeptonError, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Samples the ring holds: 4 s at 16 kHz (1.4 s at 48 kHz).
const RING: usize = 1 << 16;

/// What to open.
#[derive(Debug, Clone, PartialEq)]
pub struct MicOptions {
    /// Device name (or a part of it); `None`: the default input.
    pub device: Option<String>,
    /// Sample rate to request (the model's).
    pub rate: u32,
    /// Stop after this many seconds of audio (`None`: run until stopped).
    pub duration_s: Option<f64>,
}

/// One microphone, as `lepton devices` lists it.
#[derive(Debug, Clone)]
pub struct MicInfo {
    /// Device name.
    pub name: String,
    /// Supported configurations: (channels, min rate, max rate, sample format).
    pub configs: Vec<(u16, u32, u32, String)>,
}

/// Lists the input devices.
pub fn list() -> Result<Vec<MicInfo>> {
    let host = cpal::default_host();
    let err = |e: String| LeptonError::Model { path: "microphones".into(), reason: e };
    let mut out = vec![];
    for d in host.input_devices().map_err(|e| err(e.to_string()))? {
        let name = d.name().unwrap_or_else(|_| "?".into());
        let configs = d
            .supported_input_configs()
            .map(|cs| {
                cs.map(|c| {
                    (c.channels(), c.min_sample_rate().0, c.max_sample_rate().0, format!("{:?}", c.sample_format()))
                })
                .collect()
            })
            .unwrap_or_default();
        out.push(MicInfo { name, configs });
    }
    Ok(out)
}

struct Shared {
    ring: Mutex<SampleRing<f32, RING>>,
    ready: Condvar,
    failed: AtomicBool,
    stop: AtomicBool,
}

/// Mono samples from a microphone.
pub struct MicSource {
    _stream: cpal::Stream,
    shared: Arc<Shared>,
    rate: u32,
    name: String,
    limit: Option<u64>,
    read: u64,
}

fn open_err(name: &str, e: impl std::fmt::Display) -> LeptonError {
    LeptonError::Model { path: format!("microphone `{name}`").into(), reason: e.to_string() }
}

impl MicSource {
    /// Opens the microphone at the requested rate and starts streaming.
    pub fn open(opts: &MicOptions) -> Result<Self> {
        let host = cpal::default_host();
        let wanted = opts.device.clone().unwrap_or_else(|| "default".into());
        let device = match &opts.device {
            None => host.default_input_device().ok_or_else(|| open_err(&wanted, "no default input device"))?,
            Some(n) => host
                .input_devices()
                .map_err(|e| open_err(&wanted, e))?
                .find(|d| d.name().is_ok_and(|x| x == *n || x.contains(n.as_str())))
                .ok_or_else(|| open_err(&wanted, "no such input device (see `lepton devices`)"))?,
        };
        let name = device.name().unwrap_or(wanted);
        let supported: Vec<_> = device.supported_input_configs().map_err(|e| open_err(&name, e))?.collect();
        let pick = supported
            .iter()
            .filter(|c| c.min_sample_rate().0 <= opts.rate && opts.rate <= c.max_sample_rate().0)
            // Microphones are natively 16-bit: prefer i16, then f32, then the fewest channels.
            .min_by_key(|c| (format_rank(c.sample_format()), c.channels()))
            .ok_or_else(|| open_err(&name, format!("no configuration at {} Hz (see `lepton devices`)", opts.rate)))?;
        let config = pick.with_sample_rate(cpal::SampleRate(opts.rate));
        tracing::debug!("microphone `{name}`: {:?}", config);
        let channels = config.channels() as usize;
        let shared = Arc::new(Shared {
            ring: Mutex::new(SampleRing::new()),
            ready: Condvar::new(),
            failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let on_error = {
            let shared = Arc::clone(&shared);
            let name = name.clone();
            move |e: cpal::StreamError| {
                tracing::warn!("microphone `{name}`: {e}");
                shared.failed.store(true, Ordering::Relaxed);
                shared.ready.notify_all();
            }
        };
        let stream_config: cpal::StreamConfig = config.clone().into();
        let stream = match config.sample_format() {
            cpal::SampleFormat::F32 => {
                let shared = Arc::clone(&shared);
                device.build_input_stream(
                    &stream_config,
                    move |data: &[f32], _| push(&shared, data.iter().copied(), channels),
                    on_error,
                    None,
                )
            }
            cpal::SampleFormat::I16 => {
                let shared = Arc::clone(&shared);
                device.build_input_stream(
                    &stream_config,
                    move |data: &[i16], _| push(&shared, data.iter().map(|&s| s as f32 / 32768.0), channels),
                    on_error,
                    None,
                )
            }
            other => return Err(open_err(&name, format!("sample format {other:?} (need f32 or i16)"))),
        }
        .map_err(|e| open_err(&name, e))?;
        stream.play().map_err(|e| open_err(&name, e))?;
        tracing::info!("microphone `{name}`: {} Hz, {channels} channel(s)", opts.rate);
        let limit = opts.duration_s.map(|s| (s * opts.rate as f64) as u64);
        Ok(MicSource { _stream: stream, shared, rate: opts.rate, name, limit, read: 0 })
    }

    /// A handle that stops reading from another thread: `read` returns 0 from then on.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            shared.stop.store(true, Ordering::Relaxed);
            shared.ready.notify_all();
        }
    }
}

/// Preference order of sample formats: i16 (what microphones deliver), f32, the rest unusable.
fn format_rank(f: cpal::SampleFormat) -> u8 {
    match f {
        cpal::SampleFormat::I16 => 0,
        cpal::SampleFormat::F32 => 1,
        _ => 2,
    }
}

/// Mixes interleaved frames to mono and appends them (the audio thread; small, no allocation).
fn push(shared: &Shared, samples: impl Iterator<Item = f32>, channels: usize) {
    let mut block = [0.0f32; 256];
    let (mut n, mut acc, mut k) = (0, 0.0f32, 0);
    let mut ring = shared.ring.lock().unwrap_or_else(|p| p.into_inner());
    for s in samples {
        acc += s;
        k += 1;
        if k == channels {
            block[n] = acc / channels as f32;
            (acc, k) = (0.0, 0);
            n += 1;
            if n == block.len() {
                ring.push(&block);
                n = 0;
            }
        }
    }
    ring.push(&block[..n]);
    drop(ring);
    shared.ready.notify_all();
}

impl AudioSource for MicSource {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn read(&mut self, buf: &mut [f32]) -> Result<usize> {
        let want = match self.limit {
            Some(l) if self.read >= l => return Ok(0),
            Some(l) => buf.len().min((l - self.read) as usize),
            None => buf.len(),
        };
        let mut ring = self.shared.ring.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(0);
            }
            if ring.len() >= want {
                let n = ring.pop_into(&mut buf[..want]);
                self.read += n as u64;
                return Ok(n);
            }
            if self.shared.failed.load(Ordering::Relaxed) {
                return Err(open_err(&self.name, "the input stream failed"));
            }
            ring =
                self.shared.ready.wait_timeout(ring, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn overruns(&self) -> u64 {
        self.shared.ring.lock().map(|r| r.overrun()).unwrap_or(0)
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}
