//! The global allocator: mimalloc for everything but the few allocations of [`DIRECT`] bytes
//! and more, which are mapped straight from the kernel and unmapped when freed.
//!
//! Why: fuser allocates a zeroed 16 MiB request buffer per `/dev/fuse` thread. The kernel hands
//! out fresh anonymous pages already zeroed and makes them resident only when touched, so
//! with the system allocator those buffers cost what requests write into them; mimalloc
//! serves them from its arenas and zeroes them itself, which made both resident at once: 17
//! of the 21 MiB of anonymous memory of an idle `/dev/fuse` mount (kernel-notes, "fuser's
//! zeroed buffers, resident with mimalloc"). The ring transport maps its buffers itself
//! (`uring/buf.rs`) for the same reason. Allocations this large are rare and long-lived, so
//! the kernel serves them as well as any allocator, and mimalloc keeps every small one.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;

/// Allocations of this many bytes and more are mapped directly.
pub const DIRECT: usize = 4 << 20;
/// The page size every mapping is aligned to (and the largest alignment mapped directly).
const PAGE: usize = 4096;

/// mimalloc, with large allocations mapped directly (see the module documentation).
pub struct Allocator;

/// Whether `layout` is mapped directly (decided by the layout alone, so that `dealloc`, which
/// gets the same layout, decides the same way).
fn direct(layout: Layout) -> bool {
    layout.size() >= DIRECT && layout.align() <= PAGE
}

/// A fresh anonymous mapping of `size` bytes (zeroed by the kernel), or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: a new private anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block is either a mapping of its own (layouts `direct` accepts, returned to
// the kernel with the same size) or mimalloc's (all others, handed back to mimalloc); which
// one is decided by the layout, the same at allocation and at release.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if direct(layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if direct(layout) {
            // Zeroed by the kernel, resident only once touched.
            map(layout.size())
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if direct(layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, fits isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (direct(layout), direct(new_layout)) {
            // SAFETY: the caller's contract, passed on.
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`; the
                // kernel moves it if it cannot grow in place.
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                // SAFETY: a valid layout of non-zero size (it is at least as large as one
                // side, and one side is direct or was allocated).
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are live, distinct, and hold at least this many
                    // bytes; the old one is released once copied.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 16).unwrap()
    }

    /// Fills `len` bytes at `p` with a pattern and checks them back later.
    fn fill(p: *mut u8, len: usize) {
        for i in (0..len).step_by(4093) {
            // SAFETY: `p` holds `len` bytes.
            unsafe { *p.add(i) = (i % 251) as u8 };
        }
    }

    fn check(p: *const u8, len: usize) {
        for i in (0..len).step_by(4093) {
            // SAFETY: `p` holds `len` bytes.
            assert_eq!(unsafe { *p.add(i) }, (i % 251) as u8, "byte {i}");
        }
    }

    #[test]
    fn large_blocks_are_zeroed_kept_across_reallocs_and_released() {
        let a = Allocator;
        for size in [DIRECT - 1, DIRECT, 16 << 20] {
            // SAFETY: a valid non-zero layout; the block is released below.
            let p = unsafe { a.alloc_zeroed(layout(size)) };
            assert!(!p.is_null());
            // SAFETY: `p` holds `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == 0), "{size} bytes not zeroed");
            fill(p, size);
            // Across the threshold both ways, and within each side.
            let (mut at, mut kept) = ((p, size), size);
            for next in [size + 5000, 2 * DIRECT, DIRECT - 4096, 1 << 20, 3 * DIRECT] {
                // SAFETY: `at` is a live block of that layout.
                let q = unsafe { a.realloc(at.0, layout(at.1), next) };
                assert!(!q.is_null());
                kept = kept.min(next);
                check(q, kept);
                at = (q, next);
            }
            // SAFETY: `at` is a live block of that layout.
            unsafe { a.dealloc(at.0, layout(at.1)) };
        }
    }

    #[test]
    fn a_large_zeroed_block_is_resident_only_where_touched() {
        let a = Allocator;
        let size = 16 << 20;
        let pages = |p: *mut u8| {
            let mut vec = vec![0u8; size / PAGE];
            // SAFETY: `p` is a page-aligned mapping of `size` bytes; `vec` has a byte per page.
            let r = unsafe { libc::mincore(p.cast(), size, vec.as_mut_ptr()) };
            assert_eq!(r, 0);
            vec.iter().filter(|&&b| b & 1 != 0).count()
        };
        // SAFETY: a valid layout; released below.
        let p = unsafe { a.alloc_zeroed(layout(size)) };
        assert_eq!(pages(p), 0, "a fresh zeroed block is already resident");
        // SAFETY: `p` holds `size` bytes.
        unsafe { ptr::write_bytes(p, 1, 3 * PAGE) };
        // 3 pages, or one huge page where transparent huge pages are always on.
        let touched = pages(p);
        assert!((3..=512).contains(&touched), "{touched} pages resident");
        // SAFETY: the live block of that layout.
        unsafe { a.dealloc(p, layout(size)) };
    }
}
