//! A directory of YAML files as the source of cluster objects (`proxier run --source DIR`):
//! the demo, the real-kernel scenario tests, and CNIs or static load balancers without an API
//! server. Files are polled (no inotify dependency); a file that stops parsing keeps the objects
//! it had, so a half-written or broken file never takes services down.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;
use crate::model::ClusterState;
use crate::source::{parse_documents, KubeObject, SnapshotSync, Source, SourcePoll};

/// One file as last read.
#[derive(Debug)]
struct FileSnapshot {
    modified: Option<SystemTime>,
    length: u64,
    objects: Vec<KubeObject>,
}

/// The files of one directory (or one file) and the objects they hold.
#[derive(Debug)]
pub struct DirectorySource {
    path: PathBuf,
    files: BTreeMap<PathBuf, FileSnapshot>,
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
    pub fn poll(&mut self) -> Result<Poll, Error> {
        let mut poll = Poll::default();
        let present = Self::input_files(&self.path)?;
        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        poll.changed |= self.files.len() != before;
        for path in present {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let (modified, length) = (meta.modified().ok(), meta.len());
            if let Some(old) = self.files.get(&path) {
                if old.modified == modified && old.length == length {
                    continue;
                }
            }
            let text = match crate::yaml::read_file(&path) {
                Ok(text) => text,
                Err(e) => {
                    poll.problems.push(e);
                    continue;
                }
            };
            let (objects, problems) = parse_documents(&path.display().to_string(), &text);
            let keep_old = !problems.is_empty() && self.files.contains_key(&path);
            poll.problems.extend(problems);
            match self.files.get_mut(&path) {
                Some(old) if keep_old => {
                    // Remember the new stamp so the broken file is not re-read every poll.
                    old.modified = modified;
                    old.length = length;
                }
                _ => {
                    self.files.insert(
                        path,
                        FileSnapshot {
                            modified,
                            length,
                            objects,
                        },
                    );
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
