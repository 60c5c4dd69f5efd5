//! The kernel sets' conformance suite (runtime/core/tests/kernel_conformance.rs and the named cases of
//! micro_kernels.rs) on the boards' CPUs, under qemu-user: aarch64 as a Cortex-A72 (Pi 4: the NEON
//! set; the dot-product set cannot run there and is reported skipped) and as QEMU's `max` CPU (the
//! dot-product set too), armv7 as a Cortex-A7 (32-bit Raspberry Pi OS: the armv7 NEON set, on a
//! 32-bit `usize`). Only the runtime's `host` feature is built for them (no tract): about 25 s per
//! target.

use lepton_e2e::{root, text};
use std::path::PathBuf;
use std::process::Command;

/// Builds the runtime's kernel tests for `target` and returns their executables.
fn build(target: &str) -> Vec<PathBuf> {
    let out = lepton_e2e::cargo()
        .args(["test", "-p", "lepton-core", "--features", "host", "--target", target])
        .args(["--test", "kernel_conformance", "--test", "micro_kernels", "--no-run", "--message-format=json"])
        .current_dir(root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building the kernel tests for {target} failed (scripts/install-deps --test installs the linkers):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exes: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect();
    assert_eq!(exes.len(), 2, "two test executables for {target}");
    exes
}

/// Runs `exe` under `qemu` as `cpu`; returns stderr after checking every test passed.
fn emulate(qemu: &str, cpu: &str, sysroot: &str, multiarch: &str, exe: &PathBuf) -> String {
    let out = Command::new(qemu)
        .args(["-cpu", cpu, "-L", sysroot, "-E", &format!("LD_LIBRARY_PATH={sysroot}/lib:{multiarch}")])
        .arg(exe)
        .arg("--nocapture")
        .output()
        .expect("qemu-user (apt package qemu-user-static)");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{} on {qemu} -cpu {cpu}:\n{stdout}\n{stderr}", exe.display());
    assert!(stdout.contains("test result: ok"), "{stdout}");
    stderr
}

/// Records a set tested under emulation, for scripts/test's summary.
fn covered(line: &str) {
    eprintln!("{line}");
    let dir = root().join("target/tmp/emulated");
    let _ = std::fs::create_dir_all(&dir);
    let file: String = line.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let _ = std::fs::write(dir.join(format!("{file}.txt")), format!("{line}\n"));
}

#[test]
fn aarch64_kernel_sets_equal_the_reference_as_a_cortex_a72_and_with_the_dot_product() {
    let exes = build("aarch64-unknown-linux-gnu");
    let (sysroot, multiarch) = ("/usr/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu");
    for (cpu, sets) in [("cortex-a72", "reference, neon"), ("max", "reference, neon, neondot")] {
        let conformance = exes.iter().find(|e| e.to_string_lossy().contains("kernel_conformance")).expect("built");
        let stderr = emulate("qemu-aarch64-static", cpu, sysroot, multiarch, conformance);
        assert!(stderr.contains(&format!("kernel sets tested: {sets}")), "-cpu {cpu}: {stderr}");
        let named = exes.iter().find(|e| e.to_string_lossy().contains("micro_kernels")).expect("built");
        emulate("qemu-aarch64-static", cpu, sysroot, multiarch, named);
        covered(&format!("kernel sets {sets}: conformance tested under qemu-aarch64 -cpu {cpu}"));
    }
}

#[test]
fn armv7_neon_kernels_equal_the_reference_on_a_32_bit_cpu() {
    let exes = build("armv7-unknown-linux-gnueabihf");
    for exe in &exes {
        let stderr =
            emulate("qemu-arm-static", "cortex-a7", "/usr/arm-linux-gnueabihf", "/usr/lib/arm-linux-gnueabihf", exe);
        if exe.to_string_lossy().contains("kernel_conformance") {
            assert!(stderr.contains("kernel sets tested: reference, armv7neon"), "{stderr}");
        }
    }
    covered("kernel sets reference, armv7neon: conformance tested under qemu-arm -cpu cortex-a7 (32-bit)");
}
