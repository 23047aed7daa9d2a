//! Error types of the vault core.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which part of an encrypted file failed to authenticate or parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentPart {
    /// The file header (nonce, content key).
    Header,
    /// The chunk with this 0-based index.
    Chunk(u64),
}

impl std::fmt::Display for ContentPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContentPart::Header => write!(f, "header"),
            ContentPart::Chunk(i) => write!(f, "chunk {i}"),
        }
    }
}

/// A content-level failure before a file path is attached to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The authentication tag or MAC did not verify.
    #[error("{0} failed authentication")]
    Auth(ContentPart),
    /// The stored data is too short to be valid.
    #[error("{0} is truncated")]
    Truncated(ContentPart),
}

impl CryptoError {
    /// The part of the file the failure concerns.
    pub fn part(&self) -> ContentPart {
        match *self {
            CryptoError::Auth(p) | CryptoError::Truncated(p) => p,
        }
    }
}

/// Every error the vault core reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The password did not unwrap the master keys.
    #[error("wrong password")]
    WrongPassword,
    /// `vault.cryptomator` is not signed by this vault's master key.
    #[error(
        "vault.cryptomator has a bad signature: it was altered or belongs to another masterkey"
    )]
    BadSignature,
    /// The vault uses a format other than 8.
    #[error("unsupported vault format {0}: oxcrypt reads and writes vault format 8 only (a format-7 vault is upgraded by `oxcrypt migrate VAULT`, older ones by Cryptomator 1.6+)")]
    UnsupportedFormat(u32),
    /// The vault's cipher combo is neither SIV_GCM nor SIV_CTRMAC.
    #[error("unsupported cipher combo {0:?}: only SIV_GCM and SIV_CTRMAC exist in format 8")]
    UnsupportedCipher(String),
    /// The vault's key id is not a masterkey file (e.g. a Cryptomator Hub vault).
    #[error("unsupported key source {0:?}: only password vaults (masterkeyfile:) are supported")]
    UnsupportedKeySource(String),
    /// A configuration or key file could not be parsed.
    #[error("{path}: malformed: {why}")]
    Malformed {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Encrypted content failed to authenticate or is truncated.
    #[error("{path}: {source}")]
    Content {
        /// The ciphertext file.
        path: PathBuf,
        /// Which part failed and how.
        source: CryptoError,
    },
    /// An encrypted name in a directory could not be decrypted.
    #[error("{path}: encrypted name does not decrypt (tampered or moved from another directory)")]
    BadName {
        /// The ciphertext node.
        path: PathBuf,
    },
    /// A sync client's conflict copy that was not resolved (a read-only vault).
    #[error("{path}: a sync-conflict copy, hidden until the vault is listed writable")]
    ConflictCopy {
        /// The ciphertext node.
        path: PathBuf,
    },
    /// A node in the vault is structurally broken (e.g. a directory without `dir.c9r`).
    #[error("{path}: broken node: {why}")]
    BrokenNode {
        /// The ciphertext node.
        path: PathBuf,
        /// What is missing or wrong.
        why: String,
    },
    /// The cleartext path does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The cleartext path exists already.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// A path component that must be a directory is not one.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// The operation needs a non-directory.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// rmdir or a replacing rename hit a directory with entries.
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// The operation needs a symlink.
    #[error("{0}: not a symbolic link")]
    NotASymlink(String),
    /// A cleartext name is not allowed.
    #[error("invalid name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An operation that cannot be done (e.g. moving a directory into itself).
    #[error("{0}")]
    Invalid(String),
    /// An I/O error on a ciphertext path.
    #[error("{path}: {source}")]
    Io {
        /// The ciphertext path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl Error {
    /// The closest POSIX errno, for the FUSE layer.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound(_) => libc::ENOENT,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::NotADirectory(_) => libc::ENOTDIR,
            Error::IsADirectory(_) => libc::EISDIR,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::NotASymlink(_) | Error::Invalid(_) => libc::EINVAL,
            Error::InvalidName { why, .. } if *why == NAME_TOO_LONG => libc::ENAMETOOLONG,
            Error::InvalidName { .. } => libc::EINVAL,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    /// An I/O failure at `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            why: why.into(),
        }
    }
}

/// The reason text of a name that is too long (maps to ENAMETOOLONG).
pub(crate) const NAME_TOO_LONG: &str = "name too long";

/// Extension to attach a path to `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
