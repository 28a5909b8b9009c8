//! Helpers every store file uses inside a transaction: reading records, the VM a filter
//! admits, rewriting a VM, and appending to the audit trail.

use super::keys::{self, decode, encode, pair};
use super::{Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{now, Event, Outcome, Vm};

pub(super) use crate::auth::unix_now;

/// Reads and decodes one record inside a transaction.
pub(super) fn get_record<T: serde::de::DeserializeOwned>(
    txn: &dyn Txn,
    table: Table,
    key: &[u8],
) -> Result<Option<T>> {
    txn.get(table, key)?.map(|b| decode(&b)).transpose()
}

/// The VM `id` if `filter` admits it, else not found.
pub(super) fn visible_vm(txn: &dyn Txn, filter: VmFilter, id: &str) -> Result<Vm> {
    let owner = txn
        .get(Table::VmOwners, id.as_bytes())?
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .filter(|t| filter.admits(t))
        .ok_or_else(|| Error::not_found("vm", id))?;
    get_record::<Vm>(txn, Table::Vms, &pair(&owner, id.as_bytes()))?
        .ok_or_else(|| Error::not_found("vm", id))
}

/// Reads and rewrites one VM (by id) inside a transaction.
pub(super) fn update_vm<T>(
    txn: &dyn Txn,
    id: &str,
    f: impl FnOnce(&mut Vm) -> Result<T>,
) -> Result<(Vm, T)> {
    let mut vm = visible_vm(txn, VmFilter::All, id)?;
    let out = f(&mut vm)?;
    write_vm(txn, &mut vm)?;
    Ok((vm, out))
}

/// Writes a VM read in the same transaction, stamping `updated_at`.
pub(super) fn write_vm(txn: &dyn Txn, vm: &mut Vm) -> Result<()> {
    vm.updated_at = now();
    txn.insert(
        Table::Vms,
        &pair(&vm.tenant, vm.id.as_bytes()),
        &encode(vm)?,
    )
}

/// Appends a successful mutation to the audit trail inside its transaction.
pub(super) fn append_event(
    txn: &dyn Txn,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    resource: &str,
) -> Result<()> {
    write_event(txn, actor, tenant, action, resource, Outcome::Success, None)
}

/// Appends a refused mutation to the audit trail inside a transaction.
pub(super) fn append_denial(
    txn: &dyn Txn,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    resource: &str,
    detail: &str,
) -> Result<()> {
    write_event(
        txn,
        actor,
        tenant,
        action,
        resource,
        Outcome::Denied,
        Some(detail),
    )
}

/// Longest text of one audit-trail field, in characters.
pub const MAX_EVENT_FIELD_CHARS: usize = 512;

/// A string as the audit trail keeps it: at most [`MAX_EVENT_FIELD_CHARS`] characters,
/// control characters (newlines included) shown as `\u{..}`, so that no caller can grow
/// the trail without bound or forge lines in it.
pub(super) fn bounded(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_EVENT_FIELD_CHARS {
            out.push_str("…(truncated)");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Meta key holding the sequence number of `tenant`'s last event.
pub(super) fn event_floor_key(tenant: &str) -> Vec<u8> {
    pair("event_floor", tenant.as_bytes())
}

/// The sequence number of `tenant`'s last event (0 before its first).
pub(super) fn event_floor(kv: &dyn super::KvStore, tenant: &str) -> Result<u64> {
    match kv.get(Table::Meta, &event_floor_key(tenant))? {
        Some(v) => super::meta::decode_id(&v),
        None => Ok(0),
    }
}

/// The sequence number of a new event: for a tenant's, above the tenant's last one, read
/// and moved in the same transaction, so that one tenant's trail is in commit order even
/// when replicas with different clocks write it (ids are unique but only rise per
/// replica; see `id_clock`). Events of different tenants take no common key.
fn next_event_seq(txn: &dyn Txn, tenant: Option<&str>) -> Result<u64> {
    let Some(t) = tenant else {
        return txn.next_id();
    };
    let key = event_floor_key(t);
    let floor = match txn.get(Table::Meta, &key)? {
        Some(v) => super::meta::decode_id(&v)?,
        None => 0,
    };
    let seq = txn.next_id_after(floor)?;
    txn.insert(Table::Meta, &key, &keys::seq(seq))?;
    Ok(seq)
}

pub(super) fn write_event(
    txn: &dyn Txn,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    resource: &str,
    outcome: Outcome,
    detail: Option<&str>,
) -> Result<()> {
    let event = Event {
        seq: next_event_seq(txn, tenant)?,
        time: now(),
        actor: bounded(actor),
        tenant: tenant.map(bounded),
        action: bounded(action),
        resource: bounded(resource),
        outcome,
        detail: detail.map(bounded),
    };
    let key = keys::seq(event.seq);
    txn.insert(Table::Events, &key, &encode(&event)?)?;
    if let Some(t) = &event.tenant {
        txn.insert(Table::TenantEvents, &pair(t, &key), b"")?;
    }
    Ok(())
}

/// A VM being deleted takes no more changes.
pub(super) fn refuse_if_deleting(vm: &Vm) -> Result<()> {
    if vm.deleting {
        return Err(Error::Conflict(format!(
            "VM {} is being deleted; it takes no more changes",
            vm.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_is_bounded_and_cannot_forge_lines() {
        let long = "x".repeat(90_000);
        let kept = bounded(&long);
        assert!(
            kept.chars().count() < MAX_EVENT_FIELD_CHARS + 20,
            "{}",
            kept.len()
        );
        let forged = bounded("ok\n2026-12-01 admin deleted everything\r");
        assert!(!forged.contains('\n') && !forged.contains('\r'), "{forged}");
        assert!(forged.contains("\\u{a}"), "{forged}");
        assert_eq!(bounded("vms/abc"), "vms/abc");
    }
}
