//! `--apply` and `--revert`: writing a plan's files under a root, with a
//! backup that restores the host exactly.
//!
//! Apply writes each file's printed text under the root, after copying
//! any file it replaces into `<root>/var/lib/shardcast-tune/backup/<unix
//! time>/files/` and writing a `manifest.json` there: each path, whether it
//! existed, the text applied, the directories created, and the live values
//! of the sysctls the plan raises. The manifest is written before any file,
//! so an apply that fails while writing can still be reverted (with
//! `--force`, since not every file then holds the applied text); one that
//! fails before leaves no backup behind.
//!
//! Backups stack. Applying again (a new plan, or the same one on a host
//! that has changed) backs up the state the previous apply left, so
//! `--revert` steps back one apply at a time; applying a plan whose files
//! are all already in place changes nothing and makes no backup. Revert
//! restores the latest backup and deletes it: old files come back byte for
//! byte, files that did not exist are removed, so are directories apply
//! created if they are empty again, and on the live host the recorded
//! sysctl values are written back. It refuses when a file was edited since
//! it was applied (the edit would be lost), unless forced.
//!
//! Only on the live host (no `--root`) are commands run: `sysctl -p` on
//! the sysctl.d file after apply, `sysctl -w` with the recorded values
//! after revert, and `systemctl daemon-reload` after either when systemctl
//! is installed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{PlanFile, SYSCTL_PATH};

/// Where backups are kept, under the root.
pub const BACKUP_DIR: &str = "/var/lib/shardcast-tune/backup";

/// The manifest's name inside a backup.
const MANIFEST: &str = "manifest.json";

/// Why applying or reverting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Reading, writing or removing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `--revert` with no backup left.
    #[error("nothing to revert: no backup in {0}")]
    NoBackup(PathBuf),
    /// A file was edited after it was applied; reverting would lose that.
    #[error(
        "{path} changed since it was applied; reverting would lose the change (--force reverts anyway)"
    )]
    Changed {
        /// The edited file.
        path: PathBuf,
    },
    /// A backup's manifest is not what apply writes.
    #[error("backup manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A command on the live host failed; the files are in place and the
    /// backup is kept.
    #[error("{command}: {detail} (the files are written; --revert undoes them)")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and error output, or why it did not start.
        detail: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a backup holds: enough to put the host back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// When apply ran, in seconds since the Unix epoch.
    pub created: u64,
    /// Each file apply wrote.
    pub files: Vec<BackedUpFile>,
    /// Directories apply created, as absolute paths on the host (under
    /// the root, like `files`), outermost first, the backup's own
    /// included; removed on revert if empty.
    pub created_dirs: Vec<String>,
    /// The sysctls the plan raises, with their values before apply.
    pub sysctls: Vec<SavedSysctl>,
}

/// One file apply wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackedUpFile {
    /// Absolute path on the host (under the root).
    pub path: String,
    /// Whether it existed; if so its old bytes are under `files/` in the
    /// backup.
    pub existed: bool,
    /// The text apply wrote, to notice edits made since.
    pub applied: String,
}

/// A sysctl's value before apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSysctl {
    /// Dotted name.
    pub name: String,
    /// Its value, or `None` when it could not be read.
    pub before: Option<String>,
}

/// Where apply writes: a root directory, and whether it is the running
/// host (so commands may run).
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    live: bool,
}

impl Root {
    /// The running host: files under `/`, `sysctl` and `systemctl` run.
    pub fn live() -> Self {
        Self {
            path: PathBuf::from("/"),
            live: true,
        }
    }

    /// A directory standing for a host's `/`; no command runs.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            live: false,
        }
    }

    /// `path` (absolute on the host) under this root.
    pub fn join(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    /// A path under this root as the host names it: `/etc/x` for
    /// `<root>/etc/x`.
    fn host_path(&self, full: &Path) -> String {
        let relative = full.strip_prefix(&self.path).unwrap_or(full);
        Path::new("/").join(relative).display().to_string()
    }

    fn backups(&self) -> PathBuf {
        self.join(BACKUP_DIR)
    }
}

/// What apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every file already had the planned text: nothing written, no backup.
    Unchanged,
    /// Files written after a backup.
    Written {
        /// The backup directory.
        backup: PathBuf,
        /// The files written, as full paths.
        files: Vec<PathBuf>,
        /// Commands run on the live host.
        commands: Vec<String>,
    },
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unchanged => {
                writeln!(f, "applied: every file already as planned; nothing changed")
            }
            Self::Written {
                backup,
                files,
                commands,
            } => {
                writeln!(f, "applied: backup in {}", backup.display())?;
                for file in files {
                    writeln!(f, "  wrote {}", file.display())?;
                }
                for command in commands {
                    writeln!(f, "  ran {command}")?;
                }
                Ok(())
            }
        }
    }
}

/// What revert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reverted {
    /// The backup restored (now removed).
    pub backup: PathBuf,
    /// Files put back as they were.
    pub restored: Vec<PathBuf>,
    /// Files removed because they did not exist before.
    pub removed: Vec<PathBuf>,
    /// Commands run on the live host.
    pub commands: Vec<String>,
}

impl fmt::Display for Reverted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reverted: backup {} restored and removed",
            self.backup.display()
        )?;
        for file in &self.restored {
            writeln!(f, "  restored {}", file.display())?;
        }
        for file in &self.removed {
            writeln!(f, "  removed {}", file.display())?;
        }
        for command in &self.commands {
            writeln!(f, "  ran {command}")?;
        }
        Ok(())
    }
}

/// A file's bytes, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ApplyError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Creates `dir` and its missing parents; returns those created,
/// outermost first.
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>, ApplyError> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    Ok(missing.into_iter().rev().collect())
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so
/// a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ApplyError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".shardcast-tune.tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// A sysctl's value under the root's `/proc/sys`.
fn read_sysctl(root: &Root, name: &str) -> Result<Option<String>, ApplyError> {
    let path = root.join(&format!("/proc/sys/{}", name.replace('.', "/")));
    Ok(read_optional(&path)?.map(|bytes| {
        String::from_utf8_lossy(&bytes)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A backup's name: the time, then `.N` if that second is taken.
fn backup_key(name: &str) -> Option<(u64, u32)> {
    match name.split_once('.') {
        Some((secs, n)) => Some((secs.parse().ok()?, n.parse().ok()?)),
        None => Some((name.parse().ok()?, 0)),
    }
}

/// The newest backup directory, if any.
fn latest_backup(root: &Root) -> Result<Option<PathBuf>, ApplyError> {
    let dir = root.backups();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&dir)(e)),
    };
    let mut best: Option<((u64, u32), PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(io_error(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(key) = backup_key(&name) {
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((key, entry.path()));
            }
        }
    }
    Ok(best.map(|(_, path)| path))
}

/// Writes `files` under `root` after backing up what they replace (bytes
/// and permission bits), and records the values of `sysctls` before they
/// are raised.
pub fn apply(root: &Root, files: &[PlanFile], sysctls: &[String]) -> Result<Applied, ApplyError> {
    let mut old = Vec::with_capacity(files.len());
    for file in files {
        old.push(read_optional(&root.join(&file.path))?);
    }
    if files
        .iter()
        .zip(&old)
        .all(|(file, old)| old.as_deref() == Some(file.text.as_bytes()))
    {
        return Ok(Applied::Unchanged);
    }
    let created = unix_now();
    let mut backup = root.backups().join(created.to_string());
    let mut n = 0;
    while backup.exists() {
        n += 1;
        backup = root.backups().join(format!("{created}.{n}"));
    }
    let mut created_dirs = Vec::new();
    let targets = match back_up(
        root,
        &backup,
        created,
        files,
        &old,
        sysctls,
        &mut created_dirs,
    ) {
        Ok(targets) => targets,
        Err(error) => {
            // Nothing is written yet: leave no half backup for a revert to
            // trip on. Cleanup is best effort; the error that stopped apply
            // is the one to report.
            let _ = std::fs::remove_dir_all(&backup);
            let _ = remove_empty_dirs(created_dirs.iter().rev());
            return Err(error);
        }
    };
    for (file, target) in files.iter().zip(&targets) {
        write_atomically(target, file.text.as_bytes())?;
    }
    let mut commands = Vec::new();
    if root.live {
        if !sysctls.is_empty() {
            let file = root.join(SYSCTL_PATH);
            run(&mut commands, "sysctl", &["-p".as_ref(), file.as_os_str()])?;
        }
        daemon_reload(&mut commands)?;
    }
    Ok(Applied::Written {
        backup,
        files: targets,
        commands,
    })
}

/// Saves the files `old` holds (the current bytes of `files`) and the
/// values of `sysctls` into `backup`, creates the files' directories, and
/// writes the manifest last; returns the files' full paths. Every
/// directory created is pushed to `created_dirs`, outermost first.
fn back_up(
    root: &Root,
    backup: &Path,
    created: u64,
    files: &[PlanFile],
    old: &[Option<Vec<u8>>],
    sysctls: &[String],
    created_dirs: &mut Vec<PathBuf>,
) -> Result<Vec<PathBuf>, ApplyError> {
    created_dirs.extend(create_dirs(backup)?);
    let mut manifest = Manifest {
        created,
        files: Vec::new(),
        created_dirs: Vec::new(),
        sysctls: Vec::new(),
    };
    for (file, old) in files.iter().zip(old) {
        if let Some(bytes) = old {
            let saved = backup.join("files").join(file.path.trim_start_matches('/'));
            if let Some(parent) = saved.parent() {
                std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            std::fs::write(&saved, bytes).map_err(io_error(&saved))?;
            let original = root.join(&file.path);
            let mode = std::fs::metadata(&original)
                .map_err(io_error(&original))?
                .permissions();
            std::fs::set_permissions(&saved, mode).map_err(io_error(&saved))?;
        }
        manifest.files.push(BackedUpFile {
            path: file.path.clone(),
            existed: old.is_some(),
            applied: file.text.clone(),
        });
    }
    for name in sysctls {
        manifest.sysctls.push(SavedSysctl {
            name: name.clone(),
            before: read_sysctl(root, name)?,
        });
    }
    let mut targets = Vec::with_capacity(files.len());
    for file in files {
        let target = root.join(&file.path);
        if let Some(parent) = target.parent() {
            created_dirs.extend(create_dirs(parent)?);
        }
        targets.push(target);
    }
    manifest.created_dirs = created_dirs.iter().map(|d| root.host_path(d)).collect();
    let manifest_path = backup.join(MANIFEST);
    let json = serde_json::to_string_pretty(&manifest).map_err(|source| ApplyError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    std::fs::write(&manifest_path, json).map_err(io_error(&manifest_path))?;
    Ok(targets)
}

/// Removes each directory that is empty; those that are not, or are gone,
/// stay as they are.
fn remove_empty_dirs<'a>(dirs: impl Iterator<Item = &'a PathBuf>) -> Result<(), ApplyError> {
    for dir in dirs {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                ) => {}
            Err(e) => return Err(io_error(dir)(e)),
        }
    }
    Ok(())
}

/// Restores the latest backup under `root` and removes it. Refuses when a
/// file changed since it was applied, unless `force`.
pub fn revert(root: &Root, force: bool) -> Result<Reverted, ApplyError> {
    let backup = latest_backup(root)?.ok_or_else(|| ApplyError::NoBackup(root.backups()))?;
    let manifest_path = backup.join(MANIFEST);
    let json = std::fs::read(&manifest_path).map_err(io_error(&manifest_path))?;
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|source| ApplyError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
    if !force {
        for file in &manifest.files {
            let path = root.join(&file.path);
            if read_optional(&path)?.as_deref() != Some(file.applied.as_bytes()) {
                return Err(ApplyError::Changed { path });
            }
        }
    }
    let mut restored = Vec::new();
    let mut removed = Vec::new();
    for file in &manifest.files {
        let path = root.join(&file.path);
        if file.existed {
            let saved = backup.join("files").join(file.path.trim_start_matches('/'));
            let bytes = std::fs::read(&saved).map_err(io_error(&saved))?;
            write_atomically(&path, &bytes)?;
            let mode = std::fs::metadata(&saved)
                .map_err(io_error(&saved))?
                .permissions();
            std::fs::set_permissions(&path, mode).map_err(io_error(&path))?;
            restored.push(path);
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
            removed.push(path);
        }
    }
    std::fs::remove_dir_all(&backup).map_err(io_error(&backup))?;
    let created_dirs: Vec<PathBuf> = manifest.created_dirs.iter().map(|d| root.join(d)).collect();
    remove_empty_dirs(created_dirs.iter().rev())?;
    let mut commands = Vec::new();
    if root.live {
        for sysctl in &manifest.sysctls {
            if let Some(before) = &sysctl.before {
                let setting = format!("{}={before}", sysctl.name);
                run(&mut commands, "sysctl", &["-w".as_ref(), setting.as_ref()])?;
            }
        }
        daemon_reload(&mut commands)?;
    }
    Ok(Reverted {
        backup,
        restored,
        removed,
        commands,
    })
}

/// Runs a command, recording its line; fails with its status and stderr.
fn run(
    commands: &mut Vec<String>,
    program: &str,
    args: &[&std::ffi::OsStr],
) -> Result<(), ApplyError> {
    let line = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ApplyError::Command {
            command: line.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(ApplyError::Command {
            command: line,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    commands.push(line);
    Ok(())
}

/// `systemctl daemon-reload`, when systemctl is installed: the drop-in
/// takes effect at the service's next start.
fn daemon_reload(commands: &mut Vec<String>) -> Result<(), ApplyError> {
    let installed = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("systemctl").exists()));
    if installed {
        run(commands, "systemctl", &["daemon-reload".as_ref()])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "shardcast-tune-apply-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn file(path: &str, text: &str) -> PlanFile {
        PlanFile {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn backups_are_ordered_by_time_then_sequence() {
        assert_eq!(backup_key("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(backup_key("1700000000.2"), Some((1_700_000_000, 2)));
        assert_eq!(backup_key("notes"), None);
        assert!(backup_key("1700000000.10") > backup_key("1700000000.9"));
    }

    #[test]
    fn applies_stack_and_revert_one_at_a_time() {
        let dir = scratch("stack");
        let root = Root::at(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/a.conf"), "original\n").unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(dir.join("etc/a.conf"), private).unwrap();
        let first = [
            file("/etc/a.conf", "first\n"),
            file("/etc/new/b.conf", "b\n"),
        ];
        assert!(matches!(
            apply(&root, &first, &[]).unwrap(),
            Applied::Written { .. }
        ));
        // The same plan again changes nothing and stacks no backup.
        assert_eq!(apply(&root, &first, &[]).unwrap(), Applied::Unchanged);
        let second = [
            file("/etc/a.conf", "second\n"),
            file("/etc/new/b.conf", "b\n"),
        ];
        assert!(matches!(
            apply(&root, &second, &[]).unwrap(),
            Applied::Written { .. }
        ));
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/a.conf")).unwrap(),
            "second\n"
        );
        revert(&root, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/a.conf")).unwrap(),
            "first\n"
        );
        assert!(dir.join("etc/new/b.conf").exists());
        revert(&root, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/a.conf")).unwrap(),
            "original\n"
        );
        let mode = std::fs::metadata(dir.join("etc/a.conf"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(!dir.join("etc/new").exists());
        assert!(!dir.join("var").exists());
        assert!(matches!(revert(&root, false), Err(ApplyError::NoBackup(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_apply_leaves_no_backup_behind() {
        let dir = scratch("fail");
        let root = Root::at(&dir);
        // `/proc` is a file: the sysctl's value cannot be read, after the
        // existing file was copied into the backup.
        std::fs::write(dir.join("proc"), "not a directory\n").unwrap();
        std::fs::write(dir.join("a.conf"), "old\n").unwrap();
        let files = [file("/a.conf", "new\n"), file("/etc/y.conf", "y\n")];
        let error = apply(&root, &files, &["net.core.somaxconn".into()]).unwrap_err();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.conf")).unwrap(),
            "old\n"
        );
        assert!(!dir.join("etc").exists());
        assert!(matches!(error, ApplyError::Io { .. }), "{error}");
        assert!(!dir.join("var").exists(), "half a backup was left");
        assert!(matches!(revert(&root, false), Err(ApplyError::NoBackup(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn revert_refuses_to_lose_an_edit_unless_forced() {
        let dir = scratch("edit");
        let root = Root::at(&dir);
        apply(&root, &[file("/etc/c.conf", "planned\n")], &[]).unwrap();
        std::fs::write(dir.join("etc/c.conf"), "edited by hand\n").unwrap();
        assert!(matches!(
            revert(&root, false),
            Err(ApplyError::Changed { path }) if path == dir.join("etc/c.conf")
        ));
        assert!(dir.join("etc/c.conf").exists());
        revert(&root, true).unwrap();
        assert!(!dir.join("etc").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_sysctls_before_apply() {
        let dir = scratch("sysctl");
        let root = Root::at(&dir);
        std::fs::create_dir_all(dir.join("proc/sys/net/core")).unwrap();
        std::fs::write(dir.join("proc/sys/net/core/somaxconn"), "128\n").unwrap();
        let Applied::Written { backup, .. } = apply(
            &root,
            &[file("/etc/s.conf", "x\n")],
            &["net.core.somaxconn".into(), "fs.nr_open".into()],
        )
        .unwrap() else {
            panic!("nothing written");
        };
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(backup.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(
            manifest.sysctls,
            [
                SavedSysctl {
                    name: "net.core.somaxconn".into(),
                    before: Some("128".into())
                },
                SavedSysctl {
                    name: "fs.nr_open".into(),
                    before: None
                }
            ]
        );
        let backup_name = backup.file_name().unwrap().to_string_lossy();
        assert_eq!(
            manifest.created_dirs,
            [
                "/var".to_owned(),
                "/var/lib".into(),
                "/var/lib/shardcast-tune".into(),
                BACKUP_DIR.into(),
                format!("{BACKUP_DIR}/{backup_name}"),
                "/etc".into()
            ]
        );
        assert_eq!(
            manifest.files,
            [BackedUpFile {
                path: "/etc/s.conf".into(),
                existed: false,
                applied: "x\n".into()
            }]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
