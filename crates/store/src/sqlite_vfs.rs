//! `renkei-unix`, the SQLite VFS every store connection opens its files with: the platform's
//! default VFS, except that what a transaction appends to the write-ahead log is gathered in
//! memory and written in a few large writes (of [`MAX_WRITE`]) when SQLite syncs the log.
//!
//! SQLite writes each log frame with two `pwrite` calls (its 24-byte header, then the page).
//! A group commit of a few HL7 messages appends about 300 frames, so its 600 system calls were
//! 9 % of the process's CPU time under `renkei bench mllp`, all of it on the single writer's
//! serial path. Here consecutive writes to the log are held and written together
//! before anything that could observe the file: a sync, a read, a truncation, a size query, a
//! file control, a write elsewhere in the log, closing it, or more than [`MAX_PENDING`] bytes.
//!
//! Durability is unchanged: SQLite acknowledges a commit only after its sync of the log
//! returns, and that sync writes the held frames first. Other connections only learn of new
//! frames from the shared-memory index, which SQLite updates after that sync **provided the
//! connection uses `synchronous = FULL`** (every store connection does:
//! `sqlite::open_connection` sets it, reads it back and refuses a connection without it). Under `NORMAL` a commit publishes its frames without a sync,
//! and other connections would read a log whose tail is still held here: do not open a store
//! connection with a weaker setting.
//!
//! Every other file (the database, temporary files) is the default VFS's own file object,
//! opened in place at the start of SQLite's allocation, so SQLite calls the default methods on
//! it directly and nothing else changes.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use rusqlite::ffi;

use crate::error::StoreError;

/// The VFS's name, as given to `Connection::open_with_flags_and_vfs`.
pub(crate) const NAME: &str = "renkei-unix";
const NAME_C: &CStr = c"renkei-unix";

/// Held log bytes past which they are written at once (a transaction larger than the page
/// cache spills frames long before its commit).
const MAX_PENDING: usize = 8 << 20;

/// Most bytes given to one write of the default VFS: the unix VFS takes at most 128 KiB a call
/// (`seekAndWriteFd` masks the length with `0x1ffff`).
const MAX_WRITE: usize = 124 << 10;

/// The platform's default VFS, which does the actual work.
static DEFAULT_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Writes issued to the default VFS for log files (for tests: the count shows the coalescing).
static LOG_WRITES: AtomicU64 = AtomicU64::new(0);

/// Registers the VFS (once per process; later calls return the first call's result).
pub(crate) fn register() -> Result<(), StoreError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        // SAFETY: runs once; `register_once` only reads the default VFS and hands SQLite a
        // VFS object that lives for the rest of the process.
        .get_or_init(|| unsafe { register_once() })
        .clone()
        .map_err(StoreError::Backend)
}

/// Writes to log files issued to the default VFS so far, by every connection of the process.
#[cfg(test)]
pub(crate) fn log_writes() -> u64 {
    LOG_WRITES.load(Ordering::Relaxed)
}

unsafe fn register_once() -> Result<(), String> {
    // SAFETY (whole function): `sqlite3_vfs_find` returns a pointer to a VFS SQLite keeps for
    // the life of the process; the copy registered is leaked, so it does too.
    unsafe {
        let default = ffi::sqlite3_vfs_find(ptr::null());
        if default.is_null() {
            return Err("SQLite has no default VFS".into());
        }
        DEFAULT_VFS.store(default, Ordering::Release);
        // Every method but `xOpen` is the default's own; they see this VFS's pointer, whose
        // `pAppData` and `mxPathname` are the default's.
        let mut vfs = *default;
        vfs.szOsFile = (LOG_FILE_AT + (*default).szOsFile as usize) as c_int;
        vfs.pNext = ptr::null_mut();
        vfs.zName = NAME_C.as_ptr();
        vfs.xOpen = Some(open);
        let vfs = Box::leak(Box::new(vfs));
        match ffi::sqlite3_vfs_register(vfs, 0) {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(format!("cannot register the SQLite VFS {NAME}: error {rc}")),
        }
    }
}

/// An open log file: SQLite's file header (pointing at [`LOG_METHODS`]), the default VFS's
/// file object (in the same allocation, at [`LOG_FILE_AT`]) and the held writes.
#[repr(C)]
struct LogFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes written by SQLite but not yet to the file, contiguous from `pending_at`.
    pending: Vec<u8>,
    pending_at: i64,
}

/// Where the default VFS's file object starts inside a [`LogFile`]'s allocation (8-aligned,
/// as SQLite's allocations and the default's fields are).
const LOG_FILE_AT: usize = (size_of::<LogFile>() + 7) & !7;

/// Opens `name`: a log file as a [`LogFile`], anything else as the default VFS would.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes `file` pointing at `szOsFile` writable bytes (8-aligned), which
    // holds either the default's file object alone or a `LogFile` followed by it.
    unsafe {
        let default = DEFAULT_VFS.load(Ordering::Acquire);
        let Some(default_open) = default.as_ref().and_then(|v| v.xOpen) else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return default_open(default, name, file, flags, out_flags);
        }
        (*file).pMethods = ptr::null();
        let inner = file
            .cast::<u8>()
            .add(LOG_FILE_AT)
            .cast::<ffi::sqlite3_file>();
        let rc = default_open(default, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if (*inner).pMethods.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        file.cast::<LogFile>().write(LogFile {
            base: ffi::sqlite3_file {
                pMethods: &LOG_METHODS,
            },
            inner,
            pending: Vec::new(),
            pending_at: 0,
        });
        ffi::SQLITE_OK
    }
}

/// The methods of a log file. Version 1: SQLite maps no shared memory and no pages of a log.
static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(log_close),
    xRead: Some(log_read),
    xWrite: Some(log_write),
    xTruncate: Some(log_truncate),
    xSync: Some(log_sync),
    xFileSize: Some(log_file_size),
    xLock: Some(log_lock),
    xUnlock: Some(log_unlock),
    xCheckReservedLock: Some(log_check_reserved_lock),
    xFileControl: Some(log_file_control),
    xSectorSize: Some(log_sector_size),
    xDeviceCharacteristics: Some(log_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

impl LogFile {
    /// # Safety
    /// `file` must be a log file opened by [`open`] and not yet closed; SQLite uses a file
    /// from one thread at a time.
    unsafe fn of<'a>(file: *mut ffi::sqlite3_file) -> &'a mut LogFile {
        unsafe { &mut *file.cast::<LogFile>() }
    }

    /// The default VFS's methods for the file.
    fn methods(&self) -> &'static ffi::sqlite3_io_methods {
        // SAFETY: set by the default VFS's successful `xOpen`, valid until its `xClose`.
        unsafe { &*(*self.inner).pMethods }
    }

    /// Writes the held bytes, in pieces of [`MAX_WRITE`]; the result is the default VFS's (a
    /// full disk, an I/O error), and the bytes are dropped either way (SQLite fails the
    /// transaction on an error).
    fn flush(&mut self) -> c_int {
        if self.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = self.methods().xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.pending_at;
        for piece in self.pending.chunks(MAX_WRITE) {
            LOG_WRITES.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `piece` is readable and shorter than MAX_WRITE, which fits a `c_int`.
            rc = unsafe { write(self.inner, piece.as_ptr().cast(), piece.len() as c_int, at) };
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += piece.len() as i64;
        }
        self.pending.clear();
        rc
    }
}

unsafe extern "C" fn log_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file once; the `LogFile` is dropped in place after.
    unsafe {
        let log = LogFile::of(file);
        let flushed = log.flush();
        let closed = match log.methods().xClose {
            Some(close) => close(log.inner),
            None => ffi::SQLITE_OK,
        };
        ptr::drop_in_place(file.cast::<LogFile>());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn log_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    unsafe {
        let log = LogFile::of(file);
        let held_end = log.pending_at + log.pending.len() as i64;
        if !log.pending.is_empty() && offset != held_end {
            let rc = log.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if log.pending.is_empty() {
            log.pending_at = offset;
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount.max(0) as usize);
        log.pending.extend_from_slice(bytes);
        if log.pending.len() >= MAX_PENDING {
            return log.flush();
        }
        ffi::SQLITE_OK
    }
}

/// Calls the default VFS's method `$method` on the file with the rest of the arguments, or
/// evaluates `$absent` if the default has no such method.
macro_rules! forward {
    ($file:expr, $method:ident, $absent:expr $(, $arg:expr)*) => {{
        // SAFETY: a log file opened by `open`; the arguments are SQLite's, passed on.
        let log = unsafe { LogFile::of($file) };
        match log.methods().$method {
            Some(f) => unsafe { f(log.inner $(, $arg)*) },
            None => $absent,
        }
    }};
}

/// Writes the held bytes, then forwards as [`forward!`] does.
macro_rules! flush_then {
    ($file:expr, $method:ident, $absent:expr $(, $arg:expr)*) => {{
        // SAFETY: as in `forward!`.
        match unsafe { LogFile::of($file) }.flush() {
            ffi::SQLITE_OK => forward!($file, $method, $absent $(, $arg)*),
            rc => rc,
        }
    }};
}

unsafe extern "C" fn log_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flush_then!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
}

unsafe extern "C" fn log_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flush_then!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn log_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flush_then!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn log_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flush_then!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn log_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flush_then!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn log_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xLock, ffi::SQLITE_OK, level)
}

unsafe extern "C" fn log_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock, ffi::SQLITE_OK, level)
}

unsafe extern "C" fn log_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    forward!(
        file,
        xCheckReservedLock,
        {
            // SAFETY: SQLite passes a writable `int`.
            unsafe { *out = 0 };
            ffi::SQLITE_OK
        },
        out
    )
}

unsafe extern "C" fn log_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xSectorSize, 4096)
}

unsafe extern "C" fn log_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xDeviceCharacteristics, 0)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// A directory of its own under the system's temporary directory, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("renkei-vfs-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A connection through this VFS, set up as the store sets up its own.
    fn connect(path: &std::path::Path) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;",
        )
        .unwrap();
        conn
    }

    #[test]
    fn a_commit_writes_its_log_frames_at_once_and_others_read_them() {
        let dir = Scratch::new();
        let path = dir.path().join("t.db");
        let writer = connect(&path);
        let reader = connect(&path);
        writer
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let before = log_writes();
        let tx = writer.unchecked_transaction().unwrap();
        for k in 0..2_000 {
            tx.execute("INSERT INTO t VALUES (?1, ?2)", (k, "x".repeat(200)))
                .unwrap();
        }
        tx.commit().unwrap();
        // About 100 pages: two writes a frame by default. Other tests share the counter, so
        // only an upper bound holds.
        let writes = log_writes() - before;
        assert!(writes < 50, "{writes} writes for one commit");
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2_000);
        // A plain connection (the default VFS) reads the same log.
        let plain = Connection::open(&path).unwrap();
        let n: i64 = plain
            .query_row("SELECT count(*) FROM t WHERE length(v) = 200", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 2_000);
    }

    #[test]
    fn a_transaction_larger_than_the_cache_survives_spills_rewrites_and_a_reopen() {
        let dir = Scratch::new();
        let path = dir.path().join("t.db");
        {
            let conn = connect(&path);
            // A tiny cache: the transaction spills frames before its commit and rewrites
            // some of them in place (pages changed again after they were spilled).
            conn.execute_batch(
                "PRAGMA cache_size = 20; PRAGMA journal_size_limit = 65536;
                 CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
                 CREATE INDEX t_v ON t (v);",
            )
            .unwrap();
            for round in 0..3 {
                let tx = conn.unchecked_transaction().unwrap();
                for k in 0..3_000 {
                    tx.execute(
                        "INSERT OR REPLACE INTO t VALUES (?1, ?2)",
                        (k, format!("{round}-{:0>150}", (k * 7919) % 3_001)),
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .unwrap();
            }
            let tx = conn.unchecked_transaction().unwrap();
            tx.execute("DELETE FROM t WHERE k % 2 = 0", []).unwrap();
            tx.commit().unwrap();
        }
        let conn = connect(&path);
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let (n, bad): (i64, i64) = conn
            .query_row("SELECT count(*), sum(v NOT LIKE '2-%') FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, bad), (1_500, 0));
    }

    /// Readers on other threads never see a state the writer has not committed, even while
    /// the writer's transactions spill frames into the held buffer: every snapshot keeps the
    /// sum of the balances, and sees whole transfers only.
    #[test]
    fn readers_on_other_threads_see_only_whole_commits() {
        const ACCOUNTS: i64 = 500;
        const TOTAL: i64 = ACCOUNTS * 1_000;
        let dir = Scratch::new();
        let path = dir.path().join("t.db");
        let writer = connect(&path);
        writer
            .execute_batch(
                "PRAGMA cache_size = 8;
                 CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL,
                                       note TEXT NOT NULL);
                 CREATE TABLE transfer (n INTEGER PRIMARY KEY, amount INTEGER NOT NULL);",
            )
            .unwrap();
        {
            let tx = writer.unchecked_transaction().unwrap();
            for id in 0..ACCOUNTS {
                tx.execute(
                    "INSERT INTO account VALUES (?1, 1000, ?2)",
                    (id, "n".repeat(400)),
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let conn = connect(&path);
                    let mut snapshots = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) || snapshots == 0 {
                        let tx = conn.unchecked_transaction().unwrap();
                        let sum: i64 = tx
                            .query_row("SELECT sum(balance) FROM account", [], |r| r.get(0))
                            .unwrap();
                        // Each transfer moves its amount out of one account and into the
                        // next, and records itself: balances and records agree.
                        let moved: i64 = tx
                            .query_row("SELECT coalesce(sum(amount), 0) FROM transfer", [], |r| {
                                r.get(0)
                            })
                            .unwrap();
                        let first: i64 = tx
                            .query_row("SELECT balance FROM account WHERE id = 0", [], |r| r.get(0))
                            .unwrap();
                        assert_eq!(sum, TOTAL, "a snapshot lost money");
                        assert_eq!(first, 1000 - moved, "a snapshot saw half a transfer");
                        drop(tx);
                        snapshots += 1;
                    }
                    snapshots
                })
            })
            .collect();
        for n in 0..150i64 {
            let tx = writer.unchecked_transaction().unwrap();
            let amount = n % 7 + 1;
            tx.execute(
                "UPDATE account SET balance = balance - ?1 WHERE id = 0",
                [amount],
            )
            .unwrap();
            // Every other transfer touches every page too, so that it outgrows the cache and
            // spills (and SQLite rewrites spilled frames); the others are a few pages.
            if n % 2 == 1 {
                tx.execute(
                    "UPDATE account SET note = printf('%.400c', char(97 + ?1 % 26))",
                    [n],
                )
                .unwrap();
            }
            tx.execute(
                "UPDATE account SET balance = balance + ?1 WHERE id = 1",
                [amount],
            )
            .unwrap();
            tx.execute("INSERT INTO transfer VALUES (?1, ?2)", (n, amount))
                .unwrap();
            tx.commit().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }

    #[test]
    fn a_rolled_back_transaction_leaves_nothing() {
        let dir = Scratch::new();
        let path = dir.path().join("t.db");
        let conn = connect(&path);
        conn.execute_batch("PRAGMA cache_size = 10; CREATE TABLE t (v TEXT)")
            .unwrap();
        {
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..2_000 {
                tx.execute("INSERT INTO t VALUES (?1)", ["y".repeat(300)])
                    .unwrap();
            }
            // Dropped: rolled back after spilling frames.
        }
        conn.execute("INSERT INTO t VALUES ('kept')", []).unwrap();
        drop(conn);
        let conn = connect(&path);
        let rows: Vec<String> = conn
            .prepare("SELECT v FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, ["kept"]);
    }
}
