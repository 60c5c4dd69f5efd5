//! libFuzzer entry point: [`lepton_fuzz::wav`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::wav(data));
