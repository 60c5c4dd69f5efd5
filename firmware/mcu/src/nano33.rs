//! The Arduino Nano 33 BLE Sense (nRF52840 at 64 MHz; `LEPTON_MCU_BOARD=nano33-ble-sense`,
//! `--no-default-features --features nano33-ble-sense`): live speaker mode on its microphone.
//!
//! - The microphone (MP34DT05/06: clock P0.26, data P0.25, powered from P0.17) runs at a 1.280 MHz
//!   PDM clock with ratio 80: 16,000 samples a second, mono, through embassy-nrf's double-buffered
//!   sampler. That task runs on an interrupt executor (EGU1_SWI1, priority 6), so it preempts the
//!   audio loop, which runs in thread mode: every 10 ms buffer goes into a one-second ring that
//!   [`PdmMicrophone`] (a [`Microphone`]) drains; a sample that finds the ring full is dropped and
//!   counted.
//! - The alert is the orange LED (P0.13). Each event is also sent as a COBS-framed postcard frame
//!   on the TX pin (D1, P1.03) at 460,800 baud, and logged with defmt over RTT (`probe-rs run`).
//! - Every 10 s of audio, a log line gives the busy cycles per second of audio (the DWT cycle
//!   counter: time not spent waiting for samples), the load at 64 MHz and the samples lost.
//!
//! This build is linked and sized by the tests; it has not run on a board here (boards/README.md).

use crate::app::{self, AppError};
use crate::board::{ALERT, CORE_CLOCK_HZ};
use crate::embedded::{ARENA_BYTES, LABELS, MODEL, MODEL_NAME, SAMPLE_RATE};
use crate::microphone::Microphone;
use crate::speaker::Hooks;
use core::cell::Cell;
use cortex_m::interrupt::Mutex;
use cortex_m::peripheral::DWT;
use cortex_m_rt::entry;
use defmt_rtt as _;
use embassy_executor::InterruptExecutor;
use embassy_nrf::gpio::{Level, Output, OutputDrive};
use embassy_nrf::interrupt::{self, InterruptExt, Priority};
use embassy_nrf::pdm::{self, Frequency, OperationMode, Pdm, Ratio, SamplerState};
use embassy_nrf::uarte::{self, Baudrate, UarteTx};
use embassy_nrf::{bind_interrupts, peripherals};
use heapless::spsc::{Consumer, Producer, Queue};
use lepton_core::alert::Alert;
use lepton_core::event::{encode_frame, Event, EventKind};
use panic_probe as _;

bind_interrupts!(struct Irqs {
    PDM => pdm::InterruptHandler<peripherals::PDM>;
    UARTE0 => uarte::InterruptHandler<peripherals::UARTE0>;
});

/// Samples per PDM buffer: 10 ms.
const BLOCK: usize = 160;
/// Ring capacity in samples (one kept free): `LEPTON_MCU_RING`, by default a second the audio
/// loop may lag by.
const RING: usize = crate::embedded::RING;
/// Seconds of audio between two log lines of figures.
const REPORT_EVERY_S: u64 = 10;

/// Runs the microphone's task, above the audio loop.
static EXECUTOR: InterruptExecutor = InterruptExecutor::new();
/// Samples dropped because the ring was full (written by the sampler task, read by the loop).
static LOST: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

#[cortex_m_rt::interrupt]
unsafe fn EGU1_SWI1() {
    // SAFETY: `main` starts EXECUTOR on this interrupt, and it runs nowhere else.
    unsafe { EXECUTOR.on_interrupt() }
}

/// Moves every full PDM buffer into the ring, counting what does not fit.
#[embassy_executor::task]
async fn sample(mut pdm: Pdm<'static>, mut ring: Producer<'static, i16>) {
    let mut bufs = [[0i16; BLOCK]; 2];
    let result = pdm
        .run_task_sampler(&mut bufs, |buf| {
            let dropped = buf.iter().filter(|&&s| ring.enqueue(s).is_err()).count() as u64;
            if dropped > 0 {
                cortex_m::interrupt::free(|cs| LOST.borrow(cs).set(LOST.borrow(cs).get() + dropped));
            }
            SamplerState::Sampled
        })
        .await;
    if let Err(e) = result {
        defmt::error!("the microphone stopped: {}", e);
    }
}

/// The DWT cycle counter, extended to 64 bits (read at least every 67 s: the loop reads it every
/// block).
struct Cycles {
    last: Cell<u32>,
    high: Cell<u64>,
}

impl Cycles {
    fn now(&self) -> u64 {
        let c = DWT::cycle_count();
        if c < self.last.get() {
            self.high.set(self.high.get() + (1 << 32));
        }
        self.last.set(c);
        self.high.get() | u64::from(c)
    }
}

/// The PDM microphone's samples, from the ring.
pub struct PdmMicrophone<'c> {
    ring: Consumer<'static, i16>,
    cycles: &'c Cycles,
    started: u64,
    idle: u64,
    heard: u64,
    next_report: u64,
}

impl PdmMicrophone<'_> {
    /// Logs the figures of the audio so far.
    fn report(&self) {
        let busy = (self.cycles.now() - self.started).saturating_sub(self.idle);
        let per_second = (u128::from(busy) * u128::from(SAMPLE_RATE) / u128::from(self.heard.max(1))) as u64;
        defmt::info!(
            "{} s of audio: {} busy cycles per second of audio ({}% of {} MHz), {} samples lost",
            self.heard / u64::from(SAMPLE_RATE),
            per_second,
            per_second * 100 / u64::from(CORE_CLOCK_HZ),
            CORE_CLOCK_HZ / 1_000_000,
            self.overruns()
        );
    }
}

impl Microphone for PdmMicrophone<'_> {
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn read(&mut self, block: &mut [i16]) -> Result<usize, AppError> {
        for s in block.iter_mut() {
            *s = loop {
                if let Some(v) = self.ring.dequeue() {
                    break v;
                }
                let from = self.cycles.now();
                // Masked, so the sampler's interrupt cannot slip in between the check and `wfi`:
                // pending, it still wakes it, and runs once unmasked.
                cortex_m::interrupt::free(|_| {
                    if !self.ring.ready() {
                        cortex_m::asm::wfi();
                    }
                });
                self.idle += self.cycles.now() - from;
            };
        }
        self.heard += block.len() as u64;
        if self.heard >= self.next_report {
            self.next_report += REPORT_EVERY_S * u64::from(SAMPLE_RATE);
            self.report();
        }
        Ok(block.len())
    }

    fn overruns(&self) -> u64 {
        cortex_m::interrupt::free(|cs| LOST.borrow(cs).get())
    }
}

fn log(e: &Event) {
    let label = LABELS.get(usize::from(e.class)).copied().unwrap_or("?");
    let kind = if e.kind == EventKind::Start { "start" } else { "end" };
    defmt::info!("{=str} {=str} at {} ms, score {}", label, kind, e.timestamp_ms, e.score);
}

#[entry]
fn main() -> ! {
    if let Err(e) = run() {
        defmt::error!("{}", defmt::Display2Format(&e));
    }
    // A speaker listens forever; it gets here only on an error, logged above.
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<(), AppError> {
    let mut config = embassy_nrf::config::Config::default();
    // The crystal: the PDM clock, and so the sample rate, within its 40 ppm.
    config.hfclk_source = embassy_nrf::config::HfclkSource::ExternalXtal;
    let p = embassy_nrf::init(config);
    let mut core = cortex_m::Peripherals::take().ok_or(AppError::Taken("the core peripherals are"))?;
    core.DCB.enable_trace();
    core.DWT.enable_cycle_counter();
    let cycles = Cycles { last: Cell::new(0), high: Cell::new(0) };

    let _mic_power = Output::new(p.P0_17, Level::High, OutputDrive::HighDrive);
    let mic_config = pdm::Config {
        frequency: Frequency::_1280k,
        ratio: Ratio::Ratio80,
        operation_mode: OperationMode::Mono,
        ..Default::default()
    };
    let pdm = Pdm::new(p.PDM, Irqs, p.P0_26, p.P0_25, mic_config);
    let queue = cortex_m::singleton!(: Queue<i16, RING> = Queue::new()).ok_or(AppError::Taken("the sample ring is"))?;
    let (producer, consumer) = queue.split();
    interrupt::EGU1_SWI1.set_priority(Priority::P6);
    let spawner = EXECUTOR.start(interrupt::EGU1_SWI1);
    spawner.spawn(sample(pdm, producer).map_err(|_| AppError::Stream("the microphone task is already running"))?);

    let mut uart_config = uarte::Config::default();
    uart_config.baudrate = Baudrate::Baud460800;
    let mut tx = UarteTx::new(p.UARTE0, Irqs, p.P1_03, uart_config);
    let led = Output::new(p.P0_13, Level::Low, OutputDrive::Standard);
    let mut alert = Alert::new(led, ALERT)?;

    let model = app::load(MODEL)?;
    defmt::info!("model {=str}: {} ops, arena {} bytes", MODEL_NAME, model.header().op_count, ARENA_BYTES);
    let arena = cortex_m::singleton!(: [u8; ARENA_BYTES] = [0; ARENA_BYTES]).ok_or(AppError::Arena)?;
    model.reset(arena)?;
    let mut mic = PdmMicrophone {
        ring: consumer,
        cycles: &cycles,
        started: cycles.now(),
        idle: 0,
        heard: 0,
        next_report: REPORT_EVERY_S * u64::from(SAMPLE_RATE),
    };
    let mut on_event = |e: &Event| {
        let mut buf = [0u8; 40];
        let frame = encode_frame(e, &mut buf)?;
        tx.blocking_write(frame).map_err(|_| AppError::Stream("the event line (UARTE0) failed"))?;
        log(e);
        Ok(())
    };
    let now = || cycles.now();
    let hooks = Hooks { cycles: &now, on_event: &mut on_event };
    let clock = Cell::new(0);
    #[cfg(not(lepton_wake_word))]
    crate::speaker::run(&mut mic, &model, arena, &mut alert, &clock, hooks)?;
    #[cfg(lepton_wake_word)]
    crate::wake_word::run(&mut mic, &model, arena, &mut alert, &clock, hooks)?;
    Ok(())
}
