//! Nodes in the store: registration (a name bound to one credential, revoked through
//! `tokens` when replaced), deletion, heartbeats (observations only), readiness and
//! cordons, and each node's reservations.

use super::keys::{decode, encode};
use super::txn::{append_event, get_record, unix_now, update_vm, visible_vm};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{
    now, Heartbeat, HeartbeatReply, Node, NodeState, Phase, RegisterNode, TokenRecord, Vm,
};

/// Whether `node` has been silent for longer than `timeout_secs` at `now_unix`, counting
/// from its last heartbeat or from `alive_since`, whichever is later.
pub fn is_silent(node: &Node, timeout_secs: u64, alive_since: u64, now_unix: u64) -> bool {
    now_unix.saturating_sub(node.last_heartbeat_unix.max(alive_since)) > timeout_secs
}

pub(super) fn put_node(txn: &dyn Txn, n: &Node) -> Result<()> {
    txn.insert(Table::Nodes, n.name.as_bytes(), &encode(n)?)
}

pub(super) fn release(txn: &dyn Txn, node: &str, vm: &Vm) -> Result<()> {
    if let Some(mut n) = get_record::<Node>(txn, Table::Nodes, node.as_bytes())? {
        n.allocated.vcpus = n.allocated.vcpus.saturating_sub(u64::from(vm.spec.vcpus));
        n.allocated.memory_mib = n
            .allocated
            .memory_mib
            .saturating_sub(u64::from(vm.spec.memory_mib));
        put_node(txn, &n)?;
    }
    Ok(())
}

/// Moves `node`'s reservation for a VM from `old` to `new` (a resize), in the same
/// transaction as the VM's new spec. Growth the node cannot hold is refused (409) and
/// changes nothing.
pub(super) fn resize_reservation(
    txn: &dyn Txn,
    node: &str,
    old: &crate::model::VmSpec,
    new: &crate::model::VmSpec,
) -> Result<()> {
    let Some(mut n) = get_record::<Node>(txn, Table::Nodes, node.as_bytes())? else {
        return Ok(()); // the node is gone; nothing is reserved there
    };
    let vcpus = n.allocated.vcpus.saturating_sub(u64::from(old.vcpus)) + u64::from(new.vcpus);
    let memory_mib = n
        .allocated
        .memory_mib
        .saturating_sub(u64::from(old.memory_mib))
        + u64::from(new.memory_mib);
    let grows = new.vcpus > old.vcpus || new.memory_mib > old.memory_mib;
    if grows && (vcpus > n.capacity.vcpus || memory_mib > n.capacity.memory_mib) {
        let free = n.free();
        return Err(Error::Conflict(format!(
            "node {node} cannot hold the resize: it has {} vCPUs and {} MiB free beyond this VM's {} vCPUs and {} MiB",
            free.vcpus, free.memory_mib, old.vcpus, old.memory_mib
        )));
    }
    n.allocated.vcpus = vcpus;
    n.allocated.memory_mib = memory_mib;
    put_node(txn, &n)
}

/// Who is registering a node, which decides whether an existing name may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrant<'a> {
    /// A bootstrap token: only a name not yet bound.
    Bootstrap,
    /// The node itself, with the credential (`jti`) it was issued.
    Node {
        /// The jti of the token presented.
        jti: &'a str,
    },
    /// An admin: any name (re-binding it to a new credential).
    Admin {
        /// The admin's subject, for the audit trail.
        sub: &'a str,
    },
}

/// Revokes every credential `node` may present.
fn revoke_credentials(txn: &dyn Txn, actor: &str, node: &Node) -> Result<()> {
    for jti in [&node.credential_jti, &node.previous_credential_jti]
        .into_iter()
        .flatten()
    {
        super::tokens::revoke_in(txn, actor, jti)?;
    }
    Ok(())
}

/// Applies a heartbeat's credential rules to `n` (see [`Datastore::heartbeat`]); true if
/// `renewal` became its current credential.
fn renew_credential(
    txn: &dyn Txn,
    n: &mut Node,
    presented: &str,
    renewal: Option<&TokenRecord>,
) -> Result<bool> {
    let actor = format!("node:{}", n.name);
    if n.credential_jti.as_deref() == Some(presented) {
        if let Some(old) = n.previous_credential_jti.take() {
            super::tokens::revoke_in(txn, &actor, &old)?;
        }
        if let Some(new) = renewal {
            n.previous_credential_jti = n.credential_jti.replace(new.jti.clone());
        }
    } else if n.previous_credential_jti.as_deref() == Some(presented) {
        if let Some(new) = renewal {
            if let Some(unused) = n.credential_jti.replace(new.jti.clone()) {
                super::tokens::revoke_in(txn, &actor, &unused)?;
            }
        }
    } else {
        return Err(Error::Unauthenticated(format!(
            "invalid token: not the current credential of node {}",
            n.name
        )));
    }
    if let Some(new) = renewal {
        super::tokens::record_in(txn, new)?;
        append_event(
            txn,
            &actor,
            None,
            "node.credential.renew",
            &format!("nodes/{}", n.name),
        )?;
    }
    Ok(renewal.is_some())
}

/// What an admin does to a node's schedulability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cordon {
    /// No new VMs.
    Cordon,
    /// New VMs again.
    Uncordon,
    /// No new VMs, and its VMs go elsewhere.
    Drain,
}

impl Datastore {
    /// The underlay addresses of every Ready node but `name` that has one: where `name`
    /// sends its tenant networks' flooded frames.
    pub fn underlay_peers(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .list_nodes()?
            .into_iter()
            .filter(|n| n.name != name && n.state == NodeState::Ready)
            .filter_map(|n| n.underlay_address)
            .collect())
    }

    /// What the VMs placed on `node` hold by their specs (those being deleted included,
    /// until their node has removed them): a node's `allocated` must equal it.
    pub fn placed_on(&self, node: &str) -> Result<crate::model::Resources> {
        let mut placed = crate::model::Resources::default();
        for vm in self.all_vms()? {
            if vm.status.node.as_deref() == Some(node) {
                placed.vcpus += u64::from(vm.spec.vcpus);
                placed.memory_mib += u64::from(vm.spec.memory_mib);
            }
        }
        Ok(placed)
    }

    /// A node by name.
    pub fn get_node(&self, name: &str) -> Result<Option<Node>> {
        self.kv
            .get(Table::Nodes, name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The nodes `names` that exist, by name.
    pub fn nodes_of(&self, names: &[String]) -> Result<std::collections::HashMap<String, Node>> {
        self.records_by_key(Table::Nodes, names)
    }

    /// Every node.
    pub fn list_nodes(&self) -> Result<Vec<Node>> {
        self.kv
            .scan(Table::Nodes, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// The guest kernel releases the registered nodes run (whatever their state: a node
    /// down for a moment still runs its kernel when it comes back).
    pub fn node_kernel_releases(&self) -> Result<std::collections::BTreeSet<String>> {
        Ok(self
            .list_nodes()?
            .into_iter()
            .map(|n| n.kernel_release)
            .collect())
    }

    /// Records a heartbeat from a node presenting credential `presented`: the node is
    /// Ready, and what it observes of its VMs is recorded (their phases are the
    /// reconciler's to decide) with the guest's own module list. VMs it reports but no
    /// longer holds come back in `remove`.
    ///
    /// With `renewal`, the node's credential is renewed in the same transaction, and the
    /// answer's flag says so. Presenting the current credential makes the renewal current
    /// and keeps the old one as `previous` until the node presents the new one (then the
    /// old is revoked); presenting `previous` means a renewal's answer was lost: the unused
    /// credential is revoked and replaced by `renewal`.
    pub fn heartbeat(
        &self,
        node: &str,
        presented: &str,
        hb: &Heartbeat,
        renewal: Option<&TokenRecord>,
    ) -> Result<(HeartbeatReply, bool)> {
        transact(&*self.kv, |txn| {
            let mut n: Node = get_record(txn, Table::Nodes, node.as_bytes())?
                .ok_or_else(|| Error::not_found("node", node))?;
            let renewed = renew_credential(txn, &mut n, presented, renewal)?;
            n.state = NodeState::Ready;
            n.last_heartbeat = now();
            n.last_heartbeat_unix = unix_now();
            put_node(txn, &n)?;
            let mut reply = HeartbeatReply::default();
            super::observations::record_report(txn, node, &hb.vms)?;
            for o in &hb.vms {
                let vm = match visible_vm(txn, VmFilter::All, &o.id) {
                    Ok(vm) => vm,
                    Err(Error::NotFound { .. }) => {
                        reply.remove.push(o.id.clone());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if vm.status.node.as_deref() != Some(node) {
                    reply.remove.push(o.id.clone());
                    continue;
                }
                if vm.deleting {
                    continue;
                }
                super::observations::record(txn, node, o)?;
                let script = match (&vm.status.user_data, &o.user_data) {
                    (Some(now), Some(seen)) => now.advanced_by(seen),
                    _ => None,
                };
                let listed = super::observations::guest_lists_differ(&vm.status, o);
                if listed || script.is_some() {
                    update_vm(txn, &o.id, |vm| {
                        super::observations::take_guest_lists(&mut vm.status, o);
                        if let Some(s) = &script {
                            vm.status.user_data = Some(s.clone());
                        }
                        Ok(())
                    })?;
                }
            }
            Ok((reply, renewed))
        })
    }

    /// Marks nodes silent for longer than `timeout_secs` NotReady and their VMs Lost (what
    /// nodes observed of those VMs is forgotten: only a new heartbeat speaks for them
    /// again). Silence counts from the last heartbeat or from `alive_since`, whichever is
    /// later: a control plane that was down does not hold its own outage against nodes.
    /// Returns the names of nodes that just became NotReady.
    pub fn expire_nodes(&self, timeout_secs: u64, alive_since: u64) -> Result<Vec<String>> {
        Ok(self.expire_and_list_nodes(timeout_secs, alive_since)?.0)
    }

    /// [`Datastore::expire_nodes`], and every node as it is after it (one read of the
    /// nodes when none went silent: what a reconciler pass does each time).
    pub fn expire_and_list_nodes(
        &self,
        timeout_secs: u64,
        alive_since: u64,
    ) -> Result<(Vec<String>, Vec<Node>)> {
        let now_unix = unix_now();
        let silent = |n: &Node| is_silent(n, timeout_secs, alive_since, now_unix);
        let listed = self.list_nodes()?;
        let stale: Vec<Node> = listed
            .iter()
            .filter(|n| n.state == NodeState::Ready && silent(n))
            .cloned()
            .collect();
        if stale.is_empty() {
            return Ok((Vec::new(), listed));
        }
        let vms = self.all_vms()?;
        let mut out = Vec::new();
        for n in stale {
            let on_node: Vec<String> = vms
                .iter()
                .filter(|v| v.status.node.as_deref() == Some(&n.name) && !v.deleting)
                .map(|v| v.id.clone())
                .collect();
            transact(&*self.kv, |txn| {
                let mut node: Node = get_record(txn, Table::Nodes, n.name.as_bytes())?
                    .ok_or_else(|| Error::not_found("node", &n.name))?;
                if !silent(&node) {
                    return Ok(()); // it heartbeat meanwhile
                }
                node.state = NodeState::NotReady;
                put_node(txn, &node)?;
                for id in &on_node {
                    update_vm(txn, id, |vm| {
                        vm.status.phase = Phase::Lost;
                        vm.status.reason = Some(format!("node {} stopped heartbeating", n.name));
                        Ok(())
                    })?;
                    super::observations::forget(txn, id)?;
                }
                append_event(
                    txn,
                    "system:reconciler",
                    None,
                    "node.not_ready",
                    &format!("nodes/{}", n.name),
                )
            })?;
            out.push(n.name);
        }
        Ok((out, self.list_nodes()?))
    }

    /// Cordons, uncordons or (the cordon half of) drains a node, audited as what it is:
    /// `node.cordon`, `node.uncordon` or `node.drain`.
    pub fn set_cordoned(&self, actor: &str, name: &str, how: Cordon) -> Result<Node> {
        transact(&*self.kv, |txn| {
            let mut n: Node = get_record(txn, Table::Nodes, name.as_bytes())?
                .ok_or_else(|| Error::not_found("node", name))?;
            n.cordoned = how != Cordon::Uncordon;
            put_node(txn, &n)?;
            let action = match how {
                Cordon::Cordon => "node.cordon",
                Cordon::Uncordon => "node.uncordon",
                Cordon::Drain => "node.drain",
            };
            append_event(txn, actor, None, action, &format!("nodes/{name}"))?;
            Ok(n)
        })
    }

    /// Registers a node with a new credential (listed as `credential`), in one
    /// transaction. A name is bound to its node's credential at first registration: taking
    /// it again needs that credential or an admin (a bootstrap token gets 409), and the
    /// credential it replaces is revoked.
    pub fn register_node(
        &self,
        reg: &RegisterNode,
        by: Registrant,
        credential: &TokenRecord,
    ) -> Result<Node> {
        transact(&*self.kv, |txn| {
            let time = now();
            let prev: Option<Node> = get_record(txn, Table::Nodes, reg.name.as_bytes())?;
            let actor = match (&prev, by) {
                (None, Registrant::Node { .. }) => {
                    return Err(Error::not_found("node", &reg.name));
                }
                (Some(_), Registrant::Bootstrap) => {
                    return Err(Error::Conflict(format!(
                        "node name {} is already registered: re-register with that node's own credential, or as an admin, or delete the node first",
                        reg.name
                    )));
                }
                (Some(p), Registrant::Node { jti }) if !p.holds_credential(jti) => {
                    return Err(Error::Unauthenticated(format!(
                        "this credential of node {} was replaced",
                        reg.name
                    )));
                }
                (_, Registrant::Admin { sub }) => sub.to_string(),
                (_, _) => format!("node:{}", reg.name),
            };
            if let Some(p) = &prev {
                revoke_credentials(txn, &actor, p)?;
            }
            super::tokens::record_in(txn, credential)?;
            let node = Node {
                name: reg.name.clone(),
                address: reg.address.clone(),
                capacity: reg.capacity,
                allocated: prev.as_ref().map(|p| p.allocated).unwrap_or_default(),
                driver: reg.driver.clone(),
                hardware_virtualization: reg.hardware_virtualization,
                kernel_release: reg.kernel_release.clone(),
                features: reg.features.clone(),
                underlay_address: reg.underlay_address.clone(),
                state: NodeState::Ready,
                cordoned: prev.as_ref().is_some_and(|p| p.cordoned),
                last_heartbeat: time.clone(),
                last_heartbeat_unix: unix_now(),
                registered_at: prev.map(|p| p.registered_at).unwrap_or(time),
                credential_jti: Some(credential.jti.clone()),
                previous_credential_jti: None,
            };
            put_node(txn, &node)?;
            append_event(
                txn,
                &actor,
                None,
                "node.register",
                &format!("nodes/{}", reg.name),
            )?;
            Ok(node)
        })
    }

    /// Deletes node `name` (admin) once nothing is placed on it, revoking its credential.
    pub fn delete_node(&self, actor: &str, name: &str) -> Result<()> {
        transact(&*self.kv, |txn| {
            let node: Node = get_record(txn, Table::Nodes, name.as_bytes())?
                .ok_or_else(|| Error::not_found("node", name))?;
            if node.allocated.vcpus > 0 || node.allocated.memory_mib > 0 {
                return Err(Error::Conflict(format!(
                    "node {name} still holds VMs ({} vCPUs, {} MiB): drain it first",
                    node.allocated.vcpus, node.allocated.memory_mib
                )));
            }
            revoke_credentials(txn, actor, &node)?;
            txn.remove(Table::Nodes, name.as_bytes())?;
            txn.remove(Table::NodeReports, name.as_bytes())?;
            append_event(txn, actor, None, "node.delete", &format!("nodes/{name}"))
        })
    }
}
