//! Multi-document YAML (including `kind: List`) → Kubernetes objects → [`ClusterState`].

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use crate::error::{Error, YamlError};
use crate::model::{endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState};
use crate::yaml::{Document, StreamPosition};

/// An object this proxy reads.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KubeObject {
    /// A Service.
    Service(Box<core::Service>),
    /// A discovery/v1 EndpointSlice.
    EndpointSlice(Box<discovery::EndpointSlice>),
    /// A Node.
    Node(Box<core::Node>),
}

fn typed<T: serde::de::DeserializeOwned>(
    document: Document<'_>,
    context: &str,
) -> Result<T, Error> {
    document.typed().map_err(|source| Error::Yaml {
        context: context.to_owned(),
        source: YamlError::Object(source),
    })
}

/// What a document's `kind` and `apiVersion` make it, for this proxy.
enum Kind {
    Service,
    EndpointSlice,
    Node,
    List,
    /// Pods, Deployments, ...: they may share the files; not ours, not an error.
    Other,
}

impl Kind {
    fn of(document: &Document<'_>) -> Self {
        let kind = document.str_field("kind").unwrap_or("");
        let api_version = document.str_field("apiVersion").unwrap_or("");
        match (kind, api_version) {
            ("Service", "v1") => Kind::Service,
            ("EndpointSlice", "discovery.k8s.io/v1") => Kind::EndpointSlice,
            ("Node", "v1") => Kind::Node,
            (kind, _) if kind.ends_with("List") => Kind::List,
            _ => Kind::Other,
        }
    }
}

fn collect(
    document: Document<'_>,
    context: &str,
    objects: &mut Vec<KubeObject>,
    problems: &mut Vec<Error>,
) {
    let result = match Kind::of(&document) {
        Kind::Service => typed(document, context).map(|o| Some(KubeObject::Service(Box::new(o)))),
        Kind::EndpointSlice => {
            typed(document, context).map(|o| Some(KubeObject::EndpointSlice(Box::new(o))))
        }
        Kind::Node => typed(document, context).map(|o| Some(KubeObject::Node(Box::new(o)))),
        Kind::List => {
            for (i, item) in document.into_items().into_iter().flatten().enumerate() {
                collect(item, &format!("{context} item {i}"), objects, problems);
            }
            Ok(None)
        }
        Kind::Other => Ok(None),
    };
    match result {
        Ok(Some(object)) => objects.push(object),
        Ok(None) => {}
        Err(e) => problems.push(e),
    }
}

/// Parses every document of `text` (`name` is used in messages). Unreadable documents are
/// returned as errors beside the objects that could be read; text over the YAML limits of
/// [`crate::yaml`] yields no object (read once, by [`crate::yaml::documents`]).
pub fn parse_documents(name: &str, text: &str) -> (Vec<KubeObject>, Vec<Error>) {
    let read = crate::yaml::documents_from(name, text, StreamPosition::start(text));
    let parsed = collect_documents(name, 1, read);
    (parsed.objects, parsed.problems)
}

/// What [`parse_documents_from`] read from one text.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub objects: Vec<KubeObject>,
    pub problems: Vec<Error>,
    /// How many documents the text held (read before a syntax error).
    pub documents: usize,
}

/// [`parse_documents`] of one piece of a file ([`crate::yaml::split::documents`]) that starts
/// at `position`, for the document numbers and lines in messages.
pub(crate) fn parse_piece(name: &str, piece: &str, position: StreamPosition<'_>) -> Parsed {
    let read = crate::yaml::one_document_text(name, piece, position);
    collect_documents(name, position.document, read)
}

/// The objects of the documents read from a text whose first is document `first` of its file.
fn collect_documents(
    name: &str,
    first: usize,
    (documents, error): (Vec<Document<'_>>, Option<Error>),
) -> Parsed {
    let mut parsed = Parsed::default();
    if let Some(refused @ Error::InputRefused { .. }) = error {
        parsed.problems.push(refused);
        return parsed;
    }
    parsed.documents = documents.len();
    for (i, value) in documents.into_iter().enumerate() {
        let context = format!("{name} document {}", first + i);
        collect(value, &context, &mut parsed.objects, &mut parsed.problems);
    }
    parsed.problems.extend(error);
    parsed
}

/// Builds a cluster from objects; rejected ones (and entries left out of a Service) are
/// returned with their reasons.
pub fn load_cluster(objects: &[KubeObject]) -> (ClusterState, Vec<Error>) {
    let mut cluster = ClusterState::new();
    let mut rejected = Vec::new();
    for object in objects {
        let result = match object {
            KubeObject::Service(s) => {
                service_from_k8s(s, &mut rejected).map(|s| cluster.upsert_service(s))
            }
            KubeObject::EndpointSlice(s) => {
                endpoint_slice_from_k8s(s).map(|s| cluster.upsert_slice(s))
            }
            KubeObject::Node(n) => node_from_k8s(n).map(|n| cluster.upsert_node(n)),
        };
        if let Err(e) = result {
            rejected.push(e);
        }
    }
    (cluster, rejected)
}
