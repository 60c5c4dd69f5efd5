//! Speaker mode for a microWakeWord model: audio from a [`Microphone`] → TFLite Micro's frontend (fixed
//! point, `lepton_core::audio::micro_frontend`) → features quantized row by row into the model's
//! input → the streaming model every `stride` rows (its state in the arena) → microWakeWord's
//! decision → events through the board's hook (console lines or serial frames) and the alert pin.
//!
//! The loop is the host's `AudioPipeline` for wake words: blocks of one frontend step, the same
//! quantization, runs, decision and stream time, so the events are the host's bit for bit.

use crate::app::AppError;
use crate::embedded::{INPUT_QUANT, MICRO_FRONTEND, STEP, WAKE, WAKE_WINDOW};
use crate::microphone::Microphone;
use crate::speaker::{check_rate, drain, Hooks, Summary};
use core::cell::Cell;
use embedded_hal::digital::OutputPin;
use lepton_core::alert::Alert;
use lepton_core::audio::{MicroFrontend, WakeWord};
use lepton_core::engine::micro::Interpreter;
use lepton_core::event::{Event, EventKind};
use lepton_core::tensor::dequantize;

/// Int8 values of one model input (`stride × channels`).
const INPUT: usize = WAKE.stride * WAKE.channels;

/// Runs the audio of `mic` through the wake-word model until the stream ends, sending events
/// through `hooks.on_event` and driving `alert`; `clock` holds the stream time in ms. After the
/// audio, time goes on until the alert is idle.
pub fn run<const T: usize, P: OutputPin>(
    mic: &mut impl Microphone,
    model: &Interpreter<'_, T>,
    arena: &mut [u8],
    alert: &mut Alert<P>,
    clock: &Cell<u64>,
    hooks: Hooks<'_>,
) -> Result<Summary, AppError> {
    let mut frontend = MicroFrontend::new(MICRO_FRONTEND)?;
    let mut wake: WakeWord<WAKE_WINDOW> = WakeWord::new(WAKE, INPUT_QUANT)?;
    let output_desc = model.output_desc(0)?;
    let (scale, zero) = (output_desc.scale, output_desc.zero_point);
    check_rate(mic, MICRO_FRONTEND.sample_rate)?;
    let rate = u64::from(MICRO_FRONTEND.sample_rate);
    let mut block = [0i16; STEP];
    let mut input = [0i8; INPUT];
    let mut summary = Summary::default();
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
        let mut at = 0;
        while at < n {
            let (took, row) = frontend.process(&block[at..n]);
            at += took;
            let Some(row) = row else { continue };
            if !wake.push_features(row, &mut input)? {
                continue;
            }
            let target = model.input_mut(arena, 0)?;
            if target.len() != INPUT {
                return Err(AppError::Core(lepton_core::Error::LengthMismatch {
                    expected: INPUT,
                    actual: target.len(),
                }));
            }
            target.copy_from_slice(bytemuck::cast_slice(&input));
            let start = (hooks.cycles)();
            crate::app::infer(model, arena)?;
            summary.stats.record((hooks.cycles)().wrapping_sub(start));
            summary.first_run_ms.get_or_insert(now_ms);
            let q = model.output(arena, 0)?.first().copied().ok_or(AppError::Core(lepton_core::Error::BadShape))?;
            let probability = dequantize(q as i8 as i32, scale, zero);
            if let Some(hit) = wake.push_probability(now_ms, probability) {
                let e = Event { class: hit.class, kind: EventKind::Start, timestamp_ms: now_ms, score: hit.score };
                (hooks.on_event)(&e)?;
                summary.events += 1;
                alert.trigger(now_ms);
            }
        }
        clock.set(now_ms);
        alert.poll(now_ms).map_err(|_| AppError::Pin)?;
        summary.busy_cycles += (hooks.cycles)().wrapping_sub(busy_from);
    }
    drain(alert, clock, now_ms)?;
    Ok(summary)
}
