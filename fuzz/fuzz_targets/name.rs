//! Fuzz target: `oxcrypt_core::fuzzing::name` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oxcrypt_core::fuzzing::name(data);
});
