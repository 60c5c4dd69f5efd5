//! `lepton-watch` end to end, against a real mosquitto, real SQLite files and a real PostgreSQL
//! (with TLS): malformed messages are counted and skipped (the consumer never stops on data), a
//! restarted daemon's detections are all stored (its messages carry a new `run`), an old store
//! keeps working, each event is printed once, `--host` values are checked before connecting, and
//! `postgres://` stores speak TLS with certificate checks, never showing a password.

use lepton_e2e::{bin, root, scratch, text, Mosquitto, Postgres, Running, Subscriber};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Publishes one message with mosquitto_pub (QoS 1).
fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut c = Command::new("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-s"]);
    if retain {
        c.arg("-r");
    }
    let mut child = c.stdin(std::process::Stdio::piped()).spawn().expect("mosquitto_pub");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(payload).expect("writing the payload");
    }
    assert!(child.wait().expect("mosquitto_pub").success(), "mosquitto_pub {topic}");
}

/// Starts `lepton-watch` with `args` on the broker at `port`; returns once it has subscribed.
fn watch(port: u16, args: &[&str]) -> Running {
    let mut c = Command::new(bin("lepton-watch"));
    c.args(["--host", &format!("127.0.0.1:{port}")]).args(args);
    let w = Running::start(c);
    if args.contains(&"--json") {
        // Nothing but JSON lines: give it time to connect and subscribe.
        std::thread::sleep(Duration::from_secs(1));
    } else {
        wait_stderr(&w, "watching ", 30);
        // The subscription follows the connection's acknowledgement.
        std::thread::sleep(Duration::from_millis(300));
    }
    w
}

/// Waits up to `secs` for a stderr line containing `needle`.
fn wait_stderr(r: &Running, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !r.stderr_text().contains(needle) {
        assert!(Instant::now() < deadline, "no `{needle}` within {secs} s:\n{}\n{}", r.stdout_text(), r.stderr_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to `secs` until `f` holds.
fn wait_until(secs: u64, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sqlite_count(file: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(file).expect("opening the store");
    c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    c.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
}

fn detection(seq: u64, extra: &str) -> String {
    format!(
        r#"{{"device":"cam1","pipeline":"front","seq":{seq},"ts":"2026-12-01T10:00:00.{seq:03}Z","frame":{seq},"latency_ms":0.5,"detections":[{{"label":"person","score":0.9,"box":[1,2,3,4]}}]{extra}}}"#
    )
}

/// Every kind of malformed message a client of the broker can send, each with a field the
/// store writes missing, of the wrong type, not finite or out of range.
fn malformed() -> Vec<(&'static str, String)> {
    let d = "lepton/cam1/front/detections";
    let e = "lepton/cam1/front/events";
    let mut m = vec![
        // The finding: a detection without a score (was NaN, bound as NULL: NOT NULL failed).
        (d, r#"{"seq":100,"ts":"2026-12-01T10:00:01Z","frame":1,"detections":[{"label":"person"}]}"#.to_string()),
        (d, r#"{"seq":101,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"person","score":"high"}]}"#.into()),
        (d, r#"{"seq":102,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"person","score":7.5}]}"#.into()),
        (d, r#"{"seq":103,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"person","score":-0.5}]}"#.into()),
        (d, r#"{"seq":104,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"person","score":1e300}]}"#.into()),
        (d, r#"{"seq":105,"ts":"2026-12-01T10:00:01Z","detections":[{"score":0.9}]}"#.into()),
        (d, r#"{"seq":106,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"a\u0000b","score":0.9}]}"#.into()),
        (d, r#"{"seq":107,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"","score":0.9}]}"#.into()),
        (d, r#"{"seq":108,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"p","score":0.9,"box":[1,2,3]}]}"#.into()),
        (
            d,
            r#"{"seq":109,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"p","score":0.9,"box":[1,"2",3,4]}]}"#
                .into(),
        ),
        (
            d,
            r#"{"seq":110,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"p","score":0.9,"box":[1,2,3,1e300]}]}"#
                .into(),
        ),
        (d, r#"{"ts":"2026-12-01T10:00:01Z","detections":[{"label":"p","score":0.9}]}"#.into()),
        (d, r#"{"seq":-4,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"p","score":0.9}]}"#.into()),
        (d, r#"{"seq":1.5,"ts":"2026-12-01T10:00:01Z","detections":[{"label":"p","score":0.9}]}"#.into()),
        (d, r#"{"seq":18446744073709551615,"ts":"2026-12-01T10:00:01Z","detections":[]}"#.into()),
        (d, r#"{"seq":111,"ts":"yesterday","detections":[{"label":"p","score":0.9}]}"#.into()),
        (d, r#"{"seq":112,"detections":[{"label":"p","score":0.9}]}"#.into()),
        (d, r#"{"seq":113,"ts":"2026-12-01T10:00:01Z","detections":"none"}"#.into()),
        (d, r#"{"seq":114,"ts":"2026-12-01T10:00:01Z","frame":"x","detections":[]}"#.into()),
        (d, r#"{"seq":115,"ts":"2026-12-01T10:00:01Z","frame":-1,"detections":[]}"#.into()),
        (d, r#"{"seq":116,"ts":"2026-12-01T10:00:01Z","latency_ms":-3,"detections":[]}"#.into()),
        (d, r#"{"seq":117,"ts":"2026-12-01T10:00:01Z","latency_ms":"slow","detections":[]}"#.into()),
        (d, r#"{"seq":118,"run":"x","ts":"2026-12-01T10:00:01Z","detections":[]}"#.into()),
        (d, r#"{"seq":119,"run":-1,"ts":"2026-12-01T10:00:01Z","detections":[]}"#.into()),
        (d, "not json, not postcard".into()),
        (e, r#"{"ts":"2026-12-01T10:00:02Z","label":"person","event":"start"}"#.into()),
        (e, r#"{"ts":"2026-12-01T10:00:02Z","label":"person","event":"maybe","score":0.9}"#.into()),
        (e, r#"{"ts":"2026-12-01T10:00:02Z","event":"start","score":0.9}"#.into()),
        (e, r#"{"label":"person","event":"start","score":0.9}"#.into()),
        (e, r#"{"ts":"2026-12-01T10:00:02Z","label":"person","event":"end","score":0.9,"duration_s":"long"}"#.into()),
        (e, r#"{"ts":"2026-12-01T10:00:02Z","label":"person","event":"end","score":0.9,"duration_s":-2}"#.into()),
        (e, r#"{"ts":"2026-12-01T10:00:02Z","label":"person","event":"start","score":2}"#.into()),
    ];
    // A topic level the store would write as an empty device.
    m.push(("lepton//front/detections", detection(120, "")));
    m
}

/// Sends good messages around every malformed one into a storing watcher; the watcher stores
/// the good ones, counts the others, and exits 0 on Ctrl-C with the count in its summary.
fn malformed_messages_are_skipped(store: &str, rows: impl Fn(&str) -> i64) {
    let broker = Mosquitto::start(&format!("malformed-{}", &store[..6]));
    let w = watch(broker.port, &["--store", store]);
    publish(broker.port, "lepton/cam1/front/detections", detection(0, "").as_bytes(), false);
    let bad = malformed();
    for (topic, payload) in &bad {
        publish(broker.port, topic, payload.as_bytes(), false);
    }
    publish(broker.port, "lepton/cam1/front/detections", detection(1, "").as_bytes(), false);
    publish(
        broker.port,
        "lepton/cam1/front/events",
        br#"{"ts":"2026-12-01T10:00:03Z","label":"person","event":"start","score":0.9}"#,
        false,
    );
    wait_until(20, "the good messages stored", || {
        rows("SELECT count(*) FROM lepton_messages") == 2 && rows("SELECT count(*) FROM lepton_events") == 1
    });
    let (status, stdout, stderr) = w.interrupt();
    assert!(status.success(), "lepton-watch stopped on data: {status}\n{stdout}\n{stderr}");
    let summary = stderr.lines().find(|l| l.starts_with("stored ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(summary.starts_with("stored 2 detection messages and 1 events"), "{summary}");
    assert!(summary.contains(&format!("{} malformed", bad.len())), "{summary}\n{stderr}");
    // Each one is reported, with its topic and what is wrong.
    assert!(stderr.contains("lepton/cam1/front/detections: malformed: ") && stderr.contains("score"), "{stderr}");
    assert_eq!(rows("SELECT count(*) FROM lepton_detections"), 2);
}

#[test]
fn a_malformed_message_is_counted_and_skipped_and_the_sqlite_store_goes_on() {
    let dir = scratch("watch-malformed-sqlite");
    let file = dir.join("events.db");
    let spec = format!("sqlite:{}", file.display());
    malformed_messages_are_skipped(&spec, |sql| sqlite_count(&file, sql));
}

#[test]
fn a_malformed_message_is_counted_and_skipped_and_the_postgres_store_goes_on() {
    let db = Postgres::start("watch-malformed");
    malformed_messages_are_skipped(&db.url(), |sql| db.query(sql).parse().unwrap_or(-1));
}

fn frames(dir: &Path, count: usize) -> PathBuf {
    let out = dir.join("frames");
    std::fs::create_dir_all(&out).unwrap();
    let mut samples: Vec<_> =
        std::fs::read_dir(root().join("models/digits/samples")).unwrap().map(|e| e.unwrap().path()).collect();
    samples.sort();
    for i in 0..count {
        std::fs::copy(&samples[i % samples.len()], out.join(format!("f{i:04}.png"))).unwrap();
    }
    out
}

/// Runs the daemon once to the end of its 10 frames (device `cam1`, pipeline `digits`).
fn daemon_run(dir: &Path, port: u16, format: &str) {
    let config = dir.join(format!("lepton-{format}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[device]
id = "cam1"
[mqtt]
host = "127.0.0.1"
port = {port}
format = "{format}"
[[pipeline]]
name = "digits"
model = "{model}"
threshold = 0.5
print = false
[pipeline.source]
kind = "images"
path = "{frames}"
fps = 20
"#,
            model = root().join("models/digits/model.onnx").display(),
            frames = dir.join("frames").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin("lepton")).arg("run").arg("--config").arg(&config).output().expect("lepton run");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
}

#[test]
fn a_restarted_daemon_loses_no_detection_in_the_store() {
    // seq starts at 0 again in each run: the run id keeps the three runs' messages apart.
    let dir = scratch("watch-restart");
    frames(&dir, 10);
    let broker = Mosquitto::start("watch-restart");
    let file = dir.join("events.db");
    let w = watch(broker.port, &["--store", &format!("sqlite:{}", file.display()), "--quiet"]);
    daemon_run(&dir, broker.port, "json");
    daemon_run(&dir, broker.port, "postcard");
    daemon_run(&dir, broker.port, "json");
    let stored = || sqlite_count(&file, "SELECT count(*) FROM lepton_messages");
    let wait = Instant::now() + Duration::from_secs(20);
    while stored() < 30 && Instant::now() < wait {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, stderr) = w.interrupt();
    assert!(status.success(), "{stderr}");
    assert_eq!(stored(), 30, "three runs of 10 detection messages each:\n{stderr}");
    assert!(stderr.contains("stored 30 detection messages") && stderr.contains("(0 duplicates"), "{stderr}");
    assert_eq!(sqlite_count(&file, "SELECT count(DISTINCT run) FROM lepton_messages WHERE run <> 0"), 3);
    assert_eq!(sqlite_count(&file, "SELECT count(*) FROM lepton_detections"), 30);
}

/// The schema of the event store before runs, as `lepton-watch` created it.
const OLD_SCHEMA: &[&str] = &[
    "CREATE TABLE lepton_messages (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL,
        ts TIMESTAMPTZ NOT NULL, frame BIGINT, latency_ms DOUBLE PRECISION, objects INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        PRIMARY KEY (device, pipeline, seq))",
    "CREATE TABLE lepton_detections (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL, idx INTEGER NOT NULL,
        ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL, score REAL NOT NULL,
        x0 REAL, y0 REAL, x1 REAL, y1 REAL, latency_ms DOUBLE PRECISION,
        PRIMARY KEY (device, pipeline, seq, idx))",
    "CREATE TABLE lepton_events (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL,
        event TEXT NOT NULL, score REAL NOT NULL, duration_s DOUBLE PRECISION, consumer TEXT NOT NULL,
        PRIMARY KEY (device, pipeline, ts, label, event))",
    "CREATE INDEX lepton_detections_by_time ON lepton_detections (device, ts)",
    "INSERT INTO lepton_messages VALUES ('cam1', 'front', 0, '2026-11-30T10:00:00.000Z', 0, 0.5, 1, 'old')",
    "INSERT INTO lepton_messages VALUES ('cam1', 'front', 1, '2026-11-30T10:00:00.100Z', 1, 0.5, 1, 'old')",
    "INSERT INTO lepton_detections VALUES ('cam1', 'front', 0, 0, '2026-11-30T10:00:00.000Z', 'person', 0.9, 1, 2, 3, 4, 0.5)",
    "INSERT INTO lepton_detections VALUES ('cam1', 'front', 1, 0, '2026-11-30T10:00:00.100Z', 'person', 0.9, 1, 2, 3, 4, 0.5)",
    "INSERT INTO lepton_events VALUES ('cam1', 'front', '2026-11-30T10:00:00.000Z', 'person', 'start', 0.9, NULL, 'old')",
];

/// A store of the old schema with rows: the watcher extends it, keeps its rows (run 0), stores
/// old-format messages (no run) against them as before (a redelivery is a duplicate) and a new
/// run's messages with the same seq beside them.
fn an_old_store_keeps_working(store: &str, rows: impl Fn(&str) -> i64) {
    let broker = Mosquitto::start(&format!("old-store-{}", &store[..6]));
    let w = watch(broker.port, &["--store", store, "--quiet"]);
    // Old format: seq 1 is stored already, seq 2 is new.
    publish(broker.port, "lepton/cam1/front/detections", detection(1, "").as_bytes(), false);
    publish(broker.port, "lepton/cam1/front/detections", detection(2, "").as_bytes(), false);
    // A new run of the same device: seq 0 and 1 again.
    publish(broker.port, "lepton/cam1/front/detections", detection(0, r#","run":77"#).as_bytes(), false);
    publish(broker.port, "lepton/cam1/front/detections", detection(1, r#","run":77"#).as_bytes(), false);
    wait_until(20, "the new rows stored", || rows("SELECT count(*) FROM lepton_messages") == 5);
    let (status, _, stderr) = w.interrupt();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("stored 3 detection messages and 0 events") && stderr.contains("(1 duplicates"),
        "{stderr}"
    );
    assert_eq!(rows("SELECT count(*) FROM lepton_messages WHERE run = 0"), 3);
    assert_eq!(rows("SELECT count(*) FROM lepton_messages WHERE run = 77"), 2);
    assert_eq!(rows("SELECT count(*) FROM lepton_messages WHERE consumer = 'old'"), 2);
    assert_eq!(rows("SELECT count(*) FROM lepton_detections"), 5);
    assert_eq!(rows("SELECT count(*) FROM lepton_events WHERE run = 0"), 1);
}

#[test]
fn an_sqlite_store_of_the_old_schema_is_extended_and_keeps_its_rows() {
    let dir = scratch("watch-old-sqlite");
    let file = dir.join("events.db");
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        for s in OLD_SCHEMA {
            c.execute(s, []).unwrap();
        }
    }
    let spec = format!("sqlite:{}", file.display());
    an_old_store_keeps_working(&spec, |sql| sqlite_count(&file, sql));
}

#[test]
fn a_postgres_store_of_the_old_schema_is_extended_and_keeps_its_rows() {
    let db = Postgres::start("watch-old");
    for s in OLD_SCHEMA {
        db.query(s);
    }
    an_old_store_keeps_working(&db.url(), |sql| db.query(sql).parse().unwrap_or(-1));
}

#[test]
fn each_event_is_printed_once() {
    // The daemon publishes every event twice: on the events topic and as the retained state of
    // its label (`.../events/{label}`, for Home Assistant).
    let dir = scratch("watch-events-once");
    frames(&dir, 10);
    let broker = Mosquitto::start("watch-events-once");
    let published = Subscriber::start(broker.port, "lepton/cam1/digits/events", "events-once");
    let w = watch(broker.port, &["--json"]);
    daemon_run(&dir, broker.port, "json");
    std::thread::sleep(Duration::from_secs(1));
    let (_, stdout, stderr) = w.interrupt();
    let published = published.messages.lock().unwrap().len();
    assert!(published >= 10, "the daemon's events: {published}");
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "events")
        .map(|v| v["message"].clone())
        .collect();
    assert_eq!(events.len(), published, "{stdout}\n{stderr}");
    let mut keys: Vec<String> = events.iter().map(|m| format!("{} {} {}", m["ts"], m["label"], m["event"])).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), published, "each event once: {events:?}");

    // A watcher started later shows each label's retained state once.
    let late = watch(broker.port, &["--json"]);
    std::thread::sleep(Duration::from_secs(1));
    let (_, stdout, _) = late.interrupt();
    let states = stdout.lines().filter(|l| l.contains(r#""kind":"events""#)).count();
    assert_eq!(states, 10, "the retained state of each of the 10 labels:\n{stdout}");
}

/// Runs `lepton-watch` with `args`; panics unless it exits within 10 s. Exit code and stderr.
fn watch_exits(args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(bin("lepton-watch"));
    c.args(args);
    let r = Running::start(c);
    let pid = r.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            break;
        }
        if Instant::now() > deadline {
            let (_, stdout, stderr) = r.interrupt();
            panic!("lepton-watch {args:?} still running after 10 s:\n{stdout}\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, stderr) = r.wait();
    (status.code(), stderr)
}

#[test]
fn a_url_or_credentials_in_host_are_refused_before_connecting() {
    let cases: &[(&str, &str)] = &[
        ("mqtt://cam:s3cret-pw@broker.lan:1883", "--host broker.lan:1883"),
        ("tcp://broker.lan", "--host broker.lan"),
        ("mqtts://broker.lan:8883", "TLS"),
        ("cam:s3cret-pw@broker.lan", "--host broker.lan"),
        ("broker.lan:1883/lepton", "--host broker.lan:1883"),
        ("broker.lan:port", "port"),
        ("broker.lan:99999", "port"),
        ("", "--host"),
    ];
    for (host, hint) in cases {
        let (code, stderr) = watch_exits(&["--host", host]);
        assert_eq!(code, Some(2), "--host {host}: {stderr}");
        assert!(stderr.contains("--host"), "--host {host}: names the flag: {stderr}");
        assert!(stderr.contains(hint), "--host {host}: says `{hint}`: {stderr}");
        assert!(!stderr.contains("s3cret-pw"), "--host {host}: echoes the password: {stderr}");
    }
    // The second of several nodes is checked too.
    let (code, stderr) = watch_exits(&["--host", "127.0.0.1", "--host", "mqtt://u:s3cret-pw@node2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--host node2") && !stderr.contains("s3cret-pw"), "{stderr}");
}

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and another CA, with openssl.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out).1);
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=Lepton test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1, DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[test]
fn a_postgres_store_over_tls_checks_the_server_and_never_shows_a_password() {
    let dir = scratch("watch-postgres-tls");
    certificates(&dir);
    let db = Postgres::start_tls("watch-tls", &dir.join("server.pem"), &dir.join("server.key"));
    let broker = Mosquitto::start("watch-tls");
    let ca = dir.join("ca.pem").display().to_string();
    let other = dir.join("other-ca.pem").display().to_string();
    let base = format!("postgres://postgres:pw-in-userinfo@127.0.0.1:{}/postgres", db.port);
    // The right CA, the server's name checked (the server refuses connections without TLS).
    let full = format!("{base}?sslmode=verify-full&sslrootcert={ca}&application_name=lw");
    let w = watch(broker.port, &["--store", &full]);
    publish(broker.port, "lepton/cam1/front/detections", detection(0, "").as_bytes(), false);
    wait_until(20, "the row stored over TLS", || db.query("SELECT count(*) FROM lepton_messages") == "1");
    let (status, _, stderr) = w.interrupt();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("sslmode=verify-full") && !stderr.contains("pw-in-userinfo"), "{stderr}");

    // The chain checked but not the name (a name the certificate does not have, hostaddr).
    let other_name = format!("postgres://postgres@db.invalid:{}/postgres?hostaddr=127.0.0.1&sslrootcert={ca}", db.port);
    let w = watch(broker.port, &["--store", &format!("{other_name}&sslmode=verify-ca")]);
    publish(broker.port, "lepton/cam1/front/detections", detection(1, "").as_bytes(), false);
    wait_until(20, "the row stored with verify-ca", || db.query("SELECT count(*) FROM lepton_messages") == "2");
    let (status, _, stderr) = w.interrupt();
    assert!(status.success(), "{stderr}");

    // Refused: another CA; the wrong name; no TLS. The password (in the URL's userinfo or as
    // its `password` parameter) is never shown.
    let refused = [
        (format!("{base}?sslmode=verify-full&sslrootcert={other}"), "certificate"),
        (format!("{other_name}&sslmode=verify-full&password=pw-as-param"), "certificate"),
        (format!("{base}?sslmode=disable&password=pw-as-param"), "no encryption"),
        (format!("{base}?sslmode=verify-full"), "sslrootcert"),
        (format!("{base}?sslmode=sometimes&password=pw-as-param"), "sslmode"),
        (format!("{base}?sslmode=verify-full&sslrootcert={}", dir.join("missing.pem").display()), "missing.pem"),
    ];
    for (spec, why) in &refused {
        let (code, stderr) = watch_exits(&["--host", &format!("127.0.0.1:{}", broker.port), "--store", spec]);
        assert_eq!(code, Some(2), "{spec}: {stderr}");
        assert!(stderr.contains(why), "{spec}: says `{why}`: {stderr}");
        assert!(!stderr.contains("pw-in-userinfo") && !stderr.contains("pw-as-param"), "{spec}: {stderr}");
        assert!(stderr.contains("--store postgres://postgres"), "{spec}: names the store: {stderr}");
    }
}
