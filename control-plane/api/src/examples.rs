//! Examples of API v1's schemas for the OpenAPI documents: real values of the types,
//! serialized as the API sends them (with the node contract's own examples).

use crate::network::{CreateNetwork, Network, VmNetwork};
use crate::types::{
    CatalogModule, CreateTenant, Event, IssueToken, IssuedToken, KernelMode, ModulePolicy,
    ModuleRef, ModuleRequest, ModuleRequestBody, ModuleVersion, NodeDetail, Outcome, Page,
    PowerState, Quota, Readiness, RequestState, Resources, Tenant, TokenRecord, TokenRole,
    TrustBody, TrustEntry, Usage, Vm, VmSpec, VmStatus,
};
use modvisor_node_api::openapi_examples::{
    guest_interface, node, user_data_status, RELEASE, SHA256, TIME, VM_ID,
};
use modvisor_node_api::openapi_shared::{example, Examples};
use modvisor_node_api::types::Phase;
use std::collections::BTreeMap;

fn quota() -> Quota {
    Quota {
        max_vms: 10,
        max_vcpus: 32,
        max_memory_mib: 32768,
        api_requests_per_sec: 100,
        api_burst: 200,
        max_concurrent_requests: 32,
        module_requests_per_vm_per_min: 30,
        max_networks: 8,
    }
}

fn vm() -> Vm {
    Vm {
        id: VM_ID.into(),
        tenant: "tenant-a".into(),
        spec: VmSpec {
            name: "web-1".into(),
            kernel_mode: Default::default(),
            vcpus: 1,
            memory_mib: 256,
            modules: vec![ModuleRef {
                name: "tcp_bbr".into(),
                params: BTreeMap::new(),
            }],
            power_state: PowerState::Running,
            user_data: Some("sysctl -w net.ipv4.tcp_congestion_control=bbr".into()),
            network: Some("default".into()),
        },
        status: VmStatus {
            phase: Phase::Running,
            node: Some("node-1".into()),
            reason: None,
            guest_modules: vec!["tcp_bbr".into()],
            platform_modules: vec!["virtio_pci".into(), "virtio_net".into()],
            interfaces: vec![guest_interface()],
            user_data: Some(user_data_status()),
            network: Some(vm_network()),
            kernel_mode: Some(KernelMode::Standard),
            module_taints: BTreeMap::new(),
        },
        generation: 3,
        created_at: TIME.into(),
        updated_at: TIME.into(),
        deleting: false,
    }
}

fn vm_network() -> VmNetwork {
    VmNetwork {
        network: "default".into(),
        ip: "10.0.0.2".into(),
        prefix: 24,
        mac: "02:6d:76:0a:00:02".into(),
    }
}

fn module_version() -> ModuleVersion {
    ModuleVersion {
        name: "tcp_bbr".into(),
        kernel_release: RELEASE.into(),
        sha256: SHA256.into(),
        size: 20_480,
        modinfo: BTreeMap::from([
            ("license".to_string(), "Dual BSD/GPL".to_string()),
            (
                "vermagic".to_string(),
                format!("{RELEASE} SMP mod_unload modversions "),
            ),
        ]),
        published_at: TIME.into(),
    }
}

fn event() -> Event {
    Event {
        seq: 42,
        time: TIME.into(),
        actor: "tenant-a".into(),
        tenant: Some("tenant-a".into()),
        action: "vm.create".into(),
        resource: format!("vms/{VM_ID}"),
        outcome: Outcome::Success,
        detail: None,
    }
}

fn token_record() -> TokenRecord {
    TokenRecord {
        jti: "b7e3c0f4-1a2d-4c5e-8f90-a1b2c3d4e5f6".into(),
        sub: "tenant-a".into(),
        role: TokenRole::Tenant,
        tenant: Some("tenant-a".into()),
        issued_at: TIME.into(),
        expires_at: "2026-12-03T18:05:03Z".into(),
        revoked_at: None,
    }
}

/// Examples of every schema of the control plane's documents.
pub fn examples() -> Result<Examples, serde_json::Error> {
    let mut out = modvisor_node_api::openapi_examples::examples()?;
    let policy = ModulePolicy {
        approved: true,
        tenants: vec!["tenant-a".into()],
        signers: vec!["kernel".into()],
        licenses: Vec::new(),
    };
    example(&mut out, "Quota", &quota())?;
    example(
        &mut out,
        "Usage",
        &Usage {
            vms: 1,
            vcpus: 1,
            memory_mib: 256,
            networks: 1,
        },
    )?;
    example(
        &mut out,
        "Readiness",
        &Readiness {
            ready: true,
            waiting_for: vec![],
        },
    )?;
    example(
        &mut out,
        "Tenant",
        &Tenant {
            name: "tenant-a".into(),
            quota: quota(),
            usage: Usage {
                vms: 1,
                vcpus: 1,
                memory_mib: 256,
                networks: 1,
            },
            created_at: TIME.into(),
        },
    )?;
    example(
        &mut out,
        "CreateTenant",
        &CreateTenant {
            name: "tenant-c".into(),
            quota: None,
        },
    )?;
    example(&mut out, "ModuleRef", &vm().spec.modules[0])?;
    example(&mut out, "VmSpec", &vm().spec)?;
    example(&mut out, "VmStatus", &vm().status)?;
    example(&mut out, "Vm", &vm())?;
    example(&mut out, "VmNetwork", &vm_network())?;
    example(
        &mut out,
        "Page_Vm",
        &Page {
            items: vec![vm()],
            next_page_token: None,
        },
    )?;
    example(&mut out, "ModuleVersion", &module_version())?;
    example(&mut out, "ModulePolicy", &policy)?;
    example(
        &mut out,
        "CatalogModule",
        &CatalogModule {
            name: "tcp_bbr".into(),
            versions: vec![module_version()],
            policy: Some(policy),
        },
    )?;
    let pem = "-----BEGIN CERTIFICATE-----\nMIIC...\n-----END CERTIFICATE-----\n";
    example(
        &mut out,
        "TrustBody",
        &TrustBody {
            certificate_pem: pem.into(),
        },
    )?;
    example(
        &mut out,
        "TrustEntry",
        &TrustEntry {
            name: "acme".into(),
            subject: "CN=acme modules".into(),
            issuer: "CN=acme modules".into(),
            serial: "4f1c0e9a2b7d3c5e8f60718293a4b5c6".into(),
            sha256: "3b1f9c2d4e5a60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            key: "rsa-4096".into(),
            certificate_pem: pem.into(),
            added_at: "2026-12-03T12:00:00Z".into(),
            used_by: vec!["khttpd".into()],
        },
    )?;
    example(
        &mut out,
        "ModuleRequestBody",
        &ModuleRequestBody {
            name: "tcp_bbr".into(),
            params: BTreeMap::new(),
        },
    )?;
    example(
        &mut out,
        "ModuleRequest",
        &ModuleRequest {
            vm_id: VM_ID.into(),
            name: "tcp_bbr".into(),
            params: BTreeMap::new(),
            state: RequestState::Loaded,
            reason: None,
            want_loaded: true,
            requested_at: TIME.into(),
            updated_at: TIME.into(),
        },
    )?;
    example(&mut out, "Outcome", &Outcome::Success)?;
    example(&mut out, "Event", &event())?;
    example(
        &mut out,
        "Page_Event",
        &Page {
            items: vec![event()],
            next_page_token: Some("AAAAAAAAACo".into()),
        },
    )?;
    example(
        &mut out,
        "NodeDetail",
        &NodeDetail {
            node: node(),
            placed: Resources {
                vcpus: 1,
                memory_mib: 256,
            },
        },
    )?;
    example(&mut out, "TokenRole", &TokenRole::Tenant)?;
    example(&mut out, "TokenRecord", &token_record())?;
    example(
        &mut out,
        "IssueToken",
        &IssueToken {
            role: TokenRole::Tenant,
            tenant: Some("tenant-a".into()),
            sub: None,
            ttl_secs: 86_400,
        },
    )?;
    example(
        &mut out,
        "IssuedToken",
        &IssuedToken {
            token: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZW5hbnQtYSJ9.c2lnbmF0dXJl".into(),
            record: token_record(),
        },
    )?;
    example(
        &mut out,
        "CreateNetwork",
        &CreateNetwork {
            name: "backend".into(),
            cidr: "10.1.0.0/24".into(),
        },
    )?;
    example(
        &mut out,
        "Network",
        &Network {
            name: "default".into(),
            tenant: "tenant-a".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            addresses_in_use: 1,
            created_at: TIME.into(),
        },
    )?;
    Ok(out)
}
