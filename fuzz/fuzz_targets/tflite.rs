//! libFuzzer entry point: [`lepton_fuzz::tflite`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::tflite(data));
