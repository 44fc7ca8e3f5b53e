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
use crate::source::snapshot::{Digest, DocumentPart};
use crate::source::yaml::parse_piece;
use crate::source::{parse_documents, KubeObject, SnapshotSync, Source, SourcePoll};
use crate::yaml::split;
use crate::yaml::StreamPosition;

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

/// One file as last read: its stamp, whether it held objects, and the digests of its
/// documents (the objects themselves are not kept: their models live in the cluster).
#[derive(Debug, Clone)]
struct FileSnapshot {
    stamp: FileStamp,
    has_objects: bool,
    /// Its documents as last handed over, sorted by digest (empty when the file was read
    /// whole: see [`split::documents`]).
    documents: Vec<DocumentRecord>,
}

/// One document of a file as last handed over.
#[derive(Debug, Clone, Copy)]
struct DocumentRecord {
    digest: Digest,
    /// How many YAML documents the piece held (0 or 1), for the numbers in messages.
    documents: usize,
    /// How many objects of ours it held.
    objects: usize,
}

impl FileSnapshot {
    fn document(&self, digest: Digest) -> Option<&DocumentRecord> {
        let at = self
            .documents
            .binary_search_by_key(&digest, |d| d.digest)
            .ok()?;
        self.documents.get(at)
    }
}

/// Reads and parses the changed file `path`, whose last read was `old` (its documents are
/// not parsed again).
fn read(path: &Path, old: Option<&FileSnapshot>) -> Result<FileRead, Error> {
    let text = crate::yaml::read_file(path)?;
    let json = path.extension().is_some_and(|e| e == "json");
    let name = path.display().to_string();
    Ok(FileRead::of(&name, &text, json, old))
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
    /// The file is new or changed: its documents now, in order, the new or changed ones
    /// parsed.
    Documents(Vec<FileDocument>),
    /// The file was removed: its objects go.
    Removed,
}

/// One document of a changed file.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileDocument {
    /// Byte for byte a document the file held at the last hand-over (by digest): not parsed
    /// again, its objects are those it had.
    Unchanged(u64),
    /// A new or changed document (or the whole file, where it cannot be cut into documents),
    /// by digest, and its objects.
    Parsed(u64, Vec<KubeObject>),
}

/// A changed file read, documents whose digest `old` knows not parsed again.
struct FileRead {
    documents: Vec<FileDocument>,
    records: Vec<DocumentRecord>,
    objects: usize,
    problems: Vec<Error>,
}

impl FileRead {
    /// Reads `text` (of the file `name`): cut into documents where that is exact, each new
    /// one parsed on its own; parsed whole otherwise.
    fn of(name: &str, text: &str, json: bool, old: Option<&FileSnapshot>) -> Self {
        let mut read = FileRead {
            documents: Vec::new(),
            records: Vec::new(),
            objects: 0,
            problems: Vec::new(),
        };
        let Some(pieces) = split::documents(text).filter(|_| !json) else {
            let (objects, problems) = parse_documents(name, text);
            read.objects = objects.len();
            read.problems = problems;
            read.documents
                .push(FileDocument::Parsed(split::digest(text), objects));
            return read;
        };
        let mut position = StreamPosition::start(text);
        for piece in pieces {
            let digest = split::digest(piece);
            let record = match old.and_then(|old| old.document(digest)) {
                Some(record) => {
                    read.documents.push(FileDocument::Unchanged(digest));
                    *record
                }
                None => {
                    let parsed = parse_piece(name, piece, position);
                    let record = DocumentRecord {
                        digest,
                        documents: parsed.documents,
                        objects: parsed.objects.len(),
                    };
                    read.documents
                        .push(FileDocument::Parsed(digest, parsed.objects));
                    read.problems.extend(parsed.problems);
                    record
                }
            };
            position = position.after(piece, record.documents);
            read.objects += record.objects;
            read.records.push(record);
        }
        read.records.sort_unstable_by_key(|d| d.digest);
        read
    }
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

    /// Re-reads only the files whose [`FileStamp`] changed, handing each one's documents to
    /// `changed` in order, one file at a time (read ahead by two threads where there are two
    /// CPUs: a start-up holds at most four files' objects at once; only the documents whose
    /// bytes changed are parsed), and hands over the files removed since
    /// the last poll. Fails, changing nothing, when the source directory vanished or stopped
    /// being a directory.
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
        let stale: Vec<(PathBuf, FileStamp)> = (present.into_iter())
            .filter_map(|path| {
                let stamp = FileStamp::of(&fs::metadata(&path).ok()?);
                let fresh = self.files.get(&path).is_some_and(|old| old.stamp == stamp);
                (!fresh).then_some((path, stamp))
            })
            .collect();
        // Where there are two CPUs and several files (a start-up reads every file), two
        // threads read and parse them while this one hands them over in order.
        let parallel = stale.len() >= 2
            && std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() >= 2);
        let olds: Vec<Option<FileSnapshot>> = (stale.iter())
            .map(|(path, _)| self.files.get(path).cloned())
            .collect();
        if !parallel {
            for ((path, stamp), old) in stale.iter().zip(&olds) {
                let read = read(path, old.as_ref());
                self.hand_over_read(path, *stamp, read, &mut poll, &mut changed);
            }
            return Ok(poll);
        }
        std::thread::scope(|scope| {
            // Each reader takes every other file, at most one read ahead of the hand-over
            // (so at most four files' objects are held at once).
            let mut readers = Vec::new();
            for first in 0..2 {
                let (sender, receiver) = std::sync::mpsc::sync_channel(1);
                let (stale, olds) = (&stale, &olds);
                let reader = move || {
                    for at in (first..stale.len()).step_by(2) {
                        let read = read(&stale[at].0, olds[at].as_ref());
                        if sender.send(read).is_err() {
                            return;
                        }
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name("proxier-read".into())
                    .spawn_scoped(scope, reader);
                readers.push(spawned.ok().map(|_| receiver));
            }
            for (at, (path, stamp)) in stale.iter().enumerate() {
                let read = match &readers[at % 2] {
                    // A reader that ended early panicked: the scope hands its panic on.
                    Some(receiver) => match receiver.recv() {
                        Ok(read) => read,
                        Err(_) => return,
                    },
                    // No thread to be had: read here.
                    None => read(path, olds[at].as_ref()),
                };
                self.hand_over_read(path, *stamp, read, &mut poll, &mut changed);
            }
        });
        Ok(poll)
    }

    /// [`DirectorySource::hand_over`] of a file read, or its read's error as a problem.
    fn hand_over_read(
        &mut self,
        path: &Path,
        stamp: FileStamp,
        read: Result<FileRead, Error>,
        poll: &mut Poll,
        changed: &mut impl FnMut(&Path, FileChange),
    ) {
        match read {
            Ok(read) => self.hand_over(path, stamp, read, poll, changed),
            Err(e) => poll.problems.push(e),
        }
    }

    /// Hands the changed file `path` over to `changed`, or keeps its previous objects when
    /// it has problems (see the module documentation).
    fn hand_over(
        &mut self,
        path: &Path,
        stamp: FileStamp,
        read: FileRead,
        poll: &mut Poll,
        changed: &mut impl FnMut(&Path, FileChange),
    ) {
        let mut problems = read.problems;
        let had_objects = self.files.get(path).is_some_and(|old| old.has_objects);
        if read.objects == 0 && problems.is_empty() && had_objects {
            problems.push(Error::Config {
                field: "source",
                reason: format!(
                    "{}: no objects any more ({} bytes; truncated?); its previous objects are \
                     kept until the file is removed",
                    path.display(),
                    stamp.length
                ),
            });
        }
        let keep_old = !problems.is_empty() && self.files.contains_key(path);
        poll.problems.extend(problems);
        match self.files.get_mut(path) {
            Some(old) if keep_old => {
                // Remember the new stamp so the broken file is not re-read every poll.
                old.stamp = stamp;
            }
            _ => {
                changed(path, FileChange::Documents(read.documents));
                let file = FileSnapshot {
                    stamp,
                    has_objects: read.objects > 0,
                    documents: read.records,
                };
                self.files.insert(path.to_owned(), file);
                poll.changed = true;
            }
        }
    }

    /// Makes the next [`DirectorySource::poll`] read and parse all of `path` again, changed
    /// or not.
    fn reread(&mut self, path: &Path) {
        if let Some(file) = self.files.get_mut(path) {
            file.stamp.length = u64::MAX;
            file.documents.clear();
        }
    }

    /// Makes the next read of `path` parse all of it (see [`DirectoryWatch`]).
    fn forget_documents(&mut self, path: &Path) {
        if let Some(file) = self.files.get_mut(path) {
            file.documents.clear();
        }
    }
}

/// A directory of YAML followed as a [`Source`]: a change re-reads only the files whose stamp
/// changed and re-applies only their documents whose bytes changed; each file's objects are
/// one snapshot ([`SnapshotSync`]), so what vanished from a changed file is removed and
/// nothing else is looked at. An object that moves between documents of a file in one change
/// stays (it is in the new snapshot).
///
/// An object in several files is the version of the file read last; when one file drops it,
/// the others that still hold it are read again in the same poll, so it stays. An object in
/// several documents of one file is the version of the last one: when a changed document
/// holds an object an unchanged one also holds, the whole file is applied again.
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
        let mut reread = Vec::new();
        let mut duplicated = Vec::new();
        let poll = self.directory.poll(|path, change| {
            let report = match change {
                FileChange::Documents(documents) => {
                    let partial = (documents.iter())
                        .any(|document| matches!(document, FileDocument::Unchanged(_)));
                    let parts: Vec<DocumentPart<'_>> = (documents.iter())
                        .map(|document| match document {
                            FileDocument::Unchanged(digest) => DocumentPart::Unchanged(*digest),
                            FileDocument::Parsed(digest, objects) => {
                                DocumentPart::Parsed(*digest, objects)
                            }
                        })
                        .collect();
                    let sync = files.entry(path.to_owned()).or_default();
                    let report = sync.apply_documents(&parts, cluster);
                    if report.duplicated {
                        duplicated.push((path.to_owned(), partial));
                    }
                    report
                }
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
        // A file with an object in two different documents is read whole from now on (the
        // last document's version wins, as in one read of the file); when it was read by
        // parts, it is read again, whole, in this poll.
        for (path, partial) in duplicated {
            self.directory.forget_documents(&path);
            if partial {
                reread.push(path);
            }
        }
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
