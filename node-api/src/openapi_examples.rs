//! Examples of the node contract's schemas for the OpenAPI documents: real values of the
//! types, serialized as the API sends them.

use crate::exec::{ExecRequest, ExecResult};
use crate::interfaces::GuestInterface;
use crate::internal::{
    Heartbeat, HeartbeatReply, Node, NodeCredential, NodeFeature, NodeState, RegisterNode,
    Resources,
};
use crate::openapi_shared::{example, Examples};
use crate::problem::Problem;
use crate::types::{
    EnsureVm, NetworkAttachment, NodeLoadModule, NodeModuleResult, ObservedVm, Phase, PinnedModule,
    PowerState, RequestState,
};
use crate::user_data::{RunUserData, UserDataState, UserDataStatus};
use std::net::Ipv4Addr;

/// An example VM id.
pub const VM_ID: &str = "3f1c9a52-7d0e-4b8a-9c61-2e5f0a7b8d94";
/// An example guest kernel release.
pub const RELEASE: &str = "6.1.0-57-cloud-amd64";
/// An example time.
pub const TIME: &str = "2026-12-02T18:05:03Z";
/// An example sha256 of a module.
pub const SHA256: &str = "9b1a0d4c2e7f63a5b8c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6";

/// The guest interface of the examples.
pub fn guest_interface() -> GuestInterface {
    GuestInterface {
        name: "eth0".into(),
        mac: Some("02:6d:76:0a:00:02".into()),
        mtu: 1450,
        up: true,
        addresses: vec!["10.0.0.2/24".into()],
    }
}

/// The first-boot script status of the examples.
pub fn user_data_status() -> UserDataStatus {
    UserDataStatus {
        state: UserDataState::Succeeded,
        exit_code: Some(0),
        duration_ms: Some(41),
        reason: None,
    }
}

/// A node as the examples show it.
pub fn node() -> Node {
    Node {
        name: "node-1".into(),
        address: "https://127.0.0.1:37011".into(),
        capacity: Resources {
            vcpus: 2,
            memory_mib: 20480,
        },
        allocated: Resources {
            vcpus: 1,
            memory_mib: 256,
        },
        driver: "qemu".into(),
        hardware_virtualization: false,
        kernel_release: RELEASE.into(),
        features: vec![NodeFeature::Networking],
        underlay_address: Some("127.0.0.1".into()),
        state: NodeState::Ready,
        cordoned: false,
        last_heartbeat: TIME.into(),
        last_heartbeat_unix: 1_796_234_703,
        registered_at: TIME.into(),
        credential_jti: None,
        previous_credential_jti: None,
    }
}

/// Examples of every schema of the node agent's and the internal documents.
pub fn examples() -> Result<Examples, serde_json::Error> {
    let mut out = Examples::new();
    let observed = ObservedVm {
        id: VM_ID.into(),
        phase: Phase::Running,
        reason: None,
        boot: Some("5e0c1f2a9b7d4e36".into()),
        guest_modules: vec!["tcp_bbr".into()],
        platform_modules: vec!["virtio_pci".into(), "virtio_net".into()],
        interfaces: vec![guest_interface()],
        user_data: Some(user_data_status()),
        kernel_mode: Some(crate::types::KernelMode::Standard),
        module_taints: Default::default(),
    };
    let attachment = NetworkAttachment {
        vni: 4097,
        ip: Ipv4Addr::new(10, 0, 0, 2),
        prefix: 24,
        mac: "02:6d:76:0a:00:02".into(),
    };
    let pinned = PinnedModule {
        name: "tcp_bbr".into(),
        sha256: SHA256.into(),
        signers: vec![crate::types::KERNEL_SIGNER.into()],
        licenses: Vec::new(),
    };
    example(&mut out, "Phase", &Phase::Running)?;
    example(&mut out, "PowerState", &PowerState::Running)?;
    example(&mut out, "RequestState", &RequestState::Loaded)?;
    example(&mut out, "ObservedVm", &observed)?;
    example(&mut out, "NetworkAttachment", &attachment)?;
    example(
        &mut out,
        "EnsureVm",
        &EnsureVm {
            tenant: "tenant-a".into(),
            vcpus: 1,
            memory_mib: 256,
            power_state: PowerState::Running,
            network: Some(attachment.clone()),
            kernel_mode: Default::default(),
        },
    )?;
    example(&mut out, "PinnedModule", &pinned)?;
    example(
        &mut out,
        "KernelMode",
        &crate::types::KernelMode::OperatorModules,
    )?;
    example(
        &mut out,
        "SignerCertificate",
        &crate::types::SignerCertificate {
            name: "acme".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\nMIIC...\n-----END CERTIFICATE-----\n"
                .into(),
        },
    )?;
    example(
        &mut out,
        "NodeLoadModule",
        &NodeLoadModule {
            name: "tcp_bbr".into(),
            params: String::new(),
            closure: vec![pinned.clone()],
            approved: vec!["tcp_bbr".into()],
            certificates: Vec::new(),
            budget_ms: 30_000,
        },
    )?;
    example(
        &mut out,
        "NodeModuleResult",
        &NodeModuleResult {
            name: "tcp_bbr".into(),
            state: RequestState::Loaded,
            reason: None,
            rejection: None,
            errno: None,
        },
    )?;
    example(
        &mut out,
        "ExecRequest",
        &ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "lsmod; id".into()],
            stdin: None,
            timeout_s: Some(10),
            env: Default::default(),
        },
    )?;
    example(
        &mut out,
        "ExecResult",
        &ExecResult {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            stdout: "tcp_bbr 20480 - - Live 0x0\nuid=0(root) gid=0(root)\n".into(),
            stderr: String::new(),
            truncated: false,
        },
    )?;
    example(
        &mut out,
        "RunUserData",
        &RunUserData {
            script: "sysctl -w net.ipv4.tcp_congestion_control=bbr".into(),
        },
    )?;
    example(&mut out, "UserDataStatus", &user_data_status())?;
    example(&mut out, "UserDataState", &UserDataState::Succeeded)?;
    example(&mut out, "GuestInterface", &guest_interface())?;
    example(
        &mut out,
        "Problem",
        &Problem {
            r#type: "urn:modvisor:problem:not-found".into(),
            title: "Not Found".into(),
            status: 404,
            detail: format!("no VM {VM_ID}"),
            field: None,
            quota: None,
            request_id: Some("0c6a2f0e-5b1d-4a8e-9f3c-7d2e1b0a9c84".into()),
        },
    )?;
    example(&mut out, "Resources", &node().capacity)?;
    example(&mut out, "NodeState", &NodeState::Ready)?;
    example(&mut out, "NodeFeature", &NodeFeature::Networking)?;
    example(&mut out, "Node", &node())?;
    example(
        &mut out,
        "RegisterNode",
        &RegisterNode {
            name: "node-1".into(),
            address: "https://127.0.0.1:37011".into(),
            capacity: node().capacity,
            driver: "qemu".into(),
            hardware_virtualization: false,
            kernel_release: RELEASE.into(),
            features: vec![NodeFeature::Networking],
            underlay_address: Some("127.0.0.1".into()),
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\n...\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
        },
    )?;
    example(
        &mut out,
        "NodeCredential",
        &NodeCredential {
            node: node(),
            token: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJub2RlOm5vZGUtMSJ9.c2lnbmF0dXJl".into(),
            control_plane_public_key: "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"
                .into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".into(),
        },
    )?;
    example(
        &mut out,
        "Heartbeat",
        &Heartbeat {
            vms: vec![observed],
        },
    )?;
    example(
        &mut out,
        "HeartbeatReply",
        &HeartbeatReply {
            remove: vec![],
            credential: None,
            underlay_peers: vec!["127.0.0.2".into()],
        },
    )?;
    example(&mut out, "Timestamp", &TIME)?;
    Ok(out)
}
