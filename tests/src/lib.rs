//! Helpers for the end-to-end tests: build and locate the workspace binaries, find shipped files,
//! make scratch folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Path of a workspace binary (`lepton`, `lepton-convert`), built first with the same profile as
/// the tests (a no-op when it is fresh), so `cargo test` alone always tests current code.
///
/// The build selects what `cargo test --workspace` selects (every member, tests included), so
/// cargo resolves the same features for every dependency and reuses what the test build
/// compiled: a narrower `cargo build --bin NAME` resolves other features for shared
/// dependencies (smallvec, either, libc…) and would compile tract a second time.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    // target/<profile>/deps/<test binary> → target/<profile>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary under target/<profile>/deps");
    BUILT.get_or_init(|| {
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--tests"]).current_dir(root());
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build --workspace --bins --tests failed");
    });
    profile_dir.join(name)
}

/// A `cargo` command for a test to build with, without the variables `cargo test` sets for the
/// test process (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …). Build scripts that watch them (ring
/// watches `CARGO_MANIFEST_DIR`) would otherwise see them change between the test command's own
/// cargo and this one, and rebuild ring and everything above it (the runtime, every binary) at
/// each switch.
pub fn cargo() -> Command {
    without_cargo_test_env(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())))
}

/// `cmd` without the variables `cargo test` sets for the test process (see [`cargo`]): for a
/// script that runs cargo itself.
pub fn without_cargo_test_env(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let set_by_cargo_test = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "OUT_DIR";
        if set_by_cargo_test {
            cmd.env_remove(&*k);
        }
    }
    cmd
}

/// Runs a workspace binary with arguments and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name)).args(args).current_dir(root()).output().expect("starting the binary")
}

/// Runs `python3` with arguments from the workspace root; panics with its stderr on failure.
pub fn python(args: &[&str]) -> Output {
    let out = Command::new("python3").args(args).current_dir(root()).output().expect("python3");
    assert!(out.status.success(), "python3 {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Records that a test (or part of one) could not run on this machine: printed, and listed by
/// `scripts/test` at the end of the run (target/tmp/skipped/), so a skip never reads as a pass.
pub fn skipped(what: &str, why: &str) {
    let line = format!("{what}: {why}");
    eprintln!("SKIPPED {line}");
    let dir = root().join("target/tmp/skipped");
    let _ = std::fs::create_dir_all(&dir);
    let file: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let _ = std::fs::write(dir.join(format!("{file}.txt")), line + "\n");
}

/// A `.npy` file of numbers as f32 values (and its shape); f32, f64, integer and bool arrays.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let bad = |e: std::io::Error| -> ! { panic!("{}: {e}", path.display()) };
    let values: Vec<f32> = match file.dtype().descr().trim_matches('\'') {
        "<f4" => file.into_vec::<f32>().unwrap_or_else(|e| bad(e)),
        "<f8" => file.into_vec::<f64>().unwrap_or_else(|e| bad(e)).into_iter().map(|v| v as f32).collect(),
        "<i8" => file.into_vec::<i64>().unwrap_or_else(|e| bad(e)).into_iter().map(|v| v as f32).collect(),
        "<i4" => file.into_vec::<i32>().unwrap_or_else(|e| bad(e)).into_iter().map(|v| v as f32).collect(),
        "|i1" => file.into_vec::<i8>().unwrap_or_else(|e| bad(e)).into_iter().map(f32::from).collect(),
        "|u1" | "|b1" => file.into_vec::<u8>().unwrap_or_else(|e| bad(e)).into_iter().map(f32::from).collect(),
        other => panic!("{}: element type {other} not read here", path.display()),
    };
    (shape, values)
}

/// A fresh scratch folder for one test.
pub fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lepton-e2e-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating a scratch folder");
    d
}

/// A successful run's stdout as JSON (`--json` output); panics with stderr otherwise.
pub fn json(out: &Output) -> serde_json::Value {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A real mosquitto broker on 127.0.0.1, on a free port, stopped when dropped. With persistence,
/// sessions and queued messages survive a restart.
pub struct Mosquitto {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Mosquitto {
    /// Starts mosquitto (installed by scripts/install-deps) on a free port.
    pub fn start(test: &str) -> Mosquitto {
        Self::start_on(free_port(), test)
    }

    /// Starts mosquitto on `port`.
    pub fn start_on(port: u16, test: &str) -> Mosquitto {
        Self::start_with(port, test, "allow_anonymous true")
    }

    /// Starts mosquitto on `port` with `listener_options` (mosquitto.conf lines: TLS files, password file…).
    pub fn start_with(port: u16, test: &str, listener_options: &str) -> Mosquitto {
        let dir = scratch(&format!("mosquitto-{test}"));
        // Run as root, mosquitto drops to the `mosquitto` user: it must be able to write its persistence here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .expect("opening the scratch folder to mosquitto");
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!("per_listener_settings false\nlistener {port} 127.0.0.1\n{listener_options}\npersistence true\npersistence_location {}/\nautosave_interval 1\n", dir.display()),
        )
        .expect("writing mosquitto.conf");
        let mut m = Mosquitto { port, dir, child: None };
        m.restart();
        m
    }

    /// (Re)starts the broker on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (apt package mosquitto; scripts/test installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "mosquitto did not start on port {}", self.port);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence first).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One received message: topic and payload.
pub type Message = (String, Vec<u8>);

/// A real subscriber (mosquitto_sub) collecting (topic, payload) pairs.
pub struct Subscriber {
    child: std::process::Child,
    /// Messages so far.
    pub messages: std::sync::Arc<Mutex<Vec<Message>>>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

impl Subscriber {
    /// Subscribes to `filter` with QoS 1 and a persistent session named `id` (messages published
    /// while it is disconnected are kept for it by the broker).
    pub fn start(port: u16, filter: &str, id: &str) -> Subscriber {
        Self::start_with(port, filter, id, &[])
    }

    /// Like [`Subscriber::start`], with more mosquitto_sub options (`--cafile`, `-u`, `-P`…).
    pub fn start_with(port: u16, filter: &str, id: &str, options: &[&str]) -> Subscriber {
        use std::io::BufRead;
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", filter, "-q", "1", "-c", "-i", id, "-F", "%t\t%x"])
            .args(options)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt package mosquitto-clients)");
        let out = child.stdout.take().expect("piped stdout");
        let messages = std::sync::Arc::new(Mutex::new(vec![]));
        let sink = std::sync::Arc::clone(&messages);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                if let Some((topic, hex)) = line.split_once('\t') {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push((topic.to_string(), unhex(hex)));
                }
            }
        });
        // Give it time to connect and subscribe.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Subscriber { child, messages }
    }

    /// Waits until `done` holds for the messages, or `timeout`; returns a copy of them.
    pub fn wait_for(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(&[(String, Vec<u8>)]) -> bool,
    ) -> Vec<(String, Vec<u8>)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let m = self.messages.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if done(&m) || std::time::Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real PulseAudio server (no hardware: a timer-paced null sink named `mic`) whose monitor is the
/// default ALSA capture device for programs run with `HOME` = [`PulseMic::home`]. Sound played into it
/// with [`PulseMic::play`] reaches the microphone in real time, through ALSA's pulse plugin.
pub struct PulseMic {
    dir: PathBuf,
    child: std::process::Child,
}

impl PulseMic {
    /// Starts the server (apt packages pulseaudio, pulseaudio-utils, libasound2-plugins; scripts/test installs them).
    pub fn start(test: &str) -> PulseMic {
        let dir = scratch(&format!("pulse-{test}"));
        let socket = dir.join("pulse.sock");
        std::fs::write(
            dir.join("default.pa"),
            format!(
                "load-module module-null-sink sink_name=mic rate=16000 channels=1\nload-module module-native-protocol-unix auth-anonymous=1 socket={}\nset-default-source mic.monitor\n",
                socket.display()
            ),
        )
        .expect("writing default.pa");
        std::fs::write(
            dir.join(".asoundrc"),
            format!(
                "pcm.!default {{\n  type pulse\n  server \"unix:{0}\"\n  device \"mic.monitor\"\n}}\nctl.!default {{\n  type pulse\n  server \"unix:{0}\"\n}}\n",
                socket.display()
            ),
        )
        .expect("writing .asoundrc");
        let child = Command::new("pulseaudio")
            .args(["-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--log-target=stderr", "-F"])
            .arg(dir.join("default.pa"))
            .env("HOME", &dir)
            .env("PULSE_RUNTIME_PATH", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pulseaudio (apt package pulseaudio; scripts/test installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(std::time::Instant::now() < deadline, "pulseaudio did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        PulseMic { dir, child }
    }

    /// The server's process id (SIGSTOP freezes the microphone: a capture that hangs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The folder to use as `HOME`: its `.asoundrc` makes this server the default capture device.
    pub fn home(&self) -> &Path {
        &self.dir
    }

    /// Plays a WAV file into the microphone (paplay, in real time, in the background).
    pub fn play(&self, wav: &Path) -> std::process::Child {
        Command::new("paplay")
            .arg("--server")
            .arg(format!("unix:{}", self.dir.join("pulse.sock").display()))
            .args(["-d", "mic"])
            .arg(wav)
            .spawn()
            .expect("paplay (apt package pulseaudio-utils)")
    }
}

impl Drop for PulseMic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `lepton` (or other) process whose stdout and stderr are collected line by line while it
/// runs, so a test can wait for a line, talk to the process, then stop it with a signal.
pub struct Running {
    child: std::process::Child,
    stdout: std::sync::Arc<Mutex<Vec<String>>>,
    stderr: std::sync::Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `cmd` with piped output.
    pub fn start(mut cmd: Command) -> Running {
        use std::io::BufRead;
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("starting the process");
        let mut readers = vec![];
        let mut collect = |r: Box<dyn std::io::Read + Send>| {
            let lines = std::sync::Arc::new(Mutex::new(vec![]));
            let l = std::sync::Arc::clone(&lines);
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            }));
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        Running { child, stdout, stderr, readers }
    }

    /// Waits up to `secs` for a stdout line containing `needle`; panics with the output if none.
    pub fn wait_for(&mut self, needle: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(l) = self.stdout.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(std::time::Duration::from_millis(200));
                panic!("exited ({status}) before printing `{needle}`:\n{}\n{}", self.stdout_text(), self.stderr_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{needle}` within {secs} s:\n{}\n{}",
                self.stdout_text(),
                self.stderr_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGINT and waits for the exit: exit status, stdout, stderr.
    pub fn interrupt(self) -> (std::process::ExitStatus, String, String) {
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        self.wait()
    }

    /// Waits for the exit (after a signal sent by other means): exit status, stdout, stderr.
    pub fn wait(mut self) -> (std::process::ExitStatus, String, String) {
        let status = self.child.wait().expect("waiting for the process");
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        (status, self.stdout_text(), self.stderr_text())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over loopback (`Connection: close`): status, headers (lower-case names)
/// and body. Enough for the daemon's page and ChromeDriver; reads chunked bodies too.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).ok();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).and_then(|_| s.write_all(body)).expect("sending the request");
    // Read the head, then the body by its length (a server may keep the connection open).
    let mut raw = vec![];
    let mut buf = [0u8; 16 << 10];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).expect("reading the response");
        assert!(n > 0, "the connection closed before a response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    loop {
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).expect("reading the response");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if chunked {
        let mut out = vec![];
        let mut at = 0;
        while let Some(eol) = body[at..].windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&body[at..at + eol]).trim(), 16).unwrap_or(0);
            at += eol + 2;
            if size == 0 || at + size > body.len() {
                break;
            }
            out.extend_from_slice(&body[at..at + size]);
            at += size + 2;
        }
        body = out;
    }
    (status, headers, body)
}

/// `http` GET of a JSON document; panics unless the status is 200.
pub fn get_json(url: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let (status, _, body) = http("GET", url, headers, b"");
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {}", String::from_utf8_lossy(&body)))
}

/// Waits up to `secs` until something accepts TCP connections on 127.0.0.1:`port`; the error says which port.
fn try_port(port: u16, secs: u64) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!("nothing listens on 127.0.0.1:{port} after {secs} s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Waits up to `secs` until something accepts TCP connections on 127.0.0.1:`port`; panics naming `what` otherwise.
pub fn wait_for_port(port: u16, secs: u64, what: &str) {
    if let Err(e) = try_port(port, secs) {
        panic!("{what}: {e}");
    }
}

/// A real PostgreSQL server (Debian's `postgresql`, installed by scripts/install-deps) on a
/// free loopback port, in a fresh data folder; stopped and removed on drop. As root it runs as
/// the `postgres` user, which the server requires.
pub struct Postgres {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: std::process::Child,
    /// `pg_ctl stop`, as the server's user.
    stop: Command,
}

impl Postgres {
    /// Initialises a cluster (trust authentication, loopback only) and starts the server.
    pub fn start(test: &str) -> Postgres {
        Self::start_with(test, None)
    }

    /// Like [`Postgres::start`], with TLS from a PEM certificate chain and key: the server then
    /// refuses TCP connections without TLS (`hostssl` only in pg_hba.conf).
    pub fn start_tls(test: &str, cert: &Path, key: &Path) -> Postgres {
        Self::start_with(test, Some((cert, key)))
    }

    fn start_with(test: &str, tls: Option<(&Path, &Path)>) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server in /usr/lib/postgresql (scripts/install-deps --test installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .max()
            .expect("a PostgreSQL version");
        let dir = scratch(&format!("postgres-{test}"));
        let data = dir.join("data");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let as_server_user = |program: PathBuf| {
            if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        if root {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().expect("chown");
            assert!(ok.success(), "chown of the PostgreSQL scratch folder");
        }
        let out = as_server_user(bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("running initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut settings = vec![];
        if let Some((cert, key)) = tls {
            // The server reads its key only when the server's user owns it, mode 0600.
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(cert, data.join("server.crt")).expect("copying the server certificate");
            std::fs::copy(key, data.join("server.key")).expect("copying the server key");
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))
                .expect("chmod of the server key");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("writing pg_hba.conf");
            if root {
                let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data).status().expect("chown");
                assert!(ok.success(), "chown of the PostgreSQL data folder");
            }
            settings.extend(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"]);
        }
        let port = free_port();
        let child = as_server_user(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .args(&settings)
            .arg("-k")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).expect("server.log"))
            .spawn()
            .expect("starting postgres");
        wait_for_port(port, 30, "PostgreSQL");
        let mut stop = as_server_user(bin.join("pg_ctl"));
        stop.args(["stop", "-m", "fast", "-D"]).arg(&data).stdout(std::process::Stdio::null());
        let pg = Postgres { port, dir, child, stop };
        // The port opens before the server takes queries ("the database system is starting up").
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ready = Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-d", &pg.url(), "-c", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break pg;
            }
            assert!(std::time::Instant::now() < deadline, "PostgreSQL took no query within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The connection string of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql; the rows, one per line, columns separated by `|`.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-c", sql])
            .output()
            .expect("running psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The child is runuser (as root), which does not pass signals on: pg_ctl stops the server.
        let _ = self.stop.status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real clustered MQTT broker: `nodes` rmqtt nodes joined by Raft (tests/cluster-broker),
/// each on its own loopback ports. The broker is built once per test run.
pub struct Cluster {
    /// Each node's MQTT port, node 1 first.
    pub ports: Vec<u16>,
    nodes: Vec<Option<std::process::Child>>,
    dir: PathBuf,
}

impl Cluster {
    /// Builds the broker (once) and starts `nodes` nodes; returns when every node accepts
    /// connections and a message crosses from the last node to the first.
    pub fn start(test: &str, nodes: usize) -> Cluster {
        static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let exe = BUILT.get_or_init(|| {
            let target = root().join("target/cluster-broker");
            let status = cargo()
                .args(["build", "--quiet", "--manifest-path"])
                .arg(root().join("tests/cluster-broker/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .expect("running cargo build for tests/cluster-broker");
            assert!(status.success(), "building tests/cluster-broker (needs protoc: scripts/install-deps --test)");
            target.join("debug/cluster-broker")
        });
        let dir = scratch(&format!("cluster-{test}"));
        for attempt in 1..=3 {
            match Self::start_nodes(exe, &dir, nodes) {
                Ok(c) => return c,
                Err(e) if attempt < 3 => eprintln!("cluster start, attempt {attempt}: {e}; again on other ports"),
                Err(e) => panic!("the cluster did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// Starts the nodes on fresh ports; an error when one does not come up (a port taken
    /// between its choice and the node's bind).
    fn start_nodes(exe: &Path, dir: &Path, nodes: usize) -> Result<Cluster, String> {
        // Distinct ports: every listener is held until all are chosen.
        let held: Vec<std::net::TcpListener> =
            (0..nodes * 3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
        let mut free =
            held.iter().map(|l| l.local_addr().expect("local address").port()).collect::<Vec<_>>().into_iter();
        let ports: Vec<u16> = (0..nodes).map(|_| free.next().unwrap()).collect();
        let peers: Vec<String> = (1..=nodes)
            .map(|i| format!("{i}@127.0.0.1:{}@127.0.0.1:{}", free.next().unwrap(), free.next().unwrap()))
            .collect();
        drop(held);
        let mut children = vec![];
        for (i, port) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("node{}.log", i + 1))).expect("node log");
            // A node whose Raft or gRPC port was taken exits; so does one that cannot bind.
            let child = Command::new(exe)
                .arg((i + 1).to_string())
                .arg(format!("127.0.0.1:{port}"))
                .arg(dir.join(format!("node{}", i + 1)))
                .arg(peers.join(","))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting a cluster node");
            children.push(Some(child));
            if i == 0 {
                // The first node founds the cluster; the others join it.
                try_port(*port, 20).map_err(|e| format!("node 1: {e}"))?;
            }
        }
        let mut c = Cluster { ports, nodes: children, dir: dir.to_path_buf() };
        for (i, p) in c.ports.clone().iter().enumerate() {
            if let Err(e) = try_port(*p, 20) {
                let log = std::fs::read_to_string(dir.join(format!("node{}.log", i + 1))).unwrap_or_default();
                for n in c.nodes.iter_mut().flatten() {
                    let _ = n.kill();
                    let _ = n.wait();
                }
                return Err(format!(
                    "node {}: {e}; its log: {}",
                    i + 1,
                    log.lines().take(3).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
        c.wait_until_joined();
        Ok(c)
    }

    /// Waits until a message published on the last node reaches a subscriber on the first.
    fn wait_until_joined(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (first, last) = (self.ports[0], self.ports[self.ports.len() - 1]);
        loop {
            let sub = Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &first.to_string(), "-t", "cluster/probe", "-C", "1", "-W", "3"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("mosquitto_sub");
            std::thread::sleep(std::time::Duration::from_millis(800));
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &last.to_string(), "-t", "cluster/probe", "-m", "x", "-q", "1"])
                .status();
            let out = sub.wait_with_output().expect("mosquitto_sub output");
            if out.stdout.starts_with(b"x") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster's nodes did not join within 60 s: see {}",
                self.dir.display()
            );
        }
    }

    /// Kills node `n` (1-based) at once (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.nodes[n - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
