//! Partial files left in granted directories, and their clean-up.
//!
//! A provider writing into a granted directory keeps an artifact under a temporary name until it
//! is complete; diagmon's naming for it (the built-in filesystem provider's, and any provider's
//! that wants the host's clean-up) is `.{name}.{operation-id}.partial`, the operation id being a
//! hyphenated UUID. Such a file outlives its upload when the provider cannot remove it itself:
//! its instance trapped or ran out of time (nothing more is called in it), or diagmon was killed.
//!
//! - After an instance was stopped, the host removes the partial files of that upload's
//!   operation ([`remove_for_operation`]).
//! - At start-up, every loaded provider's directory is swept of partial files
//!   ([`DirectoryLock::acquire`]), unless another diagmon process has the directory loaded: each
//!   process holds a shared `flock` on the directory while it has it loaded, and sweeps only when
//!   it can take the lock exclusively first.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The operation id of a partial file of diagmon's naming, or `None` for any other name.
fn partial_operation(file_name: &str) -> Option<uuid::Uuid> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".partial")?;
    let (name, operation) = inner.rsplit_once('.')?;
    if name.is_empty() || operation.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(operation).ok()
}

/// Removes the regular files of `directory` (not following links) whose names are partial files
/// of an operation `keep` accepts; returns how many were removed.
fn remove_partials(directory: &Path, keep: impl Fn(uuid::Uuid) -> bool) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let Some(operation) = entry.file_name().to_str().and_then(partial_operation) else {
            continue;
        };
        if keep(operation) && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(removed)
}

/// Removes the partial files of `operation` from `directory`, after its provider's instance was
/// stopped before it could. Failures are logged: the operation has failed already.
pub(crate) fn remove_for_operation(provider: &str, directory: &Path, operation: uuid::Uuid) {
    match remove_partials(directory, |id| id == operation) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(
            provider,
            "removed {removed} partial file(s) of operation {operation} from {}",
            directory.display()
        ),
        Err(error) => tracing::warn!(
            provider,
            "cannot remove the partial files of operation {operation} from {}: {error}",
            directory.display()
        ),
    }
}

/// A granted directory, held with a shared `flock` while its provider is loaded.
#[derive(Debug)]
pub(crate) struct DirectoryLock {
    path: PathBuf,
    _handle: File,
}

/// `flock(2)` on `file`; false when another process holds a conflicting lock.
fn flock(file: &File, operation: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor this function borrows, open for its duration.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(error)
    }
}

impl DirectoryLock {
    /// Locks `path` (a directory) for `provider`, sweeping it of partial files first when no
    /// other diagmon process has it.
    pub(crate) fn acquire(provider: &str, path: PathBuf) -> std::io::Result<DirectoryLock> {
        let handle = File::open(&path)?;
        if flock(&handle, libc::LOCK_EX)? {
            match remove_partials(&path, |_| true) {
                Ok(0) => {}
                Ok(removed) => tracing::info!(
                    provider,
                    "removed {removed} partial file(s) left by an earlier run from {}",
                    path.display()
                ),
                Err(error) => tracing::warn!(
                    provider,
                    "cannot sweep partial files from {}: {error}",
                    path.display()
                ),
            }
        } else {
            tracing::info!(
                provider,
                "another diagmon process has {} loaded: its partial files are left alone",
                path.display()
            );
        }
        if !flock(&handle, libc::LOCK_SH)? {
            tracing::warn!(
                provider,
                "cannot hold {} shared: another process locked it",
                path.display()
            );
        }
        Ok(DirectoryLock {
            path,
            _handle: handle,
        })
    }

    /// The directory, canonical.
    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b6c1a2e-5f0d-4b53-9a43-2c2d1e6f7a80";

    #[test]
    fn only_diagmon_partial_names_are_recognised() {
        let id = uuid::Uuid::parse_str(ID).unwrap();
        assert_eq!(
            partial_operation(&format!(".core_20251126_072408_123.{ID}.partial")),
            Some(id)
        );
        for name in [
            format!("trace.{ID}.partial"),
            format!(".{ID}.partial"),
            format!(".t.{ID}.partial.old"),
            ".t.not-a-uuid.partial".to_owned(),
            "trace.nettrace".to_owned(),
        ] {
            assert_eq!(partial_operation(&name), None, "{name}");
        }
    }

    #[test]
    fn a_sweep_removes_partials_unless_another_process_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join(format!(".a.nettrace.{ID}.partial"));
        let other = dir.path().join("a.nettrace");
        std::fs::write(&partial, b"cut").unwrap();
        std::fs::write(&other, b"whole").unwrap();
        // A link named like a partial is not followed nor removed.
        let target = dir.path().join("target");
        std::fs::write(&target, b"kept").unwrap();
        let link = dir.path().join(format!(".b.{ID}.partial"));
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let first = DirectoryLock::acquire("p", dir.path().to_owned()).unwrap();
        assert!(!partial.exists());
        assert!(other.exists() && target.exists() && link.symlink_metadata().is_ok());

        // While `first` holds it, a second holder leaves partials alone.
        std::fs::write(&partial, b"in progress").unwrap();
        let second = DirectoryLock::acquire("p", dir.path().to_owned()).unwrap();
        assert!(partial.exists());
        drop((first, second));

        remove_for_operation("p", dir.path(), uuid::Uuid::new_v4());
        assert!(partial.exists());
        remove_for_operation("p", dir.path(), uuid::Uuid::parse_str(ID).unwrap());
        assert!(!partial.exists());
    }
}
