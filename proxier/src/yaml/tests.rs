//! The YAML bombs of issue 12 item 10, built here, each refused with [`Error::InputRefused`].
//! Elapsed times are printed (`--nocapture`), not asserted.

use std::time::Instant;

use super::*;
use crate::config::KubeProxyConfiguration;
use crate::source::{parse_documents, DirectorySource};

/// An alias bomb of about `bytes`: `l0` is a list of ten scalars and every `lN` a list of ten
/// aliases of `lN-1`, so the last expands to 10^levels scalars.
fn alias_bomb(bytes: usize) -> String {
    let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    let mut level = 1;
    while text.len() < bytes {
        let alias = format!("*l{}", level - 1);
        let items = [alias.as_str(); 10].join(", ");
        text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        level += 1;
    }
    text
}

fn over_budget(result: Result<(), Error>) -> String {
    match result {
        Err(
            e @ Error::InputRefused {
                reason: InputRefusal::OverBudget(_),
                ..
            },
        ) => e.report().to_string(),
        other => panic!("expected a refusal over the YAML budget, got {other:?}"),
    }
}

fn documents_refused(name: &str, text: &str) -> String {
    let start = Instant::now();
    let (objects, problems) = parse_documents(name, text);
    eprintln!(
        "{name}: {} bytes refused in {:?}",
        text.len(),
        start.elapsed()
    );
    assert!(objects.is_empty());
    let [problem] = <[Error; 1]>::try_from(problems).expect("exactly one problem");
    over_budget(Err(problem))
}

#[test]
fn alias_bombs_of_10_and_100_kb_are_refused() {
    for bytes in [10_000, 100_000] {
        let bomb = alias_bomb(bytes);
        let message = documents_refused(&format!("bomb-{bytes}.yaml"), &bomb);
        eprintln!("{message}");
        assert!(message.contains("YAML over the limits"), "{message}");
        assert!(message.contains(&format!("bomb-{bytes}.yaml")), "{message}");
        // The same text as a configuration file.
        let start = Instant::now();
        let Err(e) = KubeProxyConfiguration::from_yaml(&bomb) else {
            panic!("a bomb is not a configuration");
        };
        eprintln!("as KubeProxyConfiguration: {:?}", start.elapsed());
        over_budget(Err(e));
    }
}

#[test]
fn nesting_of_200_kb_is_refused() {
    for open in ["[", "{a: "] {
        let bomb = open.repeat(200_000 / open.len());
        let message = documents_refused("nested.yaml", &bomb);
        eprintln!("{message}");
        assert!(message.contains("nested.yaml"), "{message}");
        let Err(e) = KubeProxyConfiguration::from_yaml(&bomb) else {
            panic!("nesting is not a configuration");
        };
        over_budget(Err(e));
    }
    // Block nesting: a mapping per line, each indented one more.
    let block: String = (0..2_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    documents_refused("block.yaml", &block);
}

#[test]
fn aliases_within_the_budget_still_read() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: &labels {app: web}}
spec:
  clusterIP: 10.96.0.10
  selector: *labels
  ports: [{port: 80, protocol: TCP}]
";
    let (objects, problems) = parse_documents("aliases.yaml", text);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(objects.len(), 1);
    // Ten levels of two aliases each: 1024 scalars replayed, far inside the budget.
    let mut small = String::from("l0: &l0 [x]\n");
    for level in 1..=10 {
        small.push_str(&format!(
            "l{level}: &l{level} [*l{}, *l{}]\n",
            level - 1,
            level - 1
        ));
    }
    check_limits("small.yaml", &small).expect("a small expansion passes");
}

#[test]
fn syntax_errors_are_left_to_the_parser() {
    check_limits("broken.yaml", "ipvs: [unclosed").expect("not a limit");
    let Err(Error::Yaml { .. }) = KubeProxyConfiguration::from_yaml("ipvs: [unclosed") else {
        panic!("the parser reports the syntax error");
    };
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("cluster.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let Err(
        e @ Error::InputRefused {
            reason: InputRefusal::NotRegularFile("FIFO"),
            ..
        },
    ) = read_file(&fifo)
    else {
        panic!("a FIFO is not read");
    };
    eprintln!("{} ({:?})", e.report(), start.elapsed());
    // The file source given the FIFO itself (`-f FIFO`) reports it as a problem.
    let poll = DirectorySource::new(&fifo).poll(|_, _| {}).unwrap();
    assert!(matches!(
        poll.problems.as_slice(),
        [Error::InputRefused {
            reason: InputRefusal::NotRegularFile("FIFO"),
            ..
        }]
    ));
    let Err(Error::InputRefused {
        reason: InputRefusal::NotRegularFile("device"),
        ..
    }) = read_file(Path::new("/dev/zero"))
    else {
        panic!("a device is not read");
    };
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    // Sparse: no disk space used.
    File::create(&path)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let Err(Error::InputRefused {
        reason: InputRefusal::TooLarge { size, limit },
        ..
    }) = read_file(&path)
    else {
        panic!("an oversized file is not read");
    };
    assert_eq!((size, limit), (MAX_FILE_BYTES + 1, MAX_FILE_BYTES));
    std::fs::write(&path, "kind: List\nitems: []\n").unwrap();
    assert_eq!(read_file(&path).unwrap(), "kind: List\nitems: []\n");
}

/// Issue 15 item 1: the cut of a stream into documents, at `---`/`...` lines only, and not
/// where it would not be exact.
#[test]
fn a_stream_is_cut_at_its_document_markers_only() {
    let text = "a: 1\n----: 2\n---x: 3\n---\nb: |\n  ---\n  ...\n---\t# c\nc: 2\n...\n# after\n--- |\n  d\n";
    assert_eq!(
        split::documents(text).unwrap(),
        [
            "a: 1\n----: 2\n---x: 3\n",
            "---\nb: |\n  ---\n  ...\n",
            "---\t# c\nc: 2\n...\n",
            "# after\n",
            "--- |\n  d\n"
        ]
    );
    assert_eq!(split::documents("").unwrap(), Vec::<&str>::new());
    assert_eq!(split::documents("---\n").unwrap(), ["---\n"]);
    for whole in [
        "%YAML 1.2\n---\na: 1\n",
        "a: &x 1\n---\nb: *x\n",
        "{\"a\": 1}\n",
        "\n  [1, 2]\n",
    ] {
        assert_eq!(split::documents(whole), None, "{whole:?}");
    }
    // Every piece reads as the document it was in the stream.
    let (whole, error) = documents("whole", text);
    assert!(error.is_none(), "{error:?}");
    let pieces: Vec<_> = (split::documents(text).unwrap().into_iter())
        .flat_map(|piece| documents("piece", piece).0)
        .collect();
    assert_eq!(pieces, whole);
    assert_eq!(split::digest("---\na: 1\n"), split::digest("a: 1\n"));
    assert_ne!(split::digest("a: 1\n"), split::digest("a: 2\n"));
    // The zero padding of the last word is told apart by the length.
    assert_ne!(split::digest("a"), split::digest("a\0"));
    assert_ne!(split::digest(""), split::digest("\0\0\0\0\0\0\0\0"));
    let flip =
        |ready: &str| format!("endpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready}\n");
    assert_ne!(
        split::digest(&flip("{ready: true}")),
        split::digest(&flip("{ready: false, serving: true, terminating: true}"))
    );
}

/// What the YAML parser alone makes of `text` (the path every non-JSON text takes).
fn yaml_reading(text: &str) -> Result<Vec<serde_json::Value>, serde_saphyr::Error> {
    serde_saphyr::from_multiple_with_options(text, options())
}

#[test]
fn json_text_is_read_by_the_fast_path_exactly_as_the_yaml_parser_reads_it() {
    let list = r#"
        {"apiVersion": "v1", "kind": "List", "items": [
          {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "default", "labels": {}, "uid": null},
           "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080,
                    "protocol": "TCP"}], "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}},
          {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": "web-eps"}, "endpoints": [{"addresses": ["10.0.0.1"],
           "conditions": {"ready": true, "serving": true, "terminating": false},
           "zone": "z\u00e9", "hints": {"forZones": []}, "weight": -15}]}
        ]}
    "#;
    for text in [
        list,
        "[1, -3, \"x\", true, null, [], {}]",
        "\u{feff}{\"a\": 1}\n",
    ] {
        let fast = json::document(text).unwrap_or_else(|| panic!("the fast path reads {text}"));
        assert_eq!(vec![fast], yaml_reading(text).unwrap(), "{text}");
        let (values, error) = documents("t", text);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(values, yaml_reading(text).unwrap());
    }
    // Both objects of the list are read.
    let (objects, problems) = parse_documents("list", list);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(objects.len(), 2);
}

#[test]
fn json_the_fast_path_cannot_read_exactly_is_left_to_the_yaml_parser() {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    for text in [
        // A repeated key: the YAML parser refuses it, so must the file.
        "{\"a\": 1, \"a\": 2}",
        // Flow YAML that is not JSON.
        "{a: b, c: [d]}",
        // Two values, or a value and more text.
        "{\"a\": 1}\n{\"b\": 2}",
        "{\"a\": 1}\n---\nb: 2\n",
        // Out of serde_json's number range.
        "{\"a\": 1e400}",
        // serde_json reads `-0` as -0.0, YAML as the integer 0 (found by fuzzing).
        "[1, -0 ,2.2, {}]",
        "{\"a\": -0.0}",
        "[2.5]",
        "[1e3]",
        "[7777777777777777777777777777777777777777777777000000000000000000000000000000000007]",
        // Deeper than the fast path reads, within the budget or over it.
        &nested(json::FAST_DEPTH + 1),
        &nested(MAX_DEPTH + 1),
    ] {
        assert_eq!(json::document(text), None, "{text}");
    }
    assert_eq!(
        json::document(&nested(json::FAST_DEPTH)),
        Some(serde_json::from_str(&nested(json::FAST_DEPTH)).unwrap())
    );
    // What the YAML parser says of them stands.
    let (values, error) = documents("dup", "{\"a\": 1, \"a\": 2}");
    assert!(values.is_empty());
    assert!(error.unwrap().report().to_string().contains("duplicate"));
    assert_eq!(
        documents("flow", "{a: b, c: [d]}").0,
        yaml_reading("{a: b, c: [d]}").unwrap()
    );
    let (values, error) = documents("zero", "[1, -0 ,2.2, {}]");
    assert!(error.is_none(), "{error:?}");
    assert_eq!(values, yaml_reading("[1, -0 ,2.2, {}]").unwrap());
    let deep = nested(json::FAST_DEPTH + 1);
    let (values, error) = documents("deep", &deep);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(values, yaml_reading(&deep).unwrap());
    let (values, error) = documents("over", &nested(MAX_DEPTH + 1));
    assert!(values.is_empty());
    assert!(
        matches!(error, Some(Error::InputRefused { .. })),
        "{error:?}"
    );
}
