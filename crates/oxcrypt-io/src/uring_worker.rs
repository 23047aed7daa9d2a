//! The io_uring engine: one tokio-uring runtime (one ring) per worker thread, a registered pool
//! of request-sized and chunk-sized buffers, in-flight requests tracked in a slab.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use oxcrypt_core::chunks::{EdgeContents, ReadPlan, WritePlan};
use oxcrypt_core::content::{CHUNK_SIZE, MAX_CHUNK_CIPHERTEXT};
use oxcrypt_core::vault::BATCH_CHUNKS;
use slab::Slab;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_uring::buf::fixed::{FixedBuf, FixedBufPool};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::File as UringFile;

use crate::{Job, OpenFile};

/// A request buffer: up to BATCH_CHUNKS + 1 ciphertext chunks (an unaligned 1 MiB request).
pub(crate) const REQUEST_BUF: usize = (BATCH_CHUNKS as usize + 1) * MAX_CHUNK_CIPHERTEXT;
/// A chunk buffer: one ciphertext chunk (the edges of a read-modify-write).
const CHUNK_BUF: usize = MAX_CHUNK_CIPHERTEXT;

/// A buffer from the registered pool, or a plain heap buffer in the unregistered ablation.
enum IoBuffer {
    Fixed(FixedBuf),
    Heap(Vec<u8>),
}

impl std::ops::Deref for IoBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IoBuffer::Fixed(b) => b,
            IoBuffer::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for IoBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            IoBuffer::Fixed(b) => b,
            IoBuffer::Heap(v) => v,
        }
    }
}

/// What one in-flight request is, for the slab.
#[allow(dead_code)]
struct InFlight {
    file: u64,
    op: &'static str,
}

struct Worker {
    pool: Option<FixedBufPool<Vec<u8>>>,
    heap: RefCell<HashMap<usize, Vec<Vec<u8>>>>,
    files: RefCell<HashMap<u64, Rc<UringFile>>>,
    inflight: RefCell<Slab<InFlight>>,
    idle: tokio::sync::Notify,
    /// Reply and scratch buffers: used only between awaits, so one per worker suffices.
    reply: RefCell<Vec<u8>>,
    scratch: RefCell<Vec<u8>>,
}

impl Worker {
    async fn buffer(&self, cap: usize) -> IoBuffer {
        match &self.pool {
            Some(pool) => IoBuffer::Fixed(pool.next(cap).await),
            None => {
                let reused = self.heap.borrow_mut().get_mut(&cap).and_then(Vec::pop);
                IoBuffer::Heap(reused.unwrap_or_else(|| vec![0u8; cap]))
            }
        }
    }

    fn give_back(&self, buf: IoBuffer) {
        if let IoBuffer::Heap(v) = buf {
            self.heap.borrow_mut().entry(v.len()).or_default().push(v);
        }
    }

    fn file(&self, open: &OpenFile) -> io::Result<Rc<UringFile>> {
        if let Some(f) = self.files.borrow().get(&open.id) {
            return Ok(f.clone());
        }
        let f = Rc::new(UringFile::from_std(open.handle.file().try_clone()?));
        self.files.borrow_mut().insert(open.id, f.clone());
        Ok(f)
    }

    /// Reads `len` bytes at `pos` into a buffer of class `cap`; stops early only at EOF.
    async fn read_exact(
        &self,
        file: &UringFile,
        cap: usize,
        len: usize,
        pos: u64,
    ) -> io::Result<(IoBuffer, usize)> {
        let mut buf = self.buffer(cap).await;
        let mut got = 0;
        while got < len {
            let (res, back) = match buf {
                IoBuffer::Fixed(b) => {
                    let (r, s) = file
                        .read_fixed_at(b.slice(got..len), pos + got as u64)
                        .await;
                    (r, IoBuffer::Fixed(s.into_inner()))
                }
                IoBuffer::Heap(v) => {
                    let (r, s) = file.read_at(v.slice(got..len), pos + got as u64).await;
                    (r, IoBuffer::Heap(s.into_inner()))
                }
            };
            buf = back;
            match res {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.give_back(buf);
                    return Err(e);
                }
            }
        }
        Ok((buf, got))
    }

    async fn write_all(
        &self,
        file: &UringFile,
        buf: IoBuffer,
        len: usize,
        pos: u64,
    ) -> io::Result<()> {
        let (res, back) = match buf {
            IoBuffer::Fixed(b) => {
                let (r, s) = file.write_fixed_all_at(b.slice(..len), pos).await;
                (r, IoBuffer::Fixed(s.into_inner()))
            }
            IoBuffer::Heap(v) => {
                let (r, s) = file.write_all_at(v.slice(..len), pos).await;
                (r, IoBuffer::Heap(s.into_inner()))
            }
        };
        self.give_back(back);
        res
    }
}

pub(crate) fn run(
    mut rx: UnboundedReceiver<Job>,
    buffers: usize,
    unregistered: bool,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    tokio_uring::builder().entries(256).start(async move {
        let pool = if unregistered {
            None
        } else {
            let bufs = (0..buffers)
                .map(|_| vec![0u8; REQUEST_BUF])
                .chain((0..buffers * 2).map(|_| vec![0u8; CHUNK_BUF]));
            let pool = FixedBufPool::new(bufs);
            if let Err(e) = pool.register() {
                let _ = ready.send(Err(io::Error::new(
                    e.kind(),
                    format!("registering I/O buffers: {e}"),
                )));
                return;
            }
            Some(pool)
        };
        let _ = ready.send(Ok(()));
        let worker = Rc::new(Worker {
            pool,
            heap: RefCell::new(HashMap::new()),
            files: RefCell::new(HashMap::new()),
            inflight: RefCell::new(Slab::with_capacity(64)),
            idle: tokio::sync::Notify::new(),
            reply: RefCell::new(vec![0u8; (BATCH_CHUNKS as usize + 1) * CHUNK_SIZE]),
            scratch: RefCell::new(vec![0u8; CHUNK_SIZE]),
        });
        while let Some(job) = rx.recv().await {
            if let Job::Close { file } = job {
                worker.files.borrow_mut().remove(&file.id);
                continue;
            }
            let (file, op) = match &job {
                Job::Read { file, .. } => (file.id, "read"),
                Job::Write { file, .. } => (file.id, "write"),
                Job::SetLen { file, .. } => (file.id, "truncate"),
                Job::Sync { file, .. } => (file.id, "fsync"),
                Job::Close { .. } => unreachable!("handled above"),
            };
            let key = worker.inflight.borrow_mut().insert(InFlight { file, op });
            let w = worker.clone();
            tokio_uring::spawn(async move {
                handle(&w, job).await;
                let mut inflight = w.inflight.borrow_mut();
                inflight.remove(key);
                if inflight.is_empty() {
                    w.idle.notify_waiters();
                }
            });
        }
        // The queue is closed: finish what is in flight before the ring goes away.
        loop {
            let idle = worker.idle.notified();
            if worker.inflight.borrow().is_empty() {
                break;
            }
            idle.await;
        }
        worker.files.borrow_mut().clear();
        if let Some(pool) = &worker.pool {
            let _ = pool.unregister();
        }
    });
}

async fn handle(w: &Worker, job: Job) {
    match job {
        Job::Read {
            file,
            offset,
            len,
            done,
        } => {
            let _order = file.order.read().await;
            match read(w, &file, offset, len).await {
                Ok(n) => done(Ok(&w.reply.borrow()[..n])),
                Err(e) => done(Err(e)),
            }
        }
        Job::Write {
            file,
            offset,
            data,
            done,
        } => {
            let _order = file.order.write().await;
            done(
                write(w, &file, offset, Some(&data), data.len() as u64)
                    .await
                    .map(|_| data.len() as u32),
            );
        }
        Job::SetLen { file, size, done } => {
            let _order = file.order.write().await;
            // Growing is a write of zeros through the ring; shrinking touches one chunk.
            let result = match file.handle.size() {
                Ok(old) if size > old => write(w, &file, old, None, size - old).await,
                Ok(_) => file.handle.set_len(size).map_err(|e| e.errno()),
                Err(e) => Err(e.errno()),
            };
            done(result);
        }
        Job::Sync {
            file,
            datasync,
            done,
        } => {
            let _order = file.order.write().await;
            let result = match w.file(&file) {
                Ok(f) => {
                    if datasync {
                        f.sync_data().await
                    } else {
                        f.sync_all().await
                    }
                }
                Err(e) => Err(e),
            };
            done(result.map_err(errno));
        }
        Job::Close { .. } => {}
    }
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Reads into the worker's reply buffer; returns the cleartext length.
async fn read(w: &Worker, file: &Arc<OpenFile>, offset: u64, len: u32) -> Result<usize, i32> {
    let h = &file.handle;
    let Some(header) = h.header() else {
        return Ok(0);
    };
    let size = h.size().map_err(|e| e.errno())?;
    let combo = h.cryptor().combo();
    let Some(plan) = ReadPlan::new(
        combo,
        offset,
        (len as u64).min(BATCH_CHUNKS * CHUNK_SIZE as u64),
        size,
    ) else {
        return Ok(0);
    };
    let uf = w.file(file).map_err(errno)?;
    let (buf, got) = w
        .read_exact(&uf, REQUEST_BUF, plan.ct_len, plan.ct_offset)
        .await
        .map_err(errno)?;
    let result = {
        let mut reply = w.reply.borrow_mut();
        let mut scratch = w.scratch.borrow_mut();
        plan.decrypt(
            h.cryptor(),
            &header,
            &buf[..got],
            &mut reply[..plan.len()],
            &mut scratch,
        )
    };
    w.give_back(buf);
    match result {
        Ok(()) => Ok(plan.len()),
        Err(e) => {
            tracing::error!(error = %h.content_err(e), "read refused");
            Err(libc::EIO)
        }
    }
}

/// Writes `len` bytes (`data`, or zeros when `None`) at `offset` through the ring.
async fn write(
    w: &Worker,
    file: &Arc<OpenFile>,
    offset: u64,
    data: Option<&[u8]>,
    len: u64,
) -> Result<(), i32> {
    let h = &file.handle;
    let header = h.ensure_header().map_err(|e| e.errno())?;
    let old_size = h.size().map_err(|e| e.errno())?;
    let offset = if offset == crate::APPEND {
        old_size
    } else {
        offset
    };
    let Some(plan) = WritePlan::new(offset, len, old_size) else {
        return Ok(());
    };
    let cryptor = h.cryptor();
    let combo = cryptor.combo();
    let uf = w.file(file).map_err(errno)?;
    // Read and decrypt the (at most two) edge chunks whose old bytes survive the write.
    let mut edges = EdgeContents::default();
    for edge in plan.edges() {
        let rp = ReadPlan::new(
            combo,
            edge.index * CHUNK_SIZE as u64,
            CHUNK_SIZE as u64,
            old_size,
        )
        .ok_or(libc::EIO)?;
        let (buf, got) = w
            .read_exact(&uf, CHUNK_BUF, rp.ct_len, rp.ct_offset)
            .await
            .map_err(errno)?;
        let mut clear = vec![0u8; rp.len()];
        let r = rp.decrypt(
            cryptor,
            &header,
            &buf[..got],
            &mut clear,
            &mut w.scratch.borrow_mut(),
        );
        w.give_back(buf);
        if let Err(e) = r {
            tracing::error!(error = %h.content_err(e), "read-modify-write refused");
            return Err(libc::EIO);
        }
        edges.push(edge.index, clear);
    }
    let old = |i: u64| edges.get(i);
    let mut clear = vec![0u8; CHUNK_SIZE];
    let mut from = plan.first;
    while from <= plan.last {
        let to = (from + BATCH_CHUNKS).min(plan.last);
        let mut buf = w.buffer(REQUEST_BUF).await;
        let n = plan.encrypt(cryptor, &header, from, to, data, &old, &mut clear, &mut buf);
        w.write_all(&uf, buf, n, combo.chunk_offset(from))
            .await
            .map_err(errno)?;
        from = to + 1;
    }
    Ok(())
}
