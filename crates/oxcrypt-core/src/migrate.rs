//! Upgrading a format-7 vault to format 8, the way Cryptomator does (its `Version8Migrator`):
//! the directory tree, names and contents stay as they are (format 7 is SIV_CTRMAC with the
//! 220-character shortening threshold, exactly what a format-8 `SIV_CTRMAC` vault is); what
//! changes is the key files. The old `masterkey.cryptomator` is kept as
//! `masterkey.cryptomator.<hash>.bkup`, a signed `vault.cryptomator` is written, and the
//! masterkey file is rewritten with version 999.
//!
//! Order, so the vault opens after a failure at any step: the backup first; then
//! `vault.cryptomator` (a format-8 reader already accepts the version-7 masterkey file, whose
//! keys it signs with); then the masterkey file with version 999. Each file is written to a
//! temporary name, fsynced and renamed into place.

use std::path::{Path, PathBuf};

use crate::config::{VaultConfig, CONFIG_FILE, MASTERKEY_FILE};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::masterkey_file::{MasterkeyFile, FORMAT8_MASTERKEY_VERSION};
use crate::{store, CipherCombo};

/// The masterkey file version of format-7 vaults.
pub const FORMAT7_VERSION: u32 = 7;

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The copy of the old masterkey file.
    pub backup: PathBuf,
    /// The new vault configuration file.
    pub config: PathBuf,
}

/// The format of the vault at `path` as its key files tell, without a password: `Some(7)`
/// for a format-7 vault, `Some(8)` for format 8, `None` if there is no vault.
pub fn detect_format(path: &Path) -> Option<u32> {
    if store::is_regular(&path.join(CONFIG_FILE)) {
        return Some(8);
    }
    let mk = MasterkeyFile::load(&path.join(MASTERKEY_FILE)).ok()?;
    Some(if mk.version == FORMAT8_MASTERKEY_VERSION {
        8
    } else {
        mk.version
    })
}

/// Upgrades the format-7 vault at `path`, unlocked with `password`, to format 8.
pub fn migrate_format7(path: &Path, password: &str) -> Result<Migrated> {
    let path = &std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let config_path = path.join(CONFIG_FILE);
    if store::is_regular(&config_path) {
        return Err(Error::Invalid(format!(
            "{}: already a format-8 vault (it has {CONFIG_FILE})",
            path.display()
        )));
    }
    let mk_path = path.join(MASTERKEY_FILE);
    let old = store::read_bounded(&mk_path, 64 * 1024)?;
    let old_mk = MasterkeyFile::parse(&mk_path, &old)?;
    if old_mk.version != FORMAT7_VERSION {
        return Err(Error::UnsupportedFormat(old_mk.version));
    }
    // Checks the password and, for version 7, the versionMac.
    let keys = old_mk.unlock(&mk_path, password)?;
    let backup = path.join(format!("{MASTERKEY_FILE}.{}.bkup", short_hash(&old)));
    // The name is the content's hash: an existing backup of that name is this same file
    // (Cryptomator's own migrations name theirs the same way); anything else is refused.
    match store::read_bounded(&backup, 64 * 1024) {
        Ok(existing) if existing == old => {}
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "{} exists with other content; move it away first",
                backup.display()
            )))
        }
        Err(_) => write_atomic(&backup, &old, 0o600)?,
    }
    let config = VaultConfig::new(CipherCombo::SivCtrMac);
    write_atomic(&config_path, config.sign(&keys).as_bytes(), 0o644)?;
    // Same keys and password, a fresh salt, the old scrypt cost; version 999 (lock's).
    let new_mk = MasterkeyFile::lock(&keys, password, old_mk.scrypt_cost_param)
        .map_err(|why| Error::Invalid(format!("cannot re-wrap keys: {why}")))?;
    write_atomic(&mk_path, &new_mk.to_json(), 0o600)?;
    Ok(Migrated {
        backup,
        config: config_path,
    })
}

/// The first four bytes of SHA-256, upper-case hex: the tag of Cryptomator's backup names.
fn short_hash(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)[..4]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}
