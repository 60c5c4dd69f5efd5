//! Board facts: the alert line and its pattern, and the pin that drives it.
//!
//! - `mps2-an386` (QEMU) and host builds: the board has no LED QEMU shows, so the alert drives
//!   [`ConsolePin`], a stand-in that prints each transition (`pin high at <ms>`).
//! - `stm32f746` (STM32F746G-DISCO): the user LED LD1 on PI1, active high (`Pi1`).
//! - `nano33-ble-sense`: the orange LED on P0.13, through embassy-nrf (`nano33.rs`).

// The alert serves speaker mode, and the stand-in pin boards without a visible GPIO: classifier
// builds and STM32F746 builds compile them unused (the host tests still run them).
#![cfg_attr(
    any(not(feature = "speaker"), lepton_board = "stm32f746", lepton_board = "nano33-ble-sense"),
    allow(dead_code)
)]

use core::cell::{Cell, RefCell};
use core::fmt::Write;
use lepton_core::alert::{ActiveLevel, AlertConfig};

/// The core clock SysTick counts, in Hz: the MPS2's 25 MHz (QEMU's too; under QEMU it ticks with
/// the host's time, so cycle figures there measure the emulation, not a Cortex-M4), or the
/// STM32F746's 16 MHz internal oscillator, which the firmware leaves as the reset sets it.
#[cfg(not(any(lepton_board = "stm32f746", lepton_board = "nano33-ble-sense")))]
pub const CORE_CLOCK_HZ: u32 = 25_000_000;
/// The core clock the DWT counts, in Hz: the nRF52840's 64 MHz.
#[cfg(lepton_board = "nano33-ble-sense")]
pub const CORE_CLOCK_HZ: u32 = 64_000_000;
/// The core clock SysTick counts, in Hz (see the MPS2's).
#[cfg(lepton_board = "stm32f746")]
pub const CORE_CLOCK_HZ: u32 = 16_000_000;

/// The alert: on (blinking 250 ms on, 250 ms off) for 1.5 s after the last keyword, at the
/// logical line `ALERT`.
pub const ALERT: AlertConfig = AlertConfig::new(ActiveLevel::High, 1500).with_blink(250, 250);

/// A pin error: the transition could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinError;

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

/// A GPIO-less stand-in output pin: writes `pin high at <ms>` / `pin low at <ms>` to the console,
/// with the time read from the caller's clock.
pub struct ConsolePin<'a, W: Write> {
    out: &'a RefCell<W>,
    clock: &'a Cell<u64>,
}

impl<'a, W: Write> ConsolePin<'a, W> {
    /// A pin logging to `out` at the times `clock` holds.
    pub fn new(out: &'a RefCell<W>, clock: &'a Cell<u64>) -> Self {
        ConsolePin { out, clock }
    }

    fn log(&mut self, level: &str) -> Result<(), PinError> {
        let mut out = self.out.try_borrow_mut().map_err(|_| PinError)?;
        writeln!(out, "pin {level} at {}", self.clock.get()).map_err(|_| PinError)
    }
}

impl<W: Write> embedded_hal::digital::ErrorType for ConsolePin<'_, W> {
    type Error = PinError;
}

impl<W: Write> embedded_hal::digital::OutputPin for ConsolePin<'_, W> {
    fn set_low(&mut self) -> Result<(), PinError> {
        self.log("low")
    }

    fn set_high(&mut self) -> Result<(), PinError> {
        self.log("high")
    }
}

/// PI1 of an STM32F746 as a push-pull output (LD1 of the STM32F746G-DISCO), by register writes.
#[cfg(all(target_os = "none", lepton_board = "stm32f746"))]
pub struct Pi1(());

#[cfg(all(target_os = "none", lepton_board = "stm32f746"))]
impl Pi1 {
    const RCC_AHB1ENR: *mut u32 = 0x4002_3830 as *mut u32;
    const GPIOI_MODER: *mut u32 = 0x4002_2000 as *mut u32;
    const GPIOI_BSRR: *mut u32 = 0x4002_2018 as *mut u32;

    /// Enables GPIOI's clock and makes PI1 an output (call once).
    pub fn take() -> Self {
        // SAFETY: RCC_AHB1ENR and GPIOI_MODER are the STM32F746's registers (RM0385 §5.3.10, §6.4.1);
        // read-modify-write of the GPIOI enable bit and of PI1's two mode bits only, before any
        // other code uses them.
        unsafe {
            Self::RCC_AHB1ENR.write_volatile(Self::RCC_AHB1ENR.read_volatile() | 1 << 8);
            let moder = Self::GPIOI_MODER.read_volatile() & !(0b11 << 2);
            Self::GPIOI_MODER.write_volatile(moder | 0b01 << 2);
        }
        Pi1(())
    }
}

#[cfg(all(target_os = "none", lepton_board = "stm32f746"))]
impl embedded_hal::digital::ErrorType for Pi1 {
    type Error = core::convert::Infallible;
}

#[cfg(all(target_os = "none", lepton_board = "stm32f746"))]
impl embedded_hal::digital::OutputPin for Pi1 {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        // SAFETY: BSRR is write-only and atomic per bit: bit 17 resets PI1 and touches nothing else.
        unsafe { Self::GPIOI_BSRR.write_volatile(1 << 17) };
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        // SAFETY: as above; bit 1 sets PI1.
        unsafe { Self::GPIOI_BSRR.write_volatile(1 << 1) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::OutputPin;

    #[test]
    fn the_stand_in_pin_logs_transitions_with_the_clock() {
        let (out, clock) = (RefCell::new(String::new()), Cell::new(0));
        let mut pin = ConsolePin::new(&out, &clock);
        clock.set(120);
        pin.set_high().unwrap();
        clock.set(370);
        pin.set_low().unwrap();
        assert_eq!(out.borrow().as_str(), "pin high at 120\npin low at 370\n");
        let _busy = out.borrow_mut();
        assert_eq!(pin.set_high(), Err(PinError));
    }
}
