//! The vault's two master keys, kept zeroized and out of `Debug` output.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of each master key in bytes.
pub const KEY_LEN: usize = 32;

/// The encryption key and the MAC key of a vault.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKeys {
    enc: [u8; KEY_LEN],
    mac: [u8; KEY_LEN],
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeys([redacted])")
    }
}

impl MasterKeys {
    /// Two fresh keys from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut keys = MasterKeys {
            enc: [0; KEY_LEN],
            mac: [0; KEY_LEN],
        };
        crate::random::fill(&mut keys.enc);
        crate::random::fill(&mut keys.mac);
        keys
    }

    /// Builds keys from known bytes (tests, recovery).
    pub fn from_parts(enc: [u8; KEY_LEN], mac: [u8; KEY_LEN]) -> Self {
        MasterKeys { enc, mac }
    }

    /// The AES encryption key ("primary master key").
    pub fn enc(&self) -> &[u8; KEY_LEN] {
        &self.enc
    }

    /// The MAC key ("HMAC master key").
    pub fn mac(&self) -> &[u8; KEY_LEN] {
        &self.mac
    }

    /// `encKey ‖ macKey`: the raw key that signs `vault.cryptomator`.
    pub fn raw(&self) -> Zeroizing<[u8; 2 * KEY_LEN]> {
        let mut raw = Zeroizing::new([0u8; 2 * KEY_LEN]);
        raw[..KEY_LEN].copy_from_slice(&self.enc);
        raw[KEY_LEN..].copy_from_slice(&self.mac);
        raw
    }

    /// `macKey ‖ encKey`: the RFC 5297 AES-SIV key used for names and dir ids.
    pub fn siv_key(&self) -> Zeroizing<[u8; 2 * KEY_LEN]> {
        let mut key = Zeroizing::new([0u8; 2 * KEY_LEN]);
        key[..KEY_LEN].copy_from_slice(&self.mac);
        key[KEY_LEN..].copy_from_slice(&self.enc);
        key
    }
}
