//! # oxcrypt-core
//!
//! Cryptomator vault format 8 without FUSE or io_uring: key files, the signed vault
//! configuration, name encryption and shortening, chunked content encryption for SIV_GCM and
//! SIV_CTRMAC, and a thread-safe [`Vault`] API over a ciphertext directory.
//!
//! Reading order: [`keys`] → [`masterkey_file`] → [`config`] → [`names`] → [`content`] →
//! [`node`] → [`vault`] → [`tree`] →
//! [`chunks`] → [`chunk_io`] → [`file`] → [`check`].

pub mod check;
pub mod chunk_io;
pub mod chunks;
pub mod config;
mod conflicts;
pub mod content;
pub mod dir_cache;
pub mod error;
mod fault;
pub mod file;
pub mod fsutil;
pub mod fuzzing;
pub mod keys;
pub mod masterkey_file;
pub mod migrate;
pub mod names;
pub mod node;
pub mod random;
pub mod store;
pub mod tree;
pub mod vault;

pub use config::VaultConfig;
pub use content::{CipherCombo, ContentCryptor, FileHeader, CHUNK_SIZE};
pub use error::{ContentPart, CryptoError, Error, Result};
pub use keys::MasterKeys;
pub use names::NameCodec;
pub use vault::{Attr, CreateOptions, DirId, FileHandle, Node, NodeKind, Vault};
