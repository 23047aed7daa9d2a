//! Fuzz target: `oxcrypt_core::fuzzing::dir_file` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oxcrypt_core::fuzzing::dir_file(data);
});
