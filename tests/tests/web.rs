//! The device page: its JSON API, `/metrics` and `/healthz` over real HTTP against the running
//! daemon (the bundled demo, and a config with a token), and the page itself in Debian's headless
//! Chromium driven through ChromeDriver (live view with drawn boxes, event list, label filter,
//! login and logout, history kept across a restart, outside strings shown as text, the keyword
//! timeline's layout); sessions and failed logins over HTTP; models whose labels hold markup
//! refused at load. The screenshots are saved in target/tmp/artefacts/.

use lepton_e2e::{bin, free_port, get_json, http, root, scratch, Running};
use lepton_runtime::draw::ZONE_COLOR;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The page's address from the daemon's "device page on http://ADDR (...)" line.
fn page_url(line: &str) -> String {
    let at = line.find("http://").expect("an address");
    line[at..].split_whitespace().next().unwrap().to_string()
}

/// Events printed by the daemon: "meter event start 7 0.992 at ...".
fn printed_events(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 4 && f[1] == "event").then(|| (f[0].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

/// The value of a Prometheus sample line `name` (with its labels) in `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `f` every 100 ms until it gives a value (at most 30 s); panics naming `what` otherwise.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_demo(state: &std::path::Path) -> (Running, String) {
    let mut cmd = Command::new(bin("lepton"));
    cmd.arg("run").env("XDG_STATE_HOME", state).current_dir(root());
    let mut demo = Running::start(cmd);
    let url = page_url(&demo.wait_for("device page on http://", 120));
    demo.wait_for("the device page stays up", 120);
    (demo, url)
}

#[test]
fn the_demo_serves_its_page_api_and_metrics_and_keeps_its_history_across_a_restart() {
    let state = scratch("web-demo");
    let (demo, url) = start_demo(&state);
    let stdout = demo.stdout_text();
    let printed = printed_events(&stdout);
    assert!(printed.len() > 10, "{stdout}");

    // The page and its assets come from the binary.
    let (code, headers, page) = http("GET", &format!("{url}/"), &[], b"");
    assert_eq!(code, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/html")));
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<script>") && !page.contains("src=\"http"), "no external assets");
    println!("page: {} bytes", page.len());

    let status = get_json(&format!("{url}/api/status"), &[]);
    assert_eq!(status["device"], "lepton-demo");
    assert_eq!(status["mqtt"]["connected"], true);
    assert_eq!(status["history"]["events"], printed.len(), "every printed event is stored: {status}");
    assert_eq!(status["auth"], false);

    // Pipelines: counters as the summary printed them, manifests, the newest frame.
    let pipelines = get_json(&format!("{url}/api/pipelines"), &[]);
    let meter = pipelines.as_array().unwrap().iter().find(|p| p["name"] == "meter").unwrap();
    let keywords = pipelines.as_array().unwrap().iter().find(|p| p["name"] == "keywords").unwrap();
    for p in [meter, keywords] {
        let name = p["name"].as_str().unwrap();
        let summary = stdout.lines().find(|l| l.starts_with(&format!("{name}: ")) && l.contains(" processed")).unwrap();
        let processed: u64 = summary.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(p["processed"], processed, "{summary}");
        assert_eq!(p["dropped"], 0);
        assert_eq!(p["failed"], 0);
        assert_eq!(p["finished"], true);
        assert!(p["inference_p50_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(meter["task"], "detect");
    assert_eq!(meter["manifest"]["input"]["size"], json!([160, 120]));
    assert_eq!(meter["latest"]["frame"], 7, "the newest frame processed");
    assert_eq!(meter["live"], "/api/snapshot/meter.jpg");
    assert_eq!(keywords["task"], "keyword");
    assert!(keywords["live"].is_null());
    // The last detections are the last printed line's digits.
    let mut seen: Vec<&str> =
        meter["last_seen"]["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    let last = stdout.lines().rfind(|l| l.starts_with("meter #")).unwrap();
    let fields: Vec<&str> = last.split_whitespace().collect();
    let mut printed_digits: Vec<&str> =
        fields[5..].chunks(3).filter(|c| c.len() == 3 && c[2].starts_with('[')).map(|c| c[0]).collect();
    seen.sort();
    printed_digits.sort();
    assert_eq!(seen, printed_digits, "{last}");

    // Events: newest first, filters, paging, pictures.
    let all = get_json(&format!("{url}/api/events?limit=1000"), &[]);
    let all = all["events"].as_array().unwrap().clone();
    assert_eq!(all.len(), printed.len());
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    let sevens = get_json(&format!("{url}/api/events?label=7&limit=1000"), &[]);
    let sevens = sevens["events"].as_array().unwrap();
    assert_eq!(sevens.len(), printed.iter().filter(|e| e.2 == "7").count());
    assert!(sevens.iter().all(|e| e["label"] == "7"));
    let two = get_json(&format!("{url}/api/events?pipeline=keywords&limit=2"), &[]);
    assert_eq!(two["events"].as_array().unwrap().len(), 2);
    assert!(two["events"].as_array().unwrap().iter().all(|e| e["pipeline"] == "keywords"));
    let newest_ts = all[0]["ts_ms"].as_i64().unwrap();
    let since = get_json(&format!("{url}/api/events?since={newest_ts}&limit=1000"), &[]);
    assert!(since["events"].as_array().unwrap().iter().all(|e| e["ts_ms"].as_i64().unwrap() >= newest_ts));
    let rfc = all[0]["ts"].as_str().unwrap();
    let since_rfc = get_json(&format!("{url}/api/events?since={rfc}&limit=1000"), &[]);
    assert_eq!(since_rfc["events"], since["events"]);
    for bad in ["since=yesterday", "limit=0", "colour=red"] {
        let (code, _, body) = http("GET", &format!("{url}/api/events?{bad}"), &[], b"");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains(bad.split('=').next().unwrap()), "the error names the parameter: {body}");
    }
    // Every meter start has the picture of its frame; a keyword start has none.
    let starts: Vec<&Value> = all.iter().filter(|e| e["pipeline"] == "meter" && e["event"] == "start").collect();
    assert!(!starts.is_empty());
    for e in &starts {
        let shot = e["snapshot"].as_str().unwrap_or_else(|| panic!("no snapshot: {e}"));
        let (code, headers, jpeg) = http("GET", &format!("{url}{shot}"), &[], b"");
        assert_eq!(code, 200);
        assert!(headers.iter().any(|(k, v)| k == "content-type" && v == "image/jpeg"));
        let img = image::load_from_memory(&jpeg).expect("a JPEG");
        assert_eq!((img.width(), img.height()), (320, 240));
    }
    assert!(all.iter().filter(|e| e["pipeline"] == "keywords").all(|e| e["snapshot"].is_null()));
    let (code, _, body) = http("GET", &format!("{url}/api/snapshot/meter.jpg"), &[], b"");
    assert_eq!(code, 200);
    assert_eq!(image::load_from_memory(&body).unwrap().width(), 320);
    for (path, says) in [("keywords.jpg", "hears audio"), ("door.jpg", "pipelines: meter, keywords")] {
        let (code, _, body) = http("GET", &format!("{url}/api/snapshot/{path}"), &[], b"");
        assert_eq!(code, 404);
        assert!(String::from_utf8_lossy(&body).contains(says), "{}", String::from_utf8_lossy(&body));
    }

    // Prometheus text: counters equal the API's.
    let (code, headers, text) = http("GET", &format!("{url}/metrics"), &[], b"");
    assert_eq!(code, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(text).unwrap();
    for p in [meter, keywords] {
        let name = p["name"].as_str().unwrap();
        let processed = p["processed"].as_f64().unwrap();
        assert_eq!(metric(&text, &format!("lepton_frames_processed_total{{pipeline=\"{name}\"}}")), processed);
        assert_eq!(metric(&text, &format!("lepton_frames_dropped_total{{pipeline=\"{name}\"}}")), 0.0);
        assert_eq!(metric(&text, &format!("lepton_inference_seconds_count{{pipeline=\"{name}\"}}")), processed);
        assert_eq!(
            metric(&text, &format!("lepton_inference_seconds_bucket{{pipeline=\"{name}\",le=\"+Inf\"}}")),
            processed
        );
        assert!(metric(&text, &format!("lepton_inference_seconds_sum{{pipeline=\"{name}\"}}")) > 0.0);
    }
    assert_eq!(metric(&text, "lepton_mqtt_connected"), 1.0);
    assert_eq!(metric(&text, "lepton_mqtt_queue_depth"), 0.0);
    assert_eq!(metric(&text, "lepton_mqtt_messages_dropped_total"), 0.0);
    let delivered = metric(&text, "lepton_mqtt_messages_delivered_total");
    let (code, _, body) = http("GET", &format!("{url}/healthz"), &[], b"");
    assert_eq!((code, String::from_utf8_lossy(&body).into_owned()), (200, "{\"status\":\"ok\"}".to_string()));

    let (status, stdout, stderr) = demo.interrupt();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("MQTT: {delivered} messages delivered")), "{stdout}");

    // A second run adds to the same history: the first run's events are still there, by id.
    let (demo, url) = start_demo(&state);
    let status = get_json(&format!("{url}/api/status"), &[]);
    assert_eq!(status["history"]["events"], 2 * printed.len(), "{status}");
    let again = get_json(&format!("{url}/api/events?limit=1000"), &[]);
    let again: Vec<i64> = again["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.iter().all(|i| again.contains(i)), "the first run's events survive the restart");
    let first_start = starts.last().unwrap();
    let (code, _, _) = http("GET", &format!("{url}{}", first_start["snapshot"].as_str().unwrap()), &[], b"");
    assert_eq!(code, 200, "and their pictures");
    let (status, _, _) = demo.interrupt();
    assert!(status.success());
}

/// A WebDriver session on ChromeDriver.
struct Browser {
    driver: Running,
    base: String,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(profile: &std::path::Path) -> Browser {
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        // Its own process group: the browser it starts is stopped with it, even after a failure.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg(format!("--port={port}"));
        let driver = Running::start(cmd);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start (apt package chromium-driver)");
            std::thread::sleep(Duration::from_millis(50));
        }
        // As the machine notes say: headless, no sandbox as root, and no background networking
        // (this machine has no network beyond loopback).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2000",
            "--force-device-scale-factor=1",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let mut b = Browser { driver, base, session: String::new() };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (code, _, out) =
            http(method, &format!("{}{path}", self.base), &[("Content-Type", "application/json")], body.as_bytes());
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert_eq!(code, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn s(&self, what: &str) -> String {
        format!("/session/{}{what}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    fn js(&self, script: &str) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": []})))
    }

    fn element(&self, css: &str) -> String {
        let v = self.call("POST", &self.s("/element"), Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &self.s(&format!("/element/{e}/value")), Some(json!({"text": text})));
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), Some(json!({})));
    }

    /// Waits until `script` returns a truthy value; returns it.
    fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self) -> image::RgbImage {
        use base64::Engine;
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        image::load_from_memory(&png).unwrap().to_rgb8()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver and every Chromium process it started (one process group), also when a
        // check failed mid-session.
        let _ = Command::new("kill").args(["-TERM", "--"]).arg(format!("-{}", self.driver.id())).status();
    }
}

/// Pixels of `shot` inside `rect` (x, y, w, h) within 60 of `color` on every channel.
fn count_color(shot: &image::RgbImage, rect: (u32, u32, u32, u32), color: [u8; 3]) -> usize {
    let (x0, y0, w, h) = rect;
    let mut n = 0;
    for y in y0..(y0 + h).min(shot.height()) {
        for x in x0..(x0 + w).min(shot.width()) {
            let p = shot.get_pixel(x, y).0;
            if (0..3).all(|i| (p[i] as i32 - color[i] as i32).abs() < 60) {
                n += 1;
            }
        }
    }
    n
}

fn daemon_with_page(dir: &std::path::Path, config: &std::path::Path) -> (Running, String) {
    let mut cmd = Command::new(bin("lepton"));
    cmd.args(["run", "--config"]).arg(config).current_dir(dir);
    let mut d = Running::start(cmd);
    let url = page_url(&d.wait_for("device page on http://", 120));
    (d, url)
}

#[test]
fn the_page_in_chromium_shows_the_live_view_lists_and_filters_events_and_requires_the_token() {
    let dir = scratch("web-browser");
    let token = "c0ffee-lepton-web-token-0123456789";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let r = root();
    // A camera's H.264: the demo frames then a second of an empty grey scene, 4 fps, looping.
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..12 {
        let img = if i < 8 {
            image::open(r.join(format!("models/detector/demo/images/frame{i:03}.jpg"))).unwrap().to_rgb8()
        } else {
            image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]))
        };
        img.save(frames.join(format!("f{i:04}.png"))).unwrap();
    }
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "multifilesrc"])
        .arg(format!("location={}/f%04d.png", frames.display()))
        .args(["index=0", "stop-index=11", "caps=image/png,framerate=4/1", "!", "pngdec", "!", "videoconvert"])
        .args(["!", "video/x-raw,format=I420", "!", "x264enc", "key-int-max=4", "!", "h264parse", "!", "mp4mux"])
        .args(["!", "filesink", "location=yard.mp4"])
        .current_dir(&dir)
        .status()
        .expect("gst-launch-1.0 (Debian gstreamer1.0-tools; scripts/install-deps --test installs it)");
    assert!(status.success());
    // The demo's detector on its frames, looping at 3 fps like a camera, and the keyword spotter
    // on the demo recording; the detector on the video, with clips; the page on a free port, with
    // a token.
    let config = dir.join("lepton.toml");
    std::fs::write(
        &config,
        format!(
            r#"[device]
id = "bench-cam"
name = "Bench camera"

[web]
listen = "127.0.0.1:0"
database = "history.db"
token_file = "token"

[[pipeline]]
name = "meter"
model = "{r}/models/detector/model.int8.onnx"
threshold = 0.5
hold_s = 1.0
[pipeline.source]
kind = "images"
path = "{r}/models/detector/demo/images"
fps = 3
loop = true
[[pipeline.zone]]
name = "left"
points = [[0.05, 0.1], [0.45, 0.1], [0.45, 0.9], [0.05, 0.9]]

[[pipeline]]
name = "keywords"
model = "{r}/models/keywords/model.int8.onnx"
[pipeline.source]
kind = "wav"
path = "{r}/models/keywords/demo.wav"

[[pipeline]]
name = "yard"
model = "{r}/models/detector/model.int8.onnx"
print = false
[pipeline.source]
kind = "video"
path = "yard.mp4"
loop = true
[pipeline.track]
max_missed_s = 0.5
[pipeline.clips]
pre_s = 0.5
post_s = 0.5
"#,
            r = r.display()
        ),
    )
    .unwrap();
    let (daemon, url) = daemon_with_page(&dir, &config);

    // The token: nothing but /healthz without it; the bearer header or the login cookie with it.
    // (A wrong token counts as a failed login: two here, one in the browser, under the limit.)
    let bearer = format!("Bearer {token}");
    for path in ["/", "/api/status", "/api/pipelines", "/api/events", "/metrics", "/api/snapshot/meter.jpg"] {
        let (code, headers, _) = http("GET", &format!("{url}{path}"), &[], b"");
        assert_eq!(code, 401, "{path} without the token");
        assert!(headers.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")));
    }
    for path in ["/", "/api/events"] {
        let (code, _, _) =
            http("GET", &format!("{url}{path}"), &[("Authorization", "Bearer wrong-token-0123456789")], b"");
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    eventually("a live picture", || {
        (http("GET", &format!("{url}/api/snapshot/meter.jpg"), &[("Authorization", &bearer)], b"").0 == 200)
            .then_some(())
    });
    for path in ["/", "/api/status", "/api/pipelines", "/api/events", "/metrics"] {
        let (code, _, _) = http("GET", &format!("{url}{path}"), &[("Authorization", &bearer)], b"");
        assert_eq!(code, 200, "{path} with the token");
    }
    // The live picture carries the zone: its left edge, azure, from 10 % to 90 % of the height.
    let (_, _, jpeg) = http("GET", &format!("{url}/api/snapshot/meter.jpg"), &[("Authorization", &bearer)], b"");
    let live = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let (w, h) = live.dimensions();
    let x = (0.05 * w as f32) as u32;
    let edge = count_color(&live, (x.saturating_sub(2), h / 10, 5, h * 8 / 10), ZONE_COLOR);
    assert!(edge as u32 >= h * 8 / 10, "the zone's left edge in the live picture: {edge} azure pixels");
    assert_eq!(http("GET", &format!("{url}/healthz"), &[], b"").0, 200);

    // The browser logs in through the form, then sees the page.
    let browser = Browser::start(&dir.join("chromium"));
    browser.go(&format!("{url}/"));
    browser.until("the login form", "return !!document.querySelector('input[name=token]')");
    browser.type_into("input[name=token]", "not-the-token-0123456789");
    browser.click("button[type=submit]");
    browser.until("the refusal", "return document.body.innerText.includes('not this device')");
    browser.type_into("input[name=token]", token);
    browser.click("button[type=submit]");
    browser.until("the device name", "return document.querySelector('#device')?.textContent.includes('Bench camera')");

    // The live view: a frame with the detector's boxes drawn in the classes' colours. Digits 0
    // and 7 are on every frame with digits (the eighth frame has none), and their colours
    // (magenta, blue) are nowhere in the photo, so a few screenshots taken as the frames change
    // show their outlines.
    let artefacts = root().join("target/tmp/artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    browser.until("a live frame", "const i = document.querySelector('img.live[data-pipeline=meter]'); return i && i.complete && i.naturalWidth > 0");
    browser.until("events in the list", "return document.querySelectorAll('#events tbody tr').length");
    let palette = lepton_runtime::draw::PALETTE;
    let (mut best, mut zone) = ((0, 0), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let r = browser.js("const r = document.querySelector('img.live[data-pipeline=meter]').getBoundingClientRect(); return [r.x, r.y, r.width, r.height]");
        let r: Vec<u32> = r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap().max(0.0) as u32).collect();
        assert!(r[2] >= 320 && r[3] >= 200, "the live view is shown large enough: {r:?}");
        let shot = browser.screenshot();
        let zeros = count_color(&shot, (r[0], r[1], r[2], r[3]), palette[0]);
        let sevens = count_color(&shot, (r[0], r[1], r[2], r[3]), palette[7 % palette.len()]);
        zone = zone.max(count_color(&shot, (r[0], r[1], r[2], r[3]), ZONE_COLOR));
        if zeros.min(sevens) > best.0.min(best.1) {
            best = (zeros, sevens);
            shot.save(artefacts.join("device-page.png")).unwrap();
        }
        if best.0 > 100 && best.1 > 100 && zone > 300 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(best.0 > 100 && best.1 > 100, "box outlines of digits 0 and 7 in the live view: {best:?} pixels");
    assert!(zone > 300, "the zone's outline in the live view: {zone} pixels");
    println!(
        "live view: {} and {} pixels of the boxes of 0 and 7 (target/tmp/artefacts/device-page.png)",
        best.0, best.1
    );

    // The event list fills; a label filter narrows it to that label.
    browser.until("several events", "return document.querySelectorAll('#events tbody tr').length >= 6");
    // The 0 and the 4 stand in the zone `left`: their entries are in the history and the list.
    let entered = eventually("an entry into the zone in the history", || {
        let all = get_json(&format!("{url}/api/events?pipeline=meter&limit=1000"), &[("Authorization", &bearer)]);
        all["events"].as_array().unwrap().iter().find(|e| e["event"] == "enter" && e["zone"] == "left").cloned()
    });
    assert!(["0", "4"].contains(&entered["label"].as_str().unwrap()), "{entered}");
    browser.until(
        "the entry in the list",
        "return [...document.querySelectorAll('#events tbody td')].some(td => td.textContent === 'enter left')",
    );
    let before = browser.js("return document.querySelectorAll('#events tbody tr').length").as_u64().unwrap();
    browser.until(
        "label 4 in the filter",
        "return [...document.querySelectorAll('#label option')].some(o => o.value === '4')",
    );
    browser.js("document.querySelector('#label').value = '4'; return null");
    browser.click("#apply");
    let after = browser
        .until(
            "only label 4",
            "const rows = [...document.querySelectorAll('#events tbody tr')]; return rows.length > 0 && rows.every(r => r.dataset.label === '4') && rows.length",
        )
        .as_u64()
        .unwrap();
    assert!(after < before, "the filter narrowed {before} rows to {after}");
    // The heard words are on the keyword pipeline's timeline.
    browser.until(
        "words on the timeline",
        "return document.querySelectorAll('section[data-pipeline=keywords] .timeline rect').length >= 3",
    );

    // The objects of the video have clips: the history lists them and the page plays them.
    let clip = eventually("a clip in the history", || {
        let all = get_json(&format!("{url}/api/events?pipeline=yard&limit=1000"), &[("Authorization", &bearer)]);
        all["events"].as_array().unwrap().iter().find(|e| e["event"] == "clip").cloned()
    });
    assert!(dir.join("clips/yard").join(clip["clip"].as_str().unwrap()).is_file(), "{clip}");
    browser.js("document.querySelector('#label').value = ''; return null");
    browser.click("#apply");
    let shown = browser.until(
        "a clip that plays",
        "const v = document.querySelector('#events video.clip'); return v && v.readyState >= 1 && [v.title, v.duration]",
    );
    let (file, duration) = (shown[0].as_str().unwrap(), shown[1].as_f64().unwrap());
    let all = get_json(&format!("{url}/api/events?pipeline=yard&limit=1000"), &[("Authorization", &bearer)]);
    let row = all["events"].as_array().unwrap().iter().find(|e| e["clip"] == file).expect("the clip shown is listed");
    let said = row["duration_s"].as_f64().unwrap();
    assert!((duration - said).abs() < 0.3, "Chromium's {duration} s vs {said} s for {file}");
    println!("clip {file} plays in Chromium: {duration:.2} s (said {said:.2} s)");

    // A restart keeps the history: the first run's newest event is still listed after it. It
    // ends the sessions (they are held in memory): the browser logs in again.
    let events = get_json(&format!("{url}/api/events?limit=1"), &[("Authorization", &bearer)]);
    let first_run_newest = events["events"][0]["id"].as_i64().unwrap();
    let (status, stdout, stderr) = daemon.interrupt();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(token) && !stderr.contains(token), "the token is never printed");
    let (daemon, url) = daemon_with_page(&dir, &config);
    browser.go(&format!("{url}/"));
    browser.until("the login form after a restart", "return !!document.querySelector('input[name=token]')");
    browser.type_into("input[name=token]", token);
    browser.click("button[type=submit]");
    browser.until("the page again", "return document.querySelector('#device')?.textContent.includes('Bench camera')");
    browser.until(
        "the first run's events",
        &format!("return !!document.querySelector('#events tbody tr[data-id=\"{first_run_newest}\"]')"),
    );
    // Log out: the button ends the session; the page asks for the token again.
    browser.until("the log out button", "return !document.querySelector('#logout').hidden");
    browser.click("#logout button");
    browser.until("the login form after logging out", "return !!document.querySelector('input[name=token]')");
    browser.go(&format!("{url}/"));
    browser.until("still logged out", "return !!document.querySelector('input[name=token]')");
    let (status, stdout, stderr) = daemon.interrupt();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(token) && !stderr.contains(token), "the token is never printed");
}

#[test]
fn healthz_answers_503_naming_a_pipeline_that_makes_no_progress() {
    let dir = scratch("web-healthz");
    let r = root();
    // One frame every 3 s with stall_s = 1: between frames the pipeline counts as stalled.
    let config = dir.join("lepton.toml");
    std::fs::write(
        &config,
        format!(
            r#"[device]
id = "slow-cam"
stall_s = 1

[web]
listen = "127.0.0.1:0"
database = "history.db"

[[pipeline]]
name = "slow"
model = "{r}/models/detector/model.int8.onnx"
[pipeline.source]
kind = "images"
path = "{r}/models/detector/demo/images"
fps = 0.33
loop = true
"#,
            r = r.display()
        ),
    )
    .unwrap();
    let (daemon, url) = daemon_with_page(&dir, &config);
    let wait = |want: u16| {
        eventually(&format!("/healthz answering {want}"), || {
            let (code, _, body) = http("GET", &format!("{url}/healthz"), &[], b"");
            (code == want).then(|| String::from_utf8_lossy(&body).into_owned())
        })
    };
    let body = wait(503);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"status": "stalled", "pipelines": ["slow"]}));
    eventually("lepton_pipeline_stalled 1", || {
        let text = String::from_utf8(http("GET", &format!("{url}/metrics"), &[], b"").2).unwrap();
        (metric(&text, "lepton_pipeline_stalled{pipeline=\"slow\"}") == 1.0).then_some(())
    });
    // The next frame moves it again.
    wait(200);
    let (status, stdout, stderr) = daemon.interrupt();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("pipeline slow: nothing processed for"), "logged by name: {stderr}");
}

/// `onnx` with `manifest` embedded as its `lepton.manifest` metadata, written the way any ONNX
/// tool writes it (`ModelProto.metadata_props`, field 14, appended): a model file made without
/// lepton-convert's checks. `onnx` must have no manifest yet.
fn with_manifest(onnx: &[u8], manifest: &str) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, (number << 3) | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut entry = vec![];
    field(&mut entry, 1, b"lepton.manifest");
    field(&mut entry, 2, manifest.as_bytes());
    let mut out = onnx.to_vec();
    field(&mut out, 14, &entry);
    out
}

#[test]
fn a_model_whose_labels_hold_markup_is_refused_at_load_naming_the_file_and_the_label() {
    let dir = scratch("web-evil-labels");
    let r = root();
    // The detector with a label that would be script in a page that put labels into HTML.
    let manifest = std::fs::read_to_string(r.join("models/detector/manifest.toml")).unwrap();
    let evil = "<img src=x onerror=alert(document.cookie)>";
    let manifest = manifest.replace("\"1\",", &format!("\"{evil}\","));
    assert!(manifest.contains(evil));
    let raw = std::fs::read(r.join("models/detector/model.raw.onnx")).unwrap();
    let model = dir.join("evil.onnx");
    std::fs::write(&model, with_manifest(&raw, &manifest)).unwrap();
    let config = dir.join("lepton.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"cam\"\n\n[web]\nlisten = \"127.0.0.1:0\"\ndatabase = \"history.db\"\n\n[[pipeline]]\nname = \"meter\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"images\"\npath = \"{}/models/detector/demo/images\"\n",
            model.display(),
            r.display()
        ),
    )
    .unwrap();
    // The daemon (check and run) refuses it, naming the file, the label's index and the character
    // at fault.
    for (exe, args) in [
        ("lepton", vec!["check", "--config", config.to_str().unwrap()]),
        ("lepton", vec!["run", "--config", config.to_str().unwrap()]),
    ] {
        let out = Command::new(bin(exe)).args(&args).current_dir(&dir).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{exe} {args:?} accepted it:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("evil.onnx") && stderr.contains("labels[1]") && stderr.contains("'<'"),
            "{exe} {args:?}: the error names the file, the label and the character:\n{stderr}"
        );
        assert!(!stdout.contains("device page on"), "{exe}: no page served:\n{stdout}");
    }
    // And pack refuses to embed it.
    std::fs::write(dir.join("evil.toml"), &manifest).unwrap();
    let out = Command::new(bin("lepton-convert"))
        .args(["pack", r.join("models/detector/model.raw.onnx").to_str().unwrap(), "--manifest"])
        .arg(dir.join("evil.toml"))
        .arg("-o")
        .arg(dir.join("packed.onnx"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("evil.toml") && stderr.contains("labels[1]"), "{stderr}");
    assert!(!dir.join("packed.onnx").exists());
}

/// The schema of the daemon's event history (web/history.rs), to write what an older version
/// stored into it.
const HISTORY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS pictures (id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
     CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, pipeline TEXT NOT NULL,
         label TEXT NOT NULL, event TEXT NOT NULL, score REAL NOT NULL, duration_s REAL,
         picture INTEGER REFERENCES pictures(id));";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn the_page_shows_outside_strings_as_text_and_fits_the_keyword_timeline() {
    let dir = scratch("web-text");
    let r = root();
    // Strings from outside the code that reach the page: a recording's file name, and an event
    // label an older version stored in the history (labels are checked at load now, but a
    // history outlives versions). Each would run script if the page made HTML of it.
    let file = "<img src=x onerror=window.pwnedByFile=1>.wav";
    let label = "<img src=x onerror=window.pwnedByLabel=1>";
    std::fs::copy(r.join("models/keywords/demo.wav"), dir.join(file)).unwrap();
    let db = rusqlite::Connection::open(dir.join("history.db")).unwrap();
    db.execute_batch(HISTORY_SCHEMA).unwrap();
    let t = now_ms() - 1500;
    for (ts, event, duration) in [(t, "start", None), (t + 700, "end", Some(0.7))] {
        db.execute(
            "INSERT INTO events (ts_ms, pipeline, label, event, score, duration_s) VALUES (?1, 'keywords', ?2, ?3, 0.9, ?4)",
            rusqlite::params![ts, label, event, duration],
        )
        .unwrap();
    }
    drop(db);
    // A camera URL with credentials and a password in its query: the page shows neither. (Nothing
    // listens there: the pipeline waits for its camera.)
    let cam_port = free_port();
    let cam = format!("http://viewer:hunter2@127.0.0.1:{cam_port}/snapshot.cgi?user=viewer&pwd=hunter3");
    let config = dir.join("lepton.toml");
    std::fs::write(
        &config,
        format!(
            r#"[device]
id = "text-cam"
name = "Bench <b>camera</b> & co"

[web]
listen = "127.0.0.1:0"
database = "history.db"

[[pipeline]]
name = "keywords"
model = "{r}/models/keywords/model.int8.onnx"
[pipeline.source]
kind = "wav"
path = "{file}"

[[pipeline]]
name = "door"
model = "{r}/models/detector/model.int8.onnx"
[pipeline.source]
kind = "http"
url = "{cam}"
"#,
            r = r.display()
        ),
    )
    .unwrap();
    let (daemon, url) = daemon_with_page(&dir, &config);
    let pipelines = get_json(&format!("{url}/api/pipelines"), &[]);
    let text = pipelines.to_string();
    assert!(!text.contains("hunter2") && !text.contains("hunter3"), "no credentials in the API: {text}");
    let source = |name: &str| {
        pipelines.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["source"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(source("keywords"), format!("wav {file}"));
    assert_eq!(source("door"), format!("http://127.0.0.1:{cam_port}/snapshot.cgi?…"));

    let browser = Browser::start(&dir.join("chromium"));
    browser.go(&format!("{url}/"));
    browser.until(
        "the words and the old label on the timeline",
        "const s = document.querySelector('section[data-pipeline=keywords] .timeline svg'); return s && s.querySelectorAll('rect').length >= 4",
    );
    // Let the event list, the label filter and the timeline refresh with everything.
    browser
        .until("the old label in the event list", "return document.querySelectorAll('#events tbody tr').length >= 4");
    std::thread::sleep(Duration::from_secs(3));
    let seen = browser.js(
        r#"const card = (n) => document.querySelector(`section[data-pipeline=${n}]`);
        return {
          pwned: [window.pwnedByFile, window.pwnedByLabel].filter((v) => v !== undefined).length,
          images: document.querySelectorAll('img[src="x"]').length,
          device: document.querySelector('#device').textContent,
          bold: document.querySelectorAll('header b').length,
          keywords: card('keywords').querySelector('h2 small').textContent,
          door: card('door').querySelector('h2 small').textContent,
          timeline: [...card('keywords').querySelectorAll('.timeline text, .timeline title')].map((t) => t.textContent).join('\n'),
          list: [...document.querySelectorAll('#events tbody tr')].map((r) => r.dataset.label),
          options: [...document.querySelectorAll('#label option')].map((o) => o.value),
          page: document.body.innerText,
        }"#,
    );
    assert_eq!(seen["pwned"], 0, "no script ran: {seen}");
    assert_eq!(seen["images"], 0, "no element was made of data: {seen}");
    assert_eq!(seen["bold"], 0, "{seen}");
    assert_eq!(seen["device"], "Bench <b>camera</b> & co (text-cam)", "{seen}");
    assert_eq!(seen["keywords"], format!("keyword · wav {file}"), "{seen}");
    assert_eq!(seen["door"], format!("detect · http://127.0.0.1:{cam_port}/snapshot.cgi?…"), "{seen}");
    assert!(seen["timeline"].as_str().unwrap().contains(label), "the label as text on the timeline: {seen}");
    assert!(seen["list"].as_array().unwrap().iter().any(|l| l == label), "{seen}");
    assert!(seen["options"].as_array().unwrap().iter().any(|l| l == label), "{seen}");
    let page = seen["page"].as_str().unwrap();
    assert!(page.contains(file) && page.contains(label), "{page}");
    assert!(!page.contains("hunter2") && !page.contains("hunter3"), "{page}");

    // The timeline: its bars span the width (the axis fits the words' time span), no bar, word
    // or axis label covers another, and none is cut off at an edge.
    let layout = browser.js(
        r#"const svg = document.querySelector('section[data-pipeline=keywords] .timeline svg');
        const W = svg.viewBox.baseVal.width;
        const boxes = [...svg.querySelectorAll('rect, text')].map((e) => { const b = e.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height, e.tagName + ' ' + e.textContent]; });
        const bars = boxes.filter((b) => b[4].startsWith('rect'));
        const lo = Math.min(...bars.map((b) => b[0])), hi = Math.max(...bars.map((b) => b[2]));
        const hits = [];
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
          const [a, b] = [boxes[i], boxes[j]];
          if (a[0] < b[2] - 0.5 && b[0] < a[2] - 0.5 && a[1] < b[3] - 0.5 && b[1] < a[3] - 0.5) hits.push(a[4] + ' / ' + b[4]);
        }
        const out = boxes.filter((b) => b[0] < -0.5 || b[2] > W + 0.5).map((b) => b[4]);
        return { fill: (hi - lo) / W, hits, out, n: bars.length };"#,
    );
    let artefacts = root().join("target/tmp/artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    browser.screenshot().save(artefacts.join("device-page-text.png")).unwrap();
    assert!(layout["fill"].as_f64().unwrap() > 0.8, "the words span the timeline: {layout}");
    assert_eq!(layout["hits"], json!([]), "nothing on the timeline covers anything else: {layout}");
    assert_eq!(layout["out"], json!([]), "everything on the timeline is inside it: {layout}");
    let (status, stdout, stderr) = daemon.interrupt();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stderr}");
}

/// The session cookie a response sets: its value and attributes.
fn set_cookie(headers: &[(String, String)]) -> (String, String) {
    let c = headers.iter().find(|(k, _)| k == "set-cookie").map(|(_, v)| v.clone()).unwrap_or_default();
    let value = c.strip_prefix("lepton_session=").and_then(|v| v.split(';').next()).unwrap_or("").to_string();
    (value, c)
}

#[test]
fn login_sessions_rotate_expire_end_at_logout_and_failed_logins_are_limited() {
    let dir = scratch("web-sessions");
    let token = "c0ffee-lepton-session-token-0123456789";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let r = root();
    // Sessions of 0.00005 days (4.3 s), the cookie marked Secure (TLS by a reverse proxy).
    let config = dir.join("lepton.toml");
    std::fs::write(
        &config,
        format!(
            r#"[device]
id = "session-cam"

[web]
listen = "127.0.0.1:0"
database = "history.db"
token_file = "token"
session_days = 0.00005
secure_cookie = true

[[pipeline]]
name = "keywords"
model = "{r}/models/keywords/model.int8.onnx"
[pipeline.source]
kind = "wav"
path = "{r}/models/keywords/demo.wav"
"#,
            r = r.display()
        ),
    )
    .unwrap();
    let (daemon, url) = daemon_with_page(&dir, &config);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let login = |t: &str, extra: &[(&str, &str)]| {
        let mut h = form.to_vec();
        h.extend_from_slice(extra);
        http("POST", &format!("{url}/login"), &h, format!("token={t}").as_bytes())
    };
    let status_with = |cookie: &str| {
        http("GET", &format!("{url}/api/status"), &[("Cookie", &format!("lepton_session={cookie}"))], b"").0
    };

    // A login sets a random session id (not derived from the token), HttpOnly, SameSite=Strict,
    // Secure, expiring with the session.
    let (code, headers, _) = login(token, &[]);
    assert_eq!(code, 303);
    let (a, attrs) = set_cookie(&headers);
    assert!(a.len() == 64 && a.chars().all(|c| c.is_ascii_hexdigit()), "{attrs}");
    for want in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=4", "Path=/"] {
        assert!(attrs.split("; ").any(|p| p == want), "{want} in {attrs}");
    }
    assert_eq!(status_with(&a), 200);
    assert_eq!(status_with("0000000000000000000000000000000000000000000000000000000000000000"), 401);
    // Logging in again rotates: a new id, and the one the browser held ends.
    let (_, headers, _) = login(token, &[("Cookie", &format!("lepton_session={a}"))]);
    let (b, _) = set_cookie(&headers);
    assert_ne!(a, b, "a new session id at each login");
    assert_eq!(status_with(&b), 200);
    assert_eq!(status_with(&a), 401, "the previous session ended");
    // Log out ends the session and clears the cookie.
    let (code, headers, _) = http("POST", &format!("{url}/logout"), &[("Cookie", &format!("lepton_session={b}"))], b"");
    assert_eq!(code, 303);
    let (cleared, attrs) = set_cookie(&headers);
    assert!(cleared.is_empty() && attrs.contains("Max-Age=0"), "{attrs}");
    assert_eq!(status_with(&b), 401, "logged out");
    // A session expires.
    let (_, headers, _) = login(token, &[]);
    let (c, _) = set_cookie(&headers);
    assert_eq!(status_with(&c), 200);
    std::thread::sleep(Duration::from_millis(4600));
    assert_eq!(status_with(&c), 401, "expired after session_days");

    // Failed logins: 5 per client per minute, then 429 with Retry-After, for the form and the
    // bearer token alike, even with the right token; other clients are not held up.
    for k in 0..5 {
        let (code, _, body) = login("wrong-token-0123456789", &[]);
        assert_eq!(code, 401, "failure {k}: {}", String::from_utf8_lossy(&body));
    }
    for (what, (code, headers, body)) in [
        ("wrong", login("wrong-token-0123456789", &[])),
        ("right", login(token, &[])),
        ("bearer", http("GET", &format!("{url}/api/status"), &[("Authorization", &format!("Bearer {token}"))], b"")),
    ] {
        let body = String::from_utf8_lossy(&body);
        assert_eq!(code, 429, "{what}: {body}");
        let wait: u64 = headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.parse().unwrap()).unwrap();
        assert!((1..=60).contains(&wait), "{what}: Retry-After {wait}");
        assert!(body.contains("Too many failed logins"), "{what}: {body}");
        assert!(set_cookie(&headers).0.is_empty(), "{what}: no session");
    }
    // Behind a reverse proxy on this machine, the client is the forwarded address.
    let (code, headers, _) = login(token, &[("X-Forwarded-For", "203.0.113.7")]);
    assert_eq!(code, 303, "another client logs in");
    assert_eq!(status_with(&set_cookie(&headers).0), 200);
    let (status, stdout, stderr) = daemon.interrupt();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(token) && !stderr.contains(token), "the token is never printed");
    assert!(stderr.contains("a login from 127.0.0.1 with a wrong token"), "{stderr}");
}
