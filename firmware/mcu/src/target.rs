//! The Cortex-M side: entry point, semihosting console, SysTick cycle counter, static arena and exit.
//!
//! Console lines are plain text on semihosting **stderr**; defmt log frames go to semihosting
//! stdout (defmt-semihosting), so the two never mix (decode the frames with `defmt-print -e ELF`).

use crate::app::{self, AppError};
use crate::embedded::{ARENA_BYTES, MODEL, MODEL_NAME, TENSORS};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use defmt_semihosting as _;
use semihosting::io::Write as _;

/// Console lines: buffered up to a newline, then written to semihosting stderr in one call.
pub struct Console {
    line: heapless::Vec<u8, 256>,
}

impl Console {
    fn new() -> Self {
        Console { line: heapless::Vec::new() }
    }

    fn flush(&mut self) -> fmt::Result {
        if self.line.is_empty() {
            return Ok(());
        }
        let mut stderr = semihosting::io::stderr().map_err(|_| fmt::Error)?;
        stderr.write_all(&self.line).map_err(|_| fmt::Error)?;
        self.line.clear();
        Ok(())
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.line.push(b).is_err() {
                self.flush()?;
                self.line.push(b).map_err(|_| fmt::Error)?;
            }
            if b == b'\n' {
                self.flush()?;
            }
        }
        Ok(())
    }
}

/// SysTick wraps (every 2^24 cycles).
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Core clock cycles since start (SysTick on the processor clock, extended by its wraps).
fn cycles() -> u64 {
    loop {
        let before = WRAPS.load(Ordering::Relaxed);
        let value = cortex_m::peripheral::SYST::get_current();
        if WRAPS.load(Ordering::Relaxed) == before {
            return (u64::from(before) << 24) | u64::from(0x00FF_FFFF - value);
        }
    }
}

/// The arena: a static buffer of exactly the bytes the model's header asks for.
fn take_arena() -> Option<&'static mut [u8]> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    static mut ARENA: [u8; ARENA_BYTES] = [0; ARENA_BYTES];
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: TAKEN makes this the only reference to ARENA, ever.
    Some(unsafe { &mut *core::ptr::addr_of_mut!(ARENA) })
}

#[entry]
fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            defmt::error!("{}", defmt::Display2Format(&e));
            let mut console = Console::new();
            let _ = fmt::Write::write_fmt(&mut console, format_args!("error: {e}\n"));
            1
        }
    };
    semihosting::process::exit(code)
}

/// Any interrupt without a handler of its own: UART0's receive interrupt in live mode; others
/// are ignored.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    #[cfg(feature = "live")]
    if irqn == crate::uart::UART0_RX_IRQ as i16 {
        crate::uart::on_receive();
    }
    let _ = irqn;
}

fn run() -> Result<(), AppError> {
    let mut p = cortex_m::Peripherals::take().ok_or(AppError::Taken("the core peripherals are"))?;
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(0x00FF_FFFF);
    p.SYST.clear_current();
    p.SYST.enable_interrupt();
    p.SYST.enable_counter();
    let model = app::load(MODEL)?;
    defmt::info!(
        "model {=str}: {} tensors, {} ops, arena {} bytes",
        MODEL_NAME,
        TENSORS,
        model.header().op_count,
        ARENA_BYTES
    );
    let arena = take_arena().ok_or(AppError::Arena)?;
    // A streaming model's state starts from its initial value.
    model.reset(arena)?;
    let mut console = Console::new();
    let stats = mode::run(&mut console, &model, arena)?;
    if stats.runs > 0 {
        defmt::info!(
            "{} model runs: {} cycles each on average, {} at most",
            stats.runs,
            stats.cycles / stats.runs,
            stats.max_cycles
        );
    }
    Ok(())
}

#[cfg(all(feature = "conformance", not(feature = "speaker")))]
mod mode {
    use super::Console;
    use crate::app::{AppError, Stats};
    use crate::embedded::{ARENA_BYTES, INPUT_DATA, INPUT_RUNS, TENSORS};
    use lepton_core::engine::micro::Interpreter;

    /// Conformance mode: the suite, then the embedded model with both kernel sets.
    pub fn run(console: &mut Console, model: &Interpreter<'_, TENSORS>, arena: &mut [u8]) -> Result<Stats, AppError> {
        static mut REFERENCE: [u8; ARENA_BYTES] = [0; ARENA_BYTES];
        // SAFETY: conformance mode runs once; this is the only reference to REFERENCE.
        let reference = unsafe { &mut *core::ptr::addr_of_mut!(REFERENCE) };
        crate::conformance::run(console, model, arena, reference, INPUT_DATA, INPUT_RUNS)?;
        Ok(Stats::default())
    }
}

#[cfg(not(any(feature = "speaker", feature = "conformance")))]
mod mode {
    use super::{cycles, Console};
    use crate::app::{AppError, Stats};
    use crate::embedded::{INPUT_DATA, INPUT_FILES, INPUT_RUNS, TENSORS};
    use lepton_core::engine::micro::Interpreter;

    /// Classifier mode on the embedded inputs.
    pub fn run(console: &mut Console, model: &Interpreter<'_, TENSORS>, arena: &mut [u8]) -> Result<Stats, AppError> {
        defmt::info!("{} input sets, first from {=str}", INPUT_RUNS, INPUT_FILES.first().copied().unwrap_or("-"));
        crate::classifier::run(console, model, arena, INPUT_DATA, INPUT_RUNS, &cycles)
    }
}

#[cfg(feature = "speaker")]
mod mode {
    use super::{cycles, Console};
    use crate::app::{write_name, AppError, Stats};
    use crate::board::{ALERT, CORE_CLOCK_HZ};
    use crate::embedded::{AUDIO_NAME, LABELS, SAMPLE_RATE, TENSORS};
    use crate::speaker::Hooks;
    use core::cell::{Cell, RefCell};
    use core::fmt::Write;
    use lepton_core::alert::Alert;
    use lepton_core::engine::micro::Interpreter;
    use lepton_core::event::{Event, EventKind};

    fn log(e: &Event) {
        let label = LABELS.get(usize::from(e.class)).copied().unwrap_or("?");
        let kind = if e.kind == EventKind::Start { "start" } else { "end" };
        defmt::info!("{=str} {=str} at {} ms, score {}", label, kind, e.timestamp_ms, e.score);
    }

    /// Speaker mode: on the embedded audio, or (feature `live`) on the stream of UART0 with
    /// events framed on UART1.
    pub fn run(console: &mut Console, model: &Interpreter<'_, TENSORS>, arena: &mut [u8]) -> Result<Stats, AppError> {
        let (out, clock) = (RefCell::new(console), Cell::new(0));
        #[cfg(lepton_board = "stm32f746")]
        let pin = crate::board::Pi1::take();
        #[cfg(not(lepton_board = "stm32f746"))]
        let pin = crate::board::ConsolePin::new(&out, &clock);
        let mut alert = Alert::new(pin, ALERT)?;
        #[cfg(not(feature = "live"))]
        let (mut mic, mut on_event) = {
            let mic = crate::microphone::Recording::new(crate::embedded::AUDIO, SAMPLE_RATE);
            (mic, |e: &Event| {
                crate::speaker::write_event(&out, e)?;
                log(e);
                Ok(())
            })
        };
        #[cfg(feature = "live")]
        let (mut mic, mut on_event) = {
            let mut port = crate::uart::EventPort::take()?;
            let mic = crate::uart::UartMicrophone::open()?;
            defmt::info!("live audio on UART0: {} Hz", crate::microphone::Microphone::sample_rate(&mic));
            (mic, move |e: &Event| {
                port.send(e)?;
                log(e);
                Ok(())
            })
        };
        let hooks = Hooks { cycles: &cycles, on_event: &mut on_event };
        #[cfg(not(lepton_wake_word))]
        let s = crate::speaker::run(&mut mic, model, arena, &mut alert, &clock, hooks)?;
        #[cfg(lepton_wake_word)]
        let s = crate::wake_word::run(&mut mic, model, arena, &mut alert, &clock, hooks)?;
        let mut out = out.try_borrow_mut().map_err(|_| AppError::Console)?;
        out.write_str("audio ")?;
        write_name(&mut *out, AUDIO_NAME)?;
        writeln!(
            out,
            " samples={} runs={} first_run_ms={} events={} overruns={} cycles_per_second={} clock_hz={}",
            s.samples,
            s.stats.runs,
            s.first_run_ms.unwrap_or(0),
            s.events,
            s.overruns,
            s.cycles_per_second(SAMPLE_RATE),
            CORE_CLOCK_HZ
        )?;
        Ok(s.stats)
    }
}
