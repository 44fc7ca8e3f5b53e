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
