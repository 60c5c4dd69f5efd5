//! `lepton run` with no arguments: the bundled demo, as a newcomer runs it.

use lepton_e2e::{run, text};

#[test]
fn lepton_run_without_arguments_classifies_every_bundled_picture() {
    let out = run("lepton", &["run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    let frames: Vec<&str> = stdout.lines().filter(|l| l.starts_with("digits #")).collect();
    assert_eq!(frames.len(), 10, "{stdout}");
    for line in frames {
        // "digits #3     frame 3     frame-03-digit-2.png      2 0.800  (0.05 ms)"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let truth = fields[4].trim_end_matches(".png").rsplit('-').next().unwrap();
        assert_eq!(fields[5], truth, "{line}");
        let score: f32 = fields[6].parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line}");
        assert!(line.ends_with(" ms)"), "{line}");
    }
    assert!(stdout.contains("embedded MQTT broker on 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("digits: 10 processed, 0 dropped, 0 failed, 10 published"), "{stdout}");
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
