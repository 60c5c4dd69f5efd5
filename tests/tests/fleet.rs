//! A fleet on a clustered broker: `lepton` daemons publish through a real three-node rmqtt
//! cluster (Raft, shared subscriptions), three `lepton-watch --group g --store postgres://…`
//! consumers share the messages into a real PostgreSQL, and the node that half of the devices
//! use is killed mid-run. Every device must fail over, every detection must be stored exactly
//! once (per device, seq 0..N without a gap), and every consumer must take a share. Run once
//! with MQTT 5 devices and once with MQTT 3.1.1 devices; the figures go to
//! target/tmp/artefacts/fleet-*.json.
//!
//! LEPTON_FLEET_DEVICES sets the number of daemons (default 100).

use lepton_e2e::{bin, root, scratch, Cluster, Postgres, Running};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The two runs share the machine's two cores: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn devices() -> usize {
    std::env::var("LEPTON_FLEET_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

fn config(dir: &Path, device: &str, hosts: &[u16], protocol: &str, frames: &Path) -> std::path::PathBuf {
    let hosts: Vec<String> = hosts.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        r#"
[device]
id = "{device}"
stats_interval_s = 5
[mqtt]
hosts = [{hosts}]
protocol = {protocol}
reconnect_max_s = 2
queue_capacity = 10000
[[pipeline]]
name = "digits"
model = "{model}"
threshold = 0.5
print = false
[pipeline.source]
kind = "images"
path = "{frames}"
fps = 2
loop = true
"#,
        hosts = hosts.join(", "),
        model = root().join("models/digits/model.onnx").display(),
        frames = frames.display()
    );
    let path = dir.join(format!("{device}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fleet(protocol: &str, name: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = devices();
    let dir = scratch(&format!("fleet-{name}"));
    let frames = root().join("models/digits/samples");
    let lepton = bin("lepton");
    let watch = bin("lepton-watch");
    let mut cluster = Cluster::start(name, 3);
    // Node 1 founded the Raft cluster (its leader); node 2 is the one killed.
    let (n1, n2, n3) = (cluster.ports[0], cluster.ports[1], cluster.ports[2]);
    let db = Postgres::start(name);

    // Three consumers in one group, on the nodes that stay up (each knows every node).
    let consumers: Vec<Running> = [[n1, n3, n2], [n3, n1, n2], [n1, n3, n2]]
        .iter()
        .map(|hosts| {
            let mut c = Command::new(&watch);
            for h in hosts {
                c.arg("--host").arg(format!("127.0.0.1:{h}"));
            }
            c.args(["--group", "g", "--store", &db.url(), "--quiet"]);
            Running::start(c)
        })
        .collect();
    for c in &consumers {
        wait_stderr(c, "watching $share/g/lepton/+/#", 60);
    }

    // Half of the devices start on node 2, the other half on node 3.
    let started = Instant::now();
    let mut daemons: Vec<(String, bool, Running)> = (0..n)
        .map(|i| {
            let device = format!("dev{i:03}");
            let on_node2 = i % 2 == 0;
            let hosts = if on_node2 { [n2, n3, n1] } else { [n3, n1, n2] };
            let cfg = config(&dir, &device, &hosts, protocol, &frames);
            let mut c = Command::new(&lepton);
            c.arg("run").arg("--config").arg(&cfg).env("RUST_LOG", "info");
            (device, on_node2, Running::start(c))
        })
        .collect();
    for (_, _, d) in &daemons {
        wait_stderr(d, "MQTT: connected to", 120);
    }
    let all_connected = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let rss: Vec<u64> = daemons.iter().map(|(_, _, d)| rss_kib(d.id())).collect();

    // Node 2 goes: its devices fail over to node 3.
    cluster.kill(2);
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    for (_, _, d) in &daemons {
        let _ = Command::new("kill").arg("-INT").arg(d.id().to_string()).status();
    }
    let mut published = std::collections::HashMap::new();
    let mut failovers = vec![];
    let mut delivered = 0u64;
    let mut replayed = 0u64;
    for (device, on_node2, d) in daemons.drain(..) {
        let (status, stdout, stderr) = d.wait();
        std::fs::write(dir.join(format!("{device}.log")), format!("{stdout}\n{stderr}")).unwrap();
        assert!(status.success(), "{device}: {status}\n{stdout}\n{stderr}");
        let p: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("digits: "))
            .and_then(|l| l.split(';').next()?.split(", ").find_map(|f| f.strip_suffix(" published")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{device}: no `digits: … published` summary\n{stdout}\n{stderr}"));
        assert!(p > 0, "{device} published nothing");
        delivered += stdout
            .lines()
            .find_map(|l| l.strip_prefix("MQTT: ")?.split_once(" messages delivered")?.0.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{device}: no `MQTT: N messages delivered`\n{stdout}"));
        published.insert(device.clone(), p);
        let failover = stderr.lines().find_map(|l| {
            let (_, rest) = l.split_once("first message acknowledged ")?;
            rest.split_once(" ms")?.0.parse::<f64>().ok()
        });
        replayed += stderr
            .lines()
            .find_map(|l| l.split_once(" queued message(s), ")?.1.split_once(" of them")?.0.parse::<u64>().ok())
            .unwrap_or(0);
        if on_node2 {
            let ms = failover.unwrap_or_else(|| panic!("{device} (on node 2) did not fail over:\n{stderr}"));
            assert!(stderr.contains(&format!("failed over from 127.0.0.1:{n2} to 127.0.0.1:{n3}")), "{stderr}");
            failovers.push(ms);
        } else {
            assert!(failover.is_none(), "{device} (on node 3) failed over:\n{stderr}");
        }
    }
    let stopped = started.elapsed();
    let total: u64 = published.values().sum();

    // Every message reaches the store, once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored_all = loop {
        let rows: u64 = db.query("SELECT count(*) FROM lepton_messages").parse().unwrap();
        if rows == total {
            break started.elapsed();
        }
        assert!(rows < total, "{rows} rows for {total} messages published");
        if Instant::now() > deadline {
            let mut missing = vec![];
            for (device, p) in &published {
                let seqs = db.query(&format!("SELECT seq FROM lepton_messages WHERE device = '{device}' ORDER BY seq"));
                let have: std::collections::HashSet<u64> = seqs.lines().filter_map(|l| l.parse().ok()).collect();
                missing.extend((0..*p).filter(|s| !have.contains(s)).map(|s| format!("{device} #{s}")));
            }
            panic!("{rows} of {total} messages stored after 60 s; missing: {missing:?}\nlogs in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut summaries = vec![];
    for c in consumers {
        let (status, _, stderr) = c.interrupt();
        assert!(status.success(), "lepton-watch: {status}\n{stderr}");
        let line = stderr.lines().find(|l| l.starts_with("stored ")).unwrap_or_else(|| panic!("{stderr}")).to_string();
        summaries.push(line);
    }
    let per_device =
        db.query("SELECT device, count(*), min(seq), max(seq) FROM lepton_messages GROUP BY device ORDER BY device");
    let mut seen = 0;
    for row in per_device.lines() {
        let f: Vec<&str> = row.split('|').collect();
        let want = published[f[0]];
        assert_eq!(
            (f[1].parse::<u64>().unwrap(), f[2], f[3].parse::<u64>().unwrap()),
            (want, "0", want - 1),
            "{}: rows, first and last seq (unique key: no duplicate; count = last + 1: no gap)",
            f[0]
        );
        seen += 1;
    }
    assert_eq!(seen, n, "every device has rows");
    let shares = db.query("SELECT consumer, count(*) FROM lepton_messages GROUP BY consumer ORDER BY 2");
    let shares: Vec<u64> = shares.lines().map(|l| l.split('|').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(shares.len(), 3, "each of the three consumers stored a share: {shares:?}");
    assert!(shares.iter().all(|&s| s > 0), "{shares:?}");
    // The digits model classifies: each message carries at least one labelled object.
    let objects: u64 = db.query("SELECT count(*) FROM lepton_detections WHERE label <> ''").parse().unwrap();
    assert!(objects >= total, "every message's objects are stored: {objects} for {total} messages");

    failovers.sort_by(f64::total_cmp);
    let mut rss_sorted = rss.clone();
    rss_sorted.sort();
    let figures = serde_json::json!({
        "protocol": protocol.trim_matches('"'), "devices": n, "consumers": 3, "broker": "rmqtt 0.24, 3 nodes, Raft",
        "detection_messages": total,
        "messages_delivered": delivered,
        "publish_window_s": stopped.as_secs_f64(),
        "messages_per_s": delivered as f64 / stopped.as_secs_f64(),
        "detections_per_s": total as f64 / stopped.as_secs_f64(),
        "rows_per_s": total as f64 / stored_all.as_secs_f64(),
        "all_connected_s": all_connected.as_secs_f64(),
        "failed_over": failovers.len(),
        "replayed_after_failover": replayed,
        "failover_ms_p50": percentile(&failovers, 0.5),
        "failover_ms_p99": percentile(&failovers, 0.99),
        "failover_ms_max": failovers.last(),
        "kill_to_stop_s": killed.elapsed().as_secs_f64(),
        "rss_kib_p50": rss_sorted[rss_sorted.len() / 2],
        "rss_kib_max": rss_sorted.last(),
        "consumer_shares": shares,
        "consumer_summaries": summaries,
    });
    eprintln!("{figures:#}");
    let out = root().join("target/tmp/artefacts");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("fleet-{name}.json")), format!("{figures:#}")).unwrap();
}

/// Waits up to `secs` for a stderr line containing `needle`.
fn wait_stderr(r: &Running, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !r.stderr_text().contains(needle) {
        assert!(Instant::now() < deadline, "no `{needle}` within {secs} s:\n{}\n{}", r.stdout_text(), r.stderr_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mqtt5_devices_fail_over_and_every_detection_is_stored_once() {
    fleet("5", "v5");
}

#[test]
fn mqtt311_devices_fail_over_and_every_detection_is_stored_once() {
    fleet("\"3.1.1\"", "v311");
}
