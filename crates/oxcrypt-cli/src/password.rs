//! Where passwords come from: a file, the environment (for scripts), or an echo-less prompt.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use oxcrypt_core::Vault;
use zeroize::Zeroizing;

use crate::Global;

/// Environment variable holding the vault password (for scripts).
pub const PASSWORD_ENV: &str = "OXCRYPT_PASSWORD";
/// Environment variable holding the new password of `passwd`.
pub const NEW_PASSWORD_ENV: &str = "OXCRYPT_NEW_PASSWORD";

fn from_file(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(line.to_string()))
}

fn prompt(label: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() && std::fs::File::open("/dev/tty").is_err() {
        bail!(
            "no password given: use --password-file FILE, set {PASSWORD_ENV}, or run on a terminal"
        );
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("{label}: ")).context("cannot read password")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("{label} (again): "))
                .context("cannot read password")?,
        );
        if *again != *first {
            bail!("the passwords do not match");
        }
    }
    Ok(first)
}

/// The password of an existing vault (or of a new one when `confirm`).
pub fn vault_password(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    let pw = if let Some(f) = file {
        from_file(f)?
    } else if let Ok(pw) = std::env::var(PASSWORD_ENV) {
        Zeroizing::new(pw)
    } else {
        prompt("Vault password", confirm)?
    };
    if confirm && pw.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(pw)
}

/// The new password of `passwd`.
pub fn new_password(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let pw = if let Some(f) = file {
        from_file(f)?
    } else if let Ok(pw) = std::env::var(NEW_PASSWORD_ENV) {
        Zeroizing::new(pw)
    } else {
        prompt("New vault password", true)?
    };
    if pw.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(pw)
}

/// Unlocks the vault at `path` with the password from the usual sources.
pub fn unlock(g: &Global, path: &Path) -> Result<Vault> {
    let pw = vault_password(g.password_file.as_deref(), false)?;
    Vault::open(path, &pw).with_context(|| format!("cannot open vault {}", path.display()))
}
