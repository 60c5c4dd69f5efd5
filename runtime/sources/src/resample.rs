//! Sample-rate conversion of an audio source (rubato's FFT resampler), so a recording made at
//! another rate (a 22,050 Hz speech synthesizer's WAV, a 44.1 kHz microphone) feeds a model
//! trained at its own rate. Buffers are allocated once; reading allocates nothing.

use super::AudioSource;
use lepton_core::error::{LeptonError, Result};
use rubato::{FftFixedIn, Resampler};

/// Input samples per resampler chunk.
const CHUNK: usize = 1024;

/// An [`AudioSource`] delivered at another sample rate. At the same rate it passes samples
/// through untouched. The output is aligned with the input (the resampler's delay is removed)
/// and as long as the input's duration at the new rate.
pub struct Resampled<S> {
    source: S,
    rate: u32,
    state: Option<Box<State>>,
}

struct State {
    resampler: FftFixedIn<f32>,
    input: Vec<f32>,
    output: Vec<f32>,
    /// Unread samples of `output`: `output[pos..len]`.
    pos: usize,
    len: usize,
    /// Output samples still to drop at the start (the resampler's delay).
    skip: usize,
    /// Input samples read so far, and output samples delivered.
    consumed: u64,
    delivered: u64,
    /// The source has ended.
    ended: bool,
}

/// Sample rates the resampler takes (its buffers grow with the ratio of two rates: a rate from a
/// file's header must not size them beyond this range).
pub const RATES: std::ops::RangeInclusive<u32> = 1_000..=384_000;

impl<S: AudioSource> Resampled<S> {
    /// Wraps `source` to deliver `rate` Hz.
    pub fn new(source: S, rate: u32) -> Result<Self> {
        let from = source.sample_rate();
        let name = source.name().unwrap_or("audio source").to_string();
        let bad = |reason: String| LeptonError::Wav { path: name.clone().into(), reason };
        if !RATES.contains(&rate) || !RATES.contains(&from) {
            return Err(bad(format!(
                "cannot resample from {from} Hz to {rate} Hz: rates from {} to {} Hz are supported",
                RATES.start(),
                RATES.end()
            )));
        }
        if from == rate {
            return Ok(Resampled { source, rate, state: None });
        }
        let resampler = FftFixedIn::<f32>::new(from as usize, rate as usize, CHUNK, 2, 1)
            .map_err(|e| bad(format!("resampling from {from} Hz to {rate} Hz: {e}")))?;
        let state = State {
            input: vec![0.0; resampler.input_frames_max()],
            output: vec![0.0; resampler.output_frames_max()],
            skip: resampler.output_delay(),
            resampler,
            pos: 0,
            len: 0,
            consumed: 0,
            delivered: 0,
            ended: false,
        };
        Ok(Resampled { source, rate, state: Some(Box::new(state)) })
    }

    /// The wrapped source's own rate.
    pub fn source_rate(&self) -> u32 {
        self.source.sample_rate()
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.source
    }
}

impl State {
    /// Output samples the input read so far amounts to at the new rate.
    fn expected(&self, from: u32, to: u32) -> u64 {
        (self.consumed * to as u64).div_ceil(from as u64)
    }

    /// Runs the resampler once: on a full chunk of input, on the last partial chunk, or (after
    /// the end) on silence to flush its delay. Returns false when nothing more can come out.
    fn refill<S: AudioSource>(&mut self, source: &mut S, to: u32) -> Result<bool> {
        let from = source.sample_rate();
        if self.ended && self.delivered >= self.expected(from, to) {
            return Ok(false);
        }
        let need = self.resampler.input_frames_next();
        let mut got = 0;
        while !self.ended && got < need {
            let n = source.read(&mut self.input[got..need])?;
            if n == 0 {
                self.ended = true;
            }
            got += n;
        }
        self.consumed += got as u64;
        let name = source.name().unwrap_or("audio source").to_string();
        let bad = |e: rubato::ResampleError| LeptonError::Wav { path: name.clone().into(), reason: e.to_string() };
        let (_, out) = if got == need {
            self.resampler
                .process_into_buffer(&[&self.input[..need]], &mut [&mut self.output[..]], None)
                .map_err(bad)?
        } else if got > 0 {
            self.resampler
                .process_partial_into_buffer(Some(&[&self.input[..got]]), &mut [&mut self.output[..]], None)
                .map_err(bad)?
        } else {
            self.resampler
                .process_partial_into_buffer(None::<&[&[f32]]>, &mut [&mut self.output[..]], None)
                .map_err(bad)?
        };
        let drop = self.skip.min(out);
        self.skip -= drop;
        self.pos = drop;
        self.len = out;
        Ok(true)
    }
}

impl<S: AudioSource> AudioSource for Resampled<S> {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn read(&mut self, buf: &mut [f32]) -> Result<usize> {
        let Some(state) = self.state.as_mut() else { return self.source.read(buf) };
        let from = self.source.sample_rate();
        loop {
            if state.pos < state.len {
                let mut n = (state.len - state.pos).min(buf.len());
                if state.ended {
                    // Past the end of the input, deliver only up to its duration.
                    let left = state.expected(from, self.rate).saturating_sub(state.delivered);
                    n = n.min(left as usize);
                    if n == 0 {
                        state.len = 0;
                        return Ok(0);
                    }
                }
                buf[..n].copy_from_slice(&state.output[state.pos..state.pos + n]);
                state.pos += n;
                state.delivered += n as u64;
                return Ok(n);
            }
            if !state.refill(&mut self.source, self.rate)? {
                return Ok(0);
            }
        }
    }

    fn overruns(&self) -> u64 {
        // Lost input samples, counted at the delivered rate.
        let from = self.source.sample_rate().max(1) as u64;
        self.source.overruns() * self.rate as u64 / from
    }

    fn name(&self) -> Option<&str> {
        self.source.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sine of `hz` at `rate`, `seconds` long.
    struct Tone {
        rate: u32,
        hz: f32,
        left: usize,
        t: usize,
    }

    impl AudioSource for Tone {
        fn sample_rate(&self) -> u32 {
            self.rate
        }
        fn read(&mut self, buf: &mut [f32]) -> Result<usize> {
            let n = buf.len().min(self.left).min(300);
            for v in &mut buf[..n] {
                *v = (2.0 * core::f32::consts::PI * self.hz * self.t as f32 / self.rate as f32).sin() * 0.5;
                self.t += 1;
            }
            self.left -= n;
            Ok(n)
        }
    }

    fn read_all(s: &mut impl AudioSource) -> Vec<f32> {
        let mut out = vec![];
        let mut buf = [0f32; 500];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_tone_keeps_its_pitch_duration_and_phase_at_the_new_rate() {
        let tone = Tone { rate: 22_050, hz: 440.0, left: 22_050, t: 0 };
        let mut r = Resampled::new(tone, 16_000).unwrap();
        assert_eq!(r.sample_rate(), 16_000);
        let out = read_all(&mut r);
        assert_eq!(out.len(), 16_000, "one second at the new rate");
        // Aligned: away from the edges, the samples are the same sine sampled at 16 kHz.
        let worst = (2000..14_000)
            .map(|i| (out[i] - (2.0 * core::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.5).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.01, "largest deviation from the ideal sine: {worst}");
    }

    #[test]
    fn the_same_rate_passes_samples_through() {
        let tone = Tone { rate: 16_000, hz: 100.0, left: 1234, t: 0 };
        let mut r = Resampled::new(tone, 16_000).unwrap();
        let out = read_all(&mut r);
        assert_eq!(out.len(), 1234);
        assert_eq!(out[1], (2.0 * core::f32::consts::PI * 100.0 / 16_000.0).sin() * 0.5);
    }
}
