#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]
//! The Kubernetes source over real HTTP: a tiny fake API server (list, chunked watch streams
//! with resourceVersions, 410 Gone, Events POSTs) drives `KubeSource` → `runtime::run` →
//! `FakeDataplane`, and the dataplane follows watch events, keeps the last good version of an
//! invalid object, relists after 410 Gone, and is left alone when the API server goes away.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_ipvs::{Protocol, ServiceState};
use proxier::config::Config;
use proxier::dataplane::{ApplyReport, Dataplane, FakeDataplane};
use proxier::observability::{EventPublisher, Metrics, Observer};
use proxier::plan::{NodeContext, Planner};
use proxier::reconcile::{ConntrackFilter, Observed, Op};
use proxier::runtime::{run, Proxier, SyncKind, SyncOutcome, SyncTiming};
use proxier::source::kube::{KubeSource, PROXY_LABEL_SELECTOR};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Objects are templates whose `"RV"` is replaced by their resourceVersion when served.
#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, (u64, String)>,
    /// (resourceVersion, object name, watch event line).
    log: Vec<(u64, String, String)>,
    /// The next watch of this collection answers 410 Gone.
    expire: bool,
}

#[derive(Default)]
struct ApiState {
    rv: u64,
    collections: BTreeMap<&'static str, Collection>,
    events: Vec<(String, String)>,
    /// Request targets (path?query), in order.
    requests: Vec<String>,
    down: bool,
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    tick: watch::Sender<u64>,
}

const GONE: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;

const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;

fn render(template: &str, rv: u64) -> String {
    template.replace("\"RV\"", &format!("\"{rv}\""))
}

impl FakeApi {
    fn new() -> Self {
        let tick = watch::channel(0).0;
        Self {
            state: Arc::default(),
            tick,
        }
    }

    /// Changes the state and wakes the watch streams.
    fn with<R>(&self, f: impl FnOnce(&mut ApiState) -> R) -> R {
        let result = f(&mut self.state.lock().unwrap());
        self.tick.send_modify(|t| *t += 1);
        result
    }

    /// Puts (`Some`) or deletes (`None`) an object under a new resourceVersion; logs the event.
    fn change(&self, kind: &'static str, name: &str, template: Option<&str>) {
        self.with(|state| {
            state.rv += 1;
            let rv = state.rv;
            let collection = state.collections.entry(kind).or_default();
            let old = collection.objects.remove(name).map(|(_, t)| t);
            let (word, object) = match template {
                Some(t) => {
                    collection
                        .objects
                        .insert(name.to_owned(), (rv, t.to_owned()));
                    (
                        if old.is_some() { "MODIFIED" } else { "ADDED" },
                        t.to_owned(),
                    )
                }
                None => ("DELETED", old.expect("deleting a missing object")),
            };
            let line = format!(r#"{{"type":"{word}","object":{}}}"#, render(&object, rv));
            collection.log.push((rv, name.to_owned(), line + "\n"));
        });
    }

    fn put(&self, kind: &'static str, name: &str, template: &str) {
        self.change(kind, name, Some(template));
    }

    async fn serve(self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(self.clone().connection(stream));
            }
        });
        (address, acceptor)
    }

    /// HTTP/1.1 with keep-alive: requests until the client closes, a watch ends or we go away.
    async fn connection(self, stream: TcpStream) -> std::io::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await? == 0 {
                return Ok(());
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).await?;
                match header.to_ascii_lowercase().trim_end() {
                    "" => break,
                    h => h
                        .strip_prefix("content-length:")
                        .inspect(|v| length = v.trim().parse().unwrap()),
                };
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
            let mut parts = request_line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let down = self.with(|s| {
                s.requests.push(target.to_owned());
                s.down
            });
            if down {
                return Ok(());
            }
            let kind = match path {
                "/api/v1/services" => Some(("services", "ServiceList", "v1")),
                "/apis/discovery.k8s.io/v1/endpointslices" => {
                    Some(("endpointslices", "EndpointSliceList", "discovery.k8s.io/v1"))
                }
                "/api/v1/nodes" => Some(("nodes", "NodeList", "v1")),
                _ => None,
            };
            match (method, kind) {
                ("GET", Some((kind, ..))) if param(query, "watch").as_deref() == Some("true") => {
                    return self.watch(writer, kind, query).await;
                }
                ("GET", Some((kind, list_kind, api_version))) => {
                    let list = self.list(kind, list_kind, api_version, query);
                    respond(&mut writer, "200 OK", &list).await?;
                }
                ("POST", _) if path.starts_with("/apis/events.k8s.io/v1/") => {
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let event = (path.to_owned(), body.clone());
                    self.state.lock().unwrap().events.push(event);
                    respond(&mut writer, "201 Created", &body).await?;
                }
                _ => respond(&mut writer, "404 Not Found", NOT_FOUND).await?,
            }
        }
    }

    fn list(&self, kind: &str, list_kind: &str, api_version: &str, query: &str) -> String {
        let state = self.state.lock().unwrap();
        let items: Vec<String> = state.collections.get(kind).map_or(vec![], |c| {
            c.objects
                .iter()
                .map(|(name, (rv, t))| (name, render(t, *rv)))
                .filter(|(name, json)| selected(query, name, json))
                .map(|(_, json)| json)
                .collect()
        });
        format!(
            "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\
             \"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[{}]}}",
            state.rv,
            items.join(",")
        )
    }

    /// A chunked watch stream: events after the requested resourceVersion, then new ones.
    async fn watch(
        self,
        mut writer: OwnedWriteHalf,
        kind: &'static str,
        query: &str,
    ) -> std::io::Result<()> {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        writer.write_all(head.as_bytes()).await?;
        let mut sent: u64 = param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut tick = self.tick.subscribe();
        loop {
            let lines: Option<Vec<(u64, String)>> = {
                let mut state = self.state.lock().unwrap();
                if state.down {
                    return Ok(()); // dropped mid-stream, no final chunk
                }
                let collection = state.collections.entry(kind).or_default();
                let new = |(rv, name, line): &&(u64, String, String)| {
                    *rv > sent && selected(query, name, line)
                };
                let log = collection.log.iter().filter(new);
                let lines = log.map(|(rv, _, line)| (*rv, line.clone())).collect();
                (!std::mem::take(&mut collection.expire)).then_some(lines)
            };
            let Some(lines) = lines else {
                // 410 Gone as the apiserver sends it for an expired resourceVersion; then EOF.
                let chunk = format!("{:x}\r\n{GONE}\r\n0\r\n\r\n", GONE.len());
                return writer.write_all(chunk.as_bytes()).await;
            };
            for (rv, line) in lines {
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                writer.write_all(chunk.as_bytes()).await?;
                sent = rv;
            }
            if tick.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

async fn respond(writer: &mut OwnedWriteHalf, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(body.as_bytes()).await
}

/// A query parameter, loosely percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?;
    let decoded = [("%21", "!"), ("%2F", "/"), ("%2C", ","), ("%3D", "=")];
    Some(
        decoded
            .iter()
            .fold(value.to_owned(), |v, (f, t)| v.replace(f, t)),
    )
}

/// Honours `labelSelector=!a,!b` (label present → excluded) and `fieldSelector=metadata.name=X`.
fn selected(query: &str, name: &str, json: &str) -> bool {
    let labels = param(query, "labelSelector").unwrap_or_default();
    let excluded = labels
        .split(',')
        .filter_map(|s| s.strip_prefix('!'))
        .any(|label| json.contains(&format!("\"{label}\":")));
    let field = param(query, "fieldSelector");
    let name_ok = field
        .as_deref()
        .and_then(|f| f.strip_prefix("metadata.name="))
        .is_none_or(|n| n == name);
    !excluded && name_ok
}

fn service(name: &str, ip: &str, protocol: &str, port: u16) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"default","resourceVersion":"RV"}},"spec":{{"type":"ClusterIP","clusterIP":"{ip}","clusterIPs":["{ip}"],"ports":[{{"name":"p","port":{port},"protocol":"{protocol}","targetPort":{port}}}]}}}}"#
    )
}

/// EndpointSlice `name` of Service `name` up to its last `-`, with extra `labels` (`"k":"v",`).
fn slice(name: &str, labels: &str, (protocol, port): (&str, u16), ips: &[&str]) -> String {
    let service = name.rsplit_once('-').unwrap().0;
    let endpoints: Vec<String> = ips
        .iter()
        .map(|ip| {
            format!(
                r#"{{"addresses":["{ip}"],"conditions":{{"ready":true,"serving":true,"terminating":false}},"nodeName":"node-a"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4","metadata":{{"name":"{name}","namespace":"default","resourceVersion":"RV","labels":{{{labels}"kubernetes.io/service-name":"{service}"}}}},"endpoints":[{}],"ports":[{{"name":"p","port":{port},"protocol":"{protocol}"}}]}}"#,
        endpoints.join(",")
    )
}

fn node(name: &str, ip: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","resourceVersion":"RV","labels":{{"topology.kubernetes.io/zone":"z1"}}}},"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}]}}}}"#
    )
}

/// The fake dataplane, shared so that the test can look at it while `run` owns the proxier.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<FakeDataplane>>);

impl Dataplane for Shared {
    fn observe(&mut self) -> Result<Observed, proxier::Error> {
        self.0.lock().unwrap().observe()
    }
    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        self.0.lock().unwrap().apply(ops)
    }
}

type Table = BTreeMap<String, Vec<String>>;

/// Real servers by virtual server (`UDP  10.96.0.10:53` → `["10.244.1.5:53"]`).
fn table(fake: &Shared) -> Table {
    let fake = fake.0.lock().unwrap();
    let services = fake.state.ipvs.services.iter();
    let real_servers = |s: &ServiceState| s.real_servers.keys().map(|k| k.to_string()).collect();
    services
        .map(|(key, s)| (key.to_string(), real_servers(s)))
        .collect()
}

/// Waits (at most 10 s) until `done` holds of the table; prints the latency since `since`.
async fn wait_for(fake: &Shared, what: &str, since: Instant, done: impl Fn(&Table) -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done(&table(fake)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out: {what}; {:#?}", table(fake));
    println!(
        "{what}: injected event -> dataplane in {:?}",
        since.elapsed()
    );
}

/// Waits (at most 10 s) until a list and a watch of `path` were requested with `key=value`.
async fn sent(api: &FakeApi, path: &str, key: &str, value: &str) {
    let seen = |watch: bool| {
        let requests = api.with(|s| s.requests.clone());
        let mut queries = requests
            .iter()
            .filter_map(|r| r.strip_prefix(path)?.strip_prefix('?'));
        queries.any(|q| {
            param(q, key).as_deref() == Some(value) && param(q, "watch").is_some() == watch
        })
    };
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !(seen(false) && seen(true)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let requests = api.with(|s| s.requests.clone());
    assert!(
        waited.await.is_ok(),
        "{path}: {key}={value} not sent: {requests:#?}"
    );
}

const SVC: &str = "services";
const EPS: &str = "endpointslices";
const DNS: &str = "UDP  10.96.0.10:53";
const WEB: &str = "TCP  10.96.0.20:80";
const OLD: &str = "TCP  10.96.0.30:80";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_source_over_http_drives_the_dataplane() {
    let api = FakeApi::new();
    let dns_slice = |ips: &[&str]| slice("dns-1", "", ("UDP", 53), ips);
    // "web-x" is excluded by kube-proxy's label selector (and the model): no 10.244.9.9.
    let headless = r#""service.kubernetes.io/headless":"","#;
    let objects = [
        (SVC, "dns", service("dns", "10.96.0.10", "UDP", 53)),
        (SVC, "web", service("web", "10.96.0.20", "TCP", 80)),
        (SVC, "old", service("old", "10.96.0.30", "TCP", 80)),
        (EPS, "dns-1", dns_slice(&["10.244.1.5", "10.244.2.6"])),
        (
            EPS,
            "web-1",
            slice("web-1", "", ("TCP", 80), &["10.244.1.7"]),
        ),
        (
            EPS,
            "web-x",
            slice("web-x", headless, ("TCP", 80), &["10.244.9.9"]),
        ),
        ("nodes", "node-a", node("node-a", "192.168.1.10")),
        ("nodes", "node-b", node("node-b", "192.168.1.11")),
    ];
    for (kind, name, object) in &objects {
        api.put(kind, name, object);
    }
    let (address, acceptor) = api.clone().serve().await;

    let start = Instant::now();
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let observer = Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::start(client.clone(), "node-a"),
    );
    let mut source = KubeSource::start(client, "node-a").with_observer(observer.clone());
    let mut cluster = proxier::model::ClusterState::new();
    let synced = tokio::time::timeout(
        Duration::from_secs(10),
        source.wait_until_synced(&mut cluster, Duration::from_secs(1)),
    );
    synced.await.expect("initial lists timed out").unwrap();
    let local = source.local_node().cloned().expect("node-a listed");
    let node_ip: IpAddr = "192.168.1.10".parse().unwrap();
    assert_eq!(local.internal_ips, [node_ip]);
    let context = NodeContext {
        name: "node-a".to_owned(),
        node_ips: local.internal_ips,
        zone: local.zone,
    };
    let fake = Shared::default();
    let mut proxier = Proxier::new(Planner::new(context, Config::default()), fake.clone());
    *proxier.cluster_mut() = cluster;
    let mut source = observer.watch_source(source);
    let timing = SyncTiming {
        min_sync_period: Duration::ZERO,
        sync_period: Duration::from_secs(300),
        poll_period: Duration::from_millis(10),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = run(
        &mut proxier,
        &mut source,
        timing,
        |_: SyncKind, _: &SyncOutcome| {},
        async {
            let _ = stopped.await;
        },
    );

    let script = async {
        let what = "initial lists (from KubeSource::start)";
        wait_for(&fake, what, start, |t| t.len() == 3).await;
        // The selectors are sent on the lists and on the watches.
        sent(
            &api,
            "/api/v1/services",
            "labelSelector",
            PROXY_LABEL_SELECTOR,
        )
        .await;
        let eps_path = "/apis/discovery.k8s.io/v1/endpointslices";
        sent(&api, eps_path, "labelSelector", PROXY_LABEL_SELECTOR).await;
        sent(
            &api,
            "/api/v1/nodes",
            "fieldSelector",
            "metadata.name=node-a",
        )
        .await;
        let initial = table(&fake);
        assert_eq!(initial[DNS], ["10.244.1.5:53", "10.244.2.6:53"]);
        assert_eq!(initial[WEB], ["10.244.1.7:80"]); // not 10.244.9.9 (headless)
        assert!(initial[OLD].is_empty());

        // MODIFIED slice without 10.244.2.6: its real server goes, its UDP flows are flushed.
        let since = Instant::now();
        api.put(EPS, "dns-1", &dns_slice(&["10.244.1.5"]));
        let one_left = |t: &Table| t[DNS] == ["10.244.1.5:53"];
        wait_for(&fake, "endpoint removed", since, one_left).await;
        let flushed = fake.0.lock().unwrap().flushed.clone();
        let gone = ConntrackFilter::ReplySource {
            protocol: Protocol::Udp,
            address: "10.244.2.6".parse().unwrap(),
            port: 53,
        };
        assert!(flushed.contains(&gone), "no flush of {gone:?}: {flushed:?}");

        // DELETED Service: its virtual server goes.
        let since = Instant::now();
        api.change(SVC, "web", None);
        wait_for(&fake, "service deleted", since, |t| !t.contains_key(WEB)).await;

        // An invalid MODIFIED Service is skipped (Event posted) and the last good one kept.
        let before = table(&fake);
        let ops_before = fake.0.lock().unwrap().log.len();
        api.put(SVC, "dns", &service("dns", "10.96.0.999", "UDP", 53));
        let posted = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(event) = api.with(|s| s.events.first().cloned()) {
                    return event;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let (path, body) = posted.await.expect("no Event for the invalid Service");
        assert!(path.ends_with("/namespaces/default/events"), "{path}");
        let invalid_dns = body.contains("InvalidObjectSkipped") && body.contains("\"dns\"");
        assert!(invalid_dns, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(table(&fake), before, "invalid object applied");
        assert_eq!(fake.0.lock().unwrap().log.len(), ops_before);

        // 410 Gone: the watcher relists; "old" vanished meanwhile and is removed, "dns" (still
        // invalid in the list) keeps its last good version.
        let since = Instant::now();
        api.with(|s| {
            let services = s.collections.get_mut(SVC).unwrap();
            services.objects.remove("old"); // gone without a watch event
            services.expire = true;
        });
        let what = "relist after 410 Gone";
        wait_for(&fake, what, since, |t| !t.contains_key(OLD)).await;
        assert_eq!(table(&fake)[DNS], ["10.244.1.5:53"]);

        // The API server goes away: watches cut, connections refused; nothing changes.
        let before = table(&fake);
        let ops_before = fake.0.lock().unwrap().log.len();
        api.with(|s| s.down = true); // watch streams cut, kept-alive connections closed
        acceptor.abort();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(table(&fake), before, "API server gone: dataplane changed");
        assert_eq!(fake.0.lock().unwrap().log.len(), ops_before);
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(runner, script)
    })
    .await
    .expect("test hung");
    result.unwrap();
}
