//! `lepton-mcu-listen`: boots the live speaker firmware under QEMU, streams a recording into it
//! through UART0 at the recording's rate, and prints the events it sends back on UART1 as the
//! daemon prints them, then the firmware's figures.

use anyhow::{bail, Context, Result};
use clap::Parser;
use lepton_core::event::Event;
use lepton_mcu_listen::{header, Frames, Summary};
use lepton_runtime::source::{AudioSource, Resampled, WavSource};
use lepton_runtime::Model;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Listen to a recording with Lepton's Cortex-M firmware, live, under QEMU.
///
/// Boots FIRMWARE (the speaker firmware built with feature `live`) on QEMU's MPS2-AN386
/// (Cortex-M4), streams RECORDING into its UART0 at the recording's sample rate (after a 12-byte
/// header: `LPCM`, rate, sample count), and prints each event the firmware sends on UART1 as it
/// arrives, in the form the daemon (`lepton run`) prints them:
///   mcu event start yes 0.912 at <when it arrived> (<ms> ms into the recording)
/// Then the
/// firmware's own figures: model runs, overruns (samples lost because the loop fell behind),
/// busy cycles per second of audio (SysTick), and with --insn-plugin the instructions executed
/// per second of audio.
///
/// `scripts/mcu-listen MODEL RECORDING.wav` builds the firmware for a model and runs this.
///
/// QEMU's model of the board's UART takes about one byte per turn of its main loop, 10 to 25 KB/s
/// on the machine it was measured on; 16 kHz audio needs 32 KB/s. The stream then arrives slower than real time (the
/// summary says how fast): the firmware sees the same samples, only later. A board's UART at
/// 460,800 baud, or its microphone, delivers in real time.
#[derive(Parser, Debug)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// The firmware ELF (`cargo build --release -p lepton-mcu --target thumbv7em-none-eabihf
    /// --features live` with LEPTON_MCU_MODEL set).
    firmware: PathBuf,
    /// The model the firmware was built with (`.lpm`, or a microWakeWord JSON): its labels, task
    /// and sample rate.
    model: PathBuf,
    /// A WAV recording (resampled to the model's rate if it differs).
    recording: PathBuf,
    /// Stream at this multiple of real time (1 = the recording's own rate; 0.01 to 100).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Count instructions with this QEMU TCG plugin (one that prints `insns: N` at exit, as
    /// ../shared/tools/insn/insn.c built with `cc -shared -fPIC`).
    #[arg(long)]
    insn_plugin: Option<PathBuf>,
    /// The QEMU system emulator.
    #[arg(long, default_value = "qemu-system-arm")]
    qemu: String,
    /// Give up after this many seconds (default: 10 × the recording's length + 60).
    #[arg(long)]
    timeout: Option<u64>,
    /// Print one JSON object (events, alert pin, figures) instead of lines.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lepton-mcu-listen: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What QEMU wrote on stderr: the firmware's console (semihosting) and the plugin's count.
#[derive(Debug, Default)]
struct Console {
    pins: Vec<(bool, u64)>,
    summary: Option<Summary>,
    errors: Vec<String>,
    instructions: Option<u64>,
    /// The first [`MAX_OTHER`] other lines, for error messages.
    other: Vec<String>,
}

/// Longest console line kept (longer ones are cut).
const MAX_LINE: usize = 4096;
/// Other console lines kept.
const MAX_OTHER: usize = 200;

/// Reads QEMU's stderr to its end (so QEMU never blocks on it), whatever bytes it holds.
fn read_console(stderr: impl Read) -> Console {
    let mut c = Console::default();
    let mut reader = BufReader::new(stderr);
    let mut buf = vec![];
    loop {
        buf.clear();
        // At most MAX_LINE bytes a line are kept; the rest of a long line is read and dropped.
        match reader.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() == MAX_LINE {
            let mut rest = vec![];
            let _ = reader.by_ref().read_until(b'\n', &mut rest);
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some(s) = Summary::parse(&line) {
            match s {
                Ok(s) => c.summary = Some(s),
                Err(e) => c.errors.push(e.to_string()),
            }
        } else if let Some(rest) = line.strip_prefix("pin ") {
            let mut w = rest.split(' ');
            let (level, at) = (w.next(), w.nth(1).and_then(|t| t.parse().ok()));
            match (level, at) {
                (Some(l), Some(t)) => c.pins.push((l == "high", t)),
                _ => c.other.push(line),
            }
            c.other.truncate(MAX_OTHER);
        } else if let Some(e) = line.strip_prefix("error: ") {
            c.errors.push(e.to_string());
        } else if let Some(n) = line.split("insns: ").nth(1).and_then(|n| n.trim().parse().ok()) {
            c.instructions = Some(n);
        } else if !line.trim().is_empty() && c.other.len() < MAX_OTHER {
            c.other.push(line);
        }
    }
    c
}

/// The recording's samples at the model's rate, as 16-bit PCM.
fn samples(path: &Path, rate: u32) -> Result<Vec<i16>> {
    let wav = WavSource::open(path).with_context(|| format!("{}", path.display()))?;
    let from = wav.sample_rate();
    let mut source = Resampled::new(wav, rate).with_context(|| format!("{}", path.display()))?;
    if from != rate {
        eprintln!("{}: resampled from {from} Hz to the model's {rate} Hz", path.display());
    }
    let mut all = vec![];
    let mut block = vec![0f32; 4096];
    loop {
        let n = source.read(&mut block).with_context(|| format!("{}", path.display()))?;
        if n == 0 {
            break;
        }
        // As the host's audio pipeline does: a WAV's samples come back exactly.
        all.extend(block[..n].iter().map(|v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16));
    }
    Ok(all)
}

/// The name of class `c` (its index if the model has no such label).
fn label(labels: &[String], c: u16) -> String {
    labels.get(usize::from(c)).cloned().unwrap_or_else(|| c.to_string())
}

fn run(args: &Args) -> Result<ExitCode> {
    if !(0.01..=100.0).contains(&args.speed) {
        bail!("--speed {}: give a multiple of real time from 0.01 to 100", args.speed);
    }
    for (what, p) in [("firmware", &args.firmware), ("model", &args.model), ("recording", &args.recording)] {
        if !p.is_file() {
            bail!("{what} {}: no such file", p.display());
        }
    }
    let model = Model::load(&args.model).with_context(|| format!("{}", args.model.display()))?;
    let manifest = model.manifest().cloned().with_context(|| {
        format!(
            "{}: no manifest; the firmware's speaker mode needs a keyword, VAD or wake-word model",
            args.model.display()
        )
    })?;
    let rate = manifest.audio.as_ref().map_or(16000, |a| a.sample_rate);
    let audio = samples(&args.recording, rate)?;
    let (audio_len, seconds) = (audio.len(), audio.len() as f64 / f64::from(rate));

    // QEMU connects to both sockets at start: the audio line (UART0) and the event line (UART1).
    let dir = std::env::temp_dir().join(format!("lepton-mcu-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (mic_path, events_path) = (dir.join("uart0"), dir.join("uart1"));
    for p in [&mic_path, &events_path] {
        let _ = std::fs::remove_file(p);
    }
    let mic = UnixListener::bind(&mic_path).with_context(|| format!("listening on {}", mic_path.display()))?;
    let events = UnixListener::bind(&events_path).with_context(|| format!("listening on {}", events_path.display()))?;
    let mut cmd = Command::new(&args.qemu);
    cmd.args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-chardev", &format!("socket,id=uart0,path={}", mic_path.display()), "-serial", "chardev:uart0"])
        .args(["-chardev", &format!("socket,id=uart1,path={}", events_path.display()), "-serial", "chardev:uart1"]);
    if let Some(p) = &args.insn_plugin {
        cmd.arg("-plugin").arg(p).args(["-d", "plugin"]);
    }
    cmd.arg("-kernel").arg(&args.firmware).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut qemu = cmd.spawn().with_context(|| {
        format!("starting {} (Debian package qemu-system-arm; scripts/install-deps --test installs it)", args.qemu)
    })?;
    let stderr = qemu.stderr.take().context("QEMU's stderr")?;
    let console = std::thread::spawn(move || read_console(stderr));
    // QEMU connects both at start; if it ends (or hangs) first, say why instead of waiting.
    let accepted = (|| -> Result<_> {
        for l in [&mic, &events] {
            l.set_nonblocking(true).context("listening for QEMU")?;
        }
        let since = Instant::now();
        let (mut m, mut e) = (None, None);
        while m.is_none() || e.is_none() {
            if m.is_none() {
                m = mic.accept().ok().map(|(s, _)| s);
            }
            if e.is_none() {
                e = events.accept().ok().map(|(s, _)| s);
            }
            if let Some(status) = qemu.try_wait().context("waiting for QEMU")? {
                bail!("QEMU ended ({status}) before it connected the UARTs");
            }
            if since.elapsed() > Duration::from_secs(30) {
                bail!("QEMU did not connect the UARTs within 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (m, e) = (m.context("UART0")?, e.context("UART1")?);
        for s in [&m, &e] {
            s.set_nonblocking(false).context("the UART sockets")?;
        }
        Ok((m, e))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (mut mic, mut event_line) = match accepted {
        Ok(c) => c,
        Err(e) => {
            let _ = qemu.kill();
            let _ = qemu.wait();
            let said = console.join().map(|c| c.other.join("\n")).unwrap_or_default();
            let said = if said.is_empty() { String::new() } else { format!("; it said:\n{said}") };
            bail!("{e:#}{said}");
        }
    };

    // The event line, read and (without --json) printed as it comes, in the daemon's form, with
    // the time it arrived.
    let labels = manifest.labels.clone();
    let print = !args.json;
    let reader = std::thread::spawn(move || -> (Vec<Event>, Frames) {
        let mut frames = Frames::default();
        let mut got = vec![];
        let mut buf = [0u8; 512];
        while let Ok(n) = event_line.read(&mut buf) {
            if n == 0 {
                break;
            }
            for e in frames.push(&buf[..n]) {
                if print {
                    let at = humantime::format_rfc3339_millis(SystemTime::now());
                    println!(
                        "mcu event {} {} {:.3} at {at} ({} ms into the recording)",
                        e.kind.name(),
                        label(&labels, e.class),
                        e.score,
                        e.timestamp_ms
                    );
                }
                got.push(e);
            }
        }
        (got, frames)
    });

    // The audio line: the header, then 10 ms blocks on the recording's schedule.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sender = stop.clone();
    let head = header(rate, audio.len())?;
    let speed = args.speed;
    let sender = std::thread::spawn(move || -> std::io::Result<f64> {
        mic.write_all(&head)?;
        let start = Instant::now();
        let hop = (rate / 100).max(1) as usize;
        for (i, block) in audio.chunks(hop).enumerate() {
            if stop_sender.load(Ordering::Relaxed) {
                break;
            }
            let due = Duration::from_secs_f64((i * hop) as f64 / (f64::from(rate) * speed));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let bytes: Vec<u8> = block.iter().flat_map(|s| s.to_le_bytes()).collect();
            mic.write_all(&bytes)?;
        }
        let took = start.elapsed().as_secs_f64();
        // Kept open until QEMU ends: the emulated UART may still be taking the last bytes.
        while !stop_sender.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(took)
    });

    let limit = Duration::from_secs(args.timeout.unwrap_or(10 * (seconds / args.speed).ceil() as u64 + 60));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = qemu.try_wait().context("waiting for QEMU")? {
            break Some(s);
        }
        if started.elapsed() > limit {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    let streamed = sender.join().map_err(|_| anyhow::anyhow!("the audio sender panicked"))?;
    let (events, frames) = reader.join().map_err(|_| anyhow::anyhow!("the event reader panicked"))?;
    let console = console.join().map_err(|_| anyhow::anyhow!("the console reader panicked"))?;
    let Some(status) = status else {
        bail!("the firmware did not finish within {} s (--timeout)", limit.as_secs());
    };
    if let Some(e) = console.errors.first() {
        bail!("the firmware stopped: {e}");
    }
    let streamed = streamed.context("streaming the audio into UART0")?;
    let Some(summary) = console.summary else {
        bail!(
            "the firmware ended ({status}) without its summary line; its console said:\n{}",
            console.other.join("\n")
        );
    };
    if !status.success() {
        bail!("the firmware exited with {status}");
    }
    if summary.source != "uart0" {
        bail!(
            "{}: this firmware played its own recording ({}), not the stream: build it with feature `live`",
            args.firmware.display(),
            summary.source
        );
    }

    let samples = summary.get("samples")?;
    if samples + summary.get("overruns")? != audio_len as u64 {
        bail!("the firmware took {samples} samples and lost {} of the {audio_len} sent", summary.get("overruns")?);
    }
    let audio_seconds = samples as f64 / f64::from(rate);
    let per_second = |n: u64| (n as f64 / audio_seconds.max(1e-9)).round() as u64;
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| json!({"t_ms": e.timestamp_ms, "kind": e.kind.name(), "label": label(&manifest.labels, e.class), "class": e.class, "score": e.score}))
        .collect();
    if args.json {
        let j = json!({
            "firmware": args.firmware, "model": args.model, "recording": args.recording,
            "events": rows, "pins": console.pins,
            "samples": samples, "runs": summary.get("runs")?, "first_run_ms": summary.get("first_run_ms")?,
            "events_sent": summary.get("events")?, "bad_frames": frames.bad, "overruns": summary.get("overruns")?,
            "cycles_per_second": summary.get("cycles_per_second")?, "clock_hz": summary.get("clock_hz")?,
            "instructions": console.instructions, "instructions_per_second": console.instructions.map(per_second),
            "audio_seconds": audio_seconds, "stream_seconds": streamed,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{} model runs over {audio_seconds:.2} s of audio, {} results", summary.get("runs")?, rows.len());
        println!(
            "streamed in {streamed:.2} s ({:.2}x real time{}); overruns: {}",
            audio_seconds / streamed.max(1e-9),
            if audio_seconds / streamed.max(1e-9) < 0.95 * speed { ", as fast as QEMU's UART took it" } else { "" },
            summary.get("overruns")?
        );
        println!(
            "busy cycles per second of audio: {} (SysTick at {} Hz; under QEMU it counts host time, not a Cortex-M4's cycles)",
            summary.get("cycles_per_second")?,
            summary.get("clock_hz")?
        );
        if let Some(n) = console.instructions {
            println!(
                "instructions per second of audio: {} (TCG plugin, {n} in all, idle time executes none)",
                per_second(n)
            );
        }
    }
    if frames.bad > 0 || frames.pending() > 0 {
        eprintln!(
            "lepton-mcu-listen: {} bad frame(s) and {} stray byte(s) on the event line",
            frames.bad,
            frames.pending()
        );
        return Ok(ExitCode::from(1));
    }
    if summary.get("events")? != events.len() as u64 {
        eprintln!("lepton-mcu-listen: the firmware sent {} events, {} arrived", summary.get("events")?, events.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
