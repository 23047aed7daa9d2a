//! Decrypting ahead of a sequential reader, through the engine on a real vault file: windows
//! are decrypted and served, and a change of the file (a write, a truncate) is never answered
//! from a window decrypted before it, with the ciphertext read through the page cache or with
//! `O_DIRECT`; readers that stop mid-file give their windows up to a new one once idle.

use std::sync::Arc;

use oxcrypt_core::{CipherCombo, CreateOptions, Vault};
use oxcrypt_io::{Engine, EngineConfig, OpenFile, Tuning};

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Reads `len` bytes at `offset` through the engine, as one READ.
fn read(engine: &Engine, file: &Arc<OpenFile>, offset: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let n = engine.read(file, offset as u64, &mut out).unwrap();
    out.truncate(n);
    out
}

/// The window budget is the process's: the tests take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new vault in a temporary directory (in /var/tmp: a tmpfs /tmp may refuse `O_DIRECT`,
/// and the handle then reads buffered).
fn vault() -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let vault = Vault::create(
        &dir.path().join("v"),
        "pw",
        &CreateOptions {
            cipher_combo: CipherCombo::SivGcm,
            scrypt_cost: 2,
        },
    )
    .unwrap();
    (dir, vault)
}

/// A file `name` in the vault's root holding `data`.
fn stored(vault: &Vault, name: &str, data: &[u8]) -> oxcrypt_core::vault::Node {
    let node = vault.create_file(vault.root_id(), name, 0o644).unwrap();
    vault
        .open_file(&node, true)
        .unwrap()
        .write_at(0, data)
        .unwrap();
    node
}

fn check(tuning: Tuning) {
    let _turn = one_at_a_time();
    let (_dir, vault) = vault();
    let mut data = pattern(8 * MIB + 1000, 0);
    let node = stored(&vault, "film", &data);

    let engine = Engine::start(&EngineConfig {
        tuning,
        ..EngineConfig::default()
    })
    .unwrap();
    let file = OpenFile::new(1, vault.open_file(&node, true).unwrap());

    // A sequential run: after two READs, the next windows are decrypted ahead.
    for at in [0, MIB] {
        assert_eq!(read(&engine, &file, at, MIB), data[at..at + MIB]);
    }
    engine.drain();
    assert_eq!(
        file.decrypted_ahead(),
        2 * MIB as u64,
        "windows decrypted ahead"
    );

    // A write into the window just decrypted: the READ must see it.
    let fresh = pattern(5000, 0x5a);
    engine
        .write(
            &file,
            oxcrypt_core::vault::WriteAt::Offset(2 * MIB as u64 + 300),
            &fresh,
        )
        .unwrap();
    data[2 * MIB + 300..2 * MIB + 5300].copy_from_slice(&fresh);
    assert_eq!(read(&engine, &file, 2 * MIB, MIB), data[2 * MIB..3 * MIB]);

    // The run goes on; windows come again and are served (a READ across two of them, not
    // aligned to them, too).
    assert_eq!(read(&engine, &file, 3 * MIB, MIB), data[3 * MIB..4 * MIB]);
    engine.drain();
    assert!(file.decrypted_ahead() > 0);
    assert_eq!(
        read(&engine, &file, 4 * MIB + 4096, MIB),
        data[4 * MIB + 4096..5 * MIB + 4096]
    );

    // A truncate below the windows: the READ sees the end of the file, not the old bytes.
    engine.drain();
    let cut = 5 * MIB + 7000;
    let (tx, rx) = std::sync::mpsc::channel();
    engine.set_len(
        &file,
        oxcrypt_core::vault::SetLen::Exactly(cut as u64),
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    );
    assert!(rx.recv().unwrap());
    assert_eq!(
        read(&engine, &file, 5 * MIB + 4096, MIB),
        data[5 * MIB + 4096..cut]
    );

    // The end of the file, read ahead and served short.
    drop(file);
    let file = OpenFile::new(2, vault.open_file(&node, false).unwrap());
    for at in [3 * MIB, 4 * MIB] {
        assert_eq!(read(&engine, &file, at, MIB), data[at..at + MIB]);
    }
    engine.drain();
    assert!(file.decrypted_ahead() > 0);
    assert_eq!(read(&engine, &file, 5 * MIB, MIB), data[5 * MIB..cut]);
}

#[test]
fn windows_read_through_the_page_cache_never_outlive_a_change() {
    check(Tuning::default());
}

#[test]
fn windows_read_with_o_direct_never_outlive_a_change() {
    check(Tuning {
        direct_read_ahead: true,
        ..Tuning::default()
    });
}

#[test]
fn readers_that_stop_mid_file_give_their_windows_to_a_new_one_once_idle() {
    let _turn = one_at_a_time();
    let (_dir, vault) = vault();
    let engine = Engine::start(&EngineConfig::default()).unwrap();
    let data = pattern(6 * MIB, 7);
    let mut files = Vec::new();
    for id in 0..(oxcrypt_io::ahead::BUDGET / 2 + 1) as u64 {
        let node = stored(&vault, &format!("film{id}"), &data);
        files.push(OpenFile::new(id, vault.open_file(&node, false).unwrap()));
    }
    let (late, stopped) = files.split_last().unwrap();
    // Readers that read 2 MiB and stop, their files open: windows for each, until the
    // budget is gone.
    for file in stopped {
        for at in [0, MIB] {
            assert_eq!(read(&engine, file, at, MIB), data[at..at + MIB]);
        }
        engine.drain();
        assert!(file.decrypted_ahead() > 0);
    }
    // A new reader while they are recent: none left for it.
    for at in [0, MIB] {
        assert_eq!(read(&engine, late, at, MIB), data[at..at + MIB]);
    }
    engine.drain();
    assert_eq!(late.decrypted_ahead(), 0);
    // Once they have been idle long enough, its next READ takes theirs.
    std::thread::sleep(oxcrypt_io::ahead::IDLE + std::time::Duration::from_millis(100));
    assert_eq!(read(&engine, late, 2 * MIB, MIB), data[2 * MIB..3 * MIB]);
    engine.drain();
    assert!(late.decrypted_ahead() > 0, "no window for the new reader");
    assert!(stopped.iter().any(|f| f.decrypted_ahead() == 0));
    // Everyone reads on, right.
    for file in files.iter() {
        assert_eq!(read(&engine, file, 3 * MIB, MIB), data[3 * MIB..4 * MIB]);
    }
}

/// Six readers of six files at once, more than the window budget serves: each reads on in
/// READs of varying size, now and then seeks back or stops for longer than `IDLE` (so its
/// windows are taken by another), and checks every byte it gets; a seventh thread keeps
/// rewriting a part of the first file, whose reader checks against what it could have been.
#[test]
fn many_readers_sharing_the_budget_read_right_bytes() {
    let _turn = one_at_a_time();
    let (_dir, vault) = vault();
    let engine = Arc::new(Engine::start(&EngineConfig::default()).unwrap());
    let size = 6 * MIB;
    let mut files = Vec::new();
    for id in 0..6u64 {
        let node = stored(&vault, &format!("f{id}"), &pattern(size, id as u8));
        files.push(OpenFile::new(id, vault.open_file(&node, true).unwrap()));
    }
    // The rewritten part of file 0 holds either its first pattern or the other one, whole
    // 4 KiB blocks at a time (each write is one block at a block boundary).
    let (changed_from, changed_to) = (2 * MIB, 3 * MIB);
    let other = pattern(size, 0xa5);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let writer = {
            let (engine, file, other, stop) = (&engine, &files[0], &other, stop.clone());
            s.spawn(move || {
                let mut k = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = changed_from + (k * 7 % 256) * 4096;
                    engine
                        .write(
                            file,
                            oxcrypt_core::vault::WriteAt::Offset(at as u64),
                            &other[at..at + 4096],
                        )
                        .unwrap();
                    k += 1;
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }
            })
        };
        let readers: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(id, file)| {
                let engine = &engine;
                let (mine, other) = (pattern(size, id as u8), &other);
                s.spawn(move || {
                    let mut at = 0usize;
                    for step in 0..60usize {
                        let len = [MIB, 256 << 10, MIB, 128 << 10][step % 4];
                        let got = read(engine, file, at, len);
                        let want = &mine[at.min(size)..(at + len).min(size)];
                        assert_eq!(got.len(), want.len(), "file {id} at {at}");
                        for (i, (g, w)) in got.iter().zip(want).enumerate() {
                            let pos = at + i;
                            let rewritten = id == 0
                                && (changed_from..changed_to).contains(&pos)
                                && *g == other[pos];
                            assert!(g == w || rewritten, "file {id}: wrong byte at {pos}");
                        }
                        at += got.len();
                        if at >= size || step % 13 == 12 {
                            at = (step * MIB / 3) % size; // a seek
                        }
                        if step == 10 + 5 * id {
                            // Stop for a while (each reader at another time): idle, its
                            // windows are up for the taking by the others.
                            std::thread::sleep(oxcrypt_io::ahead::IDLE * 11 / 10);
                        } else {
                            std::thread::sleep(std::time::Duration::from_millis(15));
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    });
}
