//! `lepton devices` and `lepton check`.

use crate::run::{check_plan, source_name, ModelRef, Setup};
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// A private scratch file for captured output: an unnamed file in the temporary folder
/// (`O_TMPFILE`), else a new file under an unpredictable name, created exclusively (`O_EXCL`),
/// never through a symbolic link (`O_NOFOLLOW`), mode 0600, and unlinked at once. A name planted
/// in the temporary folder beforehand (a symlink to a file of the user's) is never opened.
fn private_scratch() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let open = |flags: i32| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).mode(0o600).custom_flags(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC);
        o
    };
    if let Ok(f) = open(libc::O_TMPFILE).open(&dir) {
        return Ok(f);
    }
    // Filesystems without O_TMPFILE: a fresh random name, refused if anything has it.
    let mut random = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("lepton-devices-{name}.log"));
    let f = open(0).create_new(true).open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// Runs `f` with the process's standard error sent to a private scratch file
/// ([`private_scratch`]), and returns what `f` returns: ALSA, JACK and V4L2 libraries print their
/// probing failures straight to fd 2 ("ALSA lib pcm.c: … Unknown PCM", "Cannot connect to server
/// socket"), which would bury the listing. The captured lines are logged at debug level
/// (`LEPTON_LOG=debug` shows them).
fn quiet_stderr<T>(f: impl FnOnce() -> T) -> T {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    let Ok(mut file) = private_scratch() else {
        return f();
    };
    // SAFETY: dup(2) duplicates the open descriptor 2 and touches no memory; it returns -1 or a
    // new descriptor we own.
    let saved = unsafe { libc::dup(2) };
    if saved < 0 {
        return f();
    }
    // SAFETY: both descriptors are open (the scratch file is alive for this whole function); dup2
    // only replaces what fd 2 refers to, and it is restored below.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        // SAFETY: `saved` is the descriptor duplicated above, closed once.
        unsafe { libc::close(saved) };
        return f();
    }
    let out = f();
    // SAFETY: `saved` is the descriptor duplicated above: fd 2 gets it back, then it is closed once.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut chatter = String::new();
    if file.rewind().is_ok() && file.read_to_string(&mut chatter).is_ok() {
        for line in chatter.lines().filter(|l| !l.trim().is_empty()) {
            tracing::debug!("while probing devices: {line}");
        }
    }
    out
}

/// Lists cameras and microphones.
pub fn run() -> Result<ExitCode> {
    let cameras = quiet_stderr(lepton_runtime::source::camera::list);
    let mics = quiet_stderr(lepton_runtime::source::mic::list);
    match cameras {
        Ok(cams) if cams.is_empty() => println!("cameras: none found"),
        Ok(cams) => {
            println!("cameras:");
            for c in cams {
                println!("  {}: {}", c.index, c.name);
                for (w, h, fps, f) in c.modes {
                    println!("      {w}x{h} {fps} fps {f}");
                }
            }
        }
        Err(e) => println!("cameras: cannot list ({e})"),
    }
    match mics {
        Ok(mics) if mics.is_empty() => println!("microphones: none found"),
        Ok(mics) => {
            println!("microphones:");
            for m in mics {
                println!("  {}", m.name);
                for (ch, lo, hi, f) in m.configs {
                    println!("      {ch} channel(s), {lo}..{hi} Hz, {f}");
                }
            }
        }
        Err(e) => println!("microphones: cannot list ({e})"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates a config as far as it can be without capturing or connecting: keys, files, board,
/// models and manifests, that each source suits its model (kind, WAV rate), alert labels and
/// GPIO lines. The same checks as the start of `lepton run` (`run::check_plan`).
pub fn check(path: &Path, board: Option<&str>) -> Result<ExitCode> {
    let at = |e: anyhow::Error| anyhow::anyhow!("{}: {e:#}", path.display());
    let config = crate::check::load(path)?;
    let broker = match &config.mqtt {
        Some(m) => m.brokers_text(),
        None => "embedded broker".into(),
    };
    println!("{}: device `{}`, MQTT {broker}", path.display(), config.device.id);
    let setup = Setup::from_config(config, board).map_err(at)?;
    if let Some(b) = &setup.board {
        println!("  board {}: {} ({})", b.name, b.description, b.target);
    }
    // Every pipeline is checked, and every failure listed, before the exit code says so.
    let mut failed = vec![];
    for plan in setup.plans.iter().cloned() {
        let name = plan.name.clone();
        let c = match check_plan(plan, setup.board.as_ref(), &setup.trust) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}: {e:#}", path.display());
                failed.push(name);
                continue;
            }
        };
        for ((chip, line), a) in c.lines.iter().zip(&c.plan.alerts) {
            let labels = if a.labels.is_empty() { "any label".to_string() } else { a.labels.join(", ") };
            println!("  pipeline `{}`: alert on {chip} line {line} for {labels}, {} s — ok", c.plan.name, a.hold_s);
        }
        let (engine, kernels) = c.model.engine_name();
        println!(
            "  pipeline `{}`: {} model {} ({} labels, {engine} engine{}), {} — ok",
            c.plan.name,
            c.manifest.task.name(),
            match &c.plan.model {
                ModelRef::File(p) => p.display().to_string(),
                ModelRef::Bundled(_, n) => n.to_string(),
            },
            c.manifest.labels.len(),
            kernels.map_or(String::new(), |k| format!(", {k} kernels")),
            source_name(&c.plan.source)
        );
    }
    if !failed.is_empty() {
        let list = failed.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        anyhow::bail!(
            "{}: {} of {} pipelines failed the checks: {list}",
            path.display(),
            failed.len(),
            setup.plans.len()
        );
    }
    let budget = crate::run::check_memory_budget(setup.board.as_ref()).map_err(at)?;
    if let Some(line) = budget {
        println!("  {line} — ok");
    }
    println!("config ok");
    Ok(ExitCode::SUCCESS)
}

/// `lepton probe`: one connection to a network camera, or one video file opened, described.
pub fn probe(
    target: &str,
    transport: &str,
    username: Option<&str>,
    password_file: Option<&Path>,
    watch_s: f64,
) -> Result<ExitCode> {
    use anyhow::bail;
    use lepton_runtime::source::{http, rtsp, stream_url::StreamUrl, video};
    if !(watch_s > 0.0 && watch_s <= 60.0) {
        bail!("--watch {watch_s}: give seconds in (0, 60]");
    }
    let watch = std::time::Duration::from_secs_f64(watch_s);
    if !target.contains("://") {
        let info = video::probe(Path::new(target))?;
        let frames = info.frames.map_or(String::new(), |n| format!(", {n} frames"));
        let fps = info.fps.map_or("unknown rate".into(), |f| format!("{f:.2} fps"));
        crate::console::say!(
            "{target}: {} {} {}x{}, {fps}{frames}",
            info.container,
            info.codec,
            info.width,
            info.height
        );
        return Ok(ExitCode::SUCCESS);
    }
    let password = match password_file {
        Some(f) => Some(crate::config::read_password(f, "--password-file")?),
        None => std::env::var("LEPTON_PROBE_PASSWORD").ok(),
    };
    let url = StreamUrl::parse(target, &["rtsp", "http", "https"], username, password.as_deref())?;
    if url.url().scheme() == "rtsp" {
        let transport = match transport {
            "tcp" => rtsp::RtspTransport::Tcp,
            "udp" => rtsp::RtspTransport::Udp,
            other => bail!("--transport {other}: use tcp or udp"),
        };
        let info = rtsp::probe(&url, transport, watch)?;
        crate::console::say!("{url}: {}", rtsp::describe(&info));
    } else {
        let info = http::probe(&url, watch)?;
        let fps = info.fps.map_or(String::new(), |f| format!(", {f:.2} fps (measured)"));
        crate::console::say!("{url}: {} {}x{}{fps}", info.kind, info.width, info.height);
    }
    Ok(ExitCode::SUCCESS)
}
