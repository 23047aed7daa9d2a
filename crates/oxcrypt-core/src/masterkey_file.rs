//! `masterkey.cryptomator`: scrypt-derived key-encryption key, RFC 3394 wrapped master keys,
//! and the legacy `versionMac`.

use std::path::Path;

use aes_kw::KwAes256;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::{MasterKeys, KEY_LEN};

/// The `version` written into masterkey files of format-8 vaults.
pub const FORMAT8_MASTERKEY_VERSION: u32 = 999;
/// scrypt cost Cryptomator uses by default (N = 2^15).
pub const DEFAULT_SCRYPT_COST: u64 = 32768;
/// scrypt block size Cryptomator uses.
pub const DEFAULT_SCRYPT_BLOCK_SIZE: u32 = 8;

/// The parsed JSON of `masterkey.cryptomator`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterkeyFile {
    /// 999 for format 8, 7 for legacy vaults.
    pub version: u32,
    /// scrypt salt, standard base64.
    pub scrypt_salt: String,
    /// scrypt N.
    pub scrypt_cost_param: u64,
    /// scrypt r.
    pub scrypt_block_size: u32,
    /// Wrapped encryption key, standard base64.
    pub primary_master_key: String,
    /// Wrapped MAC key, standard base64.
    pub hmac_master_key: String,
    /// HMAC-SHA256(macKey, be32(version)), standard base64.
    pub version_mac: String,
}

impl std::fmt::Debug for MasterkeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterkeyFile")
            .field("version", &self.version)
            .field("scrypt_cost_param", &self.scrypt_cost_param)
            .field("scrypt_block_size", &self.scrypt_block_size)
            .finish_non_exhaustive()
    }
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s.trim()).ok()
}

fn b64_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn version_mac(keys: &MasterKeys, version: u32) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(keys.mac()).expect("any key length");
    mac.update(&version.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// Derives the key-encryption key from a password with scrypt (p = 1, 32 bytes).
fn derive_kek(password: &str, salt: &[u8], n: u64, r: u32) -> Result<Zeroizing<[u8; 32]>, String> {
    if n < 2 || !n.is_power_of_two() {
        return Err(format!(
            "scryptCostParam {n} is not a power of two greater than 1"
        ));
    }
    if r == 0 || n > (1u64 << 31) / 128 / u64::from(r) {
        return Err(format!("scrypt parameters N={n}, r={r} are out of range"));
    }
    let log_n = n.trailing_zeros() as u8;
    let params = scrypt::Params::new(log_n, r, 1).map_err(|e| format!("scrypt parameters: {e}"))?;
    let pw: Zeroizing<String> = Zeroizing::new(password.nfc().collect());
    let mut kek = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(pw.as_bytes(), salt, &params, kek.as_mut()).map_err(|e| e.to_string())?;
    Ok(kek)
}

impl MasterkeyFile {
    /// Parses the JSON text of a masterkey file.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self> {
        let f: MasterkeyFile = serde_json::from_slice(text)
            .map_err(|e| Error::malformed(path, format!("not a masterkey file: {e}")))?;
        if f.version == 0 || f.scrypt_cost_param <= 1 || f.scrypt_block_size == 0 {
            return Err(Error::malformed(
                path,
                "invalid version or scrypt parameters",
            ));
        }
        Ok(f)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::store::read_bounded(path, 64 * 1024)?;
        Self::parse(path, &text)
    }

    /// Unwraps the master keys with `password`. A failed key unwrap means a wrong password.
    pub fn unlock(&self, path: &Path, password: &str) -> Result<MasterKeys> {
        let salt = b64_decode(&self.scrypt_salt)
            .ok_or_else(|| Error::malformed(path, "scryptSalt is not base64"))?;
        let wrapped_enc = b64_decode(&self.primary_master_key)
            .filter(|k| k.len() == KEY_LEN + 8)
            .ok_or_else(|| {
                Error::malformed(path, "primaryMasterKey is not a 40-byte base64 key")
            })?;
        let wrapped_mac = b64_decode(&self.hmac_master_key)
            .filter(|k| k.len() == KEY_LEN + 8)
            .ok_or_else(|| Error::malformed(path, "hmacMasterKey is not a 40-byte base64 key"))?;
        let kek = derive_kek(
            password,
            &salt,
            self.scrypt_cost_param,
            self.scrypt_block_size,
        )
        .map_err(|why| Error::malformed(path, why))?;
        let kw = KwAes256::new((&*kek).into());
        let mut enc = [0u8; KEY_LEN];
        let mut mac = [0u8; KEY_LEN];
        kw.unwrap_key(&wrapped_enc, &mut enc)
            .map_err(|_| Error::WrongPassword)?;
        kw.unwrap_key(&wrapped_mac, &mut mac)
            .map_err(|_| Error::WrongPassword)?;
        let keys = MasterKeys::from_parts(enc, mac);
        zeroize::Zeroize::zeroize(&mut enc);
        zeroize::Zeroize::zeroize(&mut mac);
        // cryptolib 2 ignores versionMac for format 8; older readers check it. We check it
        // for legacy versions only, where a mismatch means the file was tampered with.
        if self.version != FORMAT8_MASTERKEY_VERSION {
            let stored = b64_decode(&self.version_mac).unwrap_or_default();
            let expected = version_mac(&keys, self.version);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &expected[..])) {
                return Err(Error::malformed(path, "versionMac does not match"));
            }
        }
        Ok(keys)
    }

    /// Wraps `keys` under `password` with a fresh 8-byte salt.
    pub fn lock(keys: &MasterKeys, password: &str, scrypt_cost: u64) -> Result<Self, String> {
        Self::lock_with_salt(keys, password, &crate::random::bytes::<8>(), scrypt_cost)
    }

    /// Wraps `keys` under `password` with the given salt (known-answer tests).
    pub fn lock_with_salt(
        keys: &MasterKeys,
        password: &str,
        salt: &[u8],
        scrypt_cost: u64,
    ) -> Result<Self, String> {
        let kek = derive_kek(password, salt, scrypt_cost, DEFAULT_SCRYPT_BLOCK_SIZE)?;
        let kw = KwAes256::new((&*kek).into());
        let mut wrapped_enc = [0u8; KEY_LEN + 8];
        let mut wrapped_mac = [0u8; KEY_LEN + 8];
        kw.wrap_key(keys.enc(), &mut wrapped_enc)
            .map_err(|e| format!("key wrap: {e}"))?;
        kw.wrap_key(keys.mac(), &mut wrapped_mac)
            .map_err(|e| format!("key wrap: {e}"))?;
        Ok(MasterkeyFile {
            version: FORMAT8_MASTERKEY_VERSION,
            scrypt_salt: b64_encode(salt),
            scrypt_cost_param: scrypt_cost,
            scrypt_block_size: DEFAULT_SCRYPT_BLOCK_SIZE,
            primary_master_key: b64_encode(&wrapped_enc),
            hmac_master_key: b64_encode(&wrapped_mac),
            version_mac: b64_encode(&version_mac(keys, FORMAT8_MASTERKEY_VERSION)),
        })
    }

    /// Serialises like cryptolib: pretty JSON, two-space indent, no trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("plain struct serialises")
    }

    /// The versionMac for `version` (exposed for known-answer tests).
    pub fn version_mac_for(keys: &MasterKeys, version: u32) -> String {
        b64_encode(&version_mac(keys, version))
    }
}
