//! TCP servers, one-shot clients and a load generator of short connections from reused ports.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::in_netns;

/// A TCP server in `netns` on `address`:`port` writing `reply(peer)` to every connection, then
/// closing it, until `stop` is set.
pub fn tcp_server(
    netns: &str,
    address: IpAddr,
    port: u16,
    stop: Arc<AtomicBool>,
    reply: impl Fn(SocketAddr) -> String + Send + 'static,
) -> JoinHandle<()> {
    in_netns(netns, move || {
        let listener = TcpListener::bind((address, port)).expect("bind tcp");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.write_all(reply(peer).as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// A TCP server in `netns` on `port` (IPv4) writing `name` to every connection until `stop`
/// is set.
pub fn tcp_responder(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    tcp_server(netns, any, port, stop, move |_| name.to_owned())
}

/// One connection to `target` from the calling thread: connect and read to EOF, each within
/// `timeout`; returns what the server wrote.
pub fn tcp_read(target: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// `count` connections from `netns` to `target` (`ip:port`; [`tcp_read`], 2 s timeouts); the
/// answers in order, `"failed: ERROR"` for a connection that failed.
pub fn tcp_reads(netns: &str, target: &str, count: usize) -> Vec<String> {
    let target: SocketAddr = target.parse().expect("ip:port");
    in_netns(netns, move || {
        (0..count)
            .map(|_| {
                tcp_read(target, Duration::from_secs(2)).unwrap_or_else(|e| format!("failed: {e}"))
            })
            .collect()
    })
    .join()
    .expect("tcp client thread")
}

/// A TCP connection from the explicit source port `port` (with `SO_REUSEADDR`, so a port is
/// reused as soon as the previous connection on it is closed), to `target`, with a connect
/// timeout of `timeout`.
pub fn tcp_connect_from(
    port: u16,
    target: SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sockaddr(Ipv4Addr::UNSPECIFIED, port);
    let remote = sockaddr(*target.ip(), target.port());
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid fd, option values and sockaddr structures that outlive the calls.
    let rc = unsafe {
        if socket_option(&fd, libc::SO_REUSEADDR, &one) != 0
            || socket_option(&fd, libc::SO_SNDTIMEO, &tv) != 0
            || libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_in).cast(),
                len,
            ) != 0
        {
            -1
        } else {
            libc::connect(
                fd.as_raw_fd(),
                (&remote as *const libc::sockaddr_in).cast(),
                len,
            )
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// `setsockopt(fd, SOL_SOCKET, name, value)`; returns its result.
///
/// # Safety
/// `T` must be the type the kernel expects for option `name`.
unsafe fn socket_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> libc::c_int {
    let size = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a valid `T` for the duration of the call, `size` bytes long.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            size,
        )
    }
}

/// What a TCP load generator saw.
#[derive(Debug, Default, Clone)]
pub struct TcpStats {
    /// Connections attempted (client-side port clashes excluded).
    pub attempts: u64,
    /// Answers per backend name.
    pub answered: BTreeMap<String, u64>,
    /// Connections that failed (refused, timed out, reset, or no answer).
    pub failed: u64,
    /// Connections that succeeded but took over 900 ms (a dropped SYN retransmitted).
    pub slow: u64,
    /// The first few failures, for the report.
    pub examples: Vec<String>,
    /// When each failed connection was started (to attribute it to a phase of the test).
    pub failed_at: Vec<Instant>,
    /// When each slow connection was started.
    pub slow_at: Vec<Instant>,
    /// connect() refused locally because the previous connection on the port was still
    /// closing (EADDRNOTAVAIL/EADDRINUSE): a client-side retry, not a proxy failure.
    pub port_busy: u64,
}

impl TcpStats {
    /// Adds `other`'s counts to these.
    fn add(&mut self, other: TcpStats) {
        self.attempts += other.attempts;
        self.failed += other.failed;
        self.slow += other.slow;
        self.port_busy += other.port_busy;
        for (k, v) in other.answered {
            *self.answered.entry(k).or_insert(0) += v;
        }
        self.examples.extend(other.examples);
        self.failed_at.extend(other.failed_at);
        self.slow_at.extend(other.slow_at);
    }
}

/// Short TCP connections from `netns` to `target`, from source ports `ports` only, handed out
/// round-robin to `workers` threads, each connection reading the backend's name to EOF, until
/// `stop` is set.
pub fn tcp_port_load(
    netns: &str,
    target: SocketAddrV4,
    ports: Range<u16>,
    workers: u16,
    stop: Arc<AtomicBool>,
) -> JoinHandle<TcpStats> {
    in_netns(netns, move || {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                let mine: Vec<u16> = ports.clone().filter(|p| p % workers == w).collect();
                std::thread::spawn(move || port_worker(target, &mine, &stop))
            })
            .collect();
        let mut total = TcpStats::default();
        for h in handles {
            total.add(h.join().expect("tcp load worker"));
        }
        total
    })
}

/// One worker of [`tcp_port_load`]: connections from `ports` in turn until `stop` is set.
fn port_worker(target: SocketAddrV4, ports: &[u16], stop: &AtomicBool) -> TcpStats {
    let mut stats = TcpStats::default();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let port = ports[next % ports.len()];
        next += 1;
        let started = Instant::now();
        let result = tcp_connect_from(port, target, Duration::from_secs(3)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match result {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
                ) =>
            {
                stats.port_busy += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Ok(text) if !text.is_empty() => {
                stats.attempts += 1;
                *stats.answered.entry(text).or_insert(0) += 1;
                if started.elapsed() > Duration::from_millis(900) {
                    stats.slow += 1;
                    stats.slow_at.push(started);
                }
            }
            other => {
                stats.attempts += 1;
                stats.failed += 1;
                stats.failed_at.push(started);
                if stats.examples.len() < 5 {
                    stats.examples.push(format!("port {port}: {other:?}"));
                }
            }
        }
    }
    stats
}
