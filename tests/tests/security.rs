//! Signed models end to end: `lepton-convert keygen`, `sign` and `verify`, and a daemon with
//! `[security] require_signed = true` that refuses an unsigned model, one signed by a key it does
//! not trust, and one changed after signing, at `check` and at `run` (exit 2, nothing published),
//! and runs the one its owner signed. The watchdog's systemd protocol is in `daemon.rs`.

use lepton_e2e::{bin, root, scratch, text, Mosquitto, Subscriber};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn convert(args: &[&str]) -> Output {
    Command::new(bin("lepton-convert")).args(args).output().expect("running lepton-convert")
}

fn lepton(args: &[&str]) -> Output {
    Command::new(bin("lepton")).args(args).output().expect("running lepton")
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let base = dir.join("keys").join(name);
    let out = convert(&["keygen", "-o", base.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("mode 0600"), "{}", text(&out).0);
    base
}

fn sign(model: &Path, key: &Path) {
    let out = convert(&["sign", model.to_str().unwrap(), "--key", key.with_extension("key").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
}

fn config(dir: &Path, port: u16, security: &str) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for f in ["frame-00-digit-6.png", "frame-01-digit-4.png"] {
        std::fs::copy(root().join("models/digits/samples").join(f), frames.join(f)).unwrap();
    }
    let path = dir.join("lepton.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[device]
id = "signed"
stats_interval_s = 0
[mqtt]
host = "127.0.0.1"
port = {port}
[security]
{security}
[[pipeline]]
name = "digits"
model = "model.onnx"
print = false
[pipeline.source]
kind = "images"
path = "frames"
"#
        ),
    )
    .unwrap();
    path
}

/// `check` and `run` both refuse with exit 2 and `reason` in the message naming the model; the
/// broker sees nothing from the device.
fn refused(config: &Path, port: u16, reason: &str) {
    let c = config.to_str().unwrap();
    let out = lepton(&["check", "--config", c]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model.onnx") && stderr.contains(reason), "check: {stderr}");
    // -R: retained messages of an earlier run are not news.
    let sub = Subscriber::start_with(port, "#", &format!("refused-{}", reason.len()), &["-R"]);
    let out = lepton(&["run", "--config", c]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model.onnx") && stderr.contains(reason), "run: {stderr}");
    let msgs = sub.wait_for(Duration::from_millis(500), |m| !m.is_empty());
    assert!(msgs.is_empty(), "a refused model must not bring the device online: {:?}", msgs.first().map(|m| &m.0));
}

#[test]
fn a_daemon_that_requires_signed_models_runs_only_what_a_trusted_key_signed() {
    let dir = scratch("security-daemon");
    let broker = Mosquitto::start("security");
    let owner = keygen(&dir, "owner");
    let stranger = keygen(&dir, "stranger");
    let model = dir.join("model.onnx");
    std::fs::copy(root().join("models/digits/model.onnx"), &model).unwrap();
    // Trusted keys are relative to the config, like every path in it.
    let config = config(&dir, broker.port, "trusted_keys = [\"keys/owner.pub\"]\nrequire_signed = true");

    refused(&config, broker.port, "not signed");
    sign(&model, &stranger);
    refused(&config, broker.port, "not among the trusted keys");

    sign(&model, &owner);
    let out = convert(&["verify", model.to_str().unwrap(), "--key", owner.with_extension("pub").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(text(&out).0.contains("good signature"), "{}", text(&out).0);
    let out = lepton(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let sub = Subscriber::start(broker.port, "lepton/signed/digits/detections", "signed-ok");
    let out = lepton(&["run", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(sub.wait_for(Duration::from_secs(5), |m| m.len() >= 2).len(), 2, "both frames published");

    // One byte changed after signing (a protobuf field appended: the model still loads).
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.extend_from_slice(&[0x50, 0x00]);
    std::fs::write(&model, bytes).unwrap();
    refused(&config, broker.port, "changed after signing");
    let out = convert(&["verify", model.to_str().unwrap(), "--key", owner.with_extension("pub").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
    assert!(text(&out).1.contains("changed after signing"), "{}", text(&out).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn without_require_signed_an_unsigned_model_runs_but_a_bad_signature_is_still_refused() {
    let dir = scratch("security-optional");
    let broker = Mosquitto::start("security-optional");
    keygen(&dir, "owner");
    let stranger = keygen(&dir, "stranger");
    std::fs::copy(root().join("models/digits/model.onnx"), dir.join("model.onnx")).unwrap();
    let config = config(&dir, broker.port, "trusted_keys = [\"keys/owner.pub\"]");
    let out = lepton(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "unsigned is allowed without require_signed: {}", text(&out).1);
    sign(&dir.join("model.onnx"), &stranger);
    refused(&config, broker.port, "not among the trusted keys");
    // require_signed with no key at all is a config error naming both keys.
    let bad = self::config(&dir, broker.port, "require_signed = true");
    let out = lepton(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("security.require_signed") && stderr.contains("security.trusted_keys"), "{stderr}");
    // A private key where a public one belongs.
    let wrong = self::config(&dir, broker.port, "trusted_keys = [\"keys/owner.key\"]");
    let out = lepton(&["check", "--config", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("owner.key") && stderr.contains("private key"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn keygen_never_replaces_a_key_and_sign_names_a_bad_key_file() {
    let dir = scratch("security-keys");
    let owner = keygen(&dir, "owner");
    let out = convert(&["keygen", "-o", owner.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("owner.key") && text(&out).1.contains("never replaced"), "{}", text(&out).1);
    let model = root().join("models/digits/model.lpm");
    let out = convert(&["sign", model.to_str().unwrap(), "--key", owner.with_extension("pub").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("owner.pub") && text(&out).1.contains("private key"), "{}", text(&out).1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 25: `lepton devices` captures the audio libraries' chatter in a private scratch file. A
/// symlink planted where the old, predictable name was (`$TMPDIR/lepton-devices-PID.log`, the
/// PID known in advance: the shell's own, kept by `exec`) is neither followed nor clobbered, and
/// nothing of ours is left in the temporary folder.
#[test]
fn lepton_devices_never_follows_a_planted_symlink() {
    let dir = scratch("security-devices");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "the user's file\n").unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ln -s \"$1\" \"$TMPDIR/lepton-devices-$$.log\" && exec \"$2\" devices")
        .args(["sh", precious.to_str().unwrap(), bin("lepton").to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .output()
        .expect("running lepton devices");
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("cameras") && text(&out).0.contains("microphones"), "{}", text(&out).0);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "the user's file\n", "followed and clobbered");
    // Only our own names count: the audio libraries may keep folders of theirs here (libpulse
    // makes `pulse-*` when XDG_RUNTIME_DIR is unset, as on CI machines).
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with("lepton"))
        .collect();
    assert_eq!(left.len(), 1, "only the planted link is left of ours: {left:?}");
    assert!(std::fs::symlink_metadata(tmp.join(&left[0])).unwrap().file_type().is_symlink());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `openssl` with arguments; panics with its stderr when it fails.
fn openssl(args: &[&str]) -> Output {
    let out = Command::new("openssl").args(args).output().expect("openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out).1);
    out
}

#[test]
fn openssl_reads_our_keys_and_its_signatures_verify_with_ours() {
    let dir = scratch("security-openssl");
    let owner = keygen(&dir, "owner");
    let (key, public) = (owner.with_extension("key"), owner.with_extension("pub"));
    // `openssl pkey -in owner.key -pubout` gives our public key, as the README says.
    let out = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(text(&out).0.trim(), std::fs::read_to_string(&public).unwrap().trim());
    // OpenSSL signs the model's SHA-256 with our key: the same signature bytes as `sign` (Ed25519
    // is deterministic), and `verify` takes it.
    let model = dir.join("model.lpm");
    std::fs::copy(root().join("models/digits/model.lpm"), &model).unwrap();
    sign(&model, &owner);
    let sig = model.with_extension("lpm.sig");
    let ours = std::fs::read_to_string(&sig).unwrap();
    let digest = dir.join("digest.bin");
    openssl(&["dgst", "-sha256", "-binary", "-out", digest.to_str().unwrap(), model.to_str().unwrap()]);
    let raw = dir.join("sig.bin");
    let (k, d, r) = (key.to_str().unwrap(), digest.to_str().unwrap(), raw.to_str().unwrap());
    openssl(&["pkeyutl", "-sign", "-inkey", k, "-rawin", "-in", d, "-out", r]);
    use base64::Engine as _;
    let theirs = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&raw).unwrap());
    let line = ours.lines().find(|l| l.starts_with("signature")).unwrap();
    assert_eq!(line, format!("signature = \"{theirs}\""), "{ours}");
    let out = convert(&["verify", model.to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    // And the reverse: OpenSSL verifies what `sign` wrote with the .pub.
    let ours_raw = dir.join("ours.bin");
    let b64 = line.split('"').nth(1).unwrap();
    std::fs::write(&ours_raw, base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    let (p, o) = (public.to_str().unwrap(), ours_raw.to_str().unwrap());
    let out = openssl(&["pkeyutl", "-verify", "-pubin", "-inkey", p, "-rawin", "-in", d, "-sigfile", o]);
    assert!(text(&out).0.contains("Signature Verified Successfully"), "{}", text(&out).0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 25: a trusted key file that cannot be read is named with its OS error once (the error
/// type displayed its cause and also gave it as its source, so `{:#}` printed it twice).
#[test]
fn a_missing_trusted_key_names_its_cause_once() {
    let dir = scratch("security-missing-key");
    std::fs::copy(root().join("models/digits/model.onnx"), dir.join("model.onnx")).unwrap();
    let config = config(&dir, 1883, "trusted_keys = [\"keys/absent.pub\"]");
    let out = lepton(&["check", "--config", config.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("absent.pub"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
