//! libFuzzer entry point: [`lepton_fuzz::npy`].
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lepton_fuzz::npy(data));
