//! The vault's two master keys: on a page of their own that is locked in RAM and left out of
//! core dumps where the system allows, wiped when dropped, and out of `Debug` output.

use std::sync::Once;

use zeroize::{Zeroize, Zeroizing};

/// Length of each master key in bytes.
pub const KEY_LEN: usize = 32;

const PAGE: usize = 4096;

/// One anonymous page holding `enc ‖ mac`: `mlock`ed (never swapped out) and
/// `MADV_DONTDUMP` (never in a core dump), wiped and unmapped on drop.
struct KeyPage {
    ptr: *mut u8,
}

// SAFETY: the page is owned by this value alone; shared access is read-only.
unsafe impl Send for KeyPage {}
// SAFETY: as above: `&KeyPage` only reads.
unsafe impl Sync for KeyPage {}

static LOCK_WARNING: Once = Once::new();

impl KeyPage {
    fn new() -> KeyPage {
        // SAFETY: an anonymous private mapping of one page; no file, no fixed address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "cannot map a page for the master keys"
        );
        // SAFETY: `ptr` is the page just mapped.
        let (locked, undumped) = unsafe {
            (
                libc::mlock(ptr, PAGE) == 0,
                libc::madvise(ptr, PAGE, libc::MADV_DONTDUMP) == 0,
            )
        };
        if !(locked && undumped) {
            LOCK_WARNING.call_once(|| {
                tracing::warn!(
                    locked,
                    undumped,
                    "cannot lock the master keys in RAM or keep them out of core dumps (raise RLIMIT_MEMLOCK); core dumps stay off"
                );
            });
        }
        KeyPage { ptr: ptr.cast() }
    }

    fn bytes(&self) -> &[u8; 2 * KEY_LEN] {
        // SAFETY: the page is mapped, at least 64 bytes long and lives as long as `self`.
        unsafe { &*(self.ptr as *const [u8; 2 * KEY_LEN]) }
    }

    fn bytes_mut(&mut self) -> &mut [u8; 2 * KEY_LEN] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { &mut *(self.ptr as *mut [u8; 2 * KEY_LEN]) }
    }
}

impl Drop for KeyPage {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        // SAFETY: the page mapped in `new`, unmapped once.
        unsafe {
            libc::munlock(self.ptr.cast(), PAGE);
            libc::munmap(self.ptr.cast(), PAGE);
        }
    }
}

/// The encryption key and the MAC key of a vault.
pub struct MasterKeys {
    page: KeyPage,
}

impl Clone for MasterKeys {
    fn clone(&self) -> Self {
        let mut page = KeyPage::new();
        page.bytes_mut().copy_from_slice(self.page.bytes());
        MasterKeys { page }
    }
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeys([redacted])")
    }
}

impl MasterKeys {
    /// Two fresh keys from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut page = KeyPage::new();
        crate::random::fill(page.bytes_mut());
        MasterKeys { page }
    }

    /// Builds keys from known bytes (tests, recovery); the arguments are wiped.
    pub fn from_parts(mut enc: [u8; KEY_LEN], mut mac: [u8; KEY_LEN]) -> Self {
        let mut page = KeyPage::new();
        page.bytes_mut()[..KEY_LEN].copy_from_slice(&enc);
        page.bytes_mut()[KEY_LEN..].copy_from_slice(&mac);
        enc.zeroize();
        mac.zeroize();
        MasterKeys { page }
    }

    /// The AES encryption key ("primary master key").
    pub fn enc(&self) -> &[u8; KEY_LEN] {
        self.page.bytes()[..KEY_LEN].try_into().expect("32 bytes")
    }

    /// The MAC key ("HMAC master key").
    pub fn mac(&self) -> &[u8; KEY_LEN] {
        self.page.bytes()[KEY_LEN..].try_into().expect("32 bytes")
    }

    /// `encKey ‖ macKey`: the raw key that signs `vault.cryptomator`.
    pub fn raw(&self) -> Zeroizing<[u8; 2 * KEY_LEN]> {
        let mut raw = Zeroizing::new([0u8; 2 * KEY_LEN]);
        raw.copy_from_slice(self.page.bytes());
        raw
    }

    /// `macKey ‖ encKey`: the RFC 5297 AES-SIV key used for names and dir ids.
    pub fn siv_key(&self) -> Zeroizing<[u8; 2 * KEY_LEN]> {
        let mut key = Zeroizing::new([0u8; 2 * KEY_LEN]);
        key[..KEY_LEN].copy_from_slice(self.mac());
        key[KEY_LEN..].copy_from_slice(self.enc());
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys' page is locked and excluded from dumps: /proc/self/smaps shows a locked
    /// page with the `dd` (do not dump) flag at its address.
    #[test]
    fn keys_live_on_a_locked_page_left_out_of_dumps() {
        let k = MasterKeys::from_parts([1; KEY_LEN], [2; KEY_LEN]);
        assert_eq!(k.enc(), &[1; KEY_LEN]);
        assert_eq!(k.mac(), &[2; KEY_LEN]);
        assert_eq!(k.clone().raw()[..], [[1u8; 32], [2u8; 32]].concat()[..]);
        let addr = k.page.ptr as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        let mut found = false;
        while let Some(l) = lines.next() {
            let Some((range, _)) = l.split_once(' ') else {
                continue;
            };
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            if (a..b).contains(&addr) {
                let block: Vec<&str> = lines
                    .by_ref()
                    .take_while(|l| !l.contains('-') || l.starts_with("VmFlags"))
                    .collect();
                let flags = block.iter().find(|l| l.starts_with("VmFlags:")).unwrap();
                assert!(flags.contains(" dd"), "not excluded from dumps: {flags}");
                found = true;
                break;
            }
        }
        assert!(found, "key page not in smaps");
    }
}
