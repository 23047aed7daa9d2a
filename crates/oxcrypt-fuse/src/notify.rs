//! Invalidations of the kernel's caches (`FUSE_NOTIFY_INVAL_INODE`, `FUSE_NOTIFY_INVAL_ENTRY`),
//! written to the kernel by one thread of their own.
//!
//! A notification can wait in the kernel: INVAL_ENTRY takes the parent directory's lock, which
//! a process may hold while it waits for one of our replies (a CREATE in that directory), and
//! INVAL_INODE writes dirty pages back first (WRITE requests to us) and waits for pages under
//! writeback. So no request thread writes one: operations and the watcher post a [`Notice`]
//! to a queue, and this thread, which answers no request, is the one that waits.
//!
//! Both transports write notifications to `/dev/fuse` (the kernel refuses them on the ring):
//! fuser through its `Notifier`, the ring transport through its own descriptor.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;

/// One invalidation for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Drop the dentry `name` of directory `parent` (positive or negative).
    Entry {
        /// Directory inode.
        parent: u64,
        /// Cleartext name as the kernel knows it.
        name: String,
    },
    /// Drop the attributes and every cached page of an inode.
    Inode(u64),
}

/// Writes notifications to the kernel (one implementation per transport).
pub trait KernelNotifier: Send + 'static {
    /// `FUSE_NOTIFY_INVAL_ENTRY`.
    fn inval_entry(&self, parent: u64, name: &str) -> io::Result<()>;
    /// `FUSE_NOTIFY_INVAL_INODE` for the attributes and all pages.
    fn inval_inode(&self, ino: u64) -> io::Result<()>;
}

impl KernelNotifier for fuser::Notifier {
    fn inval_entry(&self, parent: u64, name: &str) -> io::Result<()> {
        fuser::Notifier::inval_entry(self, fuser::INodeNo(parent), std::ffi::OsStr::new(name))
    }

    fn inval_inode(&self, ino: u64) -> io::Result<()> {
        // Offset 0, length 0: every page (the kernel reads a length ≤ 0 as "to the end").
        fuser::Notifier::inval_inode(self, fuser::INodeNo(ino), 0, 0)
    }
}

/// The queue of notices and the thread that writes them.
#[derive(Default)]
pub struct Notices {
    tx: OnceLock<mpsc::Sender<Notice>>,
    sent: AtomicU64,
}

impl Notices {
    /// Queues `notice`; dropped if no transport started the writer yet (before the mount
    /// serves, the kernel has nothing cached to invalidate).
    pub fn post(&self, notice: Notice) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(notice);
        }
    }

    /// Notices the kernel accepted so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Starts the writer thread over `kernel` (once; later calls are ignored). The thread
    /// ends when the connection does.
    pub fn start(self: &std::sync::Arc<Self>, kernel: Box<dyn KernelNotifier>) {
        let (tx, rx) = mpsc::channel::<Notice>();
        if self.tx.set(tx).is_err() {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("oxcrypt-notify".into())
            .spawn(move || {
                for notice in rx {
                    let r = match &notice {
                        Notice::Entry { parent, name } => kernel.inval_entry(*parent, name),
                        Notice::Inode(ino) => kernel.inval_inode(*ino),
                    };
                    match r {
                        Ok(()) => {
                            me.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        // The kernel holds no such inode or name: nothing was cached.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        // The connection is gone.
                        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => break,
                        Err(e) => tracing::debug!(error = %e, ?notice, "notification refused"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no notification thread: changes behind the mount show after the cache time-to-live");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Recorder(Arc<Mutex<Vec<Notice>>>);

    impl KernelNotifier for Recorder {
        fn inval_entry(&self, parent: u64, name: &str) -> io::Result<()> {
            self.0.lock().unwrap().push(Notice::Entry {
                parent,
                name: name.into(),
            });
            Ok(())
        }
        fn inval_inode(&self, ino: u64) -> io::Result<()> {
            if ino == 99 {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            self.0.lock().unwrap().push(Notice::Inode(ino));
            Ok(())
        }
    }

    #[test]
    fn notices_reach_the_kernel_in_order_and_unknown_inodes_are_skipped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let n = Arc::new(Notices::default());
        n.post(Notice::Inode(1)); // before start: dropped
        n.start(Box::new(Recorder(seen.clone())));
        n.post(Notice::Inode(7));
        n.post(Notice::Inode(99));
        n.post(Notice::Entry {
            parent: 1,
            name: "a".into(),
        });
        let start = std::time::Instant::now();
        while n.sent() < 2 && start.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Notice::Inode(7),
                Notice::Entry {
                    parent: 1,
                    name: "a".into()
                }
            ]
        );
    }
}
