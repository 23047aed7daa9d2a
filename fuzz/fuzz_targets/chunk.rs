//! Fuzz target: `oxcrypt_core::fuzzing::chunk` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oxcrypt_core::fuzzing::chunk(data);
});
