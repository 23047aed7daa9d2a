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
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        eprintln!(
            "oxcrypt: warning: password file {} can be read by others (mode {:04o}); chmod 600 it",
            path.display(),
            mode & 0o7777
        );
    }
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut file, &mut text)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(line.to_string()))
}

/// Reads environment variable `name` and removes it from this process, overwriting its bytes:
/// `/proc/PID/environ` shows the environment block the process started with, which
/// `unsetenv` alone leaves intact. Call before any thread starts.
pub fn take_env(name: &str) -> Option<Zeroizing<String>> {
    let value = Zeroizing::new(std::env::var(name).ok()?);
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: single-threaded here (called while unlocking, before the mount's threads);
    // getenv points into the environment, at the value of a contiguous `NAME=value` string,
    // which stays mapped after unsetenv drops it from `environ`.
    unsafe {
        let v = libc::getenv(cname.as_ptr());
        if !v.is_null() {
            let start = v.sub(name.len() + 1);
            let len = name.len() + 1 + libc::strlen(v);
            libc::unsetenv(cname.as_ptr());
            for i in 0..len {
                std::ptr::write_volatile(start.add(i), 0);
            }
        }
    }
    Some(value)
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
    } else if let Some(pw) = take_env(PASSWORD_ENV) {
        pw
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
    } else if let Some(pw) = take_env(NEW_PASSWORD_ENV) {
        pw
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
    // No vault there: say so before asking for a password.
    Vault::check_exists(path).with_context(|| format!("cannot open vault {}", path.display()))?;
    let pw = vault_password(g.password_file.as_deref(), false)?;
    Vault::open(path, &pw).with_context(|| format!("cannot open vault {}", path.display()))
}
