//! Page-backed buffers for the transport: anonymous `mmap`s, so that a buffer uses memory
//! only for the pages a request actually touched (a LOOKUP touches one page of a 1 MiB
//! payload buffer). A heap allocation of the same size may be zeroed by the allocator, which
//! made every idle entry resident.

use std::ops::{Deref, DerefMut};

/// An anonymous private mapping of `len` bytes, zero-filled on first touch.
pub struct PageBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the value (like a Box<[u8]>); access goes through &/&mut.
unsafe impl Send for PageBuf {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// Maps `len` bytes (at least one page).
    pub fn new(len: usize) -> std::io::Result<PageBuf> {
        let len = len.max(1);
        // SAFETY: a fresh anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PageBuf { ptr: p.cast(), len })
    }
}

impl Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` mapped, readable bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` mapped, writable bytes owned exclusively by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_buffer_reads_zero_and_keeps_what_is_written() {
        let mut b = super::PageBuf::new(1 << 20).unwrap();
        assert_eq!(b.len(), 1 << 20);
        assert!(b.iter().step_by(4096).all(|&x| x == 0));
        b[12345] = 7;
        assert_eq!(b[12345], 7);
    }
}
