//! libFuzzer entry point: [`lepton_fuzz::watch`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::watch(data));
