//! UDP servers, one-shot clients and a DNS-like load generator.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::in_netns;

/// A UDP server in `netns` on `port` answering every datagram with `reply(datagram)` until
/// `stop` is set.
fn udp_server(
    netns: &str,
    port: u16,
    stop: Arc<AtomicBool>,
    reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
) -> JoinHandle<()> {
    in_netns(netns, move || {
        let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut buffer = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&reply(&buffer[..n]), peer);
            }
        }
    })
}

/// A UDP server in `netns` on `port` answering every datagram with `name` until `stop` is set.
pub fn udp_responder(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    udp_server(netns, port, stop, move |_| name.as_bytes().to_vec())
}

/// A resolver-like UDP echo server in `netns` on `port`: answers every datagram with
/// `"{name} {payload}"` until `stop` is set, and counts what it answered.
pub fn udp_echo(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> JoinHandle<()> {
    udp_server(netns, port, stop, move |datagram| {
        answered.fetch_add(1, Ordering::Relaxed);
        let mut reply = format!("{name} ").into_bytes();
        reply.extend_from_slice(datagram);
        reply
    })
}

/// `count` datagrams from `netns` to `target` (`ip:port`), each from a fresh socket (a new
/// IPVS "connection"); the answers in order, `"lost"` where none came within 500 ms.
pub fn udp_query(netns: &str, target: &str, count: usize) -> Vec<String> {
    let target: SocketAddr = target.parse().expect("ip:port");
    in_netns(netns, move || {
        (0..count)
            .map(|i| {
                let socket = UdpSocket::bind("0.0.0.0:0").expect("bind client udp");
                let timeout = Duration::from_millis(500);
                socket.set_read_timeout(Some(timeout)).expect("timeout");
                socket
                    .send_to(format!("q{i}").as_bytes(), target)
                    .expect("send");
                let mut buffer = [0u8; 64];
                match socket.recv(&mut buffer) {
                    Ok(n) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
                    Err(_) => "lost".to_owned(),
                }
            })
            .collect()
    })
    .join()
    .expect("udp client thread")
}

/// Sends one UDP datagram from `socket` to `to` and waits up to `timeout` for the answer of a
/// [`udp_echo`] server; returns the answering name.
pub fn udp_ask(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    socket.send_to(payload, to).ok()?;
    let mut buffer = [0u8; 512];
    let deadline = Instant::now() + timeout;
    loop {
        match socket.recv(&mut buffer) {
            // The echo names the backend and repeats the query id; discard late answers to
            // earlier queries.
            Ok(n) => {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                match text.split_once(' ') {
                    Some((name, id)) if id.as_bytes() == payload => return Some(name.to_owned()),
                    None if payload.is_empty() => return Some(text),
                    _ if Instant::now() >= deadline => return None,
                    _ => continue,
                }
            }
            Err(_) => return None,
        }
    }
}

/// One query of a load generator: which flow sent it, when, and who answered (None: lost).
#[derive(Debug, Clone)]
pub struct Query {
    /// The flow (client socket) index.
    pub flow: usize,
    /// When the query was sent.
    pub sent: Instant,
    /// The answering backend's name, or None when no answer came within the timeout.
    pub answer: Option<String>,
}

/// DNS-like UDP load from `netns` to `target`: `flows` clients, each sending a query, waiting up
/// to `timeout` for its answer, then pausing `interval`, until `stop` is set. With
/// `fixed_port_base`, flow `i` keeps source port `base + i` for its whole life (a long-lived
/// resolver socket); without, every query comes from a fresh ephemeral port.
pub fn udp_load(
    netns: &str,
    target: SocketAddr,
    flows: usize,
    fixed_port_base: Option<u16>,
    interval: Duration,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Query>> {
    in_netns(netns, move || {
        let workers: Vec<_> = (0..flows)
            .map(|flow| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let bind =
                        |port: u16| UdpSocket::bind(("0.0.0.0", port)).expect("bind client udp");
                    let fixed = fixed_port_base.map(|base| bind(base + flow as u16));
                    let mut queries = Vec::new();
                    let mut id = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        id += 1;
                        let payload = format!("{flow}-{id}");
                        let fresh;
                        let socket = match &fixed {
                            Some(s) => s,
                            None => {
                                fresh = bind(0);
                                &fresh
                            }
                        };
                        let sent = Instant::now();
                        let answer = udp_ask(socket, target, payload.as_bytes(), timeout);
                        queries.push(Query { flow, sent, answer });
                        std::thread::sleep(interval);
                    }
                    queries
                })
            })
            .collect();
        let mut all: Vec<Query> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("load worker"))
            .collect();
        all.sort_by_key(|q| q.sent);
        all
    })
}

/// Counts of `queries` sent at or after `from`: (total, answered by each name, lost).
pub fn tally(queries: &[Query], from: Instant) -> (usize, BTreeMap<String, usize>, usize) {
    let mut by = BTreeMap::new();
    let mut lost = 0;
    let mut total = 0;
    for q in queries.iter().filter(|q| q.sent >= from) {
        total += 1;
        match &q.answer {
            Some(name) => *by.entry(name.clone()).or_insert(0) += 1,
            None => lost += 1,
        }
    }
    (total, by, lost)
}

/// How many times each answer occurs.
pub fn by_answer(answers: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        *counts.entry(answer.clone()).or_insert(0) += 1;
    }
    counts
}
