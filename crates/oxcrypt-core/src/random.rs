//! Randomness from the OS CSPRNG.

/// Fills `buf` from the operating system's CSPRNG.
///
/// The OS generator does not fail on Linux once booted; if it ever does, continuing with
/// predictable nonces would be worse than stopping, so this aborts the operation loudly.
pub fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the OS random number generator failed: {e}");
    }
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}
