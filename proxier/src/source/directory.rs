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

/// One file as last read.
#[derive(Debug)]
struct FileSnapshot {
    stamp: FileStamp,
    objects: Vec<KubeObject>,
}

/// The files of one directory (or one file) and the objects they hold.
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

    /// Re-reads files whose modification time or length changed, and forgets removed ones.
    /// Fails, changing nothing, when the source directory vanished or stopped being a
    /// directory.
    pub fn poll(&mut self) -> Result<Poll, Error> {
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
        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        poll.changed |= self.files.len() != before;
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
            let had_objects = self
                .files
                .get(&path)
                .is_some_and(|old| !old.objects.is_empty());
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
                    self.files.insert(path, FileSnapshot { stamp, objects });
                    poll.changed = true;
                }
            }
        }
        Ok(poll)
    }

    /// Every object of every file, in file order.
    pub fn objects(&self) -> Vec<KubeObject> {
        self.files
            .values()
            .flat_map(|f| f.objects.iter().cloned())
            .collect()
    }
}

/// A directory of YAML followed as a [`Source`].
#[derive(Debug)]
pub struct DirectoryWatch {
    directory: DirectorySource,
    snapshot: SnapshotSync,
}

impl DirectoryWatch {
    /// Follows `directory`.
    pub fn new(directory: DirectorySource) -> Self {
        Self {
            directory,
            snapshot: SnapshotSync::new(),
        }
    }
}

impl Source for DirectoryWatch {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        let poll = self.directory.poll()?;
        if !poll.changed {
            return Ok(SourcePoll {
                skipped: poll.problems,
                ..SourcePoll::default()
            });
        }
        let objects = self.directory.objects();
        Ok(self.snapshot.poll(&objects, poll.problems, cluster))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.0.1\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n";

    fn directory(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("proxier-dir-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("web.yaml"), SERVICE).unwrap();
        dir
    }

    fn services(watch: &mut DirectoryWatch, cluster: &mut ClusterState) -> (usize, SourcePoll) {
        let poll = watch.poll_changes(cluster).unwrap();
        (cluster.services().count(), poll)
    }

    /// Issue 12 item 8: a file truncated to 0 bytes (or to whitespace / a comment) keeps its
    /// objects and is reported; only removing it removes them. (Before: read as an empty
    /// cluster, every virtual server deleted.)
    #[test]
    fn a_truncated_file_keeps_its_objects_and_is_reported() {
        let dir = directory("truncated");
        let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
        let mut cluster = ClusterState::new();
        assert_eq!(services(&mut watch, &mut cluster).0, 1);
        for truncated in ["", "\n", "# being rewritten\n"] {
            fs::write(dir.join("web.yaml"), truncated).unwrap();
            let (count, poll) = services(&mut watch, &mut cluster);
            assert_eq!(count, 1, "{truncated:?}: nothing deleted");
            assert_eq!(poll.skipped.len(), 1, "{truncated:?}: reported");
            assert!(!poll.changed, "{truncated:?}");
            println!("item 8: {truncated:?} -> {}", poll.skipped[0]);
        }
        // A half-written file (cut mid-document) keeps them too.
        fs::write(dir.join("web.yaml"), &SERVICE[..SERVICE.len() - 20]).unwrap();
        assert_eq!(services(&mut watch, &mut cluster).0, 1);
        fs::write(dir.join("web.yaml"), SERVICE).unwrap();
        assert_eq!(services(&mut watch, &mut cluster).0, 1);
        fs::remove_file(dir.join("web.yaml")).unwrap();
        assert_eq!(
            services(&mut watch, &mut cluster).0,
            0,
            "removal is the way to delete"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A rewrite of the same length whose modification time did not move (timestamp
    /// granularity, or set back) is still seen: in place (the change time moves) and by an
    /// atomic rename (a new inode). Before, ready -> terminating (same length) could be missed,
    /// and the endpoint was then deleted while still at full weight.
    #[test]
    fn a_same_length_rewrite_with_the_same_mtime_is_seen() {
        let dir = directory("same-length");
        let file = dir.join("web.yaml");
        let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
        let mut cluster = ClusterState::new();
        assert_eq!(services(&mut watch, &mut cluster).0, 1);
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        let ip = |cluster: &ClusterState| {
            cluster
                .services()
                .flat_map(|s| s.ports.iter().flat_map(|p| p.cluster_ips.clone()))
                .collect::<Vec<_>>()
        };
        let before = ip(&cluster);
        // In place, same length, mtime restored.
        let rewritten = SERVICE.replace("10.96.0.1", "10.96.0.2");
        assert_eq!(rewritten.len(), SERVICE.len());
        fs::write(&file, &rewritten).unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let (_, poll) = services(&mut watch, &mut cluster);
        assert!(poll.changed, "in-place rewrite seen");
        let in_place = ip(&cluster);
        assert_ne!(in_place, before);
        // Atomic replacement, same length, same mtime.
        let tmp = dir.join("web.tmp~");
        fs::write(&tmp, SERVICE.replace("10.96.0.1", "10.96.0.3")).unwrap();
        fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::rename(&tmp, &file).unwrap();
        let (_, poll) = services(&mut watch, &mut cluster);
        assert!(poll.changed, "renamed-over rewrite seen");
        assert_ne!(ip(&cluster), in_place);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Issue 12 item 8: a vanished source directory is an error (the loop keeps the kernel as
    /// it is), not an empty cluster.
    #[test]
    fn a_vanished_directory_is_an_error_not_an_empty_cluster() {
        let dir = directory("vanished");
        let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
        let mut cluster = ClusterState::new();
        assert_eq!(services(&mut watch, &mut cluster).0, 1);
        fs::remove_dir_all(&dir).unwrap();
        let error = watch.poll_changes(&mut cluster).unwrap_err();
        assert!(error.to_string().contains("vanished"), "{error}");
        assert_eq!(cluster.services().count(), 1);
        println!("item 8: vanished directory -> {error}");
    }
}
