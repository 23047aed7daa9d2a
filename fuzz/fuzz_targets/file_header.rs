//! Fuzz target: `oxcrypt_core::fuzzing::file_header` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oxcrypt_core::fuzzing::file_header(data);
});
