//! Validation of everything a caller sends, before anything is written.

use crate::error::{Error, Result};
use crate::model::{ModuleRef, Quota, VmSpec};

/// Inclusive vCPU range of a VM.
pub const VCPUS: std::ops::RangeInclusive<u32> = 1..=32;
/// Inclusive memory range of a VM, in MiB.
pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 128..=65536;
/// Most modules one VM spec may list.
pub const MAX_MODULES_PER_VM: usize = 64;
/// Most parameters one module request may carry.
pub const MAX_PARAMS: usize = 32;
/// Longest module name the kernel accepts (`MODULE_NAME_LEN - 1`).
pub const MODULE_NAME_MAX: usize = 55;
/// Longest kernel release string (`__NEW_UTS_LEN`).
pub const KERNEL_RELEASE_MAX: usize = 64;

/// A resource name: 1-63 characters of `[a-z0-9-]`, starting with a letter.
pub fn resource_name(field: &str, name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-63 characters of [a-z0-9-], starting with a letter",
        ))
    }
}

/// A token's subject: 1-128 characters of `[A-Za-z0-9._:@-]`.
pub fn subject(field: &str, sub: &str) -> Result<()> {
    let ok = (1..=128).contains(&sub.len())
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-128 characters of [A-Za-z0-9._:@-]",
        ))
    }
}

/// A resource path as events name them (`vms/<id>`, `modules/<name>/<release>`): 1-512
/// characters of `[A-Za-z0-9._:@/-]`.
pub fn event_resource(field: &str, resource: &str) -> Result<()> {
    let ok = (1..=512).contains(&resource.len())
        && resource
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-512 characters of [A-Za-z0-9._:@/-] (a resource path such as vms/<id>)",
        ))
    }
}

/// A token id: 1-64 characters of `[A-Za-z0-9-]` (the control plane issues UUIDs).
pub fn token_id(field: &str, jti: &str) -> Result<()> {
    if (1..=64).contains(&jti.len()) && jti.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-64 characters of [A-Za-z0-9-]",
        ))
    }
}

/// Module names as the kernel resolves them: `-` and `_` are the same character, so
/// `tcp-bbr` is `tcp_bbr` (the form the catalog keeps).
pub fn canonical_module_names(modules: &mut [crate::model::ModuleRef]) {
    for m in modules {
        m.name = modvisor_modules::normalize_name(&m.name);
    }
}

use modvisor_node_api::interfaces::MAX_GUEST_INTERFACES;
pub use modvisor_node_api::types::{MAX_GUEST_MODULES, MAX_OBSERVED_REASON, MAX_PLATFORM_MODULES};
/// What one VM's entry in a heartbeat may take at most, in bytes (id, phase, reason, full
/// module lists and interfaces, JSON-encoded, rounded up).
const HEARTBEAT_BYTES_PER_VM: usize = 48 * 1024;

/// The body limit of a heartbeat from a node whose placed VMs hold `placed_vcpus` vCPUs
/// (so at most that many VMs), with room for VMs it holds that are not placed there any
/// more (it is told to remove them).
pub fn heartbeat_limit(placed_vcpus: u64) -> usize {
    let vms = usize::try_from(placed_vcpus)
        .unwrap_or(usize::MAX)
        .saturating_add(64);
    (64 * 1024usize).saturating_add(vms.saturating_mul(HEARTBEAT_BYTES_PER_VM))
}

/// A heartbeat's bounds: how many VMs (as [`heartbeat_limit`] allows), and per VM its id,
/// reason and guest module list.
pub fn heartbeat(hb: &crate::model::Heartbeat, placed_vcpus: u64) -> Result<()> {
    let most = usize::try_from(placed_vcpus)
        .unwrap_or(usize::MAX)
        .saturating_add(64);
    if hb.vms.len() > most {
        return Err(Error::invalid(
            "vms",
            format!("at most {most} VMs (the node's placed VMs and 64 more)"),
        ));
    }
    for (i, vm) in hb.vms.iter().enumerate() {
        if vm.id.is_empty() || vm.id.len() > 64 {
            return Err(Error::invalid(format!("vms[{i}].id"), "1-64 bytes"));
        }
        if vm
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_OBSERVED_REASON)
        {
            return Err(Error::invalid(
                format!("vms[{i}].reason"),
                format!("at most {MAX_OBSERVED_REASON} bytes"),
            ));
        }
        module_list(
            &format!("vms[{i}].guest_modules"),
            &vm.guest_modules,
            MAX_GUEST_MODULES,
        )?;
        module_list(
            &format!("vms[{i}].platform_modules"),
            &vm.platform_modules,
            MAX_PLATFORM_MODULES,
        )?;
        // Taints: of modules the same report lists, a few capital letters each.
        for (name, taint) in &vm.module_taints {
            let fine = vm.guest_modules.contains(name)
                && (1..=8).contains(&taint.len())
                && taint.bytes().all(|b| b.is_ascii_uppercase());
            if !fine {
                return Err(Error::invalid(
                    format!("vms[{i}].module_taints"),
                    "taints of listed guest modules only, 1-8 capital letters each",
                ));
            }
        }
        if vm.interfaces.len() > MAX_GUEST_INTERFACES {
            return Err(Error::invalid(
                format!("vms[{i}].interfaces"),
                format!("at most {MAX_GUEST_INTERFACES} interfaces"),
            ));
        }
        for (j, interface) in vm.interfaces.iter().enumerate() {
            interface
                .check()
                .map_err(|e| Error::invalid(format!("vms[{i}].interfaces[{j}]"), e.to_string()))?;
        }
    }
    Ok(())
}

/// A list of at most `max` module names, each one a module's name.
fn module_list(field: &str, names: &[String], max: usize) -> Result<()> {
    if names.len() > max {
        return Err(Error::invalid(field, format!("at most {max} modules")));
    }
    for (j, m) in names.iter().enumerate() {
        module_name(&format!("{field}[{j}]"), m)?;
    }
    Ok(())
}

/// A kernel module name: 1-55 characters of `[a-zA-Z0-9_-]`.
pub fn module_name(field: &str, name: &str) -> Result<()> {
    let ok = (1..=MODULE_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-55 characters of [a-zA-Z0-9_-]",
        ))
    }
}

/// A kernel release such as `6.1.0-28-cloud-amd64`.
pub fn kernel_release(field: &str, release: &str) -> Result<()> {
    let ok = (1..=KERNEL_RELEASE_MAX).contains(&release.len())
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-64 characters of [a-zA-Z0-9._+~-]",
        ))
    }
}

/// A module reference: its name and parameters (`key=value` pairs a kernel would accept).
pub fn module_ref(field: &str, m: &ModuleRef) -> Result<()> {
    module_name(&format!("{field}.name"), &m.name)?;
    if m.params.len() > MAX_PARAMS {
        return Err(Error::invalid(
            format!("{field}.params"),
            format!("at most {MAX_PARAMS} parameters"),
        ));
    }
    for (k, v) in &m.params {
        let key_ok = (1..=64).contains(&k.len())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(Error::invalid(
                format!("{field}.params"),
                format!("parameter name {k:?} must be 1-64 characters of [a-zA-Z0-9_]"),
            ));
        }
        // The kernel parses `key=value key=value`, with quotes grouping words: a quote
        // or a backslash in a value could swallow the next parameter.
        let value_ok = v.len() <= 256
            && v.bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'`\\$;&|<>".contains(&b));
        if !value_ok {
            return Err(Error::invalid(
                format!("{field}.params.{k}"),
                "must be at most 256 printable ASCII characters, without spaces, quotes, backslashes or any of $;&|<>",
            ));
        }
    }
    Ok(())
}

/// The licenses a module policy accepts beyond the GPL-compatible ones: at most 8, each
/// 1-64 printable ASCII characters (as a module's `license=` is), none listed twice.
pub fn policy_licenses(licenses: &[String]) -> Result<()> {
    if licenses.len() > 8 {
        return Err(Error::invalid("licenses", "at most 8 licenses"));
    }
    for (i, l) in licenses.iter().enumerate() {
        let fine = (1..=64).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && l.trim() == l;
        if !fine {
            return Err(Error::invalid(
                format!("licenses[{i}]"),
                "must be 1-64 printable ASCII characters, without leading or trailing spaces",
            ));
        }
        if licenses[..i].contains(l) {
            return Err(Error::invalid(
                format!("licenses[{i}]"),
                format!("{l} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Each of `m`'s parameters is one the module declares (`declared`, from its
/// `.modinfo`).
pub fn declared_params(
    field: &str,
    m: &ModuleRef,
    declared: &std::collections::BTreeSet<String>,
) -> Result<()> {
    for k in m.params.keys() {
        if !declared.contains(k) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            return Err(Error::invalid(
                format!("{field}.params.{k}"),
                format!(
                    "module {} declares no parameter {k} (it declares: {})",
                    m.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// A complete VM spec.
pub fn vm_spec(spec: &VmSpec) -> Result<()> {
    resource_name("name", &spec.name)?;
    if !VCPUS.contains(&spec.vcpus) {
        return Err(Error::invalid("vcpus", "must be between 1 and 32"));
    }
    if !MEMORY_MIB.contains(&spec.memory_mib) {
        return Err(Error::invalid(
            "memory_mib",
            "must be between 128 and 65536",
        ));
    }
    if spec.modules.len() > MAX_MODULES_PER_VM {
        return Err(Error::invalid(
            "modules",
            format!("at most {MAX_MODULES_PER_VM} modules"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in spec.modules.iter().enumerate() {
        module_ref(&format!("modules[{i}]"), m)?;
        if !seen.insert(m.name.as_str()) {
            return Err(Error::invalid(
                format!("modules[{i}].name"),
                format!("module {} is listed twice", m.name),
            ));
        }
    }
    if let Some(network) = &spec.network {
        if network != crate::store::NO_NETWORK {
            resource_name("network", network)?;
        }
    }
    if let Some(script) = &spec.user_data {
        let max = modvisor_node_api::user_data::MAX_USER_DATA_BYTES;
        if script.len() > max {
            return Err(Error::invalid("user_data", format!("at most {max} bytes")));
        }
        if script.contains('\0') {
            return Err(Error::invalid("user_data", "must not contain NUL"));
        }
    }
    Ok(())
}

/// A quota: each limit at most 1,000,000.
pub fn quota(q: &Quota) -> Result<()> {
    for (field, v) in [
        ("max_vms", q.max_vms),
        ("max_vcpus", q.max_vcpus),
        ("max_memory_mib", q.max_memory_mib),
        ("max_networks", q.max_networks),
    ] {
        if v > 1_000_000_000 {
            return Err(Error::invalid(field, "must be at most 1000000000"));
        }
    }
    for (field, v, max) in [
        ("api_requests_per_sec", q.api_requests_per_sec, 1_000_000),
        ("api_burst", q.api_burst, 1_000_000),
        (
            "max_concurrent_requests",
            q.max_concurrent_requests,
            100_000,
        ),
        (
            "module_requests_per_vm_per_min",
            q.module_requests_per_vm_per_min,
            100_000,
        ),
    ] {
        if !(1..=max).contains(&v) {
            return Err(Error::invalid(field, format!("must be 1..={max}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        for good in ["a", "web-1", &"a".repeat(63)] {
            assert!(resource_name("name", good).is_ok(), "{good}");
        }
        for bad in ["", "1a", "-a", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
            assert!(resource_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_licenses_are_bounded_printable_and_distinct() {
        let v = |l: &[&str]| policy_licenses(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(v(&[]).is_ok());
        assert!(v(&["Proprietary", "BSD-2-Clause"]).is_ok());
        for bad in [&[""][..], &[" x"], &["a\tb"], &["é"], &["x", "x"]] {
            assert!(v(bad).is_err(), "{bad:?}");
        }
        assert!(v(&[&"a".repeat(65)]).is_err());
        assert!(v(&["a"; 9]).is_err());
    }

    #[test]
    fn module_names() {
        assert!(module_name("n", "tcp_bbr").is_ok());
        assert!(module_name("n", "nf-conntrack").is_ok());
        assert!(module_name("n", "../x").is_err());
        assert!(module_name("n", &"a".repeat(56)).is_err());
    }

    #[test]
    fn params_refuse_injection() {
        let mut m = ModuleRef {
            name: "dummy".into(),
            params: Default::default(),
        };
        m.params.insert("numdummies".into(), "2".into());
        assert!(module_ref("m", &m).is_ok());
        m.params.insert("x".into(), "a b".into());
        assert!(module_ref("m", &m).is_err());
        m.params.clear();
        m.params.insert("a=b".into(), "1".into());
        assert!(module_ref("m", &m).is_err());
        // A quote would group the next parameter into this one's value.
        for bad in ["a\"", "a'b", "x\\y", "$(id)", "a;b", "a|b", "`id`"] {
            m.params.clear();
            m.params.insert("body".into(), bad.into());
            assert!(module_ref("m", &m).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_declared_parameters_pass() {
        let mut m = ModuleRef {
            name: "khttpd".into(),
            params: Default::default(),
        };
        let declared = ["port".to_string(), "body".to_string()].into();
        m.params.insert("port".into(), "8080".into());
        assert!(declared_params("body", &m, &declared).is_ok());
        m.params.insert("requests".into(), "1".into());
        let e = declared_params("body", &m, &declared)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("declares no parameter requests") && e.contains("body, port"),
            "{e}"
        );
    }
}
