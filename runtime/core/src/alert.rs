//! Alert outputs: a GPIO line (LED, buzzer, relay) driven by events, without ever blocking the
//! pipeline.
//!
//! An [`Alert`] is a time-driven state machine over an embedded-hal 1.0 [`OutputPin`]. The caller
//! reports events with [`Alert::trigger`] (and may end an alert early with [`Alert::release`]),
//! and calls [`Alert::poll`] with the current time whenever it likes (every audio block, every
//! frame, from a timer); `poll` sets the pin when its level must change and returns at once.
//!
//! Timeline, in milliseconds of the caller's clock:
//! - the output becomes active at a trigger and stays active until `hold_ms` after the **last**
//!   trigger (a trigger while active extends the hold, never shortens it);
//! - with a [`Blink`] pattern, the active period is `on_ms` on, `off_ms` off, repeating from the
//!   trigger that started it (re-triggers keep the rhythm);
//! - [`Alert::release`] ends the active period at once.
//!
//! The pin is written only when its level changes (and on the first poll, which drives it to the
//! inactive level); a pin error is returned from `poll` and the write is retried on the next poll.

use crate::error::Error;
use embedded_hal::digital::{OutputPin, PinState};

/// Which pin level means "alert on".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveLevel {
    /// On = high (an LED from the pin to ground).
    High,
    /// On = low (an LED from the supply to the pin, an active-low relay input).
    Low,
}

/// A blink pattern: on for `on_ms`, off for `off_ms`, repeating while the alert is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blink {
    /// Milliseconds on per period (> 0).
    pub on_ms: u32,
    /// Milliseconds off per period (> 0).
    pub off_ms: u32,
}

/// How an alert drives its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlertConfig {
    /// The pin level meaning "on".
    pub active: ActiveLevel,
    /// Milliseconds the alert stays active after the last trigger (> 0).
    pub hold_ms: u32,
    /// Blink while active; `None`: steady on.
    pub blink: Option<Blink>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig::new(ActiveLevel::High, 1000)
    }
}

impl AlertConfig {
    /// A steady alert: on at `active` level for `hold_ms` after each trigger.
    pub const fn new(active: ActiveLevel, hold_ms: u32) -> Self {
        AlertConfig { active, hold_ms, blink: None }
    }

    /// The same alert, blinking `on_ms` on and `off_ms` off while active.
    pub const fn with_blink(self, on_ms: u32, off_ms: u32) -> Self {
        AlertConfig { blink: Some(Blink { on_ms, off_ms }), ..self }
    }

    /// Checks the durations, naming the first one at fault.
    pub fn validate(&self) -> Result<(), Error> {
        if self.hold_ms == 0 {
            return Err(Error::InvalidConfig("alert.hold_ms"));
        }
        if self.blink.is_some_and(|b| b.on_ms == 0 || b.off_ms == 0) {
            return Err(Error::InvalidConfig("alert.blink"));
        }
        Ok(())
    }
}

/// An alert output on pin `P`: fixed size, no allocation, never blocks.
#[derive(Debug)]
pub struct Alert<P: OutputPin> {
    pin: P,
    cfg: AlertConfig,
    /// Start of the current active period (`None`: idle or released).
    started_ms: Option<u64>,
    /// End of the current active period (exclusive).
    until_ms: u64,
    /// The "on" state last written to the pin (`None`: never written).
    driven: Option<bool>,
}

impl<P: OutputPin> Alert<P> {
    /// An idle alert on `pin`; the pin is first written by [`poll`](Self::poll).
    pub fn new(pin: P, cfg: AlertConfig) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(Alert { pin, cfg, started_ms: None, until_ms: 0, driven: None })
    }

    /// The configuration.
    pub fn config(&self) -> &AlertConfig {
        &self.cfg
    }

    /// Reports an event at `now_ms`: starts an active period, or extends the current one to
    /// `now_ms + hold_ms`.
    pub fn trigger(&mut self, now_ms: u64) {
        let until = now_ms.saturating_add(u64::from(self.cfg.hold_ms));
        if self.is_active(now_ms) {
            self.until_ms = self.until_ms.max(until);
        } else {
            self.started_ms = Some(now_ms);
            self.until_ms = until;
        }
    }

    /// Ends the active period at `now_ms` (the event ended or was acknowledged); the next
    /// [`poll`](Self::poll) turns the output off.
    pub fn release(&mut self, now_ms: u64) {
        if self.is_active(now_ms) {
            self.until_ms = now_ms;
        }
        self.started_ms = None;
    }

    /// True between a trigger and the end of its hold (blinking alerts included, in their off phases).
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.started_ms.is_some() && now_ms < self.until_ms
    }

    /// Whether the output should be on at `now_ms`.
    pub fn wants_on(&self, now_ms: u64) -> bool {
        let Some(start) = self.started_ms else { return false };
        if now_ms >= self.until_ms {
            return false;
        }
        match self.cfg.blink {
            None => true,
            Some(b) => now_ms.saturating_sub(start) % (u64::from(b.on_ms) + u64::from(b.off_ms)) < u64::from(b.on_ms),
        }
    }

    /// The on state last written to the pin (`None` before the first successful poll).
    pub fn output(&self) -> Option<bool> {
        self.driven
    }

    /// The next time after `now_ms` at which the output level changes, if one is scheduled (a
    /// caller that sleeps between events wakes up then to [`poll`](Self::poll)).
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        if self.driven != Some(self.wants_on(now_ms)) {
            return Some(now_ms);
        }
        let start = self.started_ms?;
        if now_ms >= self.until_ms {
            return None;
        }
        let change = match self.cfg.blink {
            None => self.until_ms,
            Some(b) => {
                let (on, period) = (u64::from(b.on_ms), u64::from(b.on_ms) + u64::from(b.off_ms));
                let phase = now_ms.saturating_sub(start) % period;
                let edge = if phase < on { on - phase } else { period - phase };
                now_ms.saturating_add(edge).min(self.until_ms)
            }
        };
        Some(change)
    }

    /// Sets the pin to the level due at `now_ms` (written only when it changes); returns the pin's
    /// error if the write failed (retried on the next poll).
    pub fn poll(&mut self, now_ms: u64) -> Result<(), P::Error> {
        if self.started_ms.is_some() && now_ms >= self.until_ms {
            self.started_ms = None;
        }
        let on = self.wants_on(now_ms);
        if self.driven != Some(on) {
            let high = on == (self.cfg.active == ActiveLevel::High);
            self.pin.set_state(PinState::from(high))?;
            self.driven = Some(on);
        }
        Ok(())
    }

    /// Gives the pin back.
    pub fn free(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
    use embedded_hal_mock::eh1::MockError;

    fn alert(expect: &[T], cfg: AlertConfig) -> Alert<Mock> {
        Alert::new(Mock::new(expect), cfg).unwrap()
    }

    /// Polls at each time in `times` and returns the pin for `done()`.
    fn poll_all(mut a: Alert<Mock>, times: &[u64]) -> Mock {
        for &t in times {
            a.poll(t).unwrap();
        }
        a.free()
    }

    #[test]
    fn steady_alert_holds_for_hold_ms_after_the_trigger() {
        let expect = [T::set(State::Low), T::set(State::High), T::set(State::Low)];
        let mut a = alert(&expect, AlertConfig::new(ActiveLevel::High, 1000));
        a.poll(0).unwrap(); // first poll: inactive level
        a.poll(50).unwrap(); // no change, no write
        a.trigger(100);
        assert!(a.is_active(100) && a.is_active(1099) && !a.is_active(1100));
        assert_eq!(a.next_change_ms(100), Some(100));
        a.poll(100).unwrap();
        assert_eq!(a.next_change_ms(100), Some(1100));
        let mut pin = poll_all(a, &[500, 1099, 1100, 5000]);
        pin.done();
    }

    #[test]
    fn a_retrigger_extends_the_hold_from_the_last_trigger() {
        let expect = [T::set(State::High), T::set(State::Low)];
        let mut a = alert(&expect, AlertConfig::new(ActiveLevel::High, 1000));
        a.trigger(0);
        a.poll(0).unwrap();
        a.trigger(800);
        // A trigger never shortens a hold either.
        a.trigger(700);
        a.poll(1000).unwrap();
        a.poll(1799).unwrap();
        assert_eq!(a.next_change_ms(1799), Some(1800));
        a.poll(1800).unwrap();
        assert_eq!(a.next_change_ms(1800), None);
        a.free().done();
    }

    #[test]
    fn active_low_inverts_the_pin_levels() {
        let expect = [T::set(State::High), T::set(State::Low), T::set(State::High)];
        let mut a = alert(&expect, AlertConfig::new(ActiveLevel::Low, 250));
        a.poll(0).unwrap();
        a.trigger(10);
        poll_all(a, &[10, 100, 259, 260, 300]).done();
    }

    #[test]
    fn blink_pattern_toggles_while_active_and_ends_with_the_hold() {
        // on 100, off 50, hold 400 from t = 1000: on 1000..1100, off ..1150, on ..1250, off ..1300,
        // on ..1400 = end of hold.
        let expect =
            [State::Low, State::High, State::Low, State::High, State::Low, State::High, State::Low].map(T::set);
        let cfg = AlertConfig::new(ActiveLevel::High, 400).with_blink(100, 50);
        let mut a = alert(&expect, cfg);
        a.poll(0).unwrap();
        a.trigger(1000);
        a.poll(1000).unwrap();
        let mut edges = heapless::Vec::<u64, 8>::new();
        let mut t = 1000;
        while let Some(next) = a.next_change_ms(t) {
            assert!(next > t);
            a.poll(next - 1).unwrap(); // nothing due yet: no write
            a.poll(next).unwrap();
            edges.push(next).unwrap();
            t = next;
        }
        assert_eq!(edges, [1100, 1150, 1250, 1300, 1400]);
        a.poll(2000).unwrap();
        a.free().done();
    }

    #[test]
    fn retriggers_while_blinking_keep_the_rhythm() {
        // on 100, off 100, hold 300 from t = 0, re-triggered at 150 (in an off phase): the hold now
        // ends at 450, and the edges stay on the 100 ms grid of the first trigger.
        let cfg = AlertConfig::new(ActiveLevel::High, 300).with_blink(100, 100);
        let expect = [State::High, State::Low, State::High, State::Low, State::High, State::Low].map(T::set);
        let mut a = alert(&expect, cfg);
        a.trigger(0);
        a.poll(0).unwrap();
        a.trigger(150);
        assert!(!a.wants_on(150) && a.wants_on(200) && !a.wants_on(300) && a.wants_on(449) && !a.wants_on(450));
        poll_all(a, &[100, 150, 200, 300, 400, 449, 450, 600]).done();
    }

    #[test]
    fn release_ends_the_alert_early() {
        let expect = [T::set(State::High), T::set(State::Low)];
        let mut a = alert(&expect, AlertConfig::new(ActiveLevel::High, 10_000));
        a.trigger(0);
        a.poll(0).unwrap();
        a.release(30);
        assert!(!a.is_active(30));
        a.poll(30).unwrap();
        a.poll(40).unwrap();
        a.free().done();
    }

    #[test]
    fn pin_errors_are_returned_and_the_write_retried() {
        let err = MockError::Io(std::io::ErrorKind::NotConnected);
        let expect = [T::set(State::High).with_error(err.clone()), T::set(State::High)];
        let mut a = alert(&expect, AlertConfig::new(ActiveLevel::High, 100));
        a.trigger(0);
        assert_eq!(a.poll(0), Err(err));
        assert_eq!(a.output(), None);
        a.poll(1).unwrap();
        assert_eq!(a.output(), Some(true));
        a.free().done();
    }

    #[test]
    fn invalid_durations_name_the_field() {
        #[derive(Debug)]
        struct NoPin;
        impl embedded_hal::digital::ErrorType for NoPin {
            type Error = core::convert::Infallible;
        }
        impl OutputPin for NoPin {
            fn set_low(&mut self) -> Result<(), Self::Error> {
                Ok(())
            }
            fn set_high(&mut self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
        let e = Alert::new(NoPin, AlertConfig::new(ActiveLevel::High, 0)).unwrap_err();
        assert_eq!(e, Error::InvalidConfig("alert.hold_ms"));
        let e = AlertConfig::new(ActiveLevel::High, 10).with_blink(0, 5).validate().unwrap_err();
        assert_eq!(e, Error::InvalidConfig("alert.blink"));
        assert!(AlertConfig::default().with_blink(1, 1).validate().is_ok());
    }
}
