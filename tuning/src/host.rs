//! The one reader of `/sys` and `/proc`: every file inspect looks at goes
//! through [`Host`], so tests point it at a captured tree with `--root`.

use std::io;
use std::path::{Path, PathBuf};

/// Failure to read a host file that exists but cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct HostError {
    /// The path as resolved under the root.
    pub path: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: io::Error,
}

/// Reads host files under a root directory (`/` for the live host).
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    live: bool,
}

impl Host {
    /// The machine this process runs on: files under `/`, live probes allowed.
    pub fn live() -> Self {
        Self {
            root: PathBuf::from("/"),
            live: true,
        }
    }

    /// A captured tree: `/sys/...` is read as `root/sys/...`; live-only facts
    /// (affinity, rlimits, io_uring) come from fixture files under `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            live: false,
        }
    }

    /// Whether this is the running host (so syscalls describe it).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The root directory files are read under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The file's text, or `None` when it does not exist (many files are
    /// optional: no cpufreq in a VM, no `nohz_full` on most kernels).
    pub fn read(&self, path: &str) -> Result<Option<String>, HostError> {
        let full = self.resolve(path);
        match std::fs::read_to_string(&full) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HostError { path: full, source }),
        }
    }

    /// The file's first line, trimmed, or `None` when it does not exist.
    pub fn read_trimmed(&self, path: &str) -> Result<Option<String>, HostError> {
        Ok(self.read(path)?.map(|t| t.trim().to_owned()))
    }

    /// Names in a directory, sorted; empty when the directory does not exist.
    pub fn list(&self, path: &str) -> Result<Vec<String>, HostError> {
        let full = self.resolve(path);
        let entries = match std::fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(HostError { path: full, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| HostError {
                path: full.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The last component of a symlink's target (`/sys/class/net/eth0/device`
    /// names the NIC's PCI address or virtio device), or `None` if it is not a link.
    pub fn link_name(&self, path: &str) -> Option<String> {
        let target = std::fs::read_link(self.resolve(path)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }
}
