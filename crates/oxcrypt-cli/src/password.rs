//! Where passwords come from: a file, an external program (`--extpass`), the environment (for
//! scripts), or an echo-less prompt.

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
            "no password given: use --password-file FILE, --extpass CMD, set {PASSWORD_ENV}, or run on a terminal"
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

/// Splits an `--extpass` command line into words: blanks separate them, single and double
/// quotes group (no other shell syntax: no variables, globs or pipes; for those, run a
/// shell yourself, e.g. `sh -c '…'`). Backslash escapes the next character outside single
/// quotes.
pub fn split_command(line: &str) -> Result<Vec<String>> {
    let (mut words, mut cur, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    in_word = true;
                }
                None => bail!("--extpass: a backslash ends the command"),
            },
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("--extpass: an unclosed quote in the command");
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        bail!("--extpass: the command is empty");
    }
    Ok(words)
}

/// Runs the `--extpass` command (directly, not through a shell) and takes the first line of
/// its standard output as the password. Its standard error goes to ours; a failure or an
/// empty answer is an error.
fn from_command(line: &str) -> Result<Zeroizing<String>> {
    let words = split_command(line)?;
    let out = std::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("--extpass: cannot run {}", words[0]))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        bail!("--extpass: {} failed ({})", words[0], out.status);
    }
    let text = std::str::from_utf8(&stdout).context("--extpass: the password is not UTF-8")?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        bail!("--extpass: {} printed no password", words[0]);
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// The password of an existing vault (or of a new one when `confirm`), from the first of:
/// `--password-file`, `--extpass`, the environment, the terminal.
pub fn vault_password(g: &Global, confirm: bool) -> Result<Zeroizing<String>> {
    // Taken out of the environment whichever source wins: a daemon must not keep it.
    let from_env = take_env(PASSWORD_ENV);
    let pw = if let Some(f) = g.password_file.as_deref() {
        from_file(f)?
    } else if let Some(cmd) = g.extpass.as_deref() {
        from_command(cmd)?
    } else if let Some(pw) = from_env {
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
    let pw = vault_password(g, false)?;
    Vault::open(path, &pw).with_context(|| format!("cannot open vault {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::split_command;

    #[test]
    fn extpass_commands_split_like_simple_shell_words() {
        assert_eq!(
            split_command("secret-tool lookup vault 'my vault'").unwrap(),
            ["secret-tool", "lookup", "vault", "my vault"]
        );
        assert_eq!(
            split_command(r#"  pass  show "a b\"c"  x\ y ''"#).unwrap(),
            ["pass", "show", "a b\"c", "x y", ""]
        );
        assert_eq!(
            split_command("echo $HOME;ls").unwrap(),
            ["echo", "$HOME;ls"]
        );
        assert!(split_command("  ").is_err());
        assert!(split_command("echo 'open").is_err());
    }
}
