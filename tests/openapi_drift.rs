//! Every committed OpenAPI document equals the one generated from the code. Regenerate:
//!   cargo run -q -- openapi control-plane > openapi/control-plane.json
//!   cargo run -q -- openapi control-plane-internal > openapi/control-plane-internal.json
//!   cargo run -q -- openapi node-agent > openapi/node-agent.json

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn check(file: &str, generated: String, arg: &str) {
    let path = format!("{}/openapi/{file}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/{file} is out of date with the code; regenerate it with:\n  cargo run -q -- openapi {arg} > openapi/{file}"
    );
}

#[test]
fn committed_control_plane_document_matches_the_code() {
    check(
        "control-plane.json",
        modvisor_control_plane::api::openapi_document(),
        "control-plane",
    );
}

#[test]
fn committed_internal_document_matches_the_code() {
    check(
        "control-plane-internal.json",
        modvisor_control_plane::api::internal_openapi_document(),
        "control-plane-internal",
    );
}

#[test]
fn committed_node_agent_document_matches_the_code() {
    check(
        "node-agent.json",
        modvisor_node_api::openapi::document(),
        "node-agent",
    );
}

#[test]
fn node_routes_are_only_in_the_internal_document() {
    let public: serde_json::Value =
        serde_json::from_str(&modvisor_control_plane::api::openapi_document()).unwrap();
    let internal: serde_json::Value =
        serde_json::from_str(&modvisor_control_plane::api::internal_openapi_document()).unwrap();
    for p in [
        "/v1/nodes/register",
        "/v1/nodes/{name}/heartbeat",
        "/v1/blobs/{sha256}",
    ] {
        assert!(
            public["paths"].get(p).is_none(),
            "{p} in the tenant document"
        );
        assert!(
            internal["paths"].get(p).is_some(),
            "{p} not in the internal document"
        );
    }
    for schema in ["EnsureVm", "NodeLoadModule", "Heartbeat", "RegisterNode"] {
        assert!(
            public["components"]["schemas"].get(schema).is_none(),
            "{schema} in the tenant document"
        );
    }
}
