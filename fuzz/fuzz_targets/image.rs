//! libFuzzer entry point: [`lepton_fuzz::image`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::image(data));
