#![no_main]
//! Arbitrary request heads into the parser and responder of the health/metrics listener
//! (0.0.0.0:10256): panics are not allowed. Every answer is one well-formed HTTP/1.1 response
//! whose `Content-Length` is the body's length (no body for `HEAD`), the path handed to the
//! handler never holds a query, and only GET and HEAD reach the handler.

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use proxier::observability::http::{parse_request, respond, Handler, Response};

fuzz_target!(|data: &[u8]| {
    let (complete, head) = match data.split_first() {
        Some((&flag, head)) => (flag & 1 == 0, head),
        None => return,
    };
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let handler: Handler = Arc::new(move |path: &str| {
        record.lock().unwrap().push(path.to_owned());
        (path == "/healthz").then(|| Response::new(200, "application/json", "{}"))
    });
    let request = parse_request(head);
    assert!(!request.path.contains('?'));
    assert!(!request.method.contains(char::is_whitespace));
    let out = respond(complete.then_some(head), &handler);
    let (status_line, rest) = out.split_once("\r\n").expect("a status line");
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let (headers, body) = rest.split_once("\r\n\r\n").expect("headers end");
    let length: usize = headers
        .lines()
        .find_map(|h| h.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .expect("a number");
    if request.method == "HEAD" && complete {
        assert!(body.is_empty());
    } else {
        assert_eq!(body.len(), length);
    }
    let seen = seen.lock().unwrap();
    if !seen.is_empty() {
        assert!(complete && matches!(request.method.as_str(), "GET" | "HEAD"));
        assert_eq!(seen.as_slice(), [request.path.clone()]);
    }
});
