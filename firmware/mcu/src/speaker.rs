//! Speaker mode: audio from a [`Microphone`] (a recording in flash, or a live stream) → the
//! audio frontend → the keyword (or VAD) model → keyword spotting → events, sent through the
//! board's hook (`event <hex>` console lines with a recording, postcard frames on a serial line
//! when live), and an alert pin. A wake-word model (`cfg(lepton_wake_word)`) runs through
//! [`crate::wake_word`] instead, with the summary, hooks and event lines defined here.
//!
//! The loop is the host's `AudioPipeline` on a microcontroller: blocks of one hop, a model run
//! every `stride` frames once the feature window is full, the same quantization, probabilities and
//! decisions, and stream time (`samples × 1000 / sample_rate`, samples lost to overruns included)
//! as the clock of events and the alert. Time spent waiting for samples is idle; the rest is
//! counted as busy cycles, the figure a board needs to keep up (cycles per second of audio).

use crate::app::{AppError, Stats};
#[cfg(not(lepton_wake_word))]
use crate::embedded::{
    Decision, CLASSES, DECISION, FEATURES, FRAMES, FRONTEND, MAX_FFT, MAX_MELS, SCORES, SMOOTHING, STRIDE,
};
use crate::microphone::Microphone;
use core::cell::Cell;
use core::cell::RefCell;
use core::fmt::Write;
use embedded_hal::digital::OutputPin;
use lepton_core::alert::Alert;
#[cfg(not(lepton_wake_word))]
use lepton_core::audio::frontend::LOG_FLOOR;
#[cfg(not(lepton_wake_word))]
use lepton_core::audio::{FeatureWindow, Frontend, KeywordSpotter, Vad};
#[cfg(not(lepton_wake_word))]
use lepton_core::engine::micro::Interpreter;
#[cfg(not(lepton_wake_word))]
use lepton_core::event::EventKind;
use lepton_core::event::{encode, Event};
#[cfg(not(lepton_wake_word))]
use lepton_core::tensor::{Quantization, TensorData, TensorDataMut, TensorView, TensorViewMut};
#[cfg(not(lepton_wake_word))]
use lepton_core::vision::classify::to_probabilities;

/// Floats in one model input.
#[cfg(not(lepton_wake_word))]
const WINDOW: usize = FRAMES * FEATURES;
/// Most transitions the alert may still make after the audio ends (a bound on the drain loop).
const MAX_DRAIN_STEPS: usize = 100_000;

/// Figures of a speaker run, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Model runs and their cycles.
    pub stats: Stats,
    /// Samples consumed.
    pub samples: u64,
    /// Stream time of the first model run, in ms.
    pub first_run_ms: Option<u64>,
    /// Events written.
    pub events: u32,
    /// Samples the microphone lost because the loop was late.
    pub overruns: u64,
    /// Cycles spent on the audio (frontend, model, decision, events), waiting excluded.
    pub busy_cycles: u64,
}

impl Summary {
    /// Busy cycles per second of audio (0 before any sample).
    pub fn cycles_per_second(&self, sample_rate: u32) -> u64 {
        (u128::from(self.busy_cycles) * u128::from(sample_rate)).checked_div(u128::from(self.samples)).unwrap_or(0)
            as u64
    }
}

#[cfg(not(lepton_wake_word))]
enum State {
    Keyword(KeywordSpotter<CLASSES, SMOOTHING>),
    Vad(Vad, usize),
}

/// Everything one model run needs, allocated once.
#[cfg(not(lepton_wake_word))]
struct Stages<'m, 'a, const T: usize> {
    model: &'m Interpreter<'m, T>,
    arena: &'a mut [u8],
    window: FeatureWindow<WINDOW>,
    features: [f32; WINDOW],
    posteriors: [f32; CLASSES],
    state: State,
}

#[cfg(not(lepton_wake_word))]
impl<const T: usize> Stages<'_, '_, T> {
    /// Runs the model on the feature window; returns the event it caused, if any, and the cycles.
    fn infer(&mut self, now_ms: u64, cycles: &dyn Fn() -> u64) -> Result<(Option<Event>, u64), AppError> {
        self.window.copy_to(&mut self.features)?;
        let desc = self.model.input(0)?;
        let quant = Quantization::PerTensor { scale: desc.scale, zero_point: desc.zero_point };
        let input = self.model.input_mut(self.arena, 0)?;
        let mut view = TensorViewMut::new(&[input.len()], TensorDataMut::I8(bytemuck::cast_slice_mut(input)), quant)?;
        view.quantize_from(&self.features)?;
        let start = cycles();
        crate::app::infer(self.model, self.arena)?;
        let spent = cycles().wrapping_sub(start);
        let desc = self.model.output_desc(0)?;
        let quant = Quantization::PerTensor { scale: desc.scale, zero_point: desc.zero_point };
        let output = self.model.output(self.arena, 0)?;
        TensorView::new(&[output.len()], TensorData::I8(bytemuck::cast_slice(output)), quant)?
            .dequantize_into(&mut self.posteriors)?;
        to_probabilities(&mut self.posteriors, SCORES);
        let event = match &mut self.state {
            State::Keyword(k) => k.update(now_ms, &self.posteriors)?.map(|hit| Event {
                class: hit.class,
                kind: EventKind::Start,
                timestamp_ms: now_ms,
                score: hit.score,
            }),
            State::Vad(v, class) => v.update(now_ms, self.posteriors[*class]),
        };
        Ok((event, spent))
    }

    fn speaking(&self) -> bool {
        matches!(&self.state, State::Vad(v, _) if v.speaking())
    }
}

/// Writes `event <hex of the postcard bytes>`.
#[cfg_attr(feature = "live", allow(dead_code))] // The live build frames its events on UART1.
pub(crate) fn write_event(out: &RefCell<impl Write>, e: &Event) -> Result<(), AppError> {
    let mut buf = [0u8; 32];
    let bytes = encode(e, &mut buf)?;
    let mut out = out.try_borrow_mut().map_err(|_| AppError::Console)?;
    out.write_str("event ")?;
    for b in bytes.iter() {
        write!(out, "{b:02x}")?;
    }
    out.write_char('\n')?;
    Ok(())
}

/// After the audio, lets time go on from `now_ms` until the alert is idle (at most
/// [`MAX_DRAIN_STEPS`] transitions), keeping `clock` on the alert's time.
pub(crate) fn drain<P: OutputPin>(alert: &mut Alert<P>, clock: &Cell<u64>, mut now_ms: u64) -> Result<(), AppError> {
    for _ in 0..MAX_DRAIN_STEPS {
        let Some(next) = alert.next_change_ms(now_ms) else { break };
        now_ms = next;
        clock.set(now_ms);
        alert.poll(now_ms).map_err(|_| AppError::Pin)?;
    }
    Ok(())
}

/// The board's hooks into a speaker run.
pub struct Hooks<'h> {
    /// Reads the board's cycle counter.
    pub cycles: &'h dyn Fn() -> u64,
    /// Sends each event out (console line or serial frame) and logs it.
    pub on_event: &'h mut dyn FnMut(&Event) -> Result<(), AppError>,
}

#[cfg(not(lepton_wake_word))]
/// Runs the audio of `mic` through the model until the stream ends, sending events through
/// `hooks.on_event` and driving `alert`; `clock` holds the stream time in ms for the alert's pin.
/// After the audio, time goes on until the alert is idle.
pub fn run<const T: usize, P: OutputPin>(
    mic: &mut impl Microphone,
    model: &Interpreter<'_, T>,
    arena: &mut [u8],
    alert: &mut Alert<P>,
    clock: &Cell<u64>,
    hooks: Hooks<'_>,
) -> Result<Summary, AppError> {
    let mut frontend: Frontend<MAX_FFT, MAX_MELS> = Frontend::new(FRONTEND)?;
    let state = match DECISION {
        Decision::Keyword(cfg) => State::Keyword(KeywordSpotter::new(cfg, CLASSES)?),
        Decision::Vad(cfg) => State::Vad(Vad::new(cfg)?, cfg.class as usize),
    };
    let mut stages = Stages {
        model,
        arena,
        window: FeatureWindow::new(FRAMES, FEATURES, libm::logf(LOG_FLOOR))?,
        features: [0.0; WINDOW],
        posteriors: [0.0; CLASSES],
        state,
    };
    check_rate(mic, FRONTEND.sample_rate)?;
    let rate = u64::from(FRONTEND.sample_rate);
    let mut block = [0i16; FRONTEND.hop];
    let mut summary = Summary::default();
    let mut since_run = 0;
    let mut now_ms = 0;
    alert.poll(now_ms).map_err(|_| AppError::Pin)?;
    loop {
        let n = mic.read(&mut block)?;
        if n == 0 {
            break;
        }
        let busy_from = (hooks.cycles)();
        summary.samples += n as u64;
        summary.overruns = mic.overruns();
        now_ms = (summary.samples + summary.overruns) * 1000 / rate;
        let mut completed = false;
        let window = &mut stages.window;
        frontend.push_i16(&block[..n], |f| {
            window.push(f);
            completed = true;
        });
        if completed {
            since_run += 1;
            if stages.window.is_full() && since_run >= STRIDE {
                since_run = 0;
                let (event, spent) = stages.infer(now_ms, hooks.cycles)?;
                summary.stats.record(spent);
                summary.first_run_ms.get_or_insert(now_ms);
                if let Some(e) = event {
                    (hooks.on_event)(&e)?;
                    summary.events += 1;
                    match e.kind {
                        EventKind::Start => alert.trigger(now_ms),
                        EventKind::End => alert.release(now_ms),
                    }
                } else if stages.speaking() {
                    alert.trigger(now_ms);
                }
            }
        }
        clock.set(now_ms);
        alert.poll(now_ms).map_err(|_| AppError::Pin)?;
        summary.busy_cycles += (hooks.cycles)().wrapping_sub(busy_from);
    }
    drain(alert, clock, now_ms)?;
    Ok(summary)
}

/// Refuses a microphone whose rate is not the model's.
pub(crate) fn check_rate(mic: &impl Microphone, model_rate: u32) -> Result<(), AppError> {
    if mic.sample_rate() == model_rate {
        Ok(())
    } else {
        Err(AppError::SampleRate { microphone: mic.sample_rate(), model: model_rate })
    }
}

#[cfg(all(test, not(lepton_wake_word), not(feature = "live")))]
mod tests {
    use super::*;
    use crate::board::{ConsolePin, ALERT};
    use crate::embedded::{ARENA_BYTES, AUDIO, MODEL};
    use crate::microphone::Recording;
    use lepton_core::event::decode;

    #[test]
    fn events_decode_and_the_alert_follows_them() {
        let model = crate::app::load(MODEL).unwrap();
        let mut arena = vec![0u8; ARENA_BYTES];
        let (out, clock) = (RefCell::new(String::new()), Cell::new(0));
        let mut alert = Alert::new(ConsolePin::new(&out, &clock), ALERT).unwrap();
        let mut seen = 0;
        let mut on_event = |e: &Event| {
            seen += 1;
            write_event(&out, e)
        };
        let ticks = Cell::new(0);
        let cycles = || {
            ticks.set(ticks.get() + 7);
            ticks.get()
        };
        let hooks = Hooks { cycles: &cycles, on_event: &mut on_event };
        let mut mic = Recording::new(AUDIO, FRONTEND.sample_rate);
        let s = run(&mut mic, &model, &mut arena, &mut alert, &clock, hooks).unwrap();
        assert_eq!(seen, s.events);
        assert_eq!(s.samples as usize, AUDIO.len() / 2);
        assert_eq!(s.overruns, 0);
        // Busy time is counted around each block (7 ticks a read here), never while waiting.
        assert!(s.busy_cycles >= 7 * s.samples.div_ceil(FRONTEND.hop as u64), "{s:?}");
        // A microphone at another rate is refused before anything runs.
        let mut other = Recording::new(AUDIO, FRONTEND.sample_rate / 2);
        let hooks = Hooks { cycles: &|| 0, on_event: &mut |_| Ok(()) };
        let e = run(&mut other, &model, &mut arena, &mut alert, &clock, hooks).unwrap_err();
        assert_eq!(e, AppError::SampleRate { microphone: FRONTEND.sample_rate / 2, model: FRONTEND.sample_rate });
        assert!(s.stats.runs > 0);
        let text = out.borrow().clone();
        let mut events = vec![];
        let mut pins = vec![];
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "event" => {
                    let bytes: Vec<u8> =
                        (0..f[1].len() / 2).map(|i| u8::from_str_radix(&f[1][2 * i..2 * i + 2], 16).unwrap()).collect();
                    events.push(decode::<Event>(&bytes).unwrap());
                }
                "pin" => pins.push((f[1] == "high", f[3].parse::<u64>().unwrap())),
                _ => panic!("unexpected line {line}"),
            }
        }
        assert_eq!(events.len() as u32, s.events);
        // The pin starts low, alternates, and ends low.
        assert_eq!(pins.first(), Some(&(false, 0)));
        assert!(pins.windows(2).all(|w| w[0].0 != w[1].0 && w[0].1 <= w[1].1), "{pins:?}");
        assert_eq!(pins.last().map(|p| p.0), Some(false));
        // The first start turns the alert on at its time; the alert is off again within the hold
        // after the last start.
        let starts: Vec<u64> = events.iter().filter(|e| e.kind == EventKind::Start).map(|e| e.timestamp_ms).collect();
        if let (Some(&first), Some(&last)) = (starts.first(), starts.last()) {
            assert_eq!(pins[1], (true, first), "{pins:?}");
            let end = pins.last().map_or(0, |p| p.1);
            match (DECISION, events.last()) {
                // Speech that ended: the alert goes off with it.
                (Decision::Vad(_), Some(e)) if e.kind == EventKind::End => assert!(end <= e.timestamp_ms, "{pins:?}"),
                (Decision::Vad(_), _) => assert!(end > last, "{pins:?}"),
                (Decision::Keyword(_), _) => {
                    assert!(end > last && end <= last + u64::from(ALERT.hold_ms), "{pins:?}")
                }
            }
        } else {
            assert_eq!(pins.len(), 1, "no event, no alert: {pins:?}");
        }
    }
}
