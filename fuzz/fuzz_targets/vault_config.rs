//! Fuzz target: `oxcrypt_core::fuzzing::vault_config` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oxcrypt_core::fuzzing::vault_config(data);
});
