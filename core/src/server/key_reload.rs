//! Key rotation without a restart: a task that watches the config file and tells the
//! [`Authenticator`] when its `[authentication]` section changes.
//!
//! The file is polled (its modification time, size and inode, every [`POLL_INTERVAL`]); a
//! change is loaded on a blocking thread with [`config::load`], exactly as at start-up. A file
//! that loads puts its key in force (or refuses everything if it has none). A file that was
//! deleted, cannot be read or no longer parses fails closed: the old key is revoked, every
//! authenticated request gets 401, and the log says why, until a good file is back.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::auth::Authenticator;
use crate::config;

/// How often the config file is examined.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What identifies one version of the config file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: (u64, u64),
}

impl FileStamp {
    async fn of(path: &Path) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = tokio::fs::metadata(path).await?;
        Ok(FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: (metadata.dev(), metadata.ino()),
        })
    }
}

/// Watches `file` forever (spawn it; abort it to stop), telling `authenticator` about every
/// change. The file is taken to be as it was when the authenticator was configured.
pub async fn watch_config_file(file: PathBuf, authenticator: Authenticator) {
    let mut seen = FileStamp::of(&file).await.ok();
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let stamp = FileStamp::of(&file).await;
        if stamp.as_ref().ok() == seen.as_ref() {
            continue;
        }
        seen = stamp.as_ref().ok().cloned();
        if let Err(error) = stamp {
            authenticator.revoke(&format!(
                "the config file {} cannot be examined ({error}), so its API key is no longer trusted",
                file.display()
            ));
            continue;
        }
        let path = file.clone();
        let loaded =
            tokio::task::spawn_blocking(move || config::load(Some(&path), serde_json::json!({})))
                .await;
        match loaded {
            Ok(Ok(config)) => {
                tracing::info!(file = %file.display(), "the config file changed; reloading the API key");
                authenticator.reconfigure(&config.authentication);
            }
            Ok(Err(error)) => authenticator.revoke(&format!(
                "the config file {} changed but cannot be loaded ({error}), so its API key is no longer trusted",
                file.display()
            )),
            Err(error) => authenticator.revoke(&format!(
                "loading the changed config file {} failed ({error}), so its API key is no longer trusted",
                file.display()
            )),
        }
    }
}
