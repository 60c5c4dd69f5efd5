//! Build script of the runtime: turns on the Cortex-M DSP kernel set (`cfg(lepton_dsp)`) for
//! targets whose cores have the DSP extension (armv7e-m: Cortex-M4/M7; armv8-m mainline:
//! Cortex-M33/M55). Stable Rust has no `target_feature = "dsp"` to test, so the target name decides.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lepton_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") || target.starts_with("thumbv8m.main-") {
        println!("cargo::rustc-cfg=lepton_dsp");
    }
}
