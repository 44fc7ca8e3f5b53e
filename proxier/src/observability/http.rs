//! A minimal HTTP/1.1 server for the health and metrics endpoints: `GET`/`HEAD` only, one
//! request per connection (`Connection: close`), bounded request head, read time, connection
//! time and number of connections open at once ([`MAX_CONNECTIONS`]; more wait in the
//! listen backlog).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

/// An answer: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// A response.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    fn not_found() -> Self {
        Self::new(404, "text/plain; charset=utf-8", "404 page not found\n")
    }
}

/// Maps a request path to a response (`None` = 404).
pub type Handler = Arc<dyn Fn(&str) -> Option<Response> + Send + Sync>;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole connection (read, answer, write) ends after this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Binds `address`.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Serve { address, source })
}

/// Serves connections from `listener` until the task is dropped, [`MAX_CONNECTIONS`] at once.
pub async fn serve(listener: TcpListener, handler: Handler) {
    serve_at_most(listener, handler, MAX_CONNECTIONS).await;
}

/// [`serve`] with at most `limit` connections open at once: the next one is accepted only
/// when one ends.
pub async fn serve_at_most(listener: TcpListener, handler: Handler, limit: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return; // never closed
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let answered =
                        tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &handler)).await;
                    if let Ok(Err(error)) = answered {
                        tracing::debug!(%error, "HTTP connection failed");
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(head))
}

/// The request line of a request head: method and path (the query cut off), each empty when
/// absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`, `HEAD`, ...).
    pub method: String,
    /// The path of the target, without its query.
    pub path: String,
}

/// Reads the request line of a request head (bytes that are not UTF-8 are replaced).
pub fn parse_request(head: &[u8]) -> Request {
    let head = String::from_utf8_lossy(head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    Request {
        method: method.to_owned(),
        path: path.to_owned(),
    }
}

/// The whole answer to a request head as written to the connection; `None` is a head that was
/// too long or cut short.
pub fn respond(head: Option<&[u8]>, handler: &Handler) -> String {
    let request = parse_request(head.unwrap_or_default());
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let response = match method {
        _ if head.is_none() || path.is_empty() => {
            Response::new(400, "text/plain; charset=utf-8", "bad request\n")
        }
        "GET" | "HEAD" => handler(path).unwrap_or_else(Response::not_found),
        _ => Response::new(405, "text/plain; charset=utf-8", "method not allowed\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if method != "HEAD" {
        out.push_str(&response.body);
    }
    out
}

async fn answer(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let out = respond(head.as_deref(), handler);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn the_request_line_gives_method_and_path_without_query() {
        let request = parse_request(b"HEAD /metrics?name=x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("HEAD", "/metrics")
        );
        assert_eq!(parse_request(b"").path, "");
        let handler: Handler =
            Arc::new(|path| (path == "/healthz").then(|| Response::new(200, "text/plain", "ok")));
        let head = respond(Some(b"HEAD /healthz HTTP/1.1\r\n\r\n"), &handler);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        assert!(respond(None, &handler).starts_with("HTTP/1.1 400 Bad Request\r\n"));
        let post = respond(Some(b"POST /healthz HTTP/1.1\r\n\r\n"), &handler);
        assert!(post.ends_with("method not allowed\n"));
    }
}
