//! The `file_storage` extension: a directory where components keep small state across
//! restarts (the `filelog` receiver's file offsets), configured as in the Collector.
//!
//! ```yaml
//! extensions:
//!   file_storage:
//!     directory: /var/lib/sidekick/storage
//! receivers:
//!   filelog:
//!     include: [/var/log/app/*.log]
//!     storage: file_storage
//! service:
//!   extensions: [file_storage]
//! ```
//!
//! Each value is one file, replaced whole (written aside, then renamed over the old one,
//! so a crash leaves the old value or the new one, never half of each); with
//! `fsync: true` the file and the directory are synced before the rename is relied on.
//! A lock file refuses a second Sidekick on the same directory. Files Sidekick did not
//! write are left alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// `file_storage`, in the Collector's shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    /// Where values are kept. Default `/var/lib/sidekick/file_storage`.
    pub directory: String,
    /// Create the directory when it does not exist. Default false, as in the Collector.
    pub create_directory: bool,
    /// Sync each value to disk before relying on it. Default false: a value survives a
    /// process crash either way; `true` also survives a node crash, at a few
    /// milliseconds per write.
    pub fsync: bool,
    /// Collector options for its database file, with no meaning for Sidekick's files.
    pub timeout: Option<serde::de::IgnoredAny>,
    pub compaction: Option<serde::de::IgnoredAny>,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: "/var/lib/sidekick/file_storage".into(),
            create_directory: false,
            fsync: false,
            timeout: None,
            compaction: None,
        }
    }
}

/// An open storage directory, locked for this process.
#[derive(Debug)]
pub struct Storage {
    directory: PathBuf,
    fsync: bool,
    /// Held open (and locked) for as long as the storage is used.
    _lock: File,
}

/// The storages of `service.extensions`, by id.
#[derive(Default)]
pub struct Storages(BTreeMap<String, Arc<Storage>>);

/// No storages (component tests without extensions).
pub static NO_STORAGES: Storages = Storages(BTreeMap::new());

impl Storages {
    pub fn insert(&mut self, id: String, storage: Arc<Storage>) {
        self.0.insert(id, storage);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Storage>> {
        self.0.get(id)
    }
}

/// `name` with every character but ASCII letters, digits, `-` and `.` made `_`: safe
/// in a file name (component and pipeline ids hold `/`).
pub fn file_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Storage {
    /// Opens (and locks) `directory`.
    pub fn open(config: &FileStorageConfig) -> Result<Storage, String> {
        let directory = PathBuf::from(&config.directory);
        if !directory.is_dir() {
            if config.create_directory {
                std::fs::create_dir_all(&directory)
                    .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
            } else {
                return Err(format!(
                    "{} does not exist: create it (an emptyDir volume in a Pod) or set create_directory: true",
                    directory.display()
                ));
            }
        }
        let lock_path = directory.join("sidekick.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            format!(
                "{} is in use by another Sidekick (its lock {} is held): give each its own directory",
                directory.display(),
                lock_path.display()
            )
        })?;
        Ok(Storage {
            directory,
            fsync: config.fsync,
            _lock: lock,
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.directory
            .join(format!("{}.state", file_name_part(key)))
    }

    /// The value under `key`, or `None` if there is none (or it cannot be read: a warning
    /// is logged and the component starts without it).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read stored state: starting without it");
                None
            }
        }
    }

    /// Replaces the value under `key`.
    pub fn set(&self, key: &str, value: &[u8]) -> std::io::Result<()> {
        let path = self.path(key);
        let tmp = path.with_extension("state.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(value)?;
        if self.fsync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, &path)?;
        if self.fsync {
            File::open(&self.directory)?.sync_all()?;
        }
        Ok(())
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Whether writes are synced to the device before they are relied on.
    pub fn fsync(&self) -> bool {
        self.fsync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "sidekick-storage-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn values_survive_reopening_and_a_second_user_is_refused() {
        let d = dir();
        let config = FileStorageConfig {
            directory: d.display().to_string(),
            fsync: true,
            ..FileStorageConfig::default()
        };
        let missing = Storage::open(&config).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        let config = FileStorageConfig {
            create_directory: true,
            ..config
        };
        let s = Storage::open(&config).unwrap();
        std::fs::write(d.join("not-ours.txt"), "keep me").unwrap();
        assert_eq!(s.get("receiver/filelog"), None);
        s.set("receiver/filelog", b"one").unwrap();
        s.set("receiver/filelog", b"two").unwrap();
        assert_eq!(s.get("receiver/filelog").as_deref(), Some(&b"two"[..]));
        let busy = Storage::open(&config).unwrap_err();
        assert!(busy.contains("in use by another Sidekick"), "{busy}");
        drop(s);
        let again = Storage::open(&config).unwrap();
        assert_eq!(again.get("receiver/filelog").as_deref(), Some(&b"two"[..]));
        assert_eq!(
            std::fs::read_to_string(d.join("not-ours.txt")).unwrap(),
            "keep me"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
