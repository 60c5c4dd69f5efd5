//! libFuzzer entry point: [`lepton_fuzz::model`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::model(data));
