//! libFuzzer entry point: [`lepton_fuzz::qdq`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::qdq(data));
