//! GPIO alerts of the daemon (`[[pipeline.alert]]`): a line of a Linux GPIO character device
//! (through linux-embedded-hal) driven by the runtime's no_std alert logic when an event starts.
//!
//! Each alert owns a thread that sleeps until the next level change or the next trigger, so
//! pipelines never wait on a pin. Lines are requested when the daemon starts (a wrong chip or
//! line stops the start with a message) and driven to their inactive level when it stops.

use crate::board::Board;
use crate::config::{ActiveLevelKind, AlertOutput, GpioLine};
use anyhow::{bail, Context, Result};
use embedded_hal::digital::OutputPin;
use lepton_runtime::alert::{ActiveLevel, Alert, AlertConfig};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// GPIO chip used when neither the alert nor the board profile names one.
pub const DEFAULT_CHIP: &str = "/dev/gpiochip0";

/// A running alert: send it event starts; dropping the last sender turns it off and ends its thread.
pub struct AlertHandle {
    /// Where it is (`/dev/gpiochip0 line 17`), for logs.
    pub name: String,
    labels: Vec<String>,
    zones: Vec<String>,
    tx: Sender<()>,
    thread: JoinHandle<()>,
}

impl AlertHandle {
    /// Makes entries into these zones switch it on, instead of event starts.
    pub fn on_zones(mut self, zones: Vec<String>) -> Self {
        self.zones = zones;
        self
    }

    fn takes(&self, label: &str) -> bool {
        self.labels.is_empty() || self.labels.iter().any(|l| l == label)
    }

    /// Reports an event start of `label`; ignored when the alert listens to other labels or to
    /// zones.
    pub fn event_started(&self, label: &str) {
        if self.zones.is_empty() && self.takes(label) {
            // A closed channel means the thread ended on a pin error it already logged.
            let _ = self.tx.send(());
        }
    }

    /// Reports an object of `label` entering `zone`; ignored unless the alert listens to it.
    pub fn zone_entered(&self, zone: &str, label: &str) {
        if self.zones.iter().any(|z| z == zone) && self.takes(label) {
            let _ = self.tx.send(());
        }
    }

    /// Turns the output off and waits for its thread.
    pub fn stop(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// The runtime alert settings of one `[[pipeline.alert]]`.
pub fn alert_config(a: &AlertOutput) -> AlertConfig {
    let active = match a.active {
        ActiveLevelKind::High => ActiveLevel::High,
        ActiveLevelKind::Low => ActiveLevel::Low,
    };
    // Both are bounded when read (a day, a minute): the products fit in u32 milliseconds.
    let cfg = AlertConfig::new(active, (a.hold_s.get() * 1e3).round() as u32);
    match a.blink_ms {
        Some([on, off]) => cfg.with_blink(on.get().round() as u32, off.get().round() as u32),
        None => cfg,
    }
}

/// Resolves chip and line offset: the alert's own, else the board profile's.
fn locate(a: &AlertOutput, board: Option<&Board>) -> Result<(String, u32)> {
    let chip =
        a.chip.clone().or_else(|| board.and_then(|b| b.gpio.chip.clone())).unwrap_or_else(|| DEFAULT_CHIP.to_string());
    let line = match &a.line {
        GpioLine::Offset(n) => *n,
        GpioLine::Name(name) => {
            let Some(b) = board else {
                bail!(
                    "line \"{name}\" is a name: give a board profile (`--board` or `[device] board`) or a line offset"
                );
            };
            match b.gpio.lines.get(name) {
                Some(n) => *n,
                None => {
                    let known: Vec<&str> = b.gpio.lines.keys().map(String::as_str).collect();
                    bail!("board {} has no GPIO line named \"{name}\" (it names: {})", b.name, known.join(", "))
                }
            }
        }
    };
    Ok((chip, line))
}

/// The innermost cause of an error, for messages: GPIO errors repeat their cause in their own text.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(s) = e.source() {
        e = s;
    }
    e.to_string()
}

const HINT: &str = "check the path (`ls /dev/gpiochip*`, `gpioinfo`) and that the user is in the `gpio` group";

/// Checks that `chip` exists and has a line `line`, without requesting it.
pub fn probe(chip: &str, line: u32) -> Result<()> {
    let c = Chip::new(chip).map_err(|e| anyhow::anyhow!("GPIO chip {chip}: {}: {HINT}", cause(&e)))?;
    if line >= c.num_lines() {
        bail!("GPIO chip {chip} has lines 0..{}, no line {line}", c.num_lines());
    }
    Ok(())
}

/// Checks a pipeline's alerts against the board profile, the model's `labels` and the GPIO
/// chips present (each chip opened and its line count read; no line is requested); returns
/// (chip, line) for each.
pub fn check(
    pipeline: &str,
    alerts: &[AlertOutput],
    board: Option<&Board>,
    labels: &[String],
) -> Result<Vec<(String, u32)>> {
    alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at = format!("pipeline `{pipeline}`, alert #{}", i + 1);
            if let Some(l) = a.labels.iter().find(|l| !labels.contains(l)) {
                bail!("{at}: label \"{l}\" is not one of the model's labels ({})", labels.join(", "));
            }
            let (chip, line) = locate(a, board).with_context(|| at.clone())?;
            probe(&chip, line).with_context(|| at.clone())?;
            Ok((chip, line))
        })
        .collect()
}

/// Requests every alert line of a pipeline and starts its threads; `labels` are the model's.
pub fn start(
    pipeline: &str,
    alerts: &[AlertOutput],
    board: Option<&Board>,
    labels: &[String],
) -> Result<Vec<AlertHandle>> {
    let lines = check(pipeline, alerts, board, labels)?;
    let mut handles = vec![];
    for (i, (a, (chip, line))) in alerts.iter().zip(lines).enumerate() {
        let pin = request(&chip, line).with_context(|| format!("pipeline `{pipeline}`, alert #{}", i + 1))?;
        handles.push(
            spawn(format!("{chip} line {line}"), a.labels.clone(), pin, alert_config(a))?.on_zones(a.zones.clone()),
        );
    }
    Ok(handles)
}

/// Requests `line` of `chip` as an output, initially low.
fn request(chip: &str, line: u32) -> Result<CdevPin> {
    let mut c = Chip::new(chip).map_err(|e| anyhow::anyhow!("GPIO chip {chip}: {}: {HINT}", cause(&e)))?;
    let handle = c.get_line(line).and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, "lepton")).map_err(|e| {
        anyhow::anyhow!("requesting line {line} of {chip} as an output: {} (is it in use, or out of range?)", cause(&e))
    })?;
    CdevPin::new(handle).map_err(|e| anyhow::anyhow!("line {line} of {chip}: {}", cause(&e)))
}

/// Starts the thread that drives `pin`.
pub fn spawn<P>(name: String, labels: Vec<String>, pin: P, cfg: AlertConfig) -> Result<AlertHandle>
where
    P: OutputPin + Send + 'static,
{
    let mut alert = Alert::new(pin, cfg).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let (tx, rx) = mpsc::channel::<()>();
    let label = name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("alert {name}"))
        .spawn(move || {
            let t0 = Instant::now();
            let now = || t0.elapsed().as_millis() as u64;
            let mut failed = false;
            loop {
                let t = now();
                match alert.poll(t) {
                    Ok(()) => failed = false,
                    Err(e) if !failed => {
                        tracing::warn!("alert {label}: writing the pin failed ({e:?}); retrying");
                        failed = true;
                    }
                    Err(_) => {}
                }
                let wait = match alert.next_change_ms(t) {
                    Some(at) if failed => Duration::from_millis(at.saturating_sub(t).max(100)),
                    Some(at) => Duration::from_millis(at.saturating_sub(t)),
                    None => Duration::from_secs(3600),
                };
                match rx.recv_timeout(wait) {
                    Ok(()) => alert.trigger(now()),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        let t = now();
                        alert.release(t);
                        if let Err(e) = alert.poll(t) {
                            tracing::warn!("alert {label}: turning the output off failed ({e:?})");
                        }
                        return;
                    }
                }
            }
        })
        .context("starting an alert thread")?;
    Ok(AlertHandle { name, labels, zones: Vec::new(), tx, thread })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    /// A pin that records (milliseconds since creation, level) for each write.
    #[derive(Clone)]
    struct Recorder(Arc<Mutex<Vec<(u64, bool)>>>, Instant);

    impl embedded_hal::digital::ErrorType for Recorder {
        type Error = Infallible;
    }
    impl OutputPin for Recorder {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.0.lock().unwrap().push((self.1.elapsed().as_millis() as u64, false));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.0.lock().unwrap().push((self.1.elapsed().as_millis() as u64, true));
            Ok(())
        }
    }

    #[test]
    fn an_event_start_switches_the_line_on_for_the_hold_then_off() {
        let pin = Recorder(Arc::default(), Instant::now());
        let writes = Arc::clone(&pin.0);
        let h = spawn("test".into(), vec!["yes".into()], pin, AlertConfig::new(ActiveLevel::High, 150)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        h.event_started("no"); // another label: ignored
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(writes.lock().unwrap().iter().map(|w| w.1).collect::<Vec<_>>(), [false]);
        h.event_started("yes");
        std::thread::sleep(Duration::from_millis(400));
        let w = writes.lock().unwrap().clone();
        assert_eq!(w.iter().map(|w| w.1).collect::<Vec<_>>(), [false, true, false], "{w:?}");
        let held = w[2].0 - w[1].0;
        assert!((150..350).contains(&held), "on for {held} ms, hold 150 ms: {w:?}");
        h.stop();
    }

    #[test]
    fn an_alert_on_a_zone_follows_entries_into_it_not_event_starts() {
        let pin = Recorder(Arc::default(), Instant::now());
        let writes = Arc::clone(&pin.0);
        let h = spawn("test".into(), vec!["car".into()], pin, AlertConfig::new(ActiveLevel::High, 150))
            .unwrap()
            .on_zones(vec!["driveway".into()]);
        std::thread::sleep(Duration::from_millis(30));
        h.event_started("car"); // an event start: not what it listens to
        h.zone_entered("garden", "car"); // another zone
        h.zone_entered("driveway", "person"); // another label
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(writes.lock().unwrap().iter().map(|w| w.1).collect::<Vec<_>>(), [false]);
        h.zone_entered("driveway", "car");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(writes.lock().unwrap().iter().map(|w| w.1).collect::<Vec<_>>(), [false, true]);
        h.stop();
    }

    #[test]
    fn stopping_turns_an_active_low_output_off() {
        let pin = Recorder(Arc::default(), Instant::now());
        let writes = Arc::clone(&pin.0);
        let h = spawn("test".into(), vec![], pin, AlertConfig::new(ActiveLevel::Low, 60_000)).unwrap();
        h.event_started("anything");
        std::thread::sleep(Duration::from_millis(50));
        h.stop();
        // Inactive (high), active (low), then high again at stop, long before the hold ends.
        assert_eq!(writes.lock().unwrap().iter().map(|w| w.1).collect::<Vec<_>>(), [true, false, true]);
    }

    #[test]
    fn line_names_come_from_the_board_profile() {
        let board = Board::load("rpi4").unwrap();
        let a: AlertOutput = toml::from_str("line = \"buzzer\"").unwrap();
        assert_eq!(locate(&a, Some(&board)).unwrap(), ("/dev/gpiochip0".to_string(), 17));
        let a: AlertOutput = toml::from_str("line = \"siren\"").unwrap();
        let e = locate(&a, Some(&board)).unwrap_err().to_string();
        assert!(e.contains("no GPIO line named \"siren\"") && e.contains("buzzer"), "{e}");
        let a: AlertOutput = toml::from_str("line = \"buzzer\"").unwrap();
        assert!(locate(&a, None).unwrap_err().to_string().contains("give a board profile"));
        let a: AlertOutput = toml::from_str("chip = \"/dev/gpiochip2\"\nline = 5").unwrap();
        assert_eq!(locate(&a, Some(&board)).unwrap(), ("/dev/gpiochip2".to_string(), 5));
    }

    #[test]
    fn a_missing_chip_is_named_once_with_what_to_check() {
        for e in [request("/dev/gpiochip-none", 3).err().unwrap(), probe("/dev/gpiochip-none", 3).unwrap_err()] {
            let e = format!("{e:#}");
            assert!(e.contains("/dev/gpiochip-none") && e.contains("gpio` group"), "{e}");
            assert_eq!(e.matches("No such file or directory").count(), 1, "the cause once: {e}");
        }
    }
}
