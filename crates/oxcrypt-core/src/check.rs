//! Integrity check (todo)
