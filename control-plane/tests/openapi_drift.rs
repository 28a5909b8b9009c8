//! The control plane's document names every route of the tenant and admin API (the
//! drift tests of all three documents are in the workspace root's `tests/openapi_drift.rs`).

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn every_route_is_documented() {
    let doc: serde_json::Value =
        serde_json::from_str(&modvisor_control_plane::api::openapi_document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/openapi.json",
        "/metrics",
        "/v1/tenants",
        "/v1/tenants/{name}",
        "/v1/tenants/{name}/quota",
        "/v1/vms",
        "/v1/vms/{id}",
        "/v1/vms/{id}/modules",
        "/v1/vms/{id}/modules/{name}",
        "/v1/modules",
        "/v1/admin/modules/{name}",
        "/v1/admin/modules/{name}/policy",
        "/v1/events",
    ] {
        assert!(paths.contains_key(p), "{p} is not in the OpenAPI document");
    }
}

#[test]
fn every_route_the_typed_client_calls_is_served() {
    let doc: serde_json::Value =
        serde_json::from_str(&modvisor_control_plane::api::openapi_document()).unwrap();
    for (method, path) in modvisor_control_plane_api::routes::ALL {
        assert!(
            doc["paths"][path].get(method).is_some(),
            "the client calls {method} {path}, which the control plane does not serve"
        );
    }
}

#[test]
fn every_schema_has_an_example_and_shared_problems_are_declared_once() {
    use modvisor_node_api::openapi_shared::{repeated_inline_problems, schemas_without_examples};
    for text in [
        modvisor_control_plane::api::openapi_document(),
        modvisor_control_plane::api::internal_openapi_document(),
    ] {
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(schemas_without_examples(&doc), Vec::<String>::new());
        assert_eq!(
            repeated_inline_problems(&mut doc),
            Vec::<(String, String)>::new()
        );
        assert!(doc["components"]["schemas"].get("String").is_none());
        assert_eq!(
            doc["components"]["schemas"]["Timestamp"]["format"],
            "date-time"
        );
    }
}
