//! What is checked before a runtime is asked for a dump, so that a failure says what to do
//! instead of the runtime's bare E_FAIL: the target's `createdump`, whether the target can write
//! into the dump folder (and sees the same folder), and the free space there.
//!
//! The target resolves paths in its own mount namespace, which diagmon reaches through
//! `/proc/{pid}/root`. When that is not readable (another user's process, no `CAP_SYS_PTRACE`),
//! the checks that need it are skipped: the runtime's answer is then all there is.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::DumpError;

/// Who a process runs as: its effective user and every group it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The effective user id.
    pub uid: u32,
    /// The effective group id and the supplementary groups.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Reads the `Uid:`, `Gid:` and `Groups:` lines of `/proc/{pid}/status`.
    pub fn of_process(pid: u32) -> Option<Credentials> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        parse_status(&status)
    }

    /// Whether these credentials may do `wanted` (a mask of 4 read, 2 write, 1 execute) on a file
    /// with `metadata`, by the owner / group / other bits. Root may read and write anything and
    /// execute what has any execute bit.
    pub fn may(&self, metadata: &std::fs::Metadata, wanted: u32) -> bool {
        let mode = metadata.permissions().mode();
        if self.uid == 0 {
            return wanted & 1 == 0 || mode & 0o111 != 0;
        }
        let bits = if metadata.uid() == self.uid {
            mode >> 6
        } else if self.groups.contains(&metadata.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & wanted == wanted
    }
}

fn parse_status(status: &str) -> Option<Credentials> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| {
                rest.split_ascii_whitespace()
                    .filter_map(|id| id.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    let uid = *field("Uid:")?.get(1)?;
    let mut groups = vec![*field("Gid:")?.get(1)?];
    groups.extend(field("Groups:").unwrap_or_default());
    Some(Credentials { uid, groups })
}

/// The target's own view of `path`: `/proc/{pid}/root` + `path`.
fn in_target(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// The `createdump` the target's runtime will start: next to the `libcoreclr.so` it has mapped,
/// as a path in the target's file system. `None` when the maps cannot be read.
pub fn createdump_path(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let path = line.split_ascii_whitespace().nth(5)?;
        path.ends_with("/libcoreclr.so")
            .then(|| Path::new(path).with_file_name("createdump"))
    })
}

/// Fails when the target's `createdump` is missing or not executable by the target's user.
pub fn check_createdump(pid: u32, credentials: &Credentials) -> Result<(), DumpError> {
    let Some(path) = createdump_path(pid) else {
        return Ok(());
    };
    if !Path::new(&format!("/proc/{pid}/root/")).is_dir() {
        return Ok(());
    }
    match std::fs::metadata(in_target(pid, &path)) {
        Ok(metadata) if !metadata.is_file() => Err(DumpError::CreatedumpMissing { path }),
        Ok(metadata) if !credentials.may(&metadata, 1) => {
            Err(DumpError::CreatedumpNotExecutable { path })
        }
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(DumpError::CreatedumpMissing { path })
        }
        Err(_) => Ok(()),
    }
}

/// Fails when the target would not find `folder` at the same path (another mount namespace
/// without the same volume there), or cannot create files in it.
pub fn check_folder_access(
    pid: u32,
    credentials: &Credentials,
    folder: &Path,
) -> Result<(), DumpError> {
    let ours = std::fs::metadata(folder).map_err(|source| DumpError::Folder {
        folder: folder.to_owned(),
        source,
    })?;
    let not_shared = || DumpError::FolderNotShared {
        folder: folder.to_owned(),
        pid,
    };
    match std::fs::metadata(in_target(pid, folder)) {
        Ok(theirs) if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) => {}
        Ok(_) => return Err(not_shared()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(not_shared()),
        // Another user's process: its file system view is not readable; the runtime will tell.
        Err(_) => {}
    }
    if !credentials.may(&ours, 2 | 1) {
        return Err(DumpError::FolderNotWritable {
            folder: folder.to_owned(),
            pid,
            uid: credentials.uid,
            owner: ours.uid(),
            mode: ours.permissions().mode() & 0o7777,
        });
    }
    Ok(())
}

/// Bytes available to unprivileged users in the file system holding `folder`.
pub fn free_bytes(folder: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path contains a NUL byte"))?;
    // SAFETY: statvfs writes into the zero-initialised struct we own; the path is NUL-terminated.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Fails when `folder` has less than `minimum` bytes free.
pub fn check_free_space(folder: &Path, minimum: u64) -> Result<(), DumpError> {
    let free = free_bytes(folder).map_err(|source| DumpError::Folder {
        folder: folder.to_owned(),
        source,
    })?;
    if free < minimum {
        return Err(DumpError::NotEnoughSpace {
            folder: folder.to_owned(),
            free,
            minimum,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_effective_ids_and_groups() {
        let status =
            "Name:\tdotnet\nUid:\t1000\t1001\t1000\t1000\nGid:\t50\t51\t50\t50\nGroups:\t4 27 \n";
        assert_eq!(
            parse_status(status),
            Some(Credentials {
                uid: 1001,
                groups: vec![51, 4, 27]
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn permissions_follow_owner_group_other() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let meta = |mode: u32| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(&file).unwrap()
        };
        let owner = std::fs::metadata(&file).unwrap().uid();
        let group = std::fs::metadata(&file).unwrap().gid();
        let me = Credentials {
            uid: owner.wrapping_add(1).max(1),
            groups: vec![group],
        };
        assert!(me.may(&meta(0o070), 2 | 1));
        assert!(!me.may(&meta(0o700), 2));
        let stranger = Credentials {
            uid: me.uid,
            groups: vec![group.wrapping_add(1)],
        };
        assert!(stranger.may(&meta(0o007), 4));
        assert!(!stranger.may(&meta(0o770), 4));
        let root = Credentials {
            uid: 0,
            groups: vec![0],
        };
        assert!(root.may(&meta(0o000), 4 | 2));
        assert!(!root.may(&meta(0o644), 1));
        assert!(root.may(&meta(0o744), 1));
    }

    #[test]
    fn this_process_sees_its_own_folder_and_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        let credentials = Credentials::of_process(pid).unwrap();
        check_folder_access(pid, &credentials, dir.path()).unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let error = check_free_space(dir.path(), u64::MAX).unwrap_err();
        assert!(error.to_string().contains("free"), "{error}");
    }
}
