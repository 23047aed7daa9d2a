//! Cleartext paths inside a vault, as the offline commands take them (`/a/b`).

/// Joins a vault path and a name.
pub fn join(parent: &str, name: &str) -> String {
    let p = parent.trim_end_matches('/');
    format!("{p}/{name}")
}

/// The last component of a vault path.
pub fn base_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}
