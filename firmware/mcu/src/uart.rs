//! Live audio in and events out over the MPS2 boards' CMSDK APB UARTs (`mps2-an386`, the board
//! QEMU emulates; feature `live`).
//!
//! - UART0 receives the audio stream. Its receive interrupt moves each byte pair into a ring of
//!   [`RING`] samples (1 s at 16 kHz) that the speaker loop consumes through [`UartMicrophone`],
//!   a [`Microphone`]: samples arrive whether or not the loop is ready, and a sample that finds the
//!   ring full is dropped and counted (an overrun). The loop sleeps (`wfi`) while the ring is empty.
//! - UART1 sends events ([`EventPort`]): postcard, COBS-framed, one zero byte after each.
//!
//! The stream starts with a 12-byte header: `LPCM`, the sample rate (u32, little-endian), the
//! number of samples that follow (u32; `0xFFFF_FFFF` for a stream without end). Then the samples,
//! 16-bit little-endian mono PCM. `lepton-mcu-listen` (and `scripts/mcu-listen`) send it.

use crate::app::AppError;
use crate::microphone::Microphone;
use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};
use cortex_m::interrupt::Mutex;
use heapless::spsc::{Consumer, Producer, Queue};
use lepton_core::event::{encode_frame, Event};

/// Ring capacity in samples (one is kept free): `LEPTON_MCU_RING` at build time, by default
/// 16,384, a second of 16 kHz audio the loop may lag by.
pub const RING: usize = crate::embedded::RING;
/// The header's first four bytes.
pub const MAGIC: [u8; 4] = *b"LPCM";
/// The header's sample count for a stream without end.
pub const ENDLESS: u32 = u32::MAX;

/// UART0's registers (AN386: 0x4000_4000), its receive interrupt is IRQ 0.
const UART0: Regs = Regs(0x4000_4000);
/// UART1's registers (AN386: 0x4000_5000).
const UART1: Regs = Regs(0x4000_5000);
/// IRQ number of UART0's receive interrupt on the AN386.
pub const UART0_RX_IRQ: u16 = 0;

// Register offsets and bits (Arm CMSDK APB UART, DDI 0479).
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INT: usize = 0x0C;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const STATE_RX_OVERRUN: u32 = 1 << 3;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_RX_INT_EN: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;
const INT_RX_OVERRUN: u32 = 1 << 3;
/// The smallest baud divider the UART accepts (25 MHz / 16: 1.56 Mbaud, far above 16 kHz × 16 bits).
const MIN_BAUDDIV: u32 = 16;
/// Most busy-waits for room to send one byte before giving up (the host stopped reading).
const MAX_TX_WAIT: u32 = 50_000_000;

/// One UART's register block, by its base address on the board.
#[derive(Clone, Copy)]
struct Regs(usize);

impl Regs {
    fn read(self, offset: usize) -> u32 {
        // SAFETY: `self.0` is one of the two UART register blocks of the AN386 memory map
        // (constants above) and `offset` one of its 4-byte aligned registers; reading them has no
        // effect beyond the UART (a DATA read takes the received byte).
        unsafe { core::ptr::read_volatile((self.0 + offset) as *const u32) }
    }

    fn write(self, offset: usize, value: u32) {
        // SAFETY: as in `read`; the UART registers hold no Rust data.
        unsafe { core::ptr::write_volatile((self.0 + offset) as *mut u32, value) }
    }
}

/// What the receive interrupt owns: the ring's producing end, the low byte of a sample, and the
/// samples it had to drop because the ring was full.
struct Receiver {
    producer: Producer<'static, i16>,
    low: Option<u8>,
    dropped: u64,
}

static RECEIVER: Mutex<RefCell<Option<Receiver>>> = Mutex::new(RefCell::new(None));
/// Whether the UART itself lost a byte (one arrived before the last was read): the byte pairs are
/// out of step from then on, so the stream fails.
static BYTES_LOST: AtomicBool = AtomicBool::new(false);

/// UART0's receive interrupt: moves every byte the UART holds into the ring, two per sample.
pub fn on_receive() {
    // Cleared before reading, so a byte that arrives after the last read raises it again.
    UART0.write(INT, INT_RX | INT_RX_OVERRUN);
    if UART0.read(STATE) & STATE_RX_OVERRUN != 0 {
        UART0.write(STATE, STATE_RX_OVERRUN);
        BYTES_LOST.store(true, Ordering::Relaxed);
    }
    cortex_m::interrupt::free(|cs| {
        let mut rx = RECEIVER.borrow(cs).borrow_mut();
        while UART0.read(STATE) & STATE_RX_FULL != 0 {
            let byte = UART0.read(DATA) as u8;
            let Some(rx) = rx.as_mut() else { continue };
            match rx.low.take() {
                None => rx.low = Some(byte),
                Some(low) => {
                    if rx.producer.enqueue(i16::from_le_bytes([low, byte])).is_err() {
                        rx.dropped += 1;
                    }
                }
            }
        }
    });
}

/// The audio stream on UART0, as a [`Microphone`].
pub struct UartMicrophone {
    consumer: Consumer<'static, i16>,
    rate: u32,
    /// Samples the header announced; `None` for a stream without end.
    total: Option<u64>,
    /// Samples taken from the ring.
    taken: u64,
}

impl UartMicrophone {
    /// Takes UART0 (once; `AppError::Stream` after), enables its receiver and interrupt, and
    /// reads the stream's header.
    pub fn open() -> Result<Self, AppError> {
        let queue = cortex_m::singleton!(: Queue<i16, RING> = Queue::new()).ok_or(AppError::Taken("UART0 is"))?;
        let (producer, consumer) = queue.split();
        cortex_m::interrupt::free(|cs| {
            RECEIVER.borrow(cs).replace(Some(Receiver { producer, low: None, dropped: 0 }));
        });
        UART0.write(BAUDDIV, MIN_BAUDDIV);
        UART0.write(CTRL, CTRL_RX_EN | CTRL_RX_INT_EN);
        enable_uart0_rx();
        let mut mic = UartMicrophone { consumer, rate: 0, total: None, taken: 0 };
        let mut header = [0i16; 6];
        for h in header.iter_mut() {
            *h = mic.next()?;
        }
        let word = |i: usize| u32::from(header[i] as u16) | u32::from(header[i + 1] as u16) << 16;
        if word(0).to_le_bytes() != MAGIC {
            return Err(AppError::Stream("it does not start with `LPCM` (send the header first)"));
        }
        mic.rate = word(2);
        mic.total = Some(word(4)).filter(|&n| n != ENDLESS).map(u64::from);
        Ok(mic)
    }

    /// The next sample, sleeping until the interrupt brings one; an error once the UART lost a
    /// byte (the stream would come one byte short and out of step).
    fn next(&mut self) -> Result<i16, AppError> {
        loop {
            if let Some(s) = self.consumer.dequeue() {
                return Ok(s);
            }
            if BYTES_LOST.load(Ordering::Relaxed) {
                return Err(AppError::Stream(
                    "UART0 lost a byte (it came before the last was read); samples are out of step",
                ));
            }
            // With interrupts masked, an interrupt that comes between the check and `wfi` still
            // wakes it (it stays pending), and runs as soon as they are unmasked.
            cortex_m::interrupt::free(|_| {
                if !self.consumer.ready() {
                    cortex_m::asm::wfi();
                }
            });
        }
    }
}

/// Unmasks UART0's receive interrupt in the NVIC.
fn enable_uart0_rx() {
    /// IRQ 0 of the AN386, for `NVIC::unmask`.
    #[derive(Clone, Copy)]
    struct Uart0Rx;
    // SAFETY: 0 is a valid device interrupt number on the AN386 (its first of 32+).
    unsafe impl cortex_m::interrupt::InterruptNumber for Uart0Rx {
        fn number(self) -> u16 {
            UART0_RX_IRQ
        }
    }
    // SAFETY: the handler it enables (`on_receive` through `DefaultHandler`) only touches UART0
    // and the ring's producer, behind a critical section: no critical section of the main loop
    // relies on this interrupt being masked.
    unsafe { cortex_m::peripheral::NVIC::unmask(Uart0Rx) };
}

impl Microphone for UartMicrophone {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn read(&mut self, block: &mut [i16]) -> Result<usize, AppError> {
        // Samples still to come are those neither taken nor dropped. A drop needs a full ring,
        // which holds more than a block: the samples waited for below always arrive.
        let n = match self.total {
            Some(total) => {
                let left = total.saturating_sub(self.taken + self.overruns());
                block.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => block.len(),
        };
        for s in block[..n].iter_mut() {
            *s = self.next()?;
        }
        self.taken += n as u64;
        Ok(n)
    }

    fn overruns(&self) -> u64 {
        cortex_m::interrupt::free(|cs| RECEIVER.borrow(cs).borrow().as_ref().map_or(0, |rx| rx.dropped))
    }
}

/// UART1 as the events' serial line.
pub struct EventPort(());

impl EventPort {
    /// Takes UART1 (once) and enables its transmitter.
    pub fn take() -> Result<Self, AppError> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(AppError::Taken("UART1 is"));
        }
        UART1.write(BAUDDIV, MIN_BAUDDIV);
        UART1.write(CTRL, CTRL_TX_EN);
        Ok(EventPort(()))
    }

    /// Sends `e` as one frame.
    pub fn send(&mut self, e: &Event) -> Result<(), AppError> {
        let mut buf = [0u8; 40];
        for &b in encode_frame(e, &mut buf)?.iter() {
            let mut waited = 0;
            while UART1.read(STATE) & STATE_TX_FULL != 0 {
                waited += 1;
                if waited > MAX_TX_WAIT {
                    return Err(AppError::Stream("UART1 does not drain (is anything reading the events?)"));
                }
            }
            UART1.write(DATA, u32::from(b));
        }
        Ok(())
    }
}
