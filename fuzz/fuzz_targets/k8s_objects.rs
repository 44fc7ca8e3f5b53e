#![no_main]
//! Arbitrary JSON as a Service, an EndpointSlice or a Node (the first byte picks) into
//! proxier's conversion to its model (`proxier::model::*_from_k8s`, what the kube source feeds
//! the engine): rejections are fine, panics are not. A converted Service keeps its
//! namespace/name; a converted slice names its Service.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use libfuzzer_sys::fuzz_target;
use proxier::model::{endpoint_slice_from_k8s, node_from_k8s, service_from_k8s};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let Ok(object) = serde_json::from_slice::<core::Service>(json) else {
                return;
            };
            if let Ok(service) = service_from_k8s(&object, &mut Vec::new()) {
                assert_eq!(Some(&service.name.name), object.metadata.name.as_ref());
            }
        }
        1 => {
            let Ok(object) = serde_json::from_slice::<discovery::EndpointSlice>(json) else {
                return;
            };
            let _ = endpoint_slice_from_k8s(&object);
        }
        _ => {
            let Ok(object) = serde_json::from_slice::<core::Node>(json) else {
                return;
            };
            let _ = node_from_k8s(&object);
        }
    }
});
