//! Multi-document YAML (including `kind: List`) → Kubernetes objects → [`ClusterState`].

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde_json::Value;

use crate::error::{Error, YamlError};
use crate::model::{endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState};
use crate::yaml::StreamPosition;

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

fn typed<T: serde::de::DeserializeOwned>(value: Value, context: &str) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|source| Error::Yaml {
        context: context.to_owned(),
        source: YamlError::Object(source),
    })
}

fn collect(value: Value, context: &str, objects: &mut Vec<KubeObject>, problems: &mut Vec<Error>) {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    let result = match (kind, api_version) {
        ("Service", "v1") => typed(value, context).map(|o| Some(KubeObject::Service(Box::new(o)))),
        ("EndpointSlice", "discovery.k8s.io/v1") => {
            typed(value, context).map(|o| Some(KubeObject::EndpointSlice(Box::new(o))))
        }
        ("Node", "v1") => typed(value, context).map(|o| Some(KubeObject::Node(Box::new(o)))),
        (kind, _) if kind.ends_with("List") => {
            if let Value::Object(mut list) = value {
                let Some(Value::Array(items)) = list.remove("items") else {
                    return;
                };
                for (i, item) in items.into_iter().enumerate() {
                    collect(item, &format!("{context} item {i}"), objects, problems);
                }
            }
            Ok(None)
        }
        // Other kinds (Pods, Deployments, ...) may share the files: not ours, not an error.
        _ => Ok(None),
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
    let parsed = parse_documents_from(name, text, StreamPosition::START);
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

/// [`parse_documents`] of a text that starts at `position` of its file (one piece of
/// [`crate::yaml::split::documents`]), for the document numbers and lines in messages.
pub(crate) fn parse_documents_from(name: &str, text: &str, position: StreamPosition) -> Parsed {
    let mut parsed = Parsed::default();
    let (documents, error) = crate::yaml::documents_from(name, text, position);
    if let Some(refused @ Error::InputRefused { .. }) = error {
        parsed.problems.push(refused);
        return parsed;
    }
    parsed.documents = documents.len();
    for (i, value) in documents.into_iter().enumerate() {
        let context = format!("{name} document {}", position.document + i);
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
