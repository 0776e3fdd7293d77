//! The data directory's permissions (issue 19): what `serve` keeps there — the embedded
//! engine's log and snapshots (`coord/`), the SQLite clinical store (`clinical.sqlite` and its
//! `-wal` and `-shm`) — is the hospital's data, for medkeeper's user alone.
//!
//! - A missing data directory is created 0700 (and missing ancestors with it), whatever the
//!   process's umask.
//! - A directory other users may write (group or world write bit) is refused, naming the fix
//!   (`chmod 700 DIR`): whoever can write it can replace the store or the log. One that others
//!   may only read is accepted with a warning.
//! - A SQLite store that does not exist yet is created empty with mode 0600 before SQLite opens
//!   it (an empty file is an empty database); SQLite gives its `-wal` and `-shm` the database
//!   file's mode, so they are 0600 too. The embedded engine creates its own files 0600 and its
//!   directory 0700 (`medkeeper_embedded`'s `log` module).

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::serve::StoreTarget;

/// The mode of a data directory medkeeper creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a file medkeeper creates in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates the data directory `dir` if missing (0700), refuses it if other users may write it,
/// and creates a missing SQLite `store` empty with mode 0600.
///
/// # Errors
/// The directory cannot be created or read, is not a directory, or is group- or
/// world-writable; the store file cannot be created.
pub fn prepare(dir: &Path, store: &StoreTarget) -> anyhow::Result<()> {
    create_dir(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    check_dir(dir)?;
    if let StoreTarget::Sqlite(path) = store {
        create_file(path)
            .with_context(|| format!("cannot create the clinical store {}", path.display()))?;
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors with [`DIR_MODE`]; an existing one is left alone.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Refuses a data directory other users may write.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the data directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("the data directory {} is not a directory", dir.display());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "the data directory {dir} has mode {mode:03o}: other users may write it (replace the \
             clinical store or the coordination log); run `chmod 700 {dir}`",
            dir = dir.display()
        );
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:03o}"),
            "the data directory may be read by other users; `chmod 700` it"
        );
    }
    Ok(())
}

/// Creates `path` empty with [`FILE_MODE`] (and a missing parent with [`DIR_MODE`]) unless it
/// exists.
pub fn create_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir(parent)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_refuses_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        let store = StoreTarget::Sqlite(dir.join("clinical.sqlite"));
        prepare(&dir, &store).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir.join("clinical.sqlite")), 0o600);
        // Idempotent, and an existing file is left as it is.
        prepare(&dir, &store).unwrap();
        for bad in [0o777, 0o770, 0o702, 0o720] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bad)).unwrap();
            let err = prepare(&dir, &store).unwrap_err().to_string();
            assert!(
                err.contains(&format!("chmod 700 {}", dir.display())),
                "{err}"
            );
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir, &store).unwrap();
    }
}
