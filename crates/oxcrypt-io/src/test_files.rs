//! Files for the unit tests of this crate.

use std::fs::File;
use std::path::Path;

/// A new empty file `name` in `dir`, open for reading and writing.
pub(crate) fn read_write(dir: &Path, name: &str) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap()
}
