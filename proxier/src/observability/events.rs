//! Kubernetes Events (events.k8s.io/v1) for conntrack sizing decisions and for objects skipped
//! as invalid, published from a background task so that the sync loop never waits on the API.
//! Each (object, reason) is reported once per process, within bounds: the set of reported
//! keys holds at most [`MAX_REMEMBERED`] entries (it forgets them all when full, so a report
//! may repeat after that many others) and at most [`MAX_QUEUED`] Events wait for the API
//! (more are dropped and logged).

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::model::ObjectRef;

/// How many distinct (object, reason) keys are remembered as reported.
pub const MAX_REMEMBERED: usize = 4096;
/// How many Events may wait for the API server.
pub const MAX_QUEUED: usize = 256;

/// Sends Events, or drops them when there is no API server (file source).
#[derive(Debug, Default)]
pub struct EventPublisher {
    sender: Option<mpsc::Sender<(ObjectReference, Event)>>,
    seen: Mutex<HashSet<(String, String)>>,
    node: String,
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}

impl EventPublisher {
    /// A publisher that drops everything.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Publishes through `client` as reporting controller `proxier` on `node`. Must be called
    /// inside a tokio runtime.
    pub fn start(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "proxier".to_owned(),
            instance: Some(node.to_owned()),
        };
        let recorder = Recorder::new(client, reporter);
        let (sender, mut receiver) = mpsc::channel::<(ObjectReference, Event)>(MAX_QUEUED);
        tokio::spawn(async move {
            while let Some((reference, event)) = receiver.recv().await {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, reason = %event.reason, "event not published");
                }
            }
        });
        Self {
            sender: Some(sender),
            seen: Mutex::default(),
            node: node.to_owned(),
        }
    }

    /// A publisher queueing into `sender` (tests read the Events from its receiver).
    #[cfg(test)]
    pub(crate) fn for_test(sender: mpsc::Sender<(ObjectReference, Event)>) -> Self {
        Self {
            sender: Some(sender),
            seen: Mutex::default(),
            node: "node-a".to_owned(),
        }
    }

    /// Whether `key` is new (and remembers it).
    fn first_time(&self, key: (String, String)) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_REMEMBERED && !seen.contains(&key) {
            seen.clear();
        }
        seen.insert(key)
    }

    /// How many reported keys are remembered.
    pub fn remembered(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn send(&self, reference: ObjectReference, event: Event) {
        if let Some(sender) = &self.sender {
            // Full: the API server is slow or gone; the sync loop never waits for it. Closed:
            // the runtime is shutting down, a send is moot.
            if let Err(error) = sender.try_send((reference, event)) {
                tracing::debug!(%error, "event dropped");
            }
        }
    }

    fn node_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(self.node.clone()),
            uid: Some(self.node.clone()),
            ..ObjectReference::default()
        }
    }

    /// A Warning `SyncFailed` on the Node naming a write that a sync could not apply
    /// (`operation` is the metric label, `note` the operation and error). Each distinct note
    /// is reported once.
    pub fn sync_failed(&self, operation: &str, note: &str) -> bool {
        if self.sender.is_none() || !self.first_time((format!("sync {operation}"), note.to_owned()))
        {
            return false;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: "SyncFailed".to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Sync".to_owned(),
            secondary: None,
        };
        self.send(self.node_reference(), event);
        true
    }

    /// A Warning that `object` was skipped as invalid (`reason` is a metric-style label).
    /// Returns whether an Event was queued (false when already reported or disabled).
    pub fn skipped(&self, object: &ObjectRef, reason: &str, note: &str) -> bool {
        if self.sender.is_none() || !self.first_time((object.to_string(), reason.to_owned())) {
            return false;
        }
        let reference = ObjectReference {
            api_version: Some(api_version(&object.kind).to_owned()),
            kind: Some(object.kind.clone()),
            namespace: Some(object.namespace.clone()).filter(|n| !n.is_empty()),
            name: Some(object.name.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidObjectSkipped".to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Skip".to_owned(),
            secondary: None,
        };
        self.send(reference, event);
        true
    }

    /// An Event on the Node for one conntrack sizing decision (Warning when a needed write
    /// did not happen).
    pub fn sizing(&self, node: &str, knob: &str, warning: bool, note: &str) {
        if self.sender.is_none() || !self.first_time((format!("Node {node}"), knob.to_owned())) {
            return;
        }
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            uid: Some(node.to_owned()),
            ..ObjectReference::default()
        };
        let event = normal_or_warning(
            warning,
            ("ConntrackSizing", "ConntrackSizingFailed"),
            "SizeConntrack",
            note,
        );
        self.send(reference, event);
    }

    /// An Event on the Node for kube-proxy's leftovers removed at takeover (Normal
    /// `KubeProxyLeftoversRemoved`; Warning `KubeProxyLeftoversKept` when a step failed or a
    /// set is still in use). `note` is the report's summary.
    pub fn leftovers(&self, warning: bool, note: &str) -> bool {
        if self.sender.is_none() || !self.first_time(("leftovers".to_owned(), note.to_owned())) {
            return false;
        }
        let event = normal_or_warning(
            warning,
            ("KubeProxyLeftoversRemoved", "KubeProxyLeftoversKept"),
            "RemoveKubeProxyLeftovers",
            note,
        );
        self.send(self.node_reference(), event);
        true
    }
}

/// An Event of type Normal (`reasons.0`) or Warning (`reasons.1`), its note cut to 1000
/// characters.
fn normal_or_warning(warning: bool, reasons: (&str, &str), action: &str, note: &str) -> Event {
    let (type_, reason) = if warning {
        (EventType::Warning, reasons.1)
    } else {
        (EventType::Normal, reasons.0)
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    }
}
