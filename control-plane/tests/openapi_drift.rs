//! The committed OpenAPI document must equal the one generated from the code.
//! Regenerate with: `cargo run -q -- openapi > openapi/control-plane.json`

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/control-plane.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = modvisor_control_plane::api::openapi_document();
    assert!(
        committed == generated,
        "openapi/control-plane.json is out of date with the code; regenerate it with:\n  cargo run -q -- openapi > openapi/control-plane.json"
    );
}

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
