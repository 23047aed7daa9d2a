//! Every fixture vault made by Cryptomator (and friends) opens and decrypts to exactly its
//! expected manifest; the format-7 vault is refused with a clear error.

mod common;

use common::{fixtures_dir, manifest, sha256_hex};
use oxcrypt_core::{CipherCombo, Error, Vault};
use serde_json::Value;

fn fixtures() -> Vec<Value> {
    let text = std::fs::read(fixtures_dir().join("fixtures.json")).unwrap();
    serde_json::from_slice::<Vec<Value>>(&text).unwrap()
}

#[test]
fn every_format8_fixture_matches_its_manifest() {
    let dir = fixtures_dir();
    let mut opened = 0;
    for fx in fixtures() {
        if fx["format"] != 8 {
            continue;
        }
        let name = fx["name"].as_str().unwrap();
        let vault = Vault::open(
            &dir.join(fx["vault"].as_str().unwrap()),
            fx["password"].as_str().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let combo = CipherCombo::from_name(fx["combo"].as_str().unwrap()).unwrap();
        assert_eq!(vault.config().cipher_combo, combo, "{name}");
        let expected_text =
            std::fs::read_to_string(dir.join(name).join("expected.manifest")).unwrap();
        let mut expected: Vec<String> = expected_text.lines().map(String::from).collect();
        expected.sort();
        assert_eq!(manifest(&vault), expected, "{name}: manifest differs");
        // Reference cleartexts, byte for byte.
        for (path, clear) in fx["files"].as_object().unwrap() {
            let want = std::fs::read(dir.join(clear.as_str().unwrap())).unwrap();
            let node = vault.resolve(path).unwrap();
            let fh = vault.open_file(&node, false).unwrap();
            let mut got = vec![0u8; want.len() + 10];
            let n = fh.read_at(0, &mut got).unwrap();
            assert_eq!(sha256_hex(&got[..n]), sha256_hex(&want), "{name}{path}");
        }
        opened += 1;
    }
    assert!(opened >= 5, "only {opened} format-8 fixtures found");
}

#[test]
fn format7_vault_is_refused_clearly() {
    let dir = fixtures_dir();
    for fx in fixtures() {
        if fx["format"] != 7 {
            continue;
        }
        let err = Vault::open(
            &dir.join(fx["vault"].as_str().unwrap()),
            fx["password"].as_str().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat(7)), "{err}");
        assert!(err.to_string().contains("format 7"), "{err}");
    }
}

#[test]
fn wrong_password_is_its_own_error() {
    let dir = fixtures_dir();
    let err = Vault::open(&dir.join("yombar_gcm_password/vault"), "not-the-password").unwrap_err();
    assert!(matches!(err, Error::WrongPassword), "{err}");
}

#[test]
fn corrupted_signature_is_refused() {
    let dir = fixtures_dir().join("ts_ctrmac_vault1/vault");
    let tmp = tempfile::tempdir().unwrap();
    let mk = "masterkey.cryptomator";
    std::fs::copy(dir.join(mk), tmp.path().join(mk)).unwrap();
    std::fs::copy(
        dir.join("vault-corrupted.cryptomator"),
        tmp.path().join("vault.cryptomator"),
    )
    .unwrap();
    let err = Vault::open(tmp.path(), "qq11@@11").unwrap_err();
    assert!(
        matches!(err, Error::BadSignature | Error::Malformed { .. }),
        "{err}"
    );
}

#[test]
fn dirid_backups_decrypt_to_their_own_ids() {
    let dir = fixtures_dir();
    let vault = Vault::open(&dir.join("yombar_gcm_password/vault"), "password").unwrap();
    let root = vault.root_id().clone();
    // Root backup may be absent, 68 or 96 bytes: whatever is there must decrypt to "".
    if let Some(id) = vault.read_dirid_backup(&root).unwrap() {
        assert_eq!(id, "");
    }
    let test_dir = vault.resolve("/test_dir").unwrap();
    let id = test_dir.dir_id().unwrap().clone();
    assert_eq!(vault.read_dirid_backup(&id).unwrap().as_deref(), Some(&*id));
}
