//! Persistent state behind a small transactional key-value trait.
//!
//! [`KvStore`] is all a backend must provide: point reads, ordered prefix scans and
//! serializable multi-table transactions that are durable when they return. The typed
//! operations of the API live once, above it, in [`Datastore`], one file per resource
//! (`tenants`, `vms`, `events`, `modules`, `module_requests`, `nodes`, `placement`,
//! `observations`, `tokens`) over shared transaction helpers (`txn`, `keys`); a distributed backend
//! implements only this trait.

mod blobs;
pub mod copy;
#[cfg(feature = "etcd")]
mod etcd_access;
#[cfg(feature = "etcd")]
mod etcd_kv;
#[cfg(feature = "etcd")]
mod etcd_lease;
mod events;
mod group_commit;
#[cfg(feature = "etcd")]
mod id_clock;
mod keys;
mod leadership;
mod location;
mod meta;
mod module_requests;
mod modules;
mod networks;
mod nodes;
mod observations;
mod placement;
mod scheduler;
mod secrets;
mod sled_kv;
mod tenants;
mod timed;
mod tokens;
mod trust;
mod txn;
mod vms;

#[cfg(feature = "etcd")]
pub use etcd_access::EtcdAccess;
#[cfg(feature = "etcd")]
pub use etcd_kv::EtcdKv;
pub use group_commit::{GroupCommit, Part, PartOutcome};
pub use keys::parse_page_token;
pub use leadership::{Deadline, FencedKv, Term, LEASE_TTL};
pub use location::{StoreLocation, DEFAULT_ETCD_ROOT};
pub use module_requests::MAX_REQUESTS_PER_VM;
pub use networks::{NetworkRecord, TenantNetworks, DEFAULT_CIDR, DEFAULT_NETWORK, NO_NETWORK};
pub use nodes::{is_silent, Cordon, Registrant};
pub use observations::{NodeReport, Observation};
pub use scheduler::{Placement, Strategy};
pub use sled_kv::SledKv;
pub use timed::TimedKv;
pub use trust::{check_trust_name, MAX_TRUSTED};

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::sync::Arc;

/// The tables (sled trees) of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Store-wide metadata such as the schema version.
    Meta,
    /// `name -> Tenant`.
    Tenants,
    /// `tenant \0 id -> Vm`: a tenant's VMs are one range.
    Vms,
    /// `id -> tenant`: who owns each VM.
    VmOwners,
    /// `tenant \0 name -> id`: VM names are unique within a tenant.
    VmNames,
    /// `sha256 -> bytes`: module blobs kept whole (written before blobs were chunked;
    /// still read).
    Blobs,
    /// `sha256 \0 index -> bytes`: module blobs in chunks (see `blobs`).
    BlobChunks,
    /// `name \0 kernel_release -> ModuleVersion`.
    Modules,
    /// `name -> ModulePolicy`.
    Policies,
    /// `vm_id \0 module -> ModuleRequest`.
    ModuleRequests,
    /// `seq (big endian) -> Event`.
    Events,
    /// `tenant \0 seq -> ()`: the audit trail of each tenant.
    TenantEvents,
    /// `name -> Node`.
    Nodes,
    /// `vm id -> Observation`: what a node last reported of each VM.
    Observations,
    /// `node name -> NodeReport`: which VMs a node's last heartbeat listed.
    NodeReports,
    /// `jti -> TokenRecord`: every token the control plane issued and listed.
    Tokens,
    /// `jti -> Revocation`: revoked tokens, listed or not.
    Revocations,
    /// `tenant -> TenantNetworks`: each tenant's networks and the addresses held in them.
    Networks,
    /// `name -> TrustEntry`: operator certificates trusted to sign modules.
    Trust,
}

impl Table {
    /// Every table, in a fixed order (the index of each is its position).
    pub const ALL: [Table; 19] = [
        Table::Meta,
        Table::Tenants,
        Table::Vms,
        Table::VmOwners,
        Table::VmNames,
        Table::Blobs,
        Table::Modules,
        Table::Policies,
        Table::ModuleRequests,
        Table::Events,
        Table::TenantEvents,
        Table::Nodes,
        Table::Observations,
        Table::NodeReports,
        Table::Tokens,
        Table::Revocations,
        Table::Networks,
        Table::BlobChunks,
        Table::Trust,
    ];

    /// The table's on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Tenants => "tenants",
            Table::Vms => "vms",
            Table::VmOwners => "vm_owners",
            Table::VmNames => "vm_names",
            Table::Blobs => "blobs",
            Table::Modules => "modules",
            Table::Policies => "policies",
            Table::ModuleRequests => "module_requests",
            Table::Events => "events",
            Table::TenantEvents => "tenant_events",
            Table::Nodes => "nodes",
            Table::Observations => "observations",
            Table::NodeReports => "node_reports",
            Table::Tokens => "tokens",
            Table::Revocations => "revocations",
            Table::Networks => "networks",
            Table::BlobChunks => "blob_chunks",
            Table::Trust => "trust",
        }
    }

    fn index(self) -> usize {
        Table::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// Reads and writes inside one transaction.
pub trait Txn {
    /// Reads a key, seeing this transaction's own writes.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Reads several keys as [`Txn::get`] does (on etcd, those not yet read in one round
    /// trip): what a transaction over many records reads first.
    fn prefetch(&self, keys: &[(Table, &[u8])]) -> Result<()> {
        for (table, key) in keys {
            self.get(*table, key)?;
        }
        Ok(())
    }
    /// Writes a key.
    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes a key.
    fn remove(&self, table: Table, key: &[u8]) -> Result<()>;
    /// A fresh id greater than `floor`: unique in the store, rising in each replica
    /// (ids may have gaps; on sled they follow commit order).
    fn next_id_after(&self, floor: u64) -> Result<u64>;
    /// A fresh id (see [`Txn::next_id_after`]).
    fn next_id(&self) -> Result<u64> {
        self.next_id_after(0)
    }
}

/// A transactional, durable key-value store.
pub trait KvStore: Send + Sync {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Reads several keys at once (on etcd, from one snapshot in one round trip; by
    /// default, each on its own, as [`KvStore::get`] does).
    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter()
            .map(|(table, key)| self.get(*table, key))
            .collect()
    }
    /// Up to `limit` entries whose keys start with `prefix` and sort after `after`, in key order.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Runs `f` as one serializable transaction over all tables; `f` may be run again on a
    /// conflict and must touch the store only through the `Txn` it is given (a backend may
    /// hold locks that plain reads would wait on). When this returns `Ok`, the writes are
    /// on stable storage.
    fn transact(&self, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()>;
    /// The id [`Txn::next_id`] would give now, without taking it.
    fn next_id_peek(&self) -> Result<u64>;
    /// Runs `f` as [`KvStore::transact`] does, but commits only while `term` is the
    /// leader's: once another replica could lead, it fails with [`Error::Deposed`] and
    /// writes nothing.
    fn transact_fenced(&self, term: &Term, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()>;
    /// Waits until `candidate` (this replica's name) leads, and returns its term.
    fn campaign(&self, candidate: &str) -> Result<Term>;
    /// Calls `changed` with each change to `tables` (or [`Change::Missed`] when some
    /// may have been missed), from a thread of the store's, for as long as it is open.
    fn watch_tables(&self, tables: &[Table], changed: Changed) -> Result<()>;
    /// An error when this store writes as a leader whose term is over ([`FencedKv`]);
    /// what the leader checks before acting outside the store (calls to nodes).
    fn term_check(&self) -> Result<()> {
        Ok(())
    }
    /// How many records a batch operation (placements) should change per transaction:
    /// a store whose transactions are bounded (etcd's `--max-txn-ops`, its request
    /// size) takes big batches in several.
    fn batch_limit(&self) -> usize {
        usize::MAX
    }
    /// Whether each read is a round trip to another process (etcd): what a replica's
    /// token-verification cache saves.
    fn reads_are_remote(&self) -> bool {
        false
    }
    /// Whether [`KvStore::transact_parts`] commits parts together (etcd); a store that
    /// runs each on its own is not worth queueing for ([`GroupCommit`]).
    fn commits_in_groups(&self) -> bool {
        false
    }
    /// Runs each of `parts` as [`KvStore::transact`] would, possibly together in one
    /// transaction that first reads `prefetch` (what the parts will read, in one round
    /// trip): a part that fails writes nothing and does not fail the others, and a part
    /// that no longer fits is [`PartOutcome::Left`] (never the first). By default each
    /// is a transaction of its own.
    fn transact_parts(&self, _prefetch: &[(Table, &[u8])], parts: &[&Part]) -> Vec<PartOutcome> {
        parts
            .iter()
            .map(|f| PartOutcome::Done(self.transact(*f)))
            .collect()
    }
}

/// What [`KvStore::watch_tables`] calls, once per change.
pub type Changed = Arc<dyn Fn(Change) + Send + Sync>;

/// One change a watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The record at `key` of `table` was written or removed.
    Key(Table, Vec<u8>),
    /// The watch had to start again: changes may have been missed (read everything).
    Missed,
}

/// Runs `f` in one transaction of `kv` and returns its value.
pub fn transact<T>(kv: &dyn KvStore, f: impl Fn(&dyn Txn) -> Result<T>) -> Result<T> {
    let out = RefCell::new(None);
    kv.transact(&|txn| {
        let value = f(txn)?;
        *out.borrow_mut() = Some(value);
        Ok(())
    })?;
    out.into_inner()
        .ok_or_else(|| Error::Storage("transaction returned no value".into()))
}

/// How many keys one [`KvStore::get_many`] asks for.
const GET_MANY_CHUNK: usize = 100;

/// Whose resources an operation may see.
#[derive(Debug, Clone, Copy)]
pub enum VmFilter<'a> {
    /// Everything (admins).
    All,
    /// Only this tenant's; anything else is "not found".
    Tenant(&'a str),
}

impl VmFilter<'_> {
    fn admits(&self, tenant: &str) -> bool {
        match self {
            VmFilter::All => true,
            VmFilter::Tenant(t) => *t == tenant,
        }
    }
}

/// The control plane's typed view of its store.
#[derive(Clone)]
pub struct Datastore {
    kv: Arc<dyn KvStore>,
    /// The same store, for transactions that commit together (tenants' creates).
    group: Arc<GroupCommit>,
    /// Whether this process has seen a registered node (what a new VM's first reason
    /// says; see `create_vm`).
    nodes_seen: Arc<std::sync::atomic::AtomicBool>,
    default_network_cidr: Arc<str>,
}

impl Datastore {
    /// Wraps a store.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Datastore {
            group: Arc::new(GroupCommit::new(kv.clone())),
            kv,
            nodes_seen: Default::default(),
            default_network_cidr: Arc::from(networks::DEFAULT_CIDR),
        }
    }

    /// The same store, writing only while `term` lasts (see `leadership`): what the
    /// leader's scheduler and reconciler write through.
    pub fn fenced(&self, term: Arc<Term>) -> Self {
        let kv: Arc<dyn KvStore> = Arc::new(FencedKv::new(self.kv.clone(), term));
        Datastore {
            group: Arc::new(GroupCommit::new(kv.clone())),
            kv,
            nodes_seen: self.nodes_seen.clone(),
            default_network_cidr: self.default_network_cidr.clone(),
        }
    }

    /// Waits until `candidate` leads (see [`KvStore::campaign`]).
    pub fn campaign(&self, candidate: &str) -> Result<Term> {
        self.kv.campaign(candidate)
    }

    /// An error when this store is a leader's whose term is over (see
    /// [`KvStore::term_check`]).
    pub fn check_term(&self) -> Result<()> {
        self.kv.term_check()
    }

    /// Whether the store's reads are round trips (see [`KvStore::reads_are_remote`]).
    pub fn reads_are_remote(&self) -> bool {
        self.kv.reads_are_remote()
    }

    /// How many records a batch changes per transaction (see [`KvStore::batch_limit`]).
    pub fn batch_limit(&self) -> usize {
        self.kv.batch_limit()
    }

    /// Calls `changed` after changes to `tables` (see [`KvStore::watch_tables`]).
    pub fn watch_tables(&self, tables: &[Table], changed: Changed) -> Result<()> {
        self.kv.watch_tables(tables, changed)
    }

    /// The same store, creating each tenant's `default` network with `cidr` (checked by
    /// the caller with [`crate::ipam::Cidr`]) instead of [`networks::DEFAULT_CIDR`].
    pub fn with_default_network_cidr(mut self, cidr: &str) -> Self {
        self.default_network_cidr = Arc::from(cidr);
        self
    }
}

/// The key of event `seq` (where a page after it starts).
pub fn event_key(seq: u64) -> Vec<u8> {
    keys::seq(seq).to_vec()
}
