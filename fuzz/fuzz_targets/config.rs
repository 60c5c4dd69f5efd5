//! libFuzzer entry point: [`lepton_fuzz::config`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::config(data));
