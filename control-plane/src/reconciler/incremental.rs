//! A pass over what changed: the VMs the store's watch named (and those whose action
//! ended), the VMs of nodes whose state changed or that passed the fencing bound, the VMs
//! a node's new heartbeat left out or listed again, and the Pending VMs (all of them
//! again only when some node's room changed). What it reads of each VM is what a full
//! pass reads; it decides the same way ([`Reconciler::reconcile_each`]).

use super::fleet::{Changes, NodesMoved};
use super::{lock, Heartbeats, NodeConnector, Reconciler};
use crate::model::{Node, NodeState, Phase};
use crate::store::is_silent;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

impl<C: NodeConnector> Reconciler<C> {
    /// One pass over `changes` (see the module). Must run inside a `LocalSet`. With
    /// nothing changed and no node due to fall silent or past its fencing bound, there is
    /// nothing to do (an idle leader's passes cost next to nothing).
    pub fn pass_changes(&self, changes: Changes) -> crate::Result<()> {
        let now = crate::auth::unix_now();
        if changes.is_empty() && lock(&self.quiet_until)?.is_some_and(|until| now < until) {
            return Ok(());
        }
        let (nodes, moved) = self.nodes_for_pass(&changes.nodes)?;
        let mut ids: HashSet<String> = changes.vms;
        let retry_pending = moved.room;
        self.vms_of_moved_nodes(&nodes, &moved, &mut ids)?;
        let mut reports = self.reports_moved(changes.reports, &mut ids)?;

        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort();
        let mut vms = Vec::with_capacity(ids.len());
        {
            let mut fleet = lock(&self.fleet)?;
            let mut absent = lock(&self.absent)?;
            for (id, vm) in ids.iter().zip(self.store.get_vms(&ids)?) {
                match vm {
                    Some(vm) => {
                        fleet.put(&vm);
                        vms.push(vm);
                    }
                    None => {
                        fleet.remove(id);
                        absent.remove(id);
                    }
                }
            }
        }
        let pending: Vec<String> = if retry_pending {
            lock(&self.fleet)?.pending()
        } else {
            vms.iter()
                .filter(|v| v.status.phase == Phase::Pending && !v.deleting)
                .map(|v| v.id.clone())
                .collect()
        };
        // Placed VMs change, and the watch brings them to the next pass.
        self.place(&pending)?;

        let read: Vec<String> = vms.iter().map(|v| v.id.clone()).collect();
        let observations = self.store.observations_of(&read)?;
        let requests = self.store.module_requests_of(&read)?;
        let mut of_nodes: Vec<String> = vms
            .iter()
            .filter_map(|v| v.status.node.clone())
            .filter(|n| !reports.contains_key(n))
            .collect();
        of_nodes.sort();
        of_nodes.dedup();
        reports.extend(self.store.node_reports_of(&of_nodes)?);
        let heartbeats = if moved.all_read {
            Heartbeats::All
        } else {
            Heartbeats::Of(&moved.read)
        };
        self.publish(&nodes, heartbeats)?;
        self.reconcile_each(vms, &nodes, &observations, &reports, &requests)?;
        self.note_quiet_until(&nodes)
    }

    /// Notes until when passes with nothing changed may do nothing: the first moment a
    /// Ready node falls silent past the timeout, or a NotReady one passes the fencing
    /// bound (or now, while a NotReady node past it, or a node that is gone, still holds
    /// VMs: each pass moves them on).
    pub(super) fn note_quiet_until(&self, nodes: &HashMap<String, Node>) -> crate::Result<()> {
        let now = crate::auth::unix_now();
        let (timeout, fence) = (self.config.node_timeout_secs, self.config.fence_after_secs);
        let fleet = lock(&self.fleet)?;
        let mut until = u64::MAX;
        for n in nodes.values() {
            let since = n.last_heartbeat_unix.max(self.started_unix);
            if n.state == NodeState::Ready {
                until = until.min(since.saturating_add(timeout).saturating_add(1));
            } else {
                let fenced_at = since.saturating_add(fence).saturating_add(1);
                if fenced_at > now || fleet.on_node(&n.name).next().is_some() {
                    until = until.min(fenced_at);
                }
            }
        }
        if fleet.nodes_in_use().any(|n| !nodes.contains_key(n)) {
            until = now;
        }
        *lock(&self.quiet_until)? = Some(until);
        Ok(())
    }

    /// The nodes as this pass sees them, and how they moved since the last pass: those
    /// the last pass had, with the ones whose record changed read again (the watch names
    /// them), so an idle leader reads none. When one of them has been silent past the
    /// timeout, it is marked NotReady (its VMs Lost) and every node is read.
    fn nodes_for_pass(
        &self,
        changed: &HashSet<String>,
    ) -> crate::Result<(Arc<HashMap<String, Node>>, NodesMoved)> {
        let mut read = lock(&self.nodes_read)?;
        let mut moved = NodesMoved::default();
        let mut nodes = match read.take() {
            Some(last) => {
                let mut nodes = Arc::try_unwrap(last).unwrap_or_else(|shared| (*shared).clone());
                let names: Vec<String> = changed.iter().cloned().collect();
                let mut fresh = self.store.nodes_of(&names)?;
                for name in names {
                    let now = fresh.remove(&name);
                    moved.note(&name, nodes.get(&name), now.as_ref());
                    match now {
                        Some(n) => nodes.insert(name, n),
                        None => nodes.remove(&name),
                    };
                }
                nodes
            }
            None => {
                let nodes = self.nodes_after_expiry()?;
                moved.all_read = true;
                for (name, n) in &nodes {
                    moved.note(name, None, Some(n));
                }
                nodes
            }
        };
        let now = crate::auth::unix_now();
        let (timeout, since) = (self.config.node_timeout_secs, self.started_unix);
        if nodes
            .values()
            .any(|n| n.state == NodeState::Ready && is_silent(n, timeout, since, now))
        {
            let listed = self.nodes_after_expiry()?;
            moved.all_read = true;
            let names: HashSet<&String> = nodes.keys().chain(listed.keys()).collect();
            for name in names {
                moved.note(name, nodes.get(name), listed.get(name));
            }
            nodes = listed;
        }
        let nodes = Arc::new(nodes);
        *read = Some(nodes.clone());
        Ok((nodes, moved))
    }

    /// Adds to `ids` the VMs of nodes whose readiness `moved`, of nodes that are gone, and
    /// of nodes NotReady past the fencing bound (their Lost VMs go elsewhere).
    fn vms_of_moved_nodes(
        &self,
        nodes: &HashMap<String, Node>,
        moved: &NodesMoved,
        ids: &mut HashSet<String>,
    ) -> crate::Result<()> {
        let fleet = lock(&self.fleet)?;
        for name in &moved.readiness {
            ids.extend(fleet.on_node(name).cloned());
        }
        for (name, node) in nodes {
            if node.state != NodeState::Ready && self.fenced(Some(node)) {
                ids.extend(fleet.on_node(name).cloned());
            }
        }
        for name in fleet.nodes_in_use().filter(|n| !nodes.contains_key(*n)) {
            ids.extend(fleet.on_node(name).cloned());
        }
        Ok(())
    }

    /// Reads the new heartbeat reports of `changed` nodes; adds to `ids` the VMs placed
    /// on one and missing from its report (two reports in a row make an absence), and
    /// forgets a first miss of a VM the report lists again. The reports read.
    fn reports_moved(
        &self,
        changed: HashSet<String>,
        ids: &mut HashSet<String>,
    ) -> crate::Result<HashMap<String, crate::store::NodeReport>> {
        let mut names: Vec<String> = changed.into_iter().collect();
        names.sort();
        let reports = self.store.node_reports_of(&names)?;
        let fleet = lock(&self.fleet)?;
        let mut absent = lock(&self.absent)?;
        for (node, report) in &reports {
            for id in fleet.held_on(node) {
                if report.vms.binary_search(id).is_ok() {
                    absent.remove(id);
                } else {
                    ids.insert(id.clone());
                }
            }
        }
        Ok(reports)
    }
}
