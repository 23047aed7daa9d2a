//! The blocking engine: one job at a time per worker with pread/pwrite through the core's
//! `FileHandle`.

use tokio::sync::mpsc::UnboundedReceiver;

use crate::Job;

pub(crate) fn run(mut rx: UnboundedReceiver<Job>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(job) = rx.blocking_recv() {
        match job {
            Job::Read {
                file,
                offset,
                len,
                done,
            } => {
                let _g = file.order.blocking_read();
                buf.resize(len as usize, 0);
                match file.handle.read_at(offset, &mut buf) {
                    Ok(n) => done(Ok(&buf[..n])),
                    Err(e) => {
                        tracing::error!(error = %e, "read failed");
                        done(Err(e.errno()))
                    }
                }
            }
            Job::Write {
                file,
                offset,
                data,
                done,
            } => {
                let _g = file.order.blocking_write();
                let offset = match offset {
                    crate::APPEND => match file.handle.size() {
                        Ok(size) => size,
                        Err(e) => {
                            done(Err(e.errno()));
                            continue;
                        }
                    },
                    o => o,
                };
                match file.handle.write_at(offset, &data) {
                    Ok(()) => done(Ok(data.len() as u32)),
                    Err(e) => {
                        tracing::error!(error = %e, "write failed");
                        done(Err(e.errno()))
                    }
                }
            }
            Job::SetLen { file, size, done } => {
                let _g = file.order.blocking_write();
                done(file.handle.set_len(size).map_err(|e| e.errno()));
            }
            Job::Sync {
                file,
                datasync,
                done,
            } => {
                let _g = file.order.blocking_write();
                let f = file.handle.file();
                let r = if datasync {
                    f.sync_data()
                } else {
                    f.sync_all()
                };
                done(r.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)));
            }
            Job::Close { .. } => {}
        }
    }
}
