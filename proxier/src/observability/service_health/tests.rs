//! The service health server over real HTTP on the loopback address.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::ServiceHealthServer;
use crate::fixtures::name;
use crate::observability::Health;
use crate::plan::{HealthChecks, ServiceHealthCheck};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

fn checks(port: u16, local_endpoints: usize) -> HealthChecks {
    HealthChecks {
        services: [(
            name("web"),
            ServiceHealthCheck {
                node_port: port,
                local_endpoints,
            },
        )]
        .into(),
        addresses: Some(vec![IpAddr::from([127, 0, 0, 1])]),
    }
}

#[test]
fn health_check_ports_open_answer_and_close_as_the_plan_says() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let mut server = ServiceHealthServer::new(Arc::new(Health::new(Duration::from_secs(30))));
    let port = free_port();

    server.sync(&checks(port, 1));
    let ok = get(port, "/").unwrap();
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: application/json\r\n"), "{ok}");
    assert!(ok.contains("X-Content-Type-Options: nosniff\r\n"), "{ok}");
    assert!(
        ok.ends_with("\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"),
        "{ok}"
    );
    // Any path, as kube-proxy's handler.
    assert!(get(port, "/healthz")
        .unwrap()
        .starts_with("HTTP/1.1 200 OK"));

    server.sync(&checks(port, 0));
    let unavailable = get(port, "/").unwrap();
    assert!(
        unavailable.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{unavailable}"
    );
    assert!(
        unavailable.contains("\"localEndpoints\": 0,"),
        "{unavailable}"
    );

    server.sync(&HealthChecks::default());
    assert!(server.ports().is_empty());
    let refused = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        get(port, "/").is_err()
    });
    assert!(refused, "the port is closed once the Service is gone");
}
