//! Helpers shared by the integration tests: fixture lookup and manifests.

#![allow(dead_code)]

use std::path::PathBuf;

use oxcrypt_core::vault::FileType;
use oxcrypt_core::Vault;
use sha2::{Digest, Sha256};

/// The fixture vaults: `$OXCRYPT_FIXTURES` if set, else `fixtures/` in this repository.
pub fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("OXCRYPT_FIXTURES") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    assert!(
        dir.join("fixtures.json").is_file(),
        "fixtures not found at {}",
        dir.display()
    );
    dir
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest of a vault's decrypted tree in the fixtures' format, lines sorted.
pub fn manifest(vault: &Vault) -> Vec<String> {
    let mut lines = Vec::new();
    vault
        .walk("", &vault.root(), &mut |path, node| {
            let rel = path.trim_start_matches('/');
            if rel.is_empty() {
                return Ok(());
            }
            let attr = vault.stat(node)?;
            match attr.kind {
                FileType::Directory => lines.push(format!("d - - {rel}/")),
                FileType::Symlink => {
                    let target = vault.readlink(node)?;
                    lines.push(format!(
                        "l {} {} {rel} -> {target}",
                        sha256_hex(target.as_bytes()),
                        target.len()
                    ));
                }
                FileType::File => {
                    let fh = vault.open_file(node, false)?;
                    let mut hasher = Sha256::new();
                    let mut buf = vec![0u8; 100_000];
                    let mut off = 0u64;
                    loop {
                        let n = fh.read_at(off, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        off += n as u64;
                    }
                    assert_eq!(off, attr.size, "{rel}: bytes read differ from size");
                    let hex: String = hasher
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    lines.push(format!("f {hex} {off} {rel}"));
                }
            }
            Ok(())
        })
        .expect("walk the vault");
    lines.sort();
    lines
}
