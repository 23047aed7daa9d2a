//! vault.cryptomator verification: HS256/384/512 accepted, bad signature, other formats and
//! unknown cipher combos refused with an error that says which.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use oxcrypt_core::{CipherCombo, Error, MasterKeys, VaultConfig};

fn token<M: Mac + KeyInit>(alg: &str, payload: &str, keys: &MasterKeys) -> String {
    let header =
        format!(r#"{{"kid":"masterkeyfile:masterkey.cryptomator","typ":"JWT","alg":"{alg}"}}"#);
    let signed = format!("{}.{}", B64URL.encode(header), B64URL.encode(payload));
    let mut mac = <M as KeyInit>::new_from_slice(keys.raw().as_ref()).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

const GOOD: &str = r#"{"format":8,"shorteningThreshold":220,"jti":"x","cipherCombo":"SIV_GCM"}"#;

#[test]
fn all_hmac_algorithms_verify() {
    let keys = MasterKeys::generate();
    let p = Path::new("vault.cryptomator");
    for t in [
        token::<Hmac<sha2::Sha256>>("HS256", GOOD, &keys),
        token::<Hmac<sha2::Sha384>>("HS384", GOOD, &keys),
        token::<Hmac<sha2::Sha512>>("HS512", GOOD, &keys),
    ] {
        let c = VaultConfig::verify(p, &t, &keys).unwrap();
        assert_eq!(c.cipher_combo, CipherCombo::SivGcm);
        assert_eq!(c.shortening_threshold, 220);
    }
}

#[test]
fn refusals_say_why() {
    let keys = MasterKeys::generate();
    let p = Path::new("vault.cryptomator");
    let other = MasterKeys::generate();
    let t = token::<Hmac<sha2::Sha256>>("HS256", GOOD, &other);
    assert!(matches!(
        VaultConfig::verify(p, &t, &keys),
        Err(Error::BadSignature)
    ));
    let t = token::<Hmac<sha2::Sha256>>("HS256", r#"{"format":9,"cipherCombo":"SIV_GCM"}"#, &keys);
    let e = VaultConfig::verify(p, &t, &keys).unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat(9)), "{e}");
    let t = token::<Hmac<sha2::Sha256>>("HS256", r#"{"format":8,"cipherCombo":"XCHACHA"}"#, &keys);
    let e = VaultConfig::verify(p, &t, &keys).unwrap_err();
    assert!(e.to_string().contains("XCHACHA"), "{e}");
    let e = VaultConfig::verify(p, "not.a-token", &keys).unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e}");
    // Our own signature round-trips.
    let c = VaultConfig::new(CipherCombo::SivCtrMac);
    assert_eq!(VaultConfig::verify(p, &c.sign(&keys), &keys).unwrap(), c);
}
