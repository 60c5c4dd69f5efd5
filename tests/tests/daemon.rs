//! The `lepton` daemon end to end against a real mosquitto and real subscribers: the message
//! contract, an outage that loses nothing, the bounded queue, audio from a WAV and from the ALSA
//! microphone path, postcard payloads, Home Assistant discovery, signals and bad configs.

use lepton_e2e::{bin, python, root, scratch, text, Mosquitto, PulseMic, Subscriber};
use lepton_runtime::event::{decode, DetectionMessage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("lepton.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn lepton(args: &[&str], home: Option<&Path>) -> Output {
    let mut c = Command::new(bin("lepton"));
    c.args(args).current_dir(root());
    if let Some(h) = home {
        c.env("HOME", h);
    }
    c.output().expect("running lepton")
}

/// Starts `lepton run --config CONFIG` in the background (with `HOME` set when given), output captured.
fn spawn_lepton(config: &Path, home: Option<&Path>) -> std::process::Child {
    let mut c = Command::new(bin("lepton"));
    c.arg("run").arg("--config").arg(config).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if let Some(h) = home {
        c.env("HOME", h);
    }
    c.spawn().expect("starting lepton")
}

fn json_messages(msgs: &[(String, Vec<u8>)], suffix: &str) -> Vec<Value> {
    msgs.iter().filter(|(t, _)| t.ends_with(suffix)).filter_map(|(_, p)| serde_json::from_slice(p).ok()).collect()
}

/// `count` copies of the digit pictures, in name order, in a folder.
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

fn digits_config(port: u16, frames: &Path, extra_mqtt: &str, source_extra: &str) -> String {
    format!(
        r#"
[device]
id = "cam1"
stats_interval_s = 1
[mqtt]
host = "127.0.0.1"
port = {port}
{extra_mqtt}
[[pipeline]]
name = "digits"
model = "{model}"
threshold = 0.5
hold_s = 0.5
print = false
[pipeline.source]
kind = "images"
path = "{frames}"
{source_extra}
"#,
        model = root().join("models/digits/model.onnx").display(),
        frames = frames.display()
    )
}

#[test]
fn every_frame_is_published_with_the_contract_fields_status_events_and_stats() {
    let dir = scratch("daemon-contract");
    let broker = Mosquitto::start("contract");
    let sub = Subscriber::start(broker.port, "lepton/#", "contract-test");
    let frames = frames(&dir, 12);
    let config = write_config(&dir, &digits_config(broker.port, &frames, "", "fps = 8"));
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let msgs =
        sub.wait_for(Duration::from_secs(5), |m| m.iter().any(|(t, p)| t == "lepton/cam1/status" && p == b"offline"));
    let dets = json_messages(&msgs, "/digits/detections");
    assert_eq!(dets.len(), 12, "{stdout}");
    for (i, d) in dets.iter().enumerate() {
        assert_eq!(d["seq"], i as u64);
        assert_eq!(
            (d["device"].as_str(), d["pipeline"].as_str(), d["model"].as_str()),
            (Some("cam1"), Some("digits"), Some("model.onnx"))
        );
        assert_eq!(d["frame"], i as u64);
        let source = d["source"].as_str().unwrap();
        assert_eq!(source, format!("f{i:04}.png"));
        humantime::parse_rfc3339(d["ts"].as_str().unwrap()).expect("ts is RFC 3339");
        assert!(d["latency_ms"].as_f64().unwrap() > 0.0);
        // Pictures cycle through the samples, whose digits are 6 4 0 2 5 7 8 9 3 1.
        let truth = ["6", "4", "0", "2", "5", "7", "8", "9", "3", "1"][i % 10];
        assert_eq!(d["detections"][0]["label"], truth, "{d}");
        assert!(d["detections"][0].get("box").is_none(), "a classifier has no boxes");
    }
    let events = json_messages(&msgs, "/digits/events");
    let starts = events.iter().filter(|e| e["event"] == "start").count();
    let ends = events.iter().filter(|e| e["event"] == "end").count();
    assert!(starts >= 10 && starts == ends, "every presence that starts ends: {starts} starts, {ends} ends");
    let stats = json_messages(&msgs, "/cam1/stats");
    assert!(!stats.is_empty(), "a run of 1.5 s publishes stats every second");
    let s = &stats[0];
    for k in ["fps", "inference_p50_ms", "inference_p99_ms", "dropped"] {
        assert!(s["pipelines"]["digits"].get(k).is_some(), "stats lack {k}: {s}");
    }
    for k in ["queue_depth", "messages_dropped"] {
        assert!(s.get(k).is_some(), "stats lack {k}: {s}");
    }
    let status: Vec<&[u8]> =
        msgs.iter().filter(|(t, _)| t == "lepton/cam1/status").map(|(_, p)| p.as_slice()).collect();
    assert_eq!(status.first(), Some(&&b"online"[..]));
    assert_eq!(status.last(), Some(&&b"offline"[..]));
}

/// A still camera: each of the first `pictures` digit pictures `repeat` times in a row.
fn still_frames(dir: &Path, pictures: usize, repeat: usize) -> PathBuf {
    let out = dir.join("still");
    std::fs::create_dir_all(&out).unwrap();
    let mut samples: Vec<_> =
        std::fs::read_dir(root().join("models/digits/samples")).unwrap().map(|e| e.unwrap().path()).collect();
    samples.sort();
    for i in 0..pictures * repeat {
        std::fs::copy(&samples[i / repeat], out.join(format!("f{i:04}.png"))).unwrap();
    }
    out
}

#[test]
fn the_motion_gate_runs_the_model_only_when_the_picture_changes_and_still_frames_keep_its_detections() {
    let dir = scratch("daemon-motion");
    let broker = Mosquitto::start("motion");
    let sub = Subscriber::start(broker.port, "lepton/#", "motion-test");
    let frames = still_frames(&dir, 4, 5);
    let body = digits_config(broker.port, &frames, "", "fps = 10")
        + "[pipeline.motion]\nrefresh_s = 60\n[[pipeline.mask]]\npoints = [[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]]\n";
    let config = write_config(&dir, &body);
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary = stdout.lines().find(|l| l.starts_with("digits: 20 processed")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(summary.ends_with("; 4 through the model (motion gate)"), "{summary}");
    let msgs =
        sub.wait_for(Duration::from_secs(5), |m| m.iter().any(|(t, p)| t == "lepton/cam1/status" && p == b"offline"));
    let dets = json_messages(&msgs, "/digits/detections");
    assert_eq!(dets.len(), 20, "still frames are published with the last detections: {stdout}");
    for (i, d) in dets.iter().enumerate() {
        // The samples' digits in name order are 6 4 0 2.
        let truth = ["6", "4", "0", "2"][i / 5];
        assert_eq!(d["detections"][0]["label"], truth, "frame {i}: {d}");
    }
    let stats = json_messages(&msgs, "/cam1/stats");
    let s = &stats.last().expect("stats every second")["pipelines"]["digits"];
    let (processed, inferred) = (s["processed"].as_u64().unwrap(), s["inferred"].as_u64().unwrap());
    assert!((1..=4).contains(&inferred) && inferred < processed, "{s}");
}

/// The detector's first demo frame slid right by each of `offsets` pixels in turn (the uncovered
/// edge repeats the border), as PNG files in `dir`/`name`: the digits move together, each one an
/// object with a known place in the row.
fn slid_frames(dir: &Path, name: &str, offsets: impl IntoIterator<Item = i32>) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let src = image::open(root().join("models/detector/demo/images/frame000.jpg")).unwrap().to_rgb8();
    let (w, h) = src.dimensions();
    for (k, dx) in offsets.into_iter().enumerate() {
        let frame =
            image::RgbImage::from_fn(w, h, |x, y| *src.get_pixel((x as i32 - dx).clamp(0, w as i32 - 1) as u32, y));
        frame.save(out.join(format!("f{k:04}.png"))).unwrap();
    }
    out
}

/// A config running the int8 detector as pipeline `meter` on `frames` at 10 fps, threshold 0.4,
/// then `extra` (device tables before the pipeline's go in `device_extra`).
fn meter_config(port: u16, frames: &Path, device_extra: &str, extra: &str) -> String {
    format!(
        r#"
[device]
id = "cam1"
stats_interval_s = 0
[mqtt]
host = "127.0.0.1"
port = {port}
{device_extra}
[[pipeline]]
name = "meter"
model = "{model}"
threshold = 0.4
print = true
[pipeline.source]
kind = "images"
path = "{frames}"
fps = 10
{extra}
"#,
        model = root().join("models/detector/model.int8.onnx").display(),
        frames = frames.display()
    )
}

/// Runs `lepton run` on the config `body` (device `cam1`) to its end; returns its stdout and what
/// `sub` received up to the device's `offline`.
fn run_to_the_end(dir: &Path, body: &str, sub: &Subscriber) -> (String, Vec<(String, Vec<u8>)>) {
    let config = write_config(dir, body);
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let msgs =
        sub.wait_for(Duration::from_secs(5), |m| m.iter().any(|(t, p)| t == "lepton/cam1/status" && p == b"offline"));
    (stdout, msgs)
}

#[test]
fn moving_objects_keep_their_track_ids_from_frame_to_frame() {
    let dir = scratch("daemon-track");
    let broker = Mosquitto::start("track");
    let sub = Subscriber::start(broker.port, "lepton/#", "track-test");
    let frames = slid_frames(&dir, "sliding", (-40..=40).step_by(4));
    let (stdout, msgs) = run_to_the_end(&dir, &meter_config(broker.port, &frames, "", ""), &sub);
    let dets = json_messages(&msgs, "/meter/detections");
    assert_eq!(dets.len(), 21, "{stdout}");
    // Per frame, the boxes left to right with their ids; from the third frame every box is tracked.
    let mut rows: Vec<Vec<(String, u64)>> = Vec::new();
    for (k, m) in dets.iter().enumerate() {
        let mut boxes: Vec<&Value> = m["detections"].as_array().unwrap().iter().collect();
        boxes.sort_by(|a, b| a["box"][0].as_f64().unwrap().total_cmp(&b["box"][0].as_f64().unwrap()));
        if k < 2 {
            assert!(boxes.iter().all(|d| d.get("track").is_none()), "frame {k}: not confirmed yet: {m}");
            continue;
        }
        let row: Vec<(String, u64)> = boxes
            .iter()
            .map(|d| {
                let id = d["track"].as_u64().unwrap_or_else(|| panic!("frame {k}: an untracked box: {m}"));
                assert_eq!(d["stationary"], false, "frame {k}: moving: {m}");
                (d["label"].as_str().unwrap().to_string(), id)
            })
            .collect();
        rows.push(row);
    }
    let first = &rows[0];
    assert!(first.len() >= 3, "the frame's digits: {first:?}");
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row, first, "frame {}: the same objects, the same ids, in the same order", k + 2);
    }
    let mut ids: Vec<u64> = first.iter().map(|(_, id)| *id).collect();
    ids.sort();
    assert_eq!(ids, (1..=first.len() as u64).collect::<Vec<_>>(), "one id an object, from 1");
}

#[test]
fn objects_entering_and_leaving_a_zone_are_counted_and_home_assistant_gets_its_sensors() {
    let dir = scratch("daemon-zone");
    let broker = Mosquitto::start("zone");
    let sub = Subscriber::start(broker.port, "#", "zone-test");
    // The meter's digits (0 4 7 1 9 at 31 %, 40 %, 50 %, 61 % and 70 % of the width) slide by
    // -30 % to +22.5 % of the width and back, 2.5 % a frame (the 9 stays whole in the frame):
    // the 4, 7, 1 and 9 cross the middle clearly, the 9 first; the zone is the right half, for
    // those four labels (the 0 is not counted).
    let there: Vec<i32> = (-96..=72).step_by(8).collect();
    let back = there.iter().rev().skip(1).copied();
    let frames = slid_frames(&dir, "there-and-back", there.iter().copied().chain(back));
    let zone = r#"
[[pipeline.zone]]
name = "right"
points = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
labels = ["1", "4", "7", "9"]
min_frames = 2
"#;
    let body = meter_config(broker.port, &frames, "[homeassistant]\ndiscovery = true", zone);
    let (stdout, msgs) = run_to_the_end(&dir, &body, &sub);
    // Entries and exits: each of the four digits enters once and leaves once, the 9 (rightmost)
    // first in and last out, the 4 last in and first out; the same track in and out.
    let events = json_messages(&msgs, "/meter/zone/right");
    let seq: Vec<(String, String, u64)> = events
        .iter()
        .map(|e| {
            assert_eq!((e["zone"].as_str(), e["device"].as_str()), (Some("right"), Some("cam1")), "{e}");
            assert!(e["score"].as_f64().unwrap() >= 0.4 && e["ts"].is_string(), "{e}");
            (e["event"].as_str().unwrap().into(), e["label"].as_str().unwrap().into(), e["track"].as_u64().unwrap())
        })
        .collect();
    let labels = |kind: &str| -> Vec<&str> { seq.iter().filter(|e| e.0 == kind).map(|e| e.1.as_str()).collect() };
    let objects = json_messages(&msgs, "/meter/objects");
    let lives: Vec<String> = objects.iter().map(|o| format!("{} {} {}", o["track"], o["label"], o["event"])).collect();
    assert_eq!(labels("enter"), ["9", "1", "7", "4"], "{seq:?}\nobjects: {lives:?}\n{stdout}");
    assert_eq!(labels("leave"), ["4", "7", "1", "9"], "{seq:?}\n{stdout}");
    for (_, label, track) in seq.iter().filter(|e| e.0 == "enter") {
        assert!(
            seq.iter().any(|e| e.0 == "leave" && e.1 == *label && e.2 == *track),
            "{label} leaves as track {track}: {seq:?}"
        );
    }
    // Counts, retained, after each change: 0 to 4 and back to 0, per label.
    let counts = json_messages(&msgs, "/meter/zone/right/count");
    let total = |c: &Value| c.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
    assert_eq!(counts.len(), 1 + 8, "a zero count at start, then one per entry or exit: {counts:?}");
    assert_eq!(counts[0], serde_json::json!({"1": 0, "4": 0, "7": 0, "9": 0}));
    let totals: Vec<u64> = counts.iter().map(total).collect();
    assert_eq!(totals, [0, 1, 2, 3, 4, 3, 2, 1, 0]);
    // Each object's life on the objects topic: one start per digit track, with its id.
    let starts: Vec<u64> =
        objects.iter().filter(|o| o["event"] == "start").map(|o| o["track"].as_u64().unwrap()).collect();
    assert!(starts.len() >= 5, "{objects:?}");
    for (_, _, track) in &seq {
        assert!(starts.contains(track), "a zone event of track {track}, which started on the objects topic");
    }
    // The run's end ends every object it followed.
    let mut ends: Vec<u64> =
        objects.iter().filter(|o| o["event"] == "end").map(|o| o["track"].as_u64().unwrap()).collect();
    let mut started = starts.clone();
    ends.sort();
    started.sort();
    assert_eq!(ends, started, "{lives:?}");
    // Home Assistant: an occupancy sensor for the zone and a count sensor per label, reading the
    // retained count.
    let configs = json_messages(&msgs, "/config");
    let occupied =
        configs.iter().find(|c| c["unique_id"] == "lepton_cam1_meter_zone_right").expect("the zone's sensor");
    assert_eq!(occupied["state_topic"], "lepton/cam1/meter/zone/right/count");
    assert_eq!(occupied["device_class"], "occupancy");
    let sevens =
        configs.iter().find(|c| c["unique_id"] == "lepton_cam1_meter_zone_right_7").expect("the 7s in the zone");
    assert_eq!(sevens["state_topic"], "lepton/cam1/meter/zone/right/count");
    assert_eq!(sevens["value_template"], "{{ value_json[\"7\"] | default(0) }}");
    let per_label = configs
        .iter()
        .filter(|c| c["unique_id"].as_str().unwrap().starts_with("lepton_cam1_meter_zone_right_"))
        .count();
    assert_eq!(per_label, 4, "one count sensor per label the zone takes");
    // The console says it too.
    assert!(stdout.contains("meter zone right: 9 #"), "{stdout}");
}

#[test]
fn a_broker_outage_loses_no_detection_and_order_is_kept() {
    let dir = scratch("daemon-outage");
    let mut broker = Mosquitto::start("outage");
    let sub = Subscriber::start(broker.port, "lepton/cam1/digits/detections", "outage-test");
    let frames = frames(&dir, 40);
    let config = write_config(&dir, &digits_config(broker.port, &frames, "reconnect_max_s = 1", "fps = 10"));
    let daemon = spawn_lepton(&config, None);
    std::thread::sleep(Duration::from_millis(1200));
    broker.stop();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let out = daemon.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("unreachable") && stderr.contains("reconnected"),
        "the outage happened and was logged: {stderr}"
    );
    let msgs = sub.wait_for(Duration::from_secs(10), |m| json_messages(m, "detections").iter().any(|d| d["seq"] == 39));
    let seqs: Vec<u64> = json_messages(&msgs, "detections").iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    let mut first_seen = vec![];
    for s in &seqs {
        if !first_seen.contains(s) {
            first_seen.push(*s);
        }
    }
    assert_eq!(
        first_seen,
        (0..40).collect::<Vec<u64>>(),
        "every detection arrives, in order (duplicates allowed by QoS 1): {seqs:?}"
    );
    assert!(stdout.contains("0 dropped (queue full), 0 undelivered"), "{stdout}");
}

#[test]
fn past_its_capacity_the_queue_drops_the_oldest_and_counts_them() {
    let dir = scratch("daemon-capacity");
    let port = lepton_e2e::free_port();
    let frames = frames(&dir, 20);
    let config = digits_config(port, &frames, "queue_capacity = 5\nreconnect_max_s = 1", "")
        .replace("stats_interval_s = 1", "stats_interval_s = 0");
    let config = write_config(&dir, &config);
    // The subscriber's persistent session exists before the outage; the daemon starts while the broker is down,
    // so everything waits in its queue.
    let mut broker = Mosquitto::start_on(port, "capacity");
    let sub = Subscriber::start(broker.port, "lepton/cam1/#", "capacity-test");
    std::thread::sleep(Duration::from_millis(300));
    broker.stop();
    let daemon = spawn_lepton(&config, None);
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let out = daemon.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    // Messages were lost (dropped from the full queue): the run says so and exits 1.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("dropped from a full queue"), "{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("MQTT:")).unwrap_or_default().to_string();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (delivered, dropped) = (numbers[0], numbers[1]);
    assert!(dropped > 0 && delivered <= 5 + 3, "{line}");
    // Only the newest survive: at the end of the run the presence `end` events were queued last, so
    // every event that arrives is an `end`, and any detection that arrives is one of the newest.
    let msgs = sub.wait_for(Duration::from_secs(3), |m| json_messages(m, "/digits/events").len() >= 2);
    let events = json_messages(&msgs, "/digits/events");
    assert!(!events.is_empty() && events.iter().all(|e| e["event"] == "end"), "{events:?}\n{stdout}");
    let seqs: Vec<u64> = json_messages(&msgs, "/detections").iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    assert!(seqs.iter().all(|&s| s >= 15), "old detections were dropped first: {seqs:?}");
}

fn vad_config(port: u16, source: &str) -> String {
    format!(
        r#"
[device]
id = "speaker"
stats_interval_s = 0
[mqtt]
host = "127.0.0.1"
port = {port}
[[pipeline]]
name = "voice"
model = "{model}"
print = false
[pipeline.source]
{source}
"#,
        model = root().join("runtime/tests/data/energy_vad.onnx").display()
    )
}

fn speech_events(msgs: &[(String, Vec<u8>)]) -> Vec<String> {
    json_messages(msgs, "/voice/events").iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_wav_source_publishes_speech_events() {
    let dir = scratch("daemon-wav");
    let broker = Mosquitto::start("wav");
    let sub = Subscriber::start(broker.port, "lepton/speaker/#", "wav-test");
    let wav = root().join("runtime/tests/data/speech_gap.wav");
    let config = write_config(&dir, &vad_config(broker.port, &format!("kind = \"wav\"\npath = \"{}\"", wav.display())));
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    assert!(out.status.success(), "{}", text(&out).1);
    let msgs = sub.wait_for(Duration::from_secs(5), |m| speech_events(m).len() >= 4);
    assert_eq!(speech_events(&msgs), ["start", "end", "start", "end"]);
}

#[test]
fn the_microphone_path_runs_through_real_alsa() {
    // A real PulseAudio server (timer-paced null sink) is the default ALSA capture device; the
    // recording is played into it in real time while the daemon listens through cpal and ALSA.
    let dir = scratch("daemon-mic");
    let pulse = PulseMic::start("mic");
    let broker = Mosquitto::start("mic");
    let sub = Subscriber::start(broker.port, "lepton/speaker/#", "mic-test");
    let config = write_config(&dir, &vad_config(broker.port, "kind = \"mic\"\nrate = 16000\nduration_s = 6.5"));
    let daemon = spawn_lepton(&config, Some(pulse.home()));
    std::thread::sleep(Duration::from_millis(1000));
    let mut player = pulse.play(&root().join("runtime/tests/data/speech_gap.wav"));
    let out = daemon.wait_with_output().unwrap();
    let _ = player.wait();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("microphone"), "{stderr}");
    assert!(!stdout.contains("samples lost"), "a paced device loses nothing: {stdout}");
    let msgs = sub.wait_for(Duration::from_secs(5), |m| speech_events(m).len() >= 4);
    assert_eq!(speech_events(&msgs), ["start", "end", "start", "end"], "{stdout}");
}

#[test]
fn a_microphone_that_outruns_the_pipeline_has_its_lost_samples_counted() {
    // ALSA's file plugin over the null device (an asoundrc pointing at a raw PCM file) is not paced by
    // a clock: it delivers hundreds of seconds of audio per second. The ring overruns, and the daemon
    // says how much it lost instead of losing it silently. Twenty seconds of audio keep the race
    // one-sided on a loaded machine too: the VAD's work per sample dwarfs the plugin's copy, so the
    // flood fills the 4-second ring long before the daemon has read its twenty.
    let dir = scratch("daemon-mic-flood");
    let wav = std::fs::read(root().join("runtime/tests/data/speech_gap.wav")).unwrap();
    std::fs::write(dir.join("speech.raw"), &wav[44..]).unwrap();
    std::fs::write(
        dir.join(".asoundrc"),
        format!("pcm.!default {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n", dir.join("speech.raw").display()),
    )
    .unwrap();
    let broker = Mosquitto::start("mic-flood");
    let config = write_config(&dir, &vad_config(broker.port, "kind = \"mic\"\nrate = 16000\nduration_s = 20"));
    let out = lepton(&["run", "--config", &config.display().to_string()], Some(&dir));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lost: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("voice: ")?.split(" audio samples lost").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `samples lost` line: {stdout}"));
    assert!(lost > 16000, "{stdout}");
}

#[test]
fn postcard_payloads_decode_with_the_runtime_types() {
    let dir = scratch("daemon-postcard");
    let broker = Mosquitto::start("postcard");
    let sub = Subscriber::start(broker.port, "lepton/cam1/digits/detections", "postcard-test");
    let frames = frames(&dir, 10);
    let config = write_config(&dir, &digits_config(broker.port, &frames, "format = \"postcard\"", ""));
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    assert!(out.status.success(), "{}", text(&out).1);
    let msgs = sub.wait_for(Duration::from_secs(5), |m| m.len() >= 10);
    assert_eq!(msgs.len(), 10);
    for (i, (_, payload)) in msgs.iter().enumerate() {
        let m: DetectionMessage = decode(payload).expect("a postcard DetectionMessage");
        assert_eq!((m.seq, m.meta.frame), (i as u32, i as u64));
        let truth: u16 = [6, 4, 0, 2, 5, 7, 8, 9, 3, 1][i];
        assert_eq!(m.detections[0].class, truth);
        assert!(payload.len() < 40, "compact: {} bytes", payload.len());
    }
}

#[test]
fn home_assistant_discovery_is_retained_and_announced_again() {
    let dir = scratch("daemon-ha");
    let broker = Mosquitto::start("ha");
    let frames = frames(&dir, 10);
    let config = digits_config(broker.port, &frames, "", "fps = 4") + "\n[homeassistant]\ndiscovery = true\n";
    let config = write_config(&dir, &config);
    let daemon = Command::new(bin("lepton"))
        .args(["run", "--config", &config.display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let sub = Subscriber::start(broker.port, "homeassistant/#", "ha-test");
    let retained = sub.wait_for(Duration::from_secs(3), |m| m.len() >= 12);
    let configs = json_messages(&retained, "/config");
    assert_eq!(configs.len(), 12, "10 label sensors + fps + latency");
    let sensor =
        configs.iter().find(|c| c["unique_id"] == "lepton_cam1_digits_7").expect("a binary sensor for label 7");
    assert_eq!(sensor["state_topic"], "lepton/cam1/digits/events/7");
    assert_eq!(sensor["availability"][0]["topic"], "lepton/cam1/status");
    assert_eq!(sensor["device"]["identifiers"][0], "lepton_cam1");
    assert!(sensor.get("off_delay").is_none(), "the state follows start and end: {sensor}");
    // Home Assistant restarts and says so: every config is published again.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "homeassistant/status", "-m", "online"])
        .status()
        .unwrap();
    assert!(status.success());
    let again = sub.wait_for(Duration::from_secs(3), |m| json_messages(m, "/config").len() >= 24);
    assert_eq!(json_messages(&again, "/config").len(), 24);
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success());
}

#[test]
fn sigterm_stops_gracefully_with_offline_status() {
    let dir = scratch("daemon-signal");
    let broker = Mosquitto::start("signal");
    let frames = frames(&dir, 10);
    let config = write_config(&dir, &digits_config(broker.port, &frames, "", "fps = 20\nloop = true"));
    let daemon = spawn_lepton(&config, None);
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let out = daemon.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    assert!(stdout.contains("undelivered at exit") && stdout.contains(", 0 undelivered"), "{stdout}");
    // The retained status says offline.
    let sub = Subscriber::start(broker.port, "lepton/cam1/status", "signal-test");
    let m = sub.wait_for(Duration::from_secs(3), |m| !m.is_empty());
    assert_eq!(m.last().map(|(_, p)| p.as_slice()), Some(&b"offline"[..]));
}

#[test]
fn bad_configs_name_the_key_line_or_file() {
    let dir = scratch("daemon-bad");
    let frames = frames(&dir, 1);
    let good = digits_config(1883, &frames, "", "");
    let cases = [
        (good.replace("threshold = 0.5", "treshold = 0.5"), vec!["treshold", "line 12"]),
        (good.replace("port = 1883", "port = \"high\""), vec!["port", "line 7"]),
        (good.replace("models/digits/model.onnx", "models/digits/nope.onnx"), vec!["nope.onnx", "digits"]),
        (good.replace("kind = \"images\"", "kind = \"wav\""), vec!["frames"]),
        // Zones count a detector's boxes; the digit classifier has none.
        (
            format!("{good}[[pipeline.zone]]\nname = \"door\"\npoints = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n"),
            vec!["[[pipeline.zone]]", "classify model"],
        ),
    ];
    for (i, (body, needles)) in cases.iter().enumerate() {
        let config = dir.join(format!("bad{i}.toml"));
        std::fs::write(&config, body).unwrap();
        for cmd in ["run", "check"] {
            let out = lepton(&[cmd, "--config", &config.display().to_string()], None);
            let err = text(&out).1;
            assert_eq!(out.status.code(), Some(2), "{cmd} {i}: {err}");
            for n in needles {
                assert!(err.contains(n), "{cmd} case {i}: `{n}` not in: {err}");
            }
        }
    }
    let ok = dir.join("ok.toml");
    std::fs::write(&ok, &good).unwrap();
    let out = lepton(&["check", "--config", &ok.display().to_string()], None);
    assert!(out.status.success() && text(&out).0.contains("config ok"), "{}", text(&out).1);
    // An audio model given pictures is caught by check.
    std::fs::write(
        &ok,
        good.replace(
            &root().join("models/digits/model.onnx").display().to_string(),
            &root().join("runtime/tests/data/energy_vad.onnx").display().to_string(),
        ),
    )
    .unwrap();
    let out = lepton(&["check", "--config", &ok.display().to_string()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("vad model") && text(&out).1.contains("images"), "{}", text(&out).1);
}

#[test]
fn lepton_watch_prints_what_the_daemon_publishes() {
    let dir = scratch("daemon-watch");
    let broker = Mosquitto::start("watch");
    let watch = Command::new(bin("lepton-watch"))
        .args(["--port", &broker.port.to_string(), "--device", "cam1", "--json", "--count", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let frames = frames(&dir, 10);
    let config = write_config(&dir, &digits_config(broker.port, &frames, "", "fps = 10"));
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    assert!(out.status.success());
    let out = watch.wait_with_output().unwrap();
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let dets: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "detections").collect();
    assert!(!dets.is_empty(), "{lines:?}");
    assert_eq!(dets[0]["device"], "cam1");
    assert_eq!(dets[0]["message"]["detections"][0]["label"], "6");
}

/// Whether process `pid` ignores SIGPIPE (bit 13 of `SigIgn` in /proc/PID/status).
fn ignores_sigpipe(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("SigIgn line");
    u64::from_str_radix(mask.trim(), 16).unwrap() & (1 << (13 - 1)) != 0
}

#[test]
fn a_reader_that_goes_away_or_a_reset_connection_never_kills_the_daemon_or_the_store() {
    let dir = scratch("daemon-sigpipe");
    let broker = Mosquitto::start("sigpipe");
    let sub = Subscriber::start(broker.port, "lepton/cam1/digits/detections", "sigpipe-test");
    let frames = frames(&dir, 10);
    let body =
        digits_config(broker.port, &frames, "", "fps = 20\nloop = true").replace("print = false", "print = true");
    let config = write_config(&dir, &body);
    let mut daemon = spawn_lepton(&config, None);
    // The reader of the daemon's lines goes away at once (`lepton run | head -0`).
    drop(daemon.stdout.take());
    std::thread::sleep(Duration::from_millis(300));
    // A broker that resets the connection makes a write fail with EPIPE: with SIGPIPE at its
    // default, that write would kill the process (it did, in CI, during a broker fail-over).
    assert!(ignores_sigpipe(daemon.id()), "lepton run must ignore SIGPIPE");
    let msgs = sub.wait_for(Duration::from_secs(20), |m| json_messages(m, "detections").len() >= 30);
    assert!(json_messages(&msgs, "detections").len() >= 30, "the detections go on after stdout closed");
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon still runs");
    Command::new("kill").args(["-INT", &daemon.id().to_string()]).status().unwrap();
    let out = daemon.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert_eq!(stderr.matches("standard output: ").count(), 1, "one warning: {stderr}");

    // lepton-watch: also ignores SIGPIPE; a reader that goes away ends it quietly (exit 0).
    let mut watch = Command::new(bin("lepton-watch"))
        .args(["--port", &broker.port.to_string(), "--device", "cam1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(watch.stdout.take());
    std::thread::sleep(Duration::from_millis(300));
    assert!(ignores_sigpipe(watch.id()), "lepton-watch must ignore SIGPIPE");
    // The retained status arrives at once: its line fails, and lepton-watch ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while watch.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = watch.kill();
            panic!("lepton-watch still runs 30 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1, made with openssl in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out).1);
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Lepton test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
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
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn tls_and_a_password_connect_and_secrets_stay_out_of_logs() {
    let dir = scratch("daemon-tls");
    make_certificates(&dir);
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").unwrap();
    let out = Command::new("mosquitto_passwd").arg("-b").arg(&passwd).args(["cam", "s3cret-Pa55"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = lepton_e2e::free_port();
    let d = dir.display();
    let broker = Mosquitto::start_with(
        port,
        "tls",
        &format!("allow_anonymous false\npassword_file {d}/passwd\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key"),
    );
    let ca = format!("{d}/ca.pem");
    let sub = Subscriber::start_with(
        broker.port,
        "lepton/cam1/#",
        "tls-test",
        &["--cafile", &ca, "-u", "cam", "-P", "s3cret-Pa55"],
    );
    let frames = frames(&dir, 3);
    std::fs::write(dir.join("secret"), "s3cret-Pa55\n").unwrap();
    let mqtt = format!("tls_ca = \"{ca}\"\nusername = \"cam\"\npassword_file = \"secret\"");
    let config = write_config(&dir, &digits_config(broker.port, &frames, &mqtt, ""));
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let msgs = sub.wait_for(Duration::from_secs(5), |m| json_messages(m, "detections").len() >= 3);
    assert_eq!(json_messages(&msgs, "detections").len(), 3, "{stdout}\n{stderr}");
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));

    // A wrong password: refused by the broker, said so, and the password is not printed.
    std::fs::write(dir.join("secret"), "wr0ng-Pa55\n").unwrap();
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(stderr.contains("refused the credentials") && stderr.contains("mqtt.username"), "{stderr}");
    assert!(stdout.contains("undelivered"), "{stdout}");
    assert!(!stdout.contains("wr0ng") && !stderr.contains("wr0ng"), "{stderr}");
    // Without the CA the broker's certificate is not trusted.
    std::fs::write(dir.join("secret"), "s3cret-Pa55\n").unwrap();
    let other_ca = scratch("daemon-tls-other");
    make_certificates(&other_ca);
    let config = write_config(
        &dir,
        &digits_config(broker.port, &frames, &mqtt.replace(&ca, &format!("{}/ca.pem", other_ca.display())), ""),
    );
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let stderr = text(&out).1;
    assert!(stderr.contains("TLS") && stderr.contains("mqtt.tls_ca"), "{stderr}");
}

/// A config for one pipeline `p` of device `spk` on the broker at `port`; `extra` goes after the
/// source table (alerts), `device_extra` into [device].
fn one_pipeline(port: u16, model: &str, source: &str, extra: &str, device_extra: &str) -> String {
    format!(
        r#"
[device]
id = "spk"
stats_interval_s = 0
{device_extra}
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max_s = 1
[homeassistant]
discovery = true
[[pipeline]]
name = "p"
model = "{model}"
hold_s = 1.0
[pipeline.source]
{source}
{extra}
"#,
        model = root().join(model).display()
    )
}

/// The demo recording at 22,050 Hz, as a speech synthesizer writes it.
fn recording_22k(dir: &Path) -> PathBuf {
    let out = dir.join("demo-22050.wav");
    python(&["tests/fixtures/resample_wav.py", "models/keywords/demo.wav", &out.display().to_string(), "22050"]);
    out
}

#[test]
fn a_run_that_cannot_start_exits_2_before_announcing_anything() {
    let dir = scratch("daemon-prestart");
    let broker = Mosquitto::start("prestart");
    let sub = Subscriber::start(broker.port, "#", "prestart-test");
    let frames = frames(&dir, 2);
    let images = format!("kind = \"images\"\npath = \"{}\"", frames.display());
    let wav22k = format!("kind = \"wav\"\npath = \"{}\"", recording_22k(&dir).display());
    let port = broker.port;
    let digits = "models/digits/model.onnx";
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "model without a manifest",
            one_pipeline(port, "models/digits/model.raw.onnx", &images, "", ""),
            vec!["model.raw.onnx".into(), "no manifest".into(), "lepton-convert pack".into()],
        ),
        (
            "recording at another rate",
            one_pipeline(port, "models/keywords/model.int8.onnx", &wav22k, "", ""),
            vec!["22050 Hz".into(), "16000 Hz".into(), "resample = true".into()],
        ),
        (
            "missing GPIO chip",
            one_pipeline(
                port,
                digits,
                &images,
                "[[pipeline.alert]]\nchip = \"/dev/gpiochip-lepton-test\"\nline = 3",
                "",
            ),
            vec!["/dev/gpiochip-lepton-test".into(), "alert #1".into(), "gpio` group".into()],
        ),
        (
            "broker given as a URL",
            one_pipeline(port, digits, &images, "", "")
                .replace("host = \"127.0.0.1\"", &format!("host = \"mqtt://127.0.0.1:{port}\"")),
            vec!["mqtt.host".into(), format!("host = \"127.0.0.1\", port = {port}")],
        ),
        (
            "host and port in one",
            one_pipeline(port, digits, &images, "", "")
                .replace("host = \"127.0.0.1\"", &format!("host = \"127.0.0.1:{port}\"")),
            vec!["host and port in one".into()],
        ),
        (
            "microcontroller board",
            one_pipeline(port, digits, &images, "", "board = \"stm32f746\""),
            vec!["stm32f746".into(), "microcontroller".into(), "firmware/mcu".into()],
        ),
        (
            "audio model on pictures",
            one_pipeline(port, "models/keywords/model.int8.onnx", &images, "", ""),
            vec!["keyword model".into(), "audio".into(), "an images source".into()],
        ),
    ];
    for (what, body, needles) in &cases {
        let config = write_config(&dir, body);
        for cmd in ["check", "run"] {
            let out = lepton(&[cmd, "--config", &config.display().to_string()], None);
            let err = text(&out).1;
            assert_eq!(out.status.code(), Some(2), "{cmd}, {what}: {err}");
            for n in needles {
                assert!(err.contains(n.as_str()), "{cmd}, {what}: `{n}` not in: {err}");
            }
            assert!(!err.contains("pipeline `p`: pipeline `p`"), "{cmd}, {what}: doubled prefix: {err}");
            assert!(err.matches("os error 2").count() <= 1, "{cmd}, {what}: the cause repeated: {err}");
        }
    }
    // Nothing reached the broker: no `online`, no discovery, no detection.
    let msgs = sub.wait_for(Duration::from_millis(800), |m| !m.is_empty());
    assert!(msgs.is_empty(), "published before failing: {:?}", msgs.iter().map(|m| &m.0).collect::<Vec<_>>());
}

/// RFC 3339 → milliseconds since the epoch.
fn ms(ts: &Value) -> u128 {
    let t = humantime::parse_rfc3339(ts.as_str().expect("ts")).expect("RFC 3339 ts");
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

#[test]
fn a_recording_at_another_rate_is_heard_once_resampled_and_its_events_never_end_before_they_start() {
    let dir = scratch("daemon-resample");
    let broker = Mosquitto::start("resample");
    let sub = Subscriber::start(broker.port, "#", "resample-test");
    let source = format!("kind = \"wav\"\npath = \"{}\"\nresample = true", recording_22k(&dir).display());
    let config = write_config(&dir, &one_pipeline(broker.port, "models/keywords/model.int8.onnx", &source, "", ""));
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("resampling 22050 Hz to the model's 16000 Hz"), "{stderr}");
    let spoken = std::fs::read_to_string(root().join("models/keywords/demo.txt")).unwrap();
    let spoken: Vec<&str> = spoken.split_whitespace().collect();
    let heard: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("p #")).map(|l| l.split_whitespace().nth(5).unwrap()).collect();
    assert_eq!(heard, spoken, "{stdout}");
    // One timeline: every end comes at or after its start, on the topic and on the retained state.
    let msgs = sub.wait_for(Duration::from_secs(5), |m| json_messages(m, "/p/events").len() >= 2 * spoken.len());
    let events = json_messages(&msgs, "/p/events");
    let mut open: std::collections::HashMap<String, u128> = Default::default();
    for e in &events {
        let label = e["label"].as_str().unwrap().to_string();
        match e["event"].as_str().unwrap() {
            "start" => {
                open.insert(label, ms(&e["ts"]));
            }
            _ => {
                let start = open.remove(&label).unwrap_or_else(|| panic!("end without start: {e}"));
                assert!(ms(&e["ts"]) >= start, "ends before it starts: {e} (start {start})");
                let d = e["duration_s"].as_f64().unwrap();
                assert!((ms(&e["ts"]) - start) as f64 / 1e3 - d < 0.002, "{e}");
            }
        }
    }
    assert!(open.is_empty(), "events left open: {open:?}");
    // Home Assistant gets an event entity whose types are the words, none of the background
    // classes that never fire, and no presence sensor per word (words are not presences).
    let configs: Vec<String> = msgs.iter().filter(|(t, _)| t.ends_with("/config")).map(|(t, _)| t.clone()).collect();
    assert!(configs.iter().any(|t| t.contains("/event/spk/p_heard/")), "{configs:?}");
    assert!(!configs.iter().any(|t| t.contains("binary_sensor")), "{configs:?}");
    let heard = json_messages(&msgs, "/p_heard/config");
    let words = heard[0]["event_types"].as_array().unwrap();
    assert!(words.iter().any(|w| w == "yes"), "{words:?}");
    assert!(!words.iter().any(|w| w == "_silence_" || w == "_unknown_"), "{words:?}");
}

#[test]
fn a_finite_run_that_could_not_deliver_exits_1_and_says_so() {
    let dir = scratch("daemon-unreachable");
    let frames = frames(&dir, 3);
    let port = lepton_e2e::free_port();
    let config = write_config(
        &dir,
        &one_pipeline(
            port,
            "models/digits/model.onnx",
            &format!("kind = \"images\"\npath = \"{}\"", frames.display()),
            "",
            "",
        ),
    );
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("undelivered at exit"), "{stdout}");
    assert!(stderr.contains(&format!("never reached the broker at 127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn listing_devices_keeps_the_audio_libraries_quiet() {
    let home = scratch("daemon-devices");
    let out = lepton(&["devices"], Some(&home));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("cameras:") && stdout.contains("microphones:"), "{stdout}");
    for noise in ["ALSA lib", "jack", "JACK", "Cannot connect"] {
        assert!(!stderr.contains(noise), "library chatter on stderr: {stderr}");
    }
}

/// Datagrams a `NOTIFY_SOCKET` received, with their arrival times.
fn notifications(socket: &std::os::unix::net::UnixDatagram, for_: Duration) -> Vec<(std::time::Instant, String)> {
    let end = std::time::Instant::now() + for_;
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end {
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push((std::time::Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    got
}

#[test]
fn the_systemd_watchdog_is_fed_while_the_pipeline_progresses_and_starved_while_it_stalls() {
    // A microphone through real ALSA and PulseAudio; freezing the sound server (SIGSTOP) hangs the
    // capture as a wedged driver does, and SIGCONT brings it back.
    let dir = scratch("daemon-watchdog");
    let pulse = PulseMic::start("watchdog");
    let broker = Mosquitto::start("watchdog");
    let body = vad_config(broker.port, "kind = \"mic\"\nrate = 16000\nduration_s = 60")
        .replace("stats_interval_s = 0", "stats_interval_s = 0\nstall_s = 2");
    let config = write_config(&dir, &body);
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let mut daemon = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""])
        .arg(bin("lepton"))
        .arg(&config)
        .env("HOME", pulse.home())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = notifications(&socket, Duration::from_secs(3));
    let texts: Vec<&str> = running.iter().map(|(_, m)| m.as_str()).collect();
    assert!(texts.first().is_some_and(|m| m.lines().any(|l| l == "READY=1")), "READY=1 first: {texts:?}");
    let pings = texts.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 10, "pinged every 0.1 s while the microphone delivers: {texts:?}");

    let signal =
        |s: &str| assert!(Command::new("kill").args([s, &pulse.pid().to_string()]).status().unwrap().success());
    signal("-STOP");
    let stalled = notifications(&socket, Duration::from_secs(5));
    let window_end = std::time::Instant::now();
    signal("-CONT");
    let texts: Vec<&str> = stalled.iter().map(|(_, m)| m.as_str()).collect();
    let status = texts
        .iter()
        .position(|m| m.contains("STATUS=pipeline voice stalled"))
        .unwrap_or_else(|| panic!("no stall reported: {texts:?}"));
    assert!(!texts[status..].iter().any(|m| m.contains("WATCHDOG=1")), "starved while stalled: {texts:?}");
    // Pings stop at most stall_s after the last processed window, and stay stopped: systemd
    // (WatchdogSec) restarts the service.
    let last_ping = running.iter().chain(&stalled).rev().find(|(_, m)| m.contains("WATCHDOG=1")).unwrap().0;
    assert!(window_end - last_ping > Duration::from_millis(2500), "{texts:?}");

    // The capture comes back: the pings resume.
    let resumed = notifications(&socket, Duration::from_secs(3));
    assert!(resumed.iter().filter(|(_, m)| m.contains("WATCHDOG=1")).count() >= 5, "{resumed:?}");
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    let status = daemon.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("pipeline voice: nothing processed for"), "the stall is logged by name: {stderr}");
    assert!(stderr.contains("pipeline voice: moving again"), "{stderr}");
    let last = notifications(&socket, Duration::from_millis(300));
    assert!(last.iter().any(|(_, m)| m.contains("STOPPING=1")), "STOPPING=1 on the way out: {last:?}");
}

/// Issue 25: every duration key (seconds, milliseconds, days) is read as a finite number within
/// the key's bounds, integer or float: `inf` or `1e300` is an error at the key's line with exit
/// code 2 from `lepton check`, never a config that passes and panics in `run`.
#[test]
fn lepton_check_refuses_infinite_or_huge_durations_at_their_line() {
    let dir = scratch("daemon-durations");
    let frames = frames(&dir, 1);
    let good = digits_config(1883, &frames, "", "");
    let rtsp = good.replace(
        &format!("kind = \"images\"\npath = \"{}\"", frames.display()),
        "kind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:9/stream\"",
    );
    // (key, where it goes): each kind of duration key in each table that has one.
    let cases: Vec<(&str, String)> = vec![
        ("stall_s", good.replace("stats_interval_s = 1", "stats_interval_s = 1\nKV")),
        ("stats_interval_s", good.replace("stats_interval_s = 1", "KV")),
        ("keepalive_s", good.replace("port = 1883", "port = 1883\nKV")),
        ("reconnect_max_s", good.replace("port = 1883", "port = 1883\nKV")),
        ("detection_expiry_s", good.replace("port = 1883", "port = 1883\nprotocol = 5\nKV")),
        ("session_expiry_s", good.replace("port = 1883", "port = 1883\nKV")),
        ("hold_s", good.replace("hold_s = 0.5", "KV")),
        ("every_s", format!("{good}[pipeline.snapshot]\nKV\n")),
        ("hold_s", format!("{good}[[pipeline.alert]]\nline = 17\nKV\n")),
        ("timeout_s", format!("{rtsp}KV\n")),
        ("retain_days", format!("{good}[web]\ndatabase = \"{}\"\nKV\n", dir.join("h.db").display())),
    ];
    for (key, body) in &cases {
        for value in ["inf", "1e300"] {
            let kv = format!("{key} = {value}");
            let text = body.replace("KV", &kv);
            let line = text.lines().position(|l| l == kv).expect("the key's line") + 1;
            let config = dir.join("durations.toml");
            std::fs::write(&config, &text).unwrap();
            let out = lepton(&["check", "--config", &config.display().to_string()], None);
            let (stdout, stderr) = text_of(&out);
            assert_eq!(out.status.code(), Some(2), "{kv}: {stdout}{stderr}");
            assert!(stderr.contains(&format!("line {line} (`{kv}`)")), "{kv}: {stderr}");
            assert!(!stderr.contains("panicked"), "{kv}: {stderr}");
        }
    }
    // Milliseconds too, and integers are durations like floats.
    let blink = format!("{good}[[pipeline.alert]]\nline = 17\nblink_ms = [250, 1e300]\n");
    let config = write_config(&dir, &blink);
    let out = lepton(&["check", "--config", &config.display().to_string()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text_of(&out).1.contains("blink_ms = [250, 1e300]"), "{}", text_of(&out).1);
    let config = write_config(&dir, &good.replace("hold_s = 0.5", "hold_s = 3"));
    let out = lepton(&["check", "--config", &config.display().to_string()], None);
    assert!(out.status.success(), "{}", text_of(&out).1);
}

fn text_of(out: &Output) -> (String, String) {
    text(out)
}

/// Issue 25: a broker written as a URL with credentials is refused without repeating the
/// password, with the keys that say the same thing.
#[test]
fn a_broker_url_with_a_password_is_refused_without_echoing_it() {
    let dir = scratch("daemon-broker-url");
    let frames = frames(&dir, 1);
    let good = digits_config(1883, &frames, "", "");
    for (mqtt, wants) in [
        (
            "host = \"mqtt://cam:secret@broker.lan:1883\"",
            vec!["host = \"broker.lan\", port = 1883", "username = \"cam\"", "password_file", "LEPTON_MQTT_PASSWORD"],
        ),
        ("host = \"mqtts://cam:secret@broker.lan\"", vec!["host = \"broker.lan\"", "username = \"cam\"", "tls_ca"]),
        (
            "hosts = [\"node1\", \"mqtt://cam:secret@node2:1884\"]",
            vec!["\"node2:1884\" in hosts", "username = \"cam\""],
        ),
    ] {
        let config = write_config(&dir, &good.replace("host = \"127.0.0.1\"\nport = 1883", mqtt));
        for cmd in ["check", "run"] {
            let out = lepton(&[cmd, "--config", &config.display().to_string()], None);
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} {mqtt}: {stderr}");
            assert!(!stdout.contains("secret") && !stderr.contains("secret"), "{cmd} {mqtt}: {stdout}{stderr}");
            assert!(!stderr.contains("host = \"cam\"") && !stderr.contains("port = secret"), "{stderr}");
            assert!(stderr.contains("line 6"), "{cmd} {mqtt}: the key's line: {stderr}");
            for w in &wants {
                assert!(stderr.contains(w), "{cmd} {mqtt}: `{w}` not in {stderr}");
            }
        }
    }
}

/// Issue 25: `lepton check` opens a video file's container and codec as `run` would, so a VP8
/// WebM (made here by GStreamer) is refused at check, not after the device went online.
#[test]
fn lepton_check_refuses_a_video_the_source_cannot_decode() {
    let dir = scratch("daemon-vp8");
    let frames = frames(&dir, 8);
    let webm = dir.join("clip.webm");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "multifilesrc"])
        .arg(format!("location={}/f%04d.png", frames.display()))
        .args(["index=0", "stop-index=7", "caps=image/png,framerate=10/1", "!", "pngdec", "!", "videoconvert"])
        .args(["!", "vp8enc", "!", "webmmux", "!", "filesink"])
        .arg(format!("location={}", webm.display()))
        .status()
        .expect("gst-launch-1.0 (Debian gstreamer1.0-tools and -plugins-good)");
    assert!(status.success() && webm.is_file(), "gst-launch-1.0 could not write {}", webm.display());
    let broker = Mosquitto::start("vp8");
    let body = digits_config(broker.port, &frames, "", "").replace(
        &format!("kind = \"images\"\npath = \"{}\"", frames.display()),
        "kind = \"video\"\npath = \"clip.webm\"",
    );
    let config = write_config(&dir, &body);
    let out = lepton(&["check", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("clip.webm") && stderr.contains("V_VP8") && stderr.contains("H.264"), "{stderr}");
    assert!(!stdout.contains("config ok"), "{stdout}");
    // `run` says the same before announcing anything: no `online`.
    let sub = Subscriber::start(broker.port, "lepton/#", "vp8-test");
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    assert!(text(&out).1.contains("V_VP8"), "{}", text(&out).1);
    std::thread::sleep(Duration::from_millis(300));
    let got = sub.messages.lock().unwrap().clone();
    assert!(got.iter().all(|(_, p)| p != b"online"), "announced online: {got:?}");
}

/// Issue 25: `lepton check` lists every bad pipeline (then exits 2), shows a missing relative
/// model at its resolved path with the key's line, and an I/O error names its cause once.
#[test]
fn lepton_check_lists_every_error_with_resolved_paths_and_causes_once() {
    let dir = scratch("daemon-check-all");
    let frames = frames(&dir, 1);
    let vad = root().join("runtime/tests/data/energy_vad.onnx");
    let two = format!(
        "{}\n[[pipeline]]\nname = \"second\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"images\"\npath = \"{}\"\n",
        digits_config(1883, &frames, "", "")
            .replace(&root().join("models/digits/model.onnx").display().to_string(), &vad.display().to_string()),
        vad.display(),
        frames.display()
    );
    let config = write_config(&dir, &two.replace("name = \"second\"", "name = \"other\""));
    let out = lepton(&["check", "--config", &config.display().to_string()], None);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pipeline `digits`") && stderr.contains("pipeline `other`"), "both listed: {stderr}");
    assert!(stderr.contains("2 of 2 pipelines failed"), "{stderr}");
    // A missing relative model: the path the daemon looked for, and the key's line.
    let sub = dir.join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    let rel = digits_config(1883, &frames, "", "")
        .replace(&root().join("models/digits/model.onnx").display().to_string(), "models/missing.onnx");
    std::fs::write(sub.join("lepton.toml"), &rel).unwrap();
    let line = rel.lines().position(|l| l.starts_with("model =")).unwrap() + 1;
    let out =
        Command::new(bin("lepton")).args(["check", "--config", "conf/lepton.toml"]).current_dir(&dir).output().unwrap();
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let resolved = dir.join("conf/models/missing.onnx");
    assert!(
        stderr.contains(&format!("line {line}: pipeline `digits`: model {} does not exist", resolved.display())),
        "{stderr}"
    );
    // An I/O error's cause once, not twice.
    let out = lepton(&["probe", &dir.join("absent.mp4").display().to_string()], None);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

/// Issue 25: the example config boards/README.md starts from passes `lepton check` (with the
/// repository's models, a password file, and its GPIO alert left out: no chip here).
#[test]
fn the_example_config_of_boards_passes_lepton_check() {
    let dir = scratch("daemon-example");
    let example = std::fs::read_to_string(root().join("boards/lepton.example.toml")).unwrap();
    std::fs::write(dir.join("mqtt-password"), "pw\n").unwrap();
    let alert = example.find("[[pipeline.alert]]").expect("the example has an alert");
    let adapted = example[..alert]
        .replace(
            "/var/lib/lepton/models/detector.onnx",
            &root().join("models/detector/model.onnx").display().to_string(),
        )
        .replace(
            "/var/lib/lepton/models/keywords.int8.onnx",
            &root().join("models/keywords/model.int8.onnx").display().to_string(),
        )
        .replace("/etc/lepton/mqtt-password", &dir.join("mqtt-password").display().to_string());
    // The settings, without comments (which may mention the board's paths).
    let settings: Vec<&str> = adapted.lines().map(|l| l.split('#').next().unwrap_or("")).collect();
    assert!(settings.iter().all(|l| !l.contains("/var/lib") && !l.contains("/etc/lepton")), "{adapted}");
    let config = write_config(&dir, &adapted);
    let out = lepton(&["check", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("device `meter-pi`") && stdout.contains("config ok"), "{stdout}");
}

/// Issue 25: Home Assistant's entities follow what the device has: stale configs under its node
/// (a removed pipeline, a renamed one) are cleared, another device's are not; a presence's sensor
/// has no off delay (it would go off while a presence lasts), so its state is the retained events
/// topic over the whole presence; keyword words get no presence sensor; the device links its page.
#[test]
fn home_assistant_entities_follow_the_device_and_long_presences() {
    let dir = scratch("daemon-ha-cleanup");
    let broker = Mosquitto::start("ha-cleanup");
    let pb = |topic: &str, payload: &str| {
        let s = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-r", "-q", "1", "-t", topic, "-m", payload])
            .status()
            .unwrap();
        assert!(s.success());
    };
    let stale = ["homeassistant/binary_sensor/cam1/oldpipe_7/config", "homeassistant/sensor/cam1/renamed_fps/config"];
    for t in stale {
        pb(t, "{\"name\":\"stale\"}");
    }
    let other = "homeassistant/binary_sensor/cam2/digits_7/config";
    pb(other, "{\"name\":\"another device\"}");
    // One digit, 60 frames at 5 fps: one presence of 12 s, longer than the old off delay
    // (2 × hold + 5 s = 6 s).
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let six = root().join("models/digits/samples/frame-00-digit-6.png");
    for i in 0..60 {
        std::fs::copy(&six, frames.join(format!("f{i:04}.png"))).unwrap();
    }
    let port = lepton_e2e::free_port();
    let config = digits_config(broker.port, &frames, "", "fps = 5")
        + &format!(
            "\n[[pipeline]]\nname = \"words\"\nmodel = \"{}\"\nprint = false\n[pipeline.source]\nkind = \"wav\"\npath = \"{}\"\n",
            root().join("models/keywords/model.int8.onnx").display(),
            root().join("models/keywords/demo.wav").display()
        )
        + &format!(
            "\n[homeassistant]\ndiscovery = true\n[web]\nlisten = \"0.0.0.0:{port}\"\ndatabase = \"{}\"\n",
            dir.join("history.db").display()
        );
    let config = write_config(&dir, &config);
    let states = Subscriber::start(broker.port, "lepton/cam1/digits/events/#", "ha-states");
    let mut daemon = spawn_lepton(&config, None);
    std::thread::sleep(Duration::from_secs(4));
    let sub = Subscriber::start(broker.port, "homeassistant/#", "ha-cleanup-test");
    let retained = sub.wait_for(Duration::from_secs(5), |m| json_messages(m, "/config").len() >= 16);
    let topics: Vec<&str> = retained.iter().filter(|(_, p)| !p.is_empty()).map(|(t, _)| t.as_str()).collect();
    for t in stale {
        assert!(!topics.contains(&t), "stale {t} still retained: {topics:?}");
    }
    assert!(topics.contains(&other), "another device's config was cleared: {topics:?}");
    let configs = json_messages(&retained, "/config");
    let sensor = configs.iter().find(|c| c["unique_id"] == "lepton_cam1_digits_6").expect("a sensor for 6");
    assert!(sensor.get("off_delay").is_none(), "an off delay turns a long presence off: {sensor}");
    assert_eq!(sensor["device_class"], "occupancy");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(sensor["device"]["configuration_url"], format!("http://{}:{port}/", host.trim()));
    assert!(
        configs.iter().all(|c| !(c["unique_id"].as_str().unwrap_or("").starts_with("lepton_cam1_words_")
            && c.get("device_class").is_some_and(|d| d == "occupancy"))),
        "keyword words have no presence sensor"
    );
    let words = configs.iter().find(|c| c["unique_id"] == "lepton_cam1_words_heard").expect("an event entity");
    assert!(words["event_types"].as_array().unwrap().iter().any(|w| w == "go"), "{words}");
    // Within the presence (about 7 s in): on; after it: off, once.
    std::thread::sleep(Duration::from_secs(3));
    let mid = states.messages.lock().unwrap().clone();
    let six_states: Vec<Value> = json_messages(&mid, "/events/6");
    assert_eq!(six_states.len(), 1, "one start, no end within the presence: {six_states:?}");
    assert_eq!(six_states[0]["event"], "start");
    let done = states.wait_for(Duration::from_secs(20), |m| json_messages(m, "/events/6").len() >= 2);
    let six_states = json_messages(&done, "/events/6");
    assert_eq!(six_states.len(), 2, "{six_states:?}");
    assert_eq!(six_states[1]["event"], "end", "{six_states:?}");
    assert!(six_states[1]["duration_s"].as_f64().unwrap() >= 10.0, "{six_states:?}");
    let _ = Command::new("kill").args(["-INT", &daemon.id().to_string()]).status();
    let _ = daemon.wait();
}

#[test]
fn a_microwakeword_json_is_a_model_line_and_its_wake_word_reaches_home_assistant() {
    let dir = scratch("daemon-wake-word");
    let broker = Mosquitto::start("wake-word");
    let sub = Subscriber::start(broker.port, "#", "wake-word-test");
    // "okay nabu", another wake word, then "okay nabu" again, 1.5 s apart: two detections.
    let wav = dir.join("phrases.wav");
    python(&["tests/fixtures/speak.py", &wav.display().to_string(), "en-us", "1.5", "okay nabu", "alexa", "okay nabu"]);
    let model = root().join("target/test-models/okay_nabu.json");
    assert!(model.exists(), "{}: run scripts/fetch-test-models (scripts/test does)", model.display());
    let source = format!("kind = \"wav\"\npath = \"{}\"", wav.display());
    let body = one_pipeline(broker.port, "models/keywords/model.int8.onnx", &source, "", "")
        .replace(&root().join("models/keywords/model.int8.onnx").display().to_string(), &model.display().to_string());
    let config = write_config(&dir, &body);
    let out = lepton(&["run", "--config", &config.display().to_string()], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let heard = stdout.lines().filter(|l| l.starts_with("p #") && l.contains("Okay Nabu")).count();
    assert_eq!(heard, 2, "{stdout}");
    let msgs = sub.wait_for(Duration::from_secs(5), |m| json_messages(m, "/p/events").len() >= 4);
    let starts: Vec<Value> = json_messages(&msgs, "/p/events").into_iter().filter(|e| e["event"] == "start").collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts.iter().all(|e| e["label"] == "Okay Nabu"), "{starts:?}");
    // Home Assistant's event entity has the wake word as its one event type.
    let heard = json_messages(&msgs, "/p_heard/config");
    assert_eq!(heard[0]["event_types"], serde_json::json!(["Okay Nabu"]), "{heard:?}");
}
