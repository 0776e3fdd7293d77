//! The write-ahead log and snapshots on disk.
//!
//! Files in the data directory:
//! - `log.<zxid:016x>`: a log segment whose first record has that zxid. Segments are
//!   preallocated with zeros (so `fdatasync` flushes data blocks only, not the file size) and
//!   hold records `[len: u32][crc32: u32][payload]`; a zero length marks the end.
//! - `snapshot.<zxid:016x>`: the whole tree as of that zxid, `[magic][crc32][len][payload]`,
//!   written to a temporary name, fsynced, renamed, and the directory fsynced.
//! - `LOCK`: held with an exclusive advisory lock while an engine has the directory open; it
//!   holds the owner's process id.
//!
//! The tree holds hospital data (which patient waits for what), so the directory is created
//! 0700 and every file 0600 — modes set at creation, whatever the process's umask.
//!
//! Recovery loads the newest snapshot that verifies and replays the log records after it.
//! Zxids are contiguous (every transaction takes the next one), so replay stops at the first
//! record that is torn, fails its checksum, or does not carry the next zxid; everything after
//! that point was never acknowledged (acknowledgement waits for `fdatasync`) and is truncated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use medkeeper_coord::Zxid;

use crate::codec::{Dec, Enc};
use crate::txn::Record;

const SNAPSHOT_MAGIC: &[u8; 8] = b"MKSNAP01";
/// Largest record accepted on recovery (a multi of many 1 MiB values fits well below).
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// The mode of every file the engine creates: its owner's alone.
pub(crate) const FILE_MODE: u32 = 0o600;
/// The mode of a data directory the engine creates (and of missing ancestors).
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing ancestors with [`DIR_MODE`]; an existing directory is left as
/// it is.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

pub(crate) fn segment_name(zxid: Zxid) -> String {
    format!("log.{zxid:016x}")
}

fn parse_name(name: &str, prefix: &str) -> Option<Zxid> {
    let hex = name.strip_prefix(prefix)?;
    if hex.len() != 16 {
        return None;
    }
    i64::from_str_radix(hex, 16).ok()
}

/// Lists `(zxid, path)` of files named `<prefix><zxid>`, oldest first.
pub(crate) fn list(dir: &Path, prefix: &str) -> io::Result<Vec<(Zxid, PathBuf)>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(z) = entry
            .file_name()
            .to_str()
            .and_then(|n| parse_name(n, prefix))
        {
            v.push((z, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends encoded records to the current segment.
pub(crate) struct LogWriter {
    dir: PathBuf,
    file: std::sync::Arc<File>,
    pos: u64,
    capacity: u64,
    segment_size: u64,
}

impl LogWriter {
    /// Opens a new segment whose first record will be `first_zxid`.
    pub(crate) fn create(dir: &Path, first_zxid: Zxid, segment_size: u64) -> io::Result<LogWriter> {
        let path = dir.join(segment_name(first_zxid));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .mode(FILE_MODE)
            .open(&path)?;
        preallocate(&file, 0, segment_size)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file: std::sync::Arc::new(file),
            pos: 0,
            capacity: segment_size,
            segment_size,
        })
    }

    /// Continues an existing segment at `pos` (after recovery).
    pub(crate) fn reopen(
        dir: &Path,
        path: &Path,
        pos: u64,
        segment_size: u64,
    ) -> io::Result<LogWriter> {
        let file = OpenOptions::new().write(true).read(true).open(path)?;
        let len = file.metadata()?.len();
        let capacity = len.max(pos);
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file: std::sync::Arc::new(file),
            pos,
            capacity,
            segment_size,
        })
    }

    /// The file records are currently written to (the sync stage calls `sync_data` on it).
    pub(crate) fn file(&self) -> std::sync::Arc<File> {
        self.file.clone()
    }

    /// Writes a batch of framed records. Grows the preallocation if it would not fit.
    pub(crate) fn append(&mut self, framed: &[u8]) -> io::Result<()> {
        let end = self.pos + framed.len() as u64;
        if end + 8 > self.capacity {
            let grow = (end + 8 - self.capacity).max(self.segment_size);
            preallocate(&self.file, self.capacity, grow)?;
            self.capacity += grow;
            // The size changed: the next fdatasync flushes it with the data.
        }
        let mut f: &File = &self.file;
        f.seek(SeekFrom::Start(self.pos))?;
        f.write_all(framed)?;
        self.pos = end;
        Ok(())
    }

    /// Starts a new segment for records from `first_zxid` on.
    pub(crate) fn roll(&mut self, first_zxid: Zxid) -> io::Result<()> {
        *self = LogWriter::create(&self.dir.clone(), first_zxid, self.segment_size)?;
        Ok(())
    }
}

fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // Real zeros, not a sparse hole, so later writes do not allocate blocks (metadata) and
    // fdatasync stays a data-only flush.
    let mut f: &File = file;
    f.seek(SeekFrom::Start(offset))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Frames one record: `[len][crc32][payload]`.
pub(crate) fn frame(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let mut e = Enc {
        buf: std::mem::take(out),
    };
    record.encode(&mut e);
    *out = e.buf;
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One segment read back: its valid records and where the valid prefix ends.
pub(crate) struct SegmentRead {
    /// Valid records with the offset each starts at.
    pub(crate) records: Vec<(u64, Record)>,
    /// Offset just after the last valid record.
    pub(crate) valid_end: u64,
    /// Why reading stopped before the end of the data, if it did (a torn or corrupt record).
    pub(crate) torn: Option<String>,
}

/// Reads a segment's records up to the first invalid one.
pub(crate) fn read_segment(path: &Path) -> io::Result<SegmentRead> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let mut pos = 0usize;
    let mut records = Vec::new();
    let mut torn = None;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len == 0 && crc == 0 {
            break; // preallocated zeros: the clean end
        }
        if len > MAX_RECORD || pos + 8 + len > buf.len() {
            torn = Some(format!("record at offset {pos} is cut short"));
            break;
        }
        let payload = &buf[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            torn = Some(format!("record at offset {pos} fails its checksum"));
            break;
        }
        match Record::decode(&mut Dec::new(payload)) {
            Ok(r) => records.push((pos as u64, r)),
            Err(_) => {
                torn = Some(format!("record at offset {pos} does not decode"));
                break;
            }
        }
        pos += 8 + len;
    }
    Ok(SegmentRead {
        records,
        valid_end: pos as u64,
        torn,
    })
}

/// Overwrites everything from `offset` to the end of the file with zeros, so a torn tail can
/// never be mistaken for records later.
pub(crate) fn zero_from(path: &Path, offset: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    if len > offset {
        preallocate(&file, offset, len - offset)?;
    }
    file.sync_all()
}

/// Writes a snapshot payload durably as `snapshot.<zxid>`.
pub(crate) fn write_snapshot(dir: &Path, zxid: Zxid, payload: &[u8]) -> io::Result<PathBuf> {
    let name = format!("snapshot.{zxid:016x}");
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(&name);
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(SNAPSHOT_MAGIC)?;
        f.write_all(&crc32fast::hash(payload).to_le_bytes())?;
        f.write_all(&(payload.len() as u64).to_le_bytes())?;
        f.write_all(payload)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Reads and verifies a snapshot file; returns its payload.
pub(crate) fn read_snapshot(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    if buf.len() < 20 || &buf[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a medkeeper snapshot"));
    }
    let crc = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes")) as usize;
    if buf.len() != 20 + len {
        return Err(bad("truncated"));
    }
    buf.drain(..20);
    if crc32fast::hash(&buf) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(buf)
}

/// The exclusive lock on a data directory.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// The pid the lock file of `dir` names if another open file holds its lock now (`None`
    /// if nothing holds it, or there is no lock file: nothing is created, nothing is kept
    /// locked). `Some("unknown")` if the holder wrote no pid.
    pub(crate) fn holder(dir: &Path) -> Option<String> {
        let mut file = OpenOptions::new().read(true).open(dir.join("LOCK")).ok()?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Some(if holder.is_empty() { "unknown" } else { holder }.to_string())
            }
            Err(fs::TryLockError::Error(_)) => None,
        }
    }

    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, String> {
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(format!(
                    "data directory {} is in use by another medkeeper process (pid {})",
                    dir.display(),
                    if holder.is_empty() { "unknown" } else { holder }
                ));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
        file.set_len(0).map_err(|e| e.to_string())?;
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        let _ = writeln!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(DirLock { _file: file })
    }
}
