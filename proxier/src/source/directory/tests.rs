//! The file source against real files in a temporary directory.

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

/// A Service `name` with cluster IP `ip`, its slice with one endpoint at `endpoint`.
fn service_file(name: &str, ip: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports:\n  - {{name: http, port: 80, protocol: TCP}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n- addresses: [{endpoint}]\n"
    )
}

fn name(service: &str) -> crate::model::ServiceName {
    crate::model::ServiceName {
        namespace: "default".into(),
        name: service.into(),
    }
}

/// Issue 15 item 1: a change re-reads and re-applies only the file that changed. Another
/// file holding an invalid object is not looked at again, so its problem is not reported
/// again (the old source re-applied every object of every file on any change, and warned
/// about `bad.yaml` on every change of any file); only the changed file's Service is dirty.
#[test]
fn a_one_file_change_reapplies_only_that_file() {
    let dir = directory("one-file");
    fs::write(
        dir.join("api.yaml"),
        service_file("api", "10.96.0.2", "10.244.0.2"),
    )
    .unwrap();
    fs::write(
        dir.join("bad.yaml"),
        service_file("bad", "10.96.0.x", "10.244.0.3"),
    )
    .unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 2, "web and api; bad is invalid");
    assert_eq!(poll.skipped.len(), 1, "{:?}", poll.skipped);
    cluster.take_dirty();
    fs::write(
        dir.join("api.yaml"),
        service_file("api", "10.96.0.2", "10.244.0.9"),
    )
    .unwrap();
    let (_, poll) = services(&mut watch, &mut cluster);
    assert!(poll.changed);
    assert!(
        poll.skipped.is_empty(),
        "bad.yaml unchanged, not re-applied: {:?}",
        poll.skipped
    );
    assert_eq!(
        cluster.take_dirty().into_iter().collect::<Vec<_>>(),
        [name("api")],
        "only the changed file's Service is re-planned"
    );
    let endpoints: Vec<_> = cluster
        .slices(&name("api"))
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.to_string()))
        .collect();
    assert_eq!(endpoints, ["10.244.0.9"]);
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 15 item 1: objects that vanish from a changed file are removed (its Service and its
/// slice), those of other files stay.
#[test]
fn objects_gone_from_a_changed_file_are_removed() {
    let dir = directory("vanished-objects");
    let both = format!(
        "{}---\n{}",
        service_file("api", "10.96.0.2", "10.244.0.2"),
        service_file("db", "10.96.0.3", "10.244.0.3")
    );
    fs::write(dir.join("app.yaml"), both).unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    assert_eq!(services(&mut watch, &mut cluster).0, 3);
    fs::write(
        dir.join("app.yaml"),
        service_file("api", "10.96.0.2", "10.244.0.2"),
    )
    .unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert!(poll.changed);
    assert_eq!(count, 2, "db removed, web and api kept");
    assert!(cluster.service(&name("db")).is_none());
    assert_eq!(cluster.slices(&name("db")).count(), 0, "db's slice removed");
    assert!(cluster.service(&name("web")).is_some());
    let _ = fs::remove_dir_all(&dir);
}

/// An object moved from one file to another in one poll stays, whichever of the two files
/// is read first: when `z.yaml` (read last) drops it, `a.yaml`, which gained it, is read
/// again. Removing the last file that holds it removes it.
#[test]
fn an_object_moved_across_files_stays() {
    let dir = directory("moved");
    fs::write(
        dir.join("z.yaml"),
        service_file("api", "10.96.0.2", "10.244.0.2"),
    )
    .unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    assert_eq!(services(&mut watch, &mut cluster).0, 2);
    fs::write(
        dir.join("a.yaml"),
        service_file("api", "10.96.0.2", "10.244.0.2"),
    )
    .unwrap();
    fs::write(
        dir.join("z.yaml"),
        service_file("db", "10.96.0.3", "10.244.0.3"),
    )
    .unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3, "web, api (now in a.yaml), db: {poll:?}");
    assert_eq!(cluster.slices(&name("api")).count(), 1, "api's slice too");
    fs::remove_file(dir.join("a.yaml")).unwrap();
    let (count, _) = services(&mut watch, &mut cluster);
    assert_eq!(count, 2, "api gone with its last file");
    assert!(cluster.service(&name("api")).is_none());
    let _ = fs::remove_dir_all(&dir);
}

/// The documents of `file` as the last poll of `source` handed them over: (parsed,
/// unchanged) counts.
fn parsed_and_unchanged(source: &mut DirectorySource) -> (usize, usize) {
    let (mut parsed, mut unchanged) = (0, 0);
    source
        .poll(|_, change| {
            if let FileChange::Documents(documents) = change {
                for document in documents {
                    match document {
                        FileDocument::Parsed(..) => parsed += 1,
                        FileDocument::Unchanged(_) => unchanged += 1,
                    }
                }
            }
        })
        .unwrap();
    (parsed, unchanged)
}

fn three_services(db_endpoint: &str) -> String {
    format!(
        "{}---\n{}---\n{}",
        service_file("api", "10.96.0.2", "10.244.0.2"),
        service_file("db", "10.96.0.3", db_endpoint),
        service_file("cache", "10.96.0.4", "10.244.0.4")
    )
}

fn endpoints(cluster: &ClusterState, service: &str) -> Vec<String> {
    cluster
        .slices(&name(service))
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.to_string()))
        .collect()
}

/// Issue 15 item 1: a document edited among unchanged ones is the only one parsed (a flip
/// costs what changed, not the file's size), and the change reaches the cluster with only its
/// Service dirty. (Before: every document of the file was parsed and handed over.)
#[test]
fn a_document_edited_among_unchanged_ones_is_the_only_one_parsed() {
    let dir = directory("edited-document");
    fs::write(dir.join("app.yaml"), three_services("10.244.0.3")).unwrap();
    let mut source = DirectorySource::new(&dir);
    assert_eq!(parsed_and_unchanged(&mut source), (7, 0), "web + 3 × 2");
    fs::write(dir.join("app.yaml"), three_services("10.244.0.9")).unwrap();
    assert_eq!(parsed_and_unchanged(&mut source), (1, 5), "db's slice only");

    fs::write(dir.join("app.yaml"), three_services("10.244.0.3")).unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    assert_eq!(services(&mut watch, &mut cluster).0, 4);
    cluster.take_dirty();
    fs::write(dir.join("app.yaml"), three_services("10.244.0.9")).unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert!(poll.changed);
    assert_eq!(count, 4);
    assert_eq!(endpoints(&cluster, "db"), ["10.244.0.9"]);
    assert_eq!(endpoints(&cluster, "api"), ["10.244.0.2"], "unchanged kept");
    assert_eq!(
        cluster.take_dirty().into_iter().collect::<Vec<_>>(),
        [name("db")]
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 15 item 1: a document made invalid keeps its object's last good version; while it
/// stays unchanged, edits of other documents of its file neither remove that version nor
/// report it again (before, every change of the file re-applied it and warned again).
#[test]
fn a_document_made_invalid_keeps_the_last_good_version_across_other_edits() {
    let dir = directory("invalid-document");
    let file = |db_ip: &str, api_endpoint: &str| {
        format!(
            "{}---\n{}",
            service_file("api", "10.96.0.2", api_endpoint),
            service_file("db", db_ip, "10.244.0.3")
        )
    };
    fs::write(dir.join("app.yaml"), file("10.96.0.3", "10.244.0.2")).unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    assert_eq!(services(&mut watch, &mut cluster).0, 3);
    let good = cluster.service(&name("db")).cloned();
    fs::write(dir.join("app.yaml"), file("10.96.0.300", "10.244.0.2")).unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3, "db kept");
    assert_eq!(poll.skipped.len(), 1, "{:?}", poll.skipped);
    assert_eq!(
        cluster.service(&name("db")).cloned(),
        good,
        "last good version"
    );
    fs::write(dir.join("app.yaml"), file("10.96.0.300", "10.244.0.8")).unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3, "db still kept");
    assert_eq!(cluster.service(&name("db")).cloned(), good);
    assert_eq!(cluster.slices(&name("db")).count(), 1);
    assert_eq!(endpoints(&cluster, "api"), ["10.244.0.8"]);
    assert!(
        poll.skipped.is_empty(),
        "the unchanged invalid document is not read again: {:?}",
        poll.skipped
    );
    fs::write(dir.join("app.yaml"), file("10.96.0.7", "10.244.0.8")).unwrap();
    services(&mut watch, &mut cluster);
    assert_ne!(
        cluster.service(&name("db")).cloned(),
        good,
        "fixed: new version"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 15 item 1: documents reordered are not parsed again and change nothing; a changed
/// slice that moves to another place of its file in the same edit is "removed" from its old
/// document and "added" in its new one in one poll: it is updated, never withdrawn.
#[test]
fn a_document_moved_or_reordered_is_never_withdrawn() {
    let dir = directory("moved-document");
    let api = |endpoint: &str| service_file("api", "10.96.0.2", endpoint);
    let db = service_file("db", "10.96.0.3", "10.244.0.3");
    fs::write(
        dir.join("app.yaml"),
        format!("{}---\n{db}", api("10.244.0.2")),
    )
    .unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    assert_eq!(services(&mut watch, &mut cluster).0, 3);
    cluster.take_dirty();
    // Reordered, bytes unchanged.
    fs::write(
        dir.join("app.yaml"),
        format!("{db}---\n{}", api("10.244.0.2")),
    )
    .unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3);
    assert!(!poll.changed, "nothing changed");
    assert!(cluster.take_dirty().is_empty());
    // api's slice changed and moved to the front, before api's Service.
    let (service, slice) = api("10.244.0.9")
        .split_once("---\n")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    fs::write(
        dir.join("app.yaml"),
        format!("{slice}---\n{db}---\n{service}"),
    )
    .unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3, "{poll:?}");
    assert_eq!(
        endpoints(&cluster, "api"),
        ["10.244.0.9"],
        "updated, not withdrawn"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 15 item 1: a document split in two (a `kind: List` of a Service and its slice into
/// two documents), and back: the same objects, nothing withdrawn.
#[test]
fn a_document_split_in_two_keeps_its_objects() {
    let dir = directory("split-document");
    let (service, slice) = service_file("api", "10.96.0.2", "10.244.0.2")
        .split_once("---\n")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let indent = |text: &str| text.replace('\n', "\n  ").trim_end().to_owned();
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n- {}\n",
        indent(&service),
        indent(&slice)
    );
    fs::write(dir.join("app.yaml"), &list).unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 2, "{poll:?}");
    assert_eq!(endpoints(&cluster, "api"), ["10.244.0.2"]);
    cluster.take_dirty();
    fs::write(dir.join("app.yaml"), format!("{service}---\n{slice}")).unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 2);
    assert!(!poll.changed, "the same objects: {poll:?}");
    assert_eq!(endpoints(&cluster, "api"), ["10.244.0.2"]);
    fs::write(dir.join("app.yaml"), &list).unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 2);
    assert!(!poll.changed, "merged back: {poll:?}");
    assert_eq!(endpoints(&cluster, "api"), ["10.244.0.2"]);
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 15 item 1: duplicate identical documents. Removing one copy keeps the object;
/// editing one copy while the other is unchanged gives the version of the last document, as
/// a whole read of the file does (the file is then applied whole again).
#[test]
fn duplicate_documents_resolve_as_a_whole_read_does() {
    let dir = directory("duplicate-documents");
    let api = |ip: &str| service_file("api", ip, "10.244.0.2");
    let ips = |cluster: &ClusterState| {
        let service = cluster.service(&name("api")).unwrap();
        service.ports[0].cluster_ips.clone()
    };
    let write = |text: String| fs::write(dir.join("app.yaml"), text).unwrap();
    write(format!("{}---\n{}", api("10.96.0.2"), api("10.96.0.2")));
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    assert_eq!(services(&mut watch, &mut cluster).0, 2);
    write(api("10.96.0.2"));
    assert_eq!(services(&mut watch, &mut cluster).0, 2, "one copy left");
    assert_eq!(cluster.slices(&name("api")).count(), 1);
    write(format!("{}---\n{}", api("10.96.0.2"), api("10.96.0.2")));
    services(&mut watch, &mut cluster);
    // The first copy edited, the last unchanged: the last one's version.
    write(format!("{}---\n{}", api("10.96.0.5"), api("10.96.0.2")));
    services(&mut watch, &mut cluster);
    assert_eq!(
        ips(&cluster),
        ["10.96.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    // The last copy edited: its version.
    write(format!("{}---\n{}", api("10.96.0.5"), api("10.96.0.6")));
    services(&mut watch, &mut cluster);
    assert_eq!(
        ips(&cluster),
        ["10.96.0.6".parse::<std::net::IpAddr>().unwrap()]
    );
    // The first edited again, the last unchanged.
    write(format!("{}---\n{}", api("10.96.0.7"), api("10.96.0.6")));
    services(&mut watch, &mut cluster);
    assert_eq!(
        ips(&cluster),
        ["10.96.0.6".parse::<std::net::IpAddr>().unwrap()]
    );
    // The last copy removed: the first one's version stays.
    write(api("10.96.0.7"));
    assert_eq!(services(&mut watch, &mut cluster).0, 2, "api kept");
    assert_eq!(
        ips(&cluster),
        ["10.96.0.7".parse::<std::net::IpAddr>().unwrap()]
    );
    // A new first copy before the unchanged one: the unchanged (last) one's version.
    write(format!("{}---\n{}", api("10.96.0.8"), api("10.96.0.7")));
    services(&mut watch, &mut cluster);
    assert_eq!(
        ips(&cluster),
        ["10.96.0.7".parse::<std::net::IpAddr>().unwrap()]
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 15 item 1: a `---` line inside a block scalar's indented text is text, not a
/// document marker: the document around it is read as one, and an edit after it is read.
#[test]
fn a_marker_inside_a_block_scalar_is_text() {
    let dir = directory("block-scalar");
    let file = |endpoint: &str| {
        let annotated = service_file("api", "10.96.0.2", endpoint).replace(
            "metadata: {name: api, namespace: default}\n",
            "metadata:\n  name: api\n  namespace: default\n  annotations:\n    note: |\n      before\n      ---\n      ...\n      after\n",
        );
        format!(
            "{annotated}---\n{}",
            service_file("db", "10.96.0.3", "10.244.0.3")
        )
    };
    fs::write(dir.join("app.yaml"), file("10.244.0.2")).unwrap();
    let mut watch = DirectoryWatch::new(DirectorySource::new(&dir));
    let mut cluster = ClusterState::new();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3, "{:?}", poll.skipped);
    assert!(poll.skipped.is_empty(), "{:?}", poll.skipped);
    fs::write(dir.join("app.yaml"), file("10.244.0.9")).unwrap();
    let (count, poll) = services(&mut watch, &mut cluster);
    assert_eq!(count, 3);
    assert!(poll.skipped.is_empty(), "{:?}", poll.skipped);
    assert_eq!(endpoints(&cluster, "api"), ["10.244.0.9"]);
    let text = file("10.244.0.2");
    let pieces = crate::yaml::split::documents(&text).unwrap();
    assert_eq!(pieces.len(), 4, "{pieces:#?}");
    assert!(pieces[0].contains("      ---\n      ...\n"));
    let _ = fs::remove_dir_all(&dir);
}
