//! A directory of YAML files as the source of cluster objects (`proxier run --source DIR`):
//! the demo, the real-kernel scenario tests, and CNIs or static load balancers without an API
//! server. Files are polled (no inotify dependency).
//!
//! Bad input never deletes anything (DESIGN.md invariant 3): a file that stops parsing keeps
//! the objects it had (a half-written or broken file never takes services down); a file that
//! had objects and now holds none (truncated to 0 bytes, being rewritten in place) keeps them
//! too and is reported; only removing the file removes its objects. A source directory that
//! vanishes (unmounted, replaced) is an error: the run loop keeps the kernel as it is.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;
use crate::model::ClusterState;
use crate::source::{parse_documents, KubeObject, SnapshotSync, Source, SourcePoll};

/// What identifies one version of a file without reading it: a rewrite changes at least one
/// of these. The modification time alone misses a rewrite of the same length within the
/// file system's timestamp granularity (or with its mtime set back, as `cp -p` does); an
/// atomic replacement (write a temporary file, rename it over) always brings a new inode, and
/// an in-place write moves the change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    changed: (i64, i64),
    inode: (u64, u64),
    length: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            modified: meta.modified().ok(),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: (meta.dev(), meta.ino()),
            length: meta.len(),
        }
    }
}

/// One file as last read: its stamp, and whether it held objects (the objects themselves are
/// not kept: their models live in the cluster).
#[derive(Debug)]
struct FileSnapshot {
    stamp: FileStamp,
    has_objects: bool,
}

/// The files of one directory (or one file), by stamp.
#[derive(Debug)]
pub struct DirectorySource {
    path: PathBuf,
    files: BTreeMap<PathBuf, FileSnapshot>,
    /// Whether `path` was a directory when first read.
    was_directory: Option<bool>,
}

/// What one poll found.
#[derive(Debug, Default)]
pub struct Poll {
    /// Whether any file was added, changed or removed.
    pub changed: bool,
    /// Documents that could not be read (their file's previous objects are kept).
    pub problems: Vec<Error>,
}

/// What happened to one file, as [`DirectorySource::poll`] hands it over.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileChange {
    /// The file is new or changed: all of its objects now.
    Objects(Vec<KubeObject>),
    /// The file was removed: its objects go.
    Removed,
}

impl DirectorySource {
    /// A source reading `path` (a directory of `.yaml`/`.yml`/`.json` files, or one file).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            files: BTreeMap::new(),
            was_directory: None,
        }
    }

    /// The input files, sorted.
    pub fn input_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
        let io = |e: std::io::Error| Error::Config {
            field: "source",
            reason: format!("{}: {e}", path.display()),
        };
        if !path.is_dir() {
            return Ok(vec![path.to_owned()]);
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(path).map_err(io)? {
            let file = entry.map_err(io)?.path();
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
            if file.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                files.push(file);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Re-reads only the files whose [`FileStamp`] changed, handing each one's objects to
    /// `changed` (one file at a time, so a start-up holds one file's objects at once), and
    /// hands over the files removed since the last poll. Fails, changing nothing, when the
    /// source directory vanished or stopped being a directory.
    pub fn poll(&mut self, mut changed: impl FnMut(&Path, FileChange)) -> Result<Poll, Error> {
        let mut poll = Poll::default();
        let is_directory = self.path.is_dir();
        // A source that is not there at the start is a mistake (a typo, a missing mount),
        // never an empty cluster.
        if self.was_directory.is_none() && !self.path.exists() {
            return Err(Error::Config {
                field: "source",
                reason: format!("{}: no such file or directory", self.path.display()),
            });
        }
        if self.was_directory == Some(true) && !is_directory {
            return Err(Error::Config {
                field: "source",
                reason: format!(
                    "{}: the directory vanished; its last objects are kept",
                    self.path.display()
                ),
            });
        }
        self.was_directory.get_or_insert(is_directory);
        let present = Self::input_files(&self.path)?;
        let removed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| present.binary_search(path).is_err())
            .cloned()
            .collect();
        for path in removed {
            self.files.remove(&path);
            changed(&path, FileChange::Removed);
            poll.changed = true;
        }
        for path in present {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let stamp = FileStamp::of(&meta);
            let length = stamp.length;
            if self.files.get(&path).is_some_and(|old| old.stamp == stamp) {
                continue;
            }
            let text = match crate::yaml::read_file(&path) {
                Ok(text) => text,
                Err(e) => {
                    poll.problems.push(e);
                    continue;
                }
            };
            let (objects, mut problems) = parse_documents(&path.display().to_string(), &text);
            drop(text);
            let had_objects = self.files.get(&path).is_some_and(|old| old.has_objects);
            if objects.is_empty() && problems.is_empty() && had_objects {
                problems.push(Error::Config {
                    field: "source",
                    reason: format!(
                        "{}: no objects any more ({length} bytes; truncated?); its previous \
                         objects are kept until the file is removed",
                        path.display()
                    ),
                });
            }
            let keep_old = !problems.is_empty() && self.files.contains_key(&path);
            poll.problems.extend(problems);
            match self.files.get_mut(&path) {
                Some(old) if keep_old => {
                    // Remember the new stamp so the broken file is not re-read every poll.
                    old.stamp = stamp;
                }
                _ => {
                    let has_objects = !objects.is_empty();
                    changed(&path, FileChange::Objects(objects));
                    self.files.insert(path, FileSnapshot { stamp, has_objects });
                    poll.changed = true;
                }
            }
        }
        Ok(poll)
    }

    /// Makes the next [`DirectorySource::poll`] read `path` again, changed or not.
    fn reread(&mut self, path: &Path) {
        if let Some(file) = self.files.get_mut(path) {
            file.stamp.length = u64::MAX;
        }
    }
}

/// A directory of YAML followed as a [`Source`]: a change re-reads and re-applies only the
/// files whose stamp changed; each file's objects are one snapshot ([`SnapshotSync`]), so
/// what vanished from a changed file is removed and nothing else is looked at.
///
/// An object in several files is the version of the file read last; when one file drops it,
/// the others that still hold it are read again in the same poll, so it stays.
#[derive(Debug)]
pub struct DirectoryWatch {
    directory: DirectorySource,
    files: BTreeMap<PathBuf, SnapshotSync>,
}

impl DirectoryWatch {
    /// Follows `directory`.
    pub fn new(directory: DirectorySource) -> Self {
        Self {
            directory,
            files: BTreeMap::new(),
        }
    }

    /// One poll of the directory applied to `cluster`; returns the files that still hold an
    /// object another file dropped (to be read again).
    fn poll_once(
        &mut self,
        cluster: &mut ClusterState,
        out: &mut SourcePoll,
    ) -> Result<Vec<PathBuf>, Error> {
        let files = &mut self.files;
        let mut withdrawn = Vec::new();
        let poll = self.directory.poll(|path, change| {
            let report = match change {
                FileChange::Objects(objects) => files
                    .entry(path.to_owned())
                    .or_default()
                    .apply(&objects, cluster),
                FileChange::Removed => match files.remove(path) {
                    Some(mut sync) => sync.apply(&[], cluster),
                    None => return,
                },
            };
            out.changed |= report.upserted + report.removed > 0;
            out.skipped.extend(report.skipped);
            withdrawn.extend(report.withdrawn);
        })?;
        out.skipped.extend(poll.problems);
        let mut reread = Vec::new();
        for object in &withdrawn {
            for (path, sync) in &self.files {
                if sync.holds(object) && !reread.contains(path) {
                    reread.push(path.clone());
                }
            }
        }
        Ok(reread)
    }
}

impl Source for DirectoryWatch {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        let mut out = SourcePoll::default();
        let reread = self.poll_once(cluster, &mut out)?;
        if !reread.is_empty() {
            for path in &reread {
                self.directory.reread(path);
            }
            self.poll_once(cluster, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
