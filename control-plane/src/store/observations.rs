//! What nodes observe of their VMs (heartbeats and ensure replies), kept apart from the
//! VMs' phases: nodes report, the reconciler alone decides a VM's phase from the latest
//! observation (see control-plane/README.md, "A VM's phase").

use super::keys::{decode, encode};
use super::txn::{get_record, update_vm};
use super::{transact, Datastore, Table, Txn};
use crate::error::Result;
use crate::model::{ObservedVm, Phase};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A node's latest word on one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The node that observed it.
    pub node: String,
    /// The phase the node sees.
    pub phase: Phase,
    /// Why, for failures and stops.
    pub reason: Option<String>,
    /// The guest's boot the node saw (absent while none runs).
    #[serde(default)]
    pub boot: Option<String>,
}

/// Which VMs one heartbeat of a node listed, numbered: a VM placed on the node and
/// missing from two reports in a row is one the node no longer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Heartbeats counted since the node's first.
    pub seq: u64,
    /// The VM ids it listed, sorted.
    pub vms: Vec<String>,
}

/// Records which VMs `node`'s heartbeat listed, inside the heartbeat's transaction.
pub(super) fn record_report(txn: &dyn Txn, node: &str, vms: &[ObservedVm]) -> Result<()> {
    let prev = get_record::<NodeReport>(txn, Table::NodeReports, node.as_bytes())?;
    let mut ids: Vec<String> = vms.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    let report = NodeReport {
        seq: prev.map_or(1, |p| p.seq.saturating_add(1)),
        vms: ids,
    };
    txn.insert(Table::NodeReports, node.as_bytes(), &encode(&report)?)
}

/// Records what `node` observes of one VM, inside a transaction. A boot that ended (the
/// guest stopped, failed, or another boot runs) took its loaded modules with it: the VM's
/// module requests go back to Pending, to be loaded again once it runs.
pub(super) fn record(txn: &dyn Txn, node: &str, o: &ObservedVm) -> Result<()> {
    let observation = Observation {
        node: node.to_string(),
        phase: o.phase,
        reason: o.reason.clone(),
        boot: o.boot.clone(),
    };
    let old = get_record::<Observation>(txn, Table::Observations, o.id.as_bytes())?;
    if old.as_ref() == Some(&observation) {
        return Ok(());
    }
    let ended = old
        .as_ref()
        .is_some_and(|old| old.boot.is_some() && old.boot != observation.boot);
    if ended {
        super::module_requests::reset_requests(
            txn,
            &o.id,
            "the guest's kernel restarted without it; loading again once the VM runs",
        )?;
        // The ended boot's lists go with it; a new boot's come with its node's next
        // heartbeat (checked there).
        update_vm(txn, &o.id, |vm| {
            clear_guest_lists(&mut vm.status);
            Ok(())
        })?;
    }
    txn.insert(Table::Observations, o.id.as_bytes(), &encode(&observation)?)
}

/// Whether `o` lists the guest otherwise than `status` does (its modules, platform
/// modules, interfaces, kernel mode and taints).
pub(super) fn guest_lists_differ(status: &crate::model::VmStatus, o: &ObservedVm) -> bool {
    status.guest_modules != o.guest_modules
        || status.platform_modules != o.platform_modules
        || status.interfaces != o.interfaces
        || status.kernel_mode != o.kernel_mode
        || status.module_taints != o.module_taints
}

/// Takes into `status` what `o` lists of the guest.
pub(super) fn take_guest_lists(status: &mut crate::model::VmStatus, o: &ObservedVm) {
    status.guest_modules = o.guest_modules.clone();
    status.platform_modules = o.platform_modules.clone();
    status.interfaces = o.interfaces.clone();
    status.kernel_mode = o.kernel_mode;
    status.module_taints = o.module_taints.clone();
}

/// Forgets what `status` lists of a guest that is gone (its boot ended, or the VM
/// moved).
pub(super) fn clear_guest_lists(status: &mut crate::model::VmStatus) {
    status.guest_modules.clear();
    status.platform_modules.clear();
    status.interfaces.clear();
    status.kernel_mode = None;
    status.module_taints.clear();
}

/// Forgets what any node observed of VM `id` (it moved, or it is gone).
pub(super) fn forget(txn: &dyn Txn, id: &str) -> Result<()> {
    txn.remove(Table::Observations, id.as_bytes())
}

impl Datastore {
    /// Records what `node` answered about one VM (an ensure reply).
    pub fn record_observation(&self, node: &str, o: &ObservedVm) -> Result<()> {
        transact(&*self.kv, |txn| record(txn, node, o))
    }

    /// The latest observation of every VM that has one.
    pub fn observations(&self) -> Result<HashMap<String, Observation>> {
        self.kv
            .scan(Table::Observations, b"", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k).into_owned(), decode(&v)?)))
            .collect()
    }

    /// The last heartbeat's list of every node that has sent one.
    pub fn node_reports(&self) -> Result<HashMap<String, NodeReport>> {
        self.kv
            .scan(Table::NodeReports, b"", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k).into_owned(), decode(&v)?)))
            .collect()
    }

    /// The latest observations of VMs `ids` (those that have one).
    pub fn observations_of(&self, ids: &[String]) -> Result<HashMap<String, Observation>> {
        self.records_by_key(Table::Observations, ids)
    }

    /// The last heartbeat's list of each of `nodes` that has sent one.
    pub fn node_reports_of(&self, nodes: &[String]) -> Result<HashMap<String, NodeReport>> {
        self.records_by_key(Table::NodeReports, nodes)
    }

    /// The records of `table` at `keys` (those present), decoded, by key: read a hundred
    /// at a time with [`super::KvStore::get_many`].
    pub(super) fn records_by_key<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        keys: &[String],
    ) -> Result<HashMap<String, T>> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(super::GET_MANY_CHUNK) {
            let wanted: Vec<(Table, &[u8])> = chunk.iter().map(|k| (table, k.as_bytes())).collect();
            for (key, value) in chunk.iter().zip(self.kv.get_many(&wanted)?) {
                if let Some(v) = value {
                    out.insert(key.clone(), decode(&v)?);
                }
            }
        }
        Ok(out)
    }

    /// The latest observation of VM `id`.
    pub fn observation(&self, id: &str) -> Result<Option<Observation>> {
        self.kv
            .get(Table::Observations, id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }
}
