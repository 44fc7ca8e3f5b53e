//! The block reader against the YAML parser: what it reads, it reads to the same values; what
//! it does not read exactly, it leaves to the parser.

use super::document;
use crate::yaml::{documents, options, split};

/// What the YAML parser alone makes of `text`.
fn parser(text: &str) -> Result<Vec<serde_json::Value>, serde_saphyr::Error> {
    serde_saphyr::from_multiple_with_options(text, options())
}

/// `text` read by the block reader, checked against the parser.
fn read_alike(text: &str) -> serde_json::Value {
    let ours = document(text).unwrap_or_else(|| panic!("the block reader reads {text:?}"));
    assert_eq!(vec![ours.clone()], parser(text).unwrap(), "{text:?}");
    ours
}

const SERVICE: &str = r#"# kubectl get service web -o yaml
apiVersion: v1
kind: Service
metadata:
  annotations:
    example.com/owner: 'team ''web'''
    example.com/note: "a: b # not a comment"
  creationTimestamp: "2026-11-30T20:00:00Z"
  labels:
    app.kubernetes.io/name: web
  name: web
  namespace: default
  resourceVersion: "4242"
spec:
  clusterIP: 10.96.0.10
  clusterIPs:
  - 10.96.0.10
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080   # the pods' port
  -   name: dns
      port: 53
      nodePort: ~
  selector: {app: web}
  sessionAffinity: None
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 10800
  healthCheckNodePort: -1
  loadBalancerSourceRanges: []
  externalName: /path/with:colon
status:
  loadBalancer: {}
"#;

const SLICE: &str = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-eps\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports:\n- {name: http, port: 8080, protocol: TCP}\nendpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: false, serving: true, terminating: true}\n  nodeName: node-a\n  zone: null\n- addresses: [ 10.0.0.2 , \"10.0.0.3\" ]\n  conditions:\n  hints:\n    forZones: [{name: z1}, {name: 'z 2'}]\n...\n# trailing comment\n";

#[test]
fn kubernetes_objects_are_read_as_the_parser_reads_them() {
    let service = read_alike(SERVICE);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(
        service["spec"]["ports"][1]["nodePort"],
        serde_json::Value::Null
    );
    assert_eq!(service["spec"]["healthCheckNodePort"], -1);
    assert_eq!(
        service["metadata"]["annotations"]["example.com/owner"],
        "team 'web'"
    );
    let slice = read_alike(SLICE);
    assert_eq!(slice["endpoints"][1]["addresses"][1], "10.0.0.3");
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], false);
    for text in [
        "- a\n- b: 1\n  c: [x, -2]\n-\n- 0\n",
        "a:\n  b\n",
        "a:\n- x\n-   k: 1\n    z:\n    - w\nb:\n",
        "a: b c  d\nsay: hello, world (again)\nurl: http://x:80/y\n",
        "\n\n  # indented comment\nk: v\n",
    ] {
        read_alike(text);
    }
}

#[test]
fn text_it_cannot_read_exactly_is_left_to_the_parser() {
    for text in [
        // Scalars whose type needs YAML's resolution rules.
        "a: yes\n",
        "a: No\n",
        "a: on\n",
        "a: TRUE\n",
        "a: 0x1f\n",
        "a: 1e3\n",
        "a: 2.5\n",
        "a: 007\n",
        "a: +5\n",
        "a: -0\n",
        "a: .inf\n",
        "a: 1.2.3\n",
        "a: 12:30\n",
        "a: 1234567890123456789\n",
        "true: a\n",
        "1: a\n",
        // YAML this reader does not speak.
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "a: >\n  text\n",
        "? a\n: b\n",
        "<<: {a: 1}\n",
        "a: [1,\n  2]\n",
        "a: 'one\n  two'\n",
        "a: \"tab\\t\"\n",
        "a: b\n  c\n",
        "- - x\n",
        "a: [x, ]\n",
        "a: {b: }\n",
        "a: {b:c}\n",
        "%YAML 1.2\n---\na: 1\n",
        "--- a: 1\n",
        "a: 1\n---\nb: 2\n",
        "a: 1\r\n",
        "a:\t1\n",
        "a: x#y\n",
        "  a: 1\n",
        "just a scalar\n",
        // The parser skips a null document (found by the `documents` fuzz target).
        "~",
        "null\n",
        "",
        // Errors: the parser's to report.
        "a: 1\na: 2\n",
        "a: {b: 1, b: 2}\n",
        "a:\n  b: 1\n c: 2\n",
        "a: b: c\n",
        "- a\nb: c\n",
        "a: 'x' y\n",
        "a: \"open\n",
    ] {
        assert_eq!(document(text), None, "{text:?}");
        let (values, error) = documents("t", text);
        match parser(text) {
            Ok(theirs) => {
                assert!(error.is_none(), "{text:?}: {error:?}");
                assert_eq!(values, theirs, "{text:?}");
            }
            Err(_) => assert!(error.is_some(), "{text:?} read as {values:?}"),
        }
    }
    let deep = format!("a: {}1{}\n", "[".repeat(40), "]".repeat(40));
    assert_eq!(document(&deep), None);
}

/// A small deterministic generator (xorshift) of YAML-like documents built from the pieces
/// the reader takes and the ones it must refuse, each compared with the parser. A `clean`
/// document holds only pieces the reader takes.
struct Generator {
    state: u64,
    clean: bool,
}

/// How many of the first scalars and keys below the reader takes.
const CLEAN_SCALARS: usize = 33;
const CLEAN_KEYS: usize = 6;

impl Generator {
    fn next(&mut self, n: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % n as u64) as usize
    }

    fn pick(&mut self, all: &[&str], clean: usize) -> String {
        let n = if self.clean { clean } else { all.len() };
        all[self.next(n)].to_owned()
    }

    fn scalar(&mut self) -> String {
        const SCALARS: &[&str] = &[
            "web",
            "10.0.0.1",
            "80",
            "-3",
            "0",
            "true",
            "false",
            "null",
            "~",
            "'it''s'",
            "\"q: #\"",
            "a b",
            "x:y",
            "/p",
            "[]",
            "{}",
            "[a, 1]",
            "{a: b}",
            "{a: [b, {c: d}]}",
            "''",
            "\"\"",
            "a #c",
            "[a,b]",
            "Null",
            "NULL",
            "'é'",
            "web # c",
            "[ 10.0.0.1 ]",
            "{ a: -1 , b: [] }",
            "a=b@c",
            "f(x)",
            "'x: y'",
            "x~y",
            "yes",
            "N",
            "1.2.3",
            "{a: 1, a: 2}",
            "9999999999999999999",
            ".5",
            "-a",
            "1e3",
            "2.5",
            "0o7",
            "007",
            "'it''s'",
            "\"q: #\"",
            "a b",
            "x:y",
            "/p",
            "1.2.3",
            "-",
            "?",
            "*a",
            "&a x",
            "!t x",
            "[]",
            "{}",
            "[a, 1]",
            "{a: b}",
            "{a: [b, {c: d}]}",
            "nULL",
            "é",
            "a\u{85}b",
            "[a, ]",
            "{a: }",
            "1e3",
            "2.5",
            "0o7",
            "007",
            "-",
            "?",
            "*a",
            "&a x",
            "!t x",
        ];
        self.pick(SCALARS, CLEAN_SCALARS)
    }

    fn key(&mut self) -> String {
        const KEYS: &[&str] = &[
            "a", "b", "name", "app.io/x", "'q k'", "\"d\"", "1", "on", "k-2",
        ];
        self.pick(KEYS, CLEAN_KEYS)
    }

    /// A block node at `indent`, written after a key (`after_key`) or an entry.
    fn node(&mut self, out: &mut String, indent: usize, depth: usize) {
        let kinds = match (depth > 3, self.clean) {
            (true, _) => 1,
            (false, true) => 3,
            (false, false) => 4,
        };
        match self.next(kinds) {
            0 => {
                out.push(' ');
                out.push_str(&self.scalar());
                out.push('\n');
            }
            1 => {
                out.push('\n');
                let inner = indent + 1 + self.next(2);
                let mut keys = Vec::new();
                for _ in 0..1 + self.next(3) {
                    let key = self.key();
                    if self.clean && keys.contains(&key) {
                        continue;
                    }
                    out.push_str(&" ".repeat(inner));
                    out.push_str(&key);
                    out.push(':');
                    keys.push(key);
                    self.node(out, inner, depth + 1);
                }
            }
            2 => {
                out.push('\n');
                let inner = indent + self.next(3);
                for _ in 0..1 + self.next(3) {
                    out.push_str(&" ".repeat(inner));
                    out.push('-');
                    self.node(out, inner + 1, depth + 1);
                }
            }
            _ => {
                // Noise: a comment, a blank line, a mis-indented line.
                out.push_str([" # c\n", "\n\n", "\n x\n", " a\n  b\n"][self.next(4)]);
            }
        }
    }
}

#[test]
fn generated_documents_read_alike_or_are_left_to_the_parser() {
    let mut generator = Generator {
        state: 0x2545_f491_4f6c_dd1d,
        clean: false,
    };
    let (mut taken, mut total) = (0, 0);
    for case in 0..4000 {
        generator.clean = case % 2 == 0;
        let mut text = String::new();
        let mut keys = Vec::new();
        for _ in 0..1 + generator.next(4) {
            let key = generator.key();
            if generator.clean && keys.contains(&key) {
                continue;
            }
            text.push_str(&key);
            text.push(':');
            keys.push(key);
            generator.node(&mut text, 0, 0);
        }
        total += 1;
        let read = document(&text);
        // Clean pieces in any arrangement are the reader's.
        assert!(!generator.clean || read.is_some(), "{text:?}");
        if let Some(ours) = read {
            taken += 1;
            assert_eq!(parser(&text).ok(), Some(vec![ours]), "{text:?}");
        }
    }
    // The generator reaches both sides.
    assert!(
        taken >= total / 2 && taken < total,
        "{taken} of {total} read"
    );
}

#[test]
fn every_document_of_a_split_file_takes_the_block_reader() {
    let file = format!("{SERVICE}{SLICE}");
    let pieces = split::documents(&file).unwrap();
    // The Service, the EndpointSlice up to its `...`, the trailing comment (no document).
    assert_eq!(pieces.len(), 3);
    assert!(document(pieces[0]).is_some(), "{:?}", pieces[0]);
    assert!(document(pieces[1]).is_some(), "{:?}", pieces[1]);
    assert_eq!(document(pieces[2]), None);
}
#[test]
fn a_stream_read_a_document_at_a_time_names_the_streams_line_in_errors() {
    let text = "a: 1\n---\nb: |\n  two\n---\nc: [1, 2\nd: 3\n";
    let (values, error) = documents("f.yaml", text);
    // The block reader takes the first, the parser the second, and the third is an error.
    assert_eq!(values.len(), 2);
    assert_eq!(values[1]["b"], "two\n");
    let report = error.unwrap().report().to_string();
    assert!(report.starts_with("f.yaml document 3: "), "{report}");
    assert!(report.contains("line 7"), "{report}");
}

#[test]
fn a_lone_carriage_return_keeps_a_stream_whole() {
    // YAML reads `...\r` as an end marker and a line break (found by the `documents` fuzz
    // target); CR LF lines are cut as LF lines.
    let text = "...\r)0\n\n7).). ";
    assert_eq!(split::documents(text), None);
    let (values, error) = documents("cr", text);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(values, parser(text).unwrap());
    assert_eq!(
        split::documents("a: 1\r\n---\r\nb: 2\r\n").map(|p| p.len()),
        Some(2)
    );
}

#[test]
fn the_file_source_names_the_files_line_of_a_bad_document() {
    let dir = tempfile::tempdir().unwrap();
    let text = "a: 1\n---\nb: |\n  two\n---\nc: [1, 2\nd: 3\n";
    std::fs::write(dir.path().join("f.yaml"), text).unwrap();
    let poll = crate::source::DirectorySource::new(dir.path())
        .poll(|_, _| {})
        .unwrap();
    let [problem] = poll.problems.as_slice() else {
        panic!("one problem: {:?}", poll.problems);
    };
    let report = problem.report().to_string();
    assert!(report.contains("f.yaml document 3: "), "{report}");
    assert!(report.contains("line 7"), "{report}");
}

/// `text` read by the block reader into a `T` straight from its nodes, checked against
/// serde_json's reading of the same nodes as a `Value`: the same object, or the same error.
fn typed_alike<T>(text: &str) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let node = super::parse(text).unwrap_or_else(|| panic!("the block reader reads {text:?}"));
    let straight = super::typed::<T>(&node).map_err(|e| e.to_string());
    let through_value = serde_json::from_value::<T>(node.into_value()).map_err(|e| e.to_string());
    assert_eq!(straight, through_value, "{text:?}");
    straight
}

#[test]
fn objects_read_straight_from_the_nodes_read_as_from_their_values() {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;

    let service = typed_alike::<core::Service>(SERVICE).unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap()[1].port, 53);
    let slice = typed_alike::<discovery::EndpointSlice>(SLICE).unwrap();
    assert_eq!(
        slice.endpoints.unwrap()[1].addresses,
        ["10.0.0.2", "10.0.0.3"]
    );
    let node = "kind: Node\nmetadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}\nstatus:\n  addresses:\n  - {type: InternalIP, address: 10.0.0.1}\n";
    typed_alike::<core::Node>(node).unwrap();
    // Named and numbered target ports, a negative port, an empty spec.
    for spec in [
        "{ports: [{port: 80, targetPort: http}]}",
        "{ports: [{port: 80, targetPort: 8080, nodePort: -1}]}",
        "{}",
        "",
    ] {
        typed_alike::<core::Service>(&format!("kind: Service\nspec: {spec}\n")).unwrap();
    }
    // The wrong shapes: the same error either way.
    for spec in [
        "{ports: [{port: http}]}",
        "{ports: [{port: 99999999999}]}",
        "[1]",
        "{clusterIPs: 10.0.0.1}",
        "{ports: {port: 80}}",
        "{ports: [{port: 80, appProtocol: [x]}]}",
        "{sessionAffinityConfig: {clientIP: {timeoutSeconds: true}}}",
    ] {
        let text = format!("kind: Service\nspec: {spec}\n");
        let error = typed_alike::<core::Service>(&text).unwrap_err();
        assert!(!error.is_empty(), "{text}");
    }
    let labels = "kind: Service\nmetadata: {labels: {a: 1}}\n";
    typed_alike::<core::Service>(labels).unwrap_err();
}
