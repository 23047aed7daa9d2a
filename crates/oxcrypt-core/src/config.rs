//! `vault.cryptomator`: the signed JWT holding format, cipher combo and shortening threshold.

use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};

use crate::content::CipherCombo;
use crate::error::{Error, Result};
use crate::keys::MasterKeys;

/// File name of the vault configuration.
pub const CONFIG_FILE: &str = "vault.cryptomator";
/// File name of the masterkey file written by oxcrypt and Cryptomator.
pub const MASTERKEY_FILE: &str = "masterkey.cryptomator";
/// Default shortening threshold of format 8.
pub const DEFAULT_SHORTENING_THRESHOLD: usize = 220;

/// The verified claims of `vault.cryptomator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// Always 8.
    pub format: u32,
    /// Content cipher of the vault.
    pub cipher_combo: CipherCombo,
    /// Ciphertext names longer than this (including `.c9r`) are shortened.
    pub shortening_threshold: usize,
    /// The vault's random id (`jti`).
    pub jti: String,
    /// Masterkey file named by the `kid` header, relative to the vault directory.
    pub masterkey_file: String,
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s).ok()
}

fn b64url_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The unverified parts of a token: header JSON, payload JSON, signature, signed text.
struct Token<'a> {
    header: Value,
    payload: Value,
    signature: Vec<u8>,
    signed: &'a str,
}

fn split_token<'a>(path: &Path, text: &'a str) -> Result<Token<'a>> {
    let bad = |why: &str| Error::malformed(path, why.to_string());
    let text = text.trim();
    let mut parts = text.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(bad("not a JWT (expected three dot-separated parts)")),
    };
    let json = |part: &str, what: &str| -> Result<Value> {
        let bytes =
            b64url_decode(part).ok_or_else(|| bad(&format!("JWT {what} is not base64url")))?;
        serde_json::from_slice(&bytes).map_err(|_| bad(&format!("JWT {what} is not JSON")))
    };
    Ok(Token {
        header: json(h, "header")?,
        payload: json(p, "payload")?,
        signature: b64url_decode(s).ok_or_else(|| bad("JWT signature is not base64url"))?,
        signed: &text[..h.len() + 1 + p.len()],
    })
}

fn hmac_verify<M: Mac + KeyInit>(key: &[u8], data: &[u8], sig: &[u8]) -> bool {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.verify_slice(sig).is_ok()
}

impl VaultConfig {
    /// A new configuration for `cipher_combo` with a random `jti`.
    pub fn new(cipher_combo: CipherCombo) -> Self {
        VaultConfig {
            format: 8,
            cipher_combo,
            shortening_threshold: DEFAULT_SHORTENING_THRESHOLD,
            jti: uuid::Builder::from_random_bytes(crate::random::bytes())
                .into_uuid()
                .to_string(),
            masterkey_file: MASTERKEY_FILE.to_string(),
        }
    }

    /// Reads the `kid` of a token without verifying it: tells where the key comes from.
    pub fn peek_masterkey_file(path: &Path, text: &str) -> Result<String> {
        let token = split_token(path, text)?;
        let kid = token
            .header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::malformed(path, "JWT header has no kid"))?;
        match kid.strip_prefix("masterkeyfile:") {
            Some(file) if !file.is_empty() && !file.contains('/') => Ok(file.to_string()),
            _ => Err(Error::UnsupportedKeySource(kid.to_string())),
        }
    }

    /// Verifies the token with the vault's keys and checks its claims.
    pub fn verify(path: &Path, text: &str, keys: &MasterKeys) -> Result<Self> {
        let token = split_token(path, text)?;
        let alg = token
            .header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = keys.raw();
        let data = token.signed.as_bytes();
        let ok = match alg {
            "HS256" => hmac_verify::<Hmac<Sha256>>(key.as_ref(), data, &token.signature),
            "HS384" => hmac_verify::<Hmac<Sha384>>(key.as_ref(), data, &token.signature),
            "HS512" => hmac_verify::<Hmac<Sha512>>(key.as_ref(), data, &token.signature),
            other => {
                return Err(Error::malformed(
                    path,
                    format!("unsupported JWT algorithm {other:?} (expected HS256/384/512)"),
                ))
            }
        };
        if !ok {
            return Err(Error::BadSignature);
        }
        let claims = &token.payload;
        let format = claims.get("format").and_then(Value::as_u64).unwrap_or(0) as u32;
        if format != 8 {
            return Err(Error::UnsupportedFormat(format));
        }
        let combo_name = claims
            .get("cipherCombo")
            .and_then(Value::as_str)
            .unwrap_or("");
        let cipher_combo = CipherCombo::from_name(combo_name)
            .ok_or_else(|| Error::UnsupportedCipher(combo_name.to_string()))?;
        let threshold = claims
            .get("shorteningThreshold")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_SHORTENING_THRESHOLD as u64);
        if !(36..=1 << 20).contains(&threshold) {
            return Err(Error::malformed(
                path,
                format!("shorteningThreshold {threshold} is out of range"),
            ));
        }
        Ok(VaultConfig {
            format,
            cipher_combo,
            shortening_threshold: threshold as usize,
            jti: claims
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            masterkey_file: Self::peek_masterkey_file(path, text)?,
        })
    }

    /// Serialises and signs (HS256) the configuration like cryptofs does.
    pub fn sign(&self, keys: &MasterKeys) -> String {
        let header = json!({"kid": format!("masterkeyfile:{}", self.masterkey_file), "typ": "JWT", "alg": "HS256"});
        let payload = json!({
            "format": self.format,
            "shorteningThreshold": self.shortening_threshold,
            "jti": self.jti,
            "cipherCombo": self.cipher_combo.name(),
        });
        let signed = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(payload.to_string().as_bytes())
        );
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(keys.raw().as_ref()).expect("any key length");
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64url_encode(&mac.finalize().into_bytes()))
    }
}
