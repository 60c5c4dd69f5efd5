//! libFuzzer entry point: [`lepton_fuzz::lpm`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::lpm(data));
