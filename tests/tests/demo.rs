//! `lepton run` with no arguments: the bundled demo, as a newcomer runs it.

use lepton_e2e::{bin, root, run, scratch, text, Running};

/// The digits of a demo frame's label file, left to right.
fn reading(frame: &str) -> String {
    let stem = frame.trim_end_matches(".jpg");
    let labels = std::fs::read_to_string(root().join(format!("models/detector/demo/labels/{stem}.txt"))).unwrap();
    let mut digits: Vec<(f32, String)> = labels
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v[1].parse().unwrap(), v[0].to_string())
        })
        .collect();
    digits.sort_by(|a, b| a.0.total_cmp(&b.0));
    digits.into_iter().map(|d| d.1).collect()
}

#[test]
fn lepton_run_without_arguments_reads_the_meter_and_hears_the_keywords() {
    // The demo keeps its device page up after the media end, until Ctrl-C.
    let state = scratch("demo-state");
    let mut cmd = std::process::Command::new(bin("lepton"));
    cmd.arg("run").env("XDG_STATE_HOME", &state).current_dir(root());
    let mut demo = Running::start(cmd);
    demo.wait_for("the device page stays up on http://127.0.0.1:", 120);
    let (status, stdout, stderr) = demo.interrupt();
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");
    assert!(stdout.contains("embedded MQTT broker on 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("device page on http://127.0.0.1:"), "{stdout}");
    assert!(state.join("lepton/demo.db").is_file(), "the demo's event history");

    // "meter #0     frame 0     frame000.jpg   0 0.999 [78,88,109,144]  4 0.942 [...] ...  (12.45 ms)"
    let frames: Vec<&str> = stdout.lines().filter(|l| l.starts_with("meter #")).collect();
    let labelled = std::fs::read_dir(root().join("models/detector/demo/labels")).unwrap().count();
    for line in &frames {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let digits: String =
            fields[5..].chunks(3).filter(|c| c.len() == 3 && c[2].starts_with('[')).map(|c| c[0]).collect();
        assert_eq!(digits, reading(fields[4]), "{line}");
        assert!(line.ends_with(" ms)"), "{line}");
    }
    // Every frame with digits is read; the photo without digits publishes nothing.
    let with_digits = (0..labelled).filter(|i| !reading(&format!("frame{i:03}.jpg")).is_empty()).count();
    assert_eq!(frames.len(), with_digits, "{stdout}");

    // The keywords spoken in the recording, in order (models/keywords/demo.txt lists them).
    let spoken = std::fs::read_to_string(root().join("models/keywords/demo.txt")).unwrap();
    let spoken: Vec<&str> = spoken.split_whitespace().collect();
    let heard: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("keywords #")).map(|l| l.split_whitespace().nth(5).unwrap()).collect();
    assert_eq!(heard, spoken, "{stdout}");
    // Every message went through the embedded broker and was acknowledged.
    assert!(stdout.contains("0 dropped (queue full), 0 undelivered at exit"), "{stdout}");
}

#[test]
fn help_teaches_the_demo() {
    let (stdout, _) = text(&run("lepton", &["run", "--help"]));
    assert!(stdout.contains("bundled demo"), "{stdout}");
    let out = run("lepton", &["fly"]);
    assert!(!out.status.success());
}
