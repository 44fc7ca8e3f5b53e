//! A tiny Kubernetes API server for tests: list and chunked watch of Services,
//! EndpointSlices and Nodes on 127.0.0.1, with selectors, resourceVersions, one-shot 410 Gone,
//! a way to go down, and Event posts recorded. Used by `proxier/tests/fake_api.rs` and the
//! real-kernel test `tests/tests/fake_api_kernel.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Objects are templates whose `"RV"` is replaced by their resourceVersion when served.
#[derive(Default)]
pub struct Collection {
    /// Objects by name: (resourceVersion, template).
    pub objects: BTreeMap<String, (u64, String)>,
    /// (resourceVersion, object name, watch event line).
    pub log: Vec<(u64, String, String)>,
    /// The next watch of this collection answers 410 Gone.
    pub expire: bool,
}

/// Everything the server holds.
#[derive(Default)]
pub struct ApiState {
    /// The latest resourceVersion.
    pub rv: u64,
    /// Collections by kind (`services`, `endpointslices`, `nodes`).
    pub collections: BTreeMap<&'static str, Collection>,
    /// Events posted: (path, body).
    pub events: Vec<(String, String)>,
    /// Request targets (path?query), in order.
    pub requests: Vec<String>,
    /// Set: every connection is dropped (the API server went away).
    pub down: bool,
}

/// The server: shared state, and a tick that wakes the watch streams on every change.
#[derive(Clone)]
pub struct FakeApi {
    /// The state requests are served from.
    pub state: Arc<Mutex<ApiState>>,
    /// Bumped on every change.
    pub tick: watch::Sender<u64>,
}

/// The watch event of an expired resourceVersion (410 Gone).
pub const GONE: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;

/// The body of a 404.
pub const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;

/// `template` with its `"RV"` replaced by `rv`.
pub fn render(template: &str, rv: u64) -> String {
    template.replace("\"RV\"", &format!("\"{rv}\""))
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    /// An empty server.
    pub fn new() -> Self {
        let tick = watch::channel(0).0;
        Self {
            state: Arc::default(),
            tick,
        }
    }

    /// Changes the state and wakes the watch streams.
    pub fn with<R>(&self, f: impl FnOnce(&mut ApiState) -> R) -> R {
        let result = f(&mut self.state.lock().unwrap());
        self.tick.send_modify(|t| *t += 1);
        result
    }

    /// Puts (`Some`) or deletes (`None`) an object under a new resourceVersion; logs the event.
    pub fn change(&self, kind: &'static str, name: &str, template: Option<&str>) {
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

    /// Puts an object (ADDED or MODIFIED).
    pub fn put(&self, kind: &'static str, name: &str, template: &str) {
        self.change(kind, name, Some(template));
    }

    /// Serves on 127.0.0.1 (a free port) until the runtime ends; returns the address.
    pub async fn serve(self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
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
    pub async fn connection(self, stream: TcpStream) -> std::io::Result<()> {
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

    /// Puts many objects of `kind` at once, as if they had existed before any watch began:
    /// one resourceVersion each, no watch events logged, one wake-up (a large initial cluster
    /// that watches only ever see through their list).
    pub fn load(&self, kind: &'static str, objects: impl IntoIterator<Item = (String, String)>) {
        self.with(|state| {
            let mut rv = state.rv;
            let collection = state.collections.entry(kind).or_default();
            for (name, template) in objects {
                rv += 1;
                collection.objects.insert(name, (rv, template));
            }
            state.rv = rv;
        });
    }

    /// A list response of `kind` honouring the selectors in `query` and, as the API server
    /// does, its paging: at most `limit` items from after the `continue` token (here the name
    /// of the page's last object), with a `continue` token while more objects follow.
    pub fn list(&self, kind: &str, list_kind: &str, api_version: &str, query: &str) -> String {
        let state = self.state.lock().unwrap();
        let limit = param(query, "limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let after = param(query, "continue").filter(|c| !c.is_empty());
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        if let Some(collection) = state.collections.get(kind) {
            let start = match &after {
                Some(name) => Bound::Excluded(name.as_str()),
                None => Bound::Unbounded,
            };
            let range = collection
                .objects
                .range::<str, _>((start, Bound::Unbounded));
            for (name, (rv, t)) in range {
                let json = render(t, *rv);
                if !selected(query, name, &json) {
                    continue;
                }
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(json);
                last = Some(name.as_str());
            }
        }
        let next = match (more, last) {
            (true, Some(name)) => format!(",\"continue\":\"{name}\""),
            _ => String::new(),
        };
        format!(
            "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\
             \"metadata\":{{\"resourceVersion\":\"{}\"{next}}},\"items\":[{}]}}",
            state.rv,
            items.join(",")
        )
    }

    /// A chunked watch stream: events after the requested resourceVersion, then new ones.
    pub async fn watch(
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

/// Writes one HTTP response with `status` and a JSON `body`.
pub async fn respond(writer: &mut OwnedWriteHalf, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(body.as_bytes()).await
}

/// A query parameter, loosely percent-decoded.
pub fn param(query: &str, key: &str) -> Option<String> {
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
pub fn selected(query: &str, name: &str, json: &str) -> bool {
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

/// A ClusterIP Service `name` at `ip` with one port `p` (`protocol`, `port` → `port`).
pub fn service(name: &str, ip: &str, protocol: &str, port: u16) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"default","resourceVersion":"RV"}},"spec":{{"type":"ClusterIP","clusterIP":"{ip}","clusterIPs":["{ip}"],"ports":[{{"name":"p","port":{port},"protocol":"{protocol}","targetPort":{port}}}]}}}}"#
    )
}

/// EndpointSlice `name` of Service `name` up to its last `-`, with extra `labels` (`"k":"v",`).
pub fn slice(name: &str, labels: &str, (protocol, port): (&str, u16), ips: &[&str]) -> String {
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

/// Node `name` with InternalIP `ip`, in zone z1.
pub fn node(name: &str, ip: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","resourceVersion":"RV","labels":{{"topology.kubernetes.io/zone":"z1"}}}},"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}]}}}}"#
    )
}

/// A fake API server holding the DNS cluster of the kube-proxy-role tests — Service `dns` at
/// 10.96.0.10:53/UDP, its slice `dns-1` with 10.244.1.5 and 10.244.2.6 on node-a, Node
/// `node-a` at 10.0.1.1 — served on 127.0.0.1 from its own runtime (kept alive by the
/// returned value). Returns the runtime, the server and its URL.
pub fn serve_dns_cluster() -> (tokio::runtime::Runtime, FakeApi, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = FakeApi::new();
    api.put("services", "dns", &service("dns", "10.96.0.10", "UDP", 53));
    api.put(
        "endpointslices",
        "dns-1",
        &slice("dns-1", "", ("UDP", 53), &["10.244.1.5", "10.244.2.6"]),
    );
    api.put("nodes", "node-a", &node("node-a", "10.0.1.1"));
    let (address, _acceptor) = runtime.block_on(api.clone().serve());
    (runtime, api, format!("http://{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        list.split("\"metadata\":{\"name\":\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_list_is_paged_by_limit_and_continue() {
        let api = FakeApi::new();
        api.load(
            "services",
            ["a", "b", "c", "d", "e"].map(|n| (n.to_owned(), service(n, "10.96.0.1", "TCP", 80))),
        );
        let list = |query: &str| api.list("services", "ServiceList", "v1", query);
        let first = list("limit=2");
        assert_eq!(names(&first), ["a", "b"]);
        assert!(
            first.contains(r#""resourceVersion":"5","continue":"b"}"#),
            "{first}"
        );
        let second = list("limit=2&continue=b");
        assert_eq!(names(&second), ["c", "d"]);
        assert!(second.contains(r#""continue":"d""#), "{second}");
        let last = list("limit=2&continue=d");
        assert_eq!(names(&last), ["e"]);
        assert!(!last.contains("continue"), "{last}");
        assert_eq!(names(&list("")), ["a", "b", "c", "d", "e"]);
        assert_eq!(names(&list("limit=5")), ["a", "b", "c", "d", "e"]);
        assert!(!list("limit=5").contains("continue"));
        assert_eq!(api.with(|s| s.collections["services"].log.len()), 0);
    }
}
