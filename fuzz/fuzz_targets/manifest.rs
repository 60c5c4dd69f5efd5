//! libFuzzer entry point: [`lepton_fuzz::manifest`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::manifest(data));
