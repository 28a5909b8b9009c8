//! Prometheus metrics of the control plane: requests and latencies by route and status,
//! VMs by tenant and phase, module requests by outcome and reason, module load latency,
//! placements and time Pending, reconciler passes, node heartbeat age, and refused
//! authentications by reason. Every label has a bounded set of values.

use crate::error::{Error, Result};
use crate::model::Phase;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::collections::BTreeMap;
use std::time::Duration;

mod heartbeats;
use heartbeats::HeartbeatAges;

/// Buckets (seconds) of the slower histograms: a module load, a pass, time Pending.
const SLOW_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// The control plane's metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    vms: IntGaugeVec,
    module_requests: IntCounterVec,
    module_load: Histogram,
    placements: IntCounterVec,
    pending: Histogram,
    pass: Histogram,
    heartbeat_age: HeartbeatAges,
    auth_failures: IntCounterVec,
    leader: IntGauge,
    store: HistogramVec,
}

impl Metrics {
    /// Registers the metric families.
    pub fn new() -> Result<Self> {
        let err = |e: prometheus::Error| Error::Metrics(e.to_string());
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(err)?;
            registry.register(Box::new(c.clone())).map_err(err)?;
            Ok::<_, Error>(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(err)?;
            registry.register(Box::new(g.clone())).map_err(err)?;
            Ok::<_, Error>(g)
        };
        let histogram = |name: &str, help: &str| {
            let h =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(SLOW_BUCKETS.to_vec()))
                    .map_err(err)?;
            registry.register(Box::new(h.clone())).map_err(err)?;
            Ok::<_, Error>(h)
        };
        // Fast operations: 0.1 ms to 1 s (and the store's slow ones, to 5 s).
        let fast_histogram = |name: &str, help: &str, labels: &[&str], top: &[f64]| {
            let mut buckets = vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ];
            buckets.extend_from_slice(top);
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .map_err(err)?;
            registry.register(Box::new(h.clone())).map_err(err)?;
            Ok::<_, Error>(h)
        };
        let latency = fast_histogram(
            "modvisor_http_request_duration_seconds",
            "HTTP request latency by route",
            &["method", "route"],
            &[],
        )?;
        let store = fast_histogram(
            "modvisor_store_operation_duration_seconds",
            "Store operations (get, scan, transact) from this replica, by kind: on etcd, its round trips",
            &["op"],
            &[5.0],
        )?;
        let leader = IntGauge::new(
            "modvisor_leader",
            "1 while this replica leads (runs the scheduler and the reconciler), else 0",
        )
        .map_err(err)?;
        registry.register(Box::new(leader.clone())).map_err(err)?;
        let heartbeat_age = HeartbeatAges::new().map_err(err)?;
        registry
            .register(Box::new(heartbeat_age.clone()))
            .map_err(err)?;
        let metrics = Metrics {
            leader,
            store,
            requests: counter(
                "modvisor_http_requests_total",
                "HTTP requests by route and status",
                &["method", "route", "status"],
            )?,
            latency,
            vms: gauge("modvisor_vms", "VMs by tenant and phase", &["tenant", "phase"])?,
            module_requests: counter(
                "modvisor_module_requests_total",
                "Module loads delivered to nodes, by outcome (loaded, rejected, failed, undelivered) and rejection reason",
                &["outcome", "reason"],
            )?,
            module_load: histogram(
                "modvisor_module_load_duration_seconds",
                "From delivering a module request to its node to the node's answer",
            )?,
            placements: counter(
                "modvisor_scheduler_placements_total",
                "Scheduling decisions by result (placed, unschedulable)",
                &["result"],
            )?,
            pending: histogram(
                "modvisor_vm_pending_seconds",
                "How long a VM was Pending (from its creation) until placed",
            )?,
            pass: histogram(
                "modvisor_reconciler_pass_duration_seconds",
                "One reconciler pass over every node and VM",
            )?,
            heartbeat_age,
            auth_failures: counter(
                "modvisor_auth_failures_total",
                "Requests refused authentication, by reason",
                &["reason"],
            )?,
            registry,
        };
        metrics.set_vms(&BTreeMap::new());
        Ok(metrics)
    }

    /// Counts one finished request. `route` is the matched pattern, never the raw path,
    /// so label cardinality stays bounded.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the VMs-by-tenant-and-phase gauges (the reconciler does, from each pass's read
    /// of every VM); a tenant's phases absent from `vms` are 0, and tenants without VMs
    /// are dropped.
    pub fn set_vms(&self, vms: &BTreeMap<(String, Phase), u64>) {
        self.vms.reset();
        let tenants: std::collections::BTreeSet<&String> = vms.keys().map(|(t, _)| t).collect();
        for tenant in tenants {
            for phase in Phase::ALL {
                let n = vms.get(&(tenant.clone(), phase)).copied().unwrap_or(0);
                self.vms
                    .with_label_values(&[tenant.as_str(), &format!("{phase:?}")])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Counts a module load's outcome (`reason`: the rejection's kind, or `none`) and how
    /// long its node took.
    pub fn module_outcome(&self, outcome: &str, reason: &str, took: Duration) {
        self.module_requests
            .with_label_values(&[outcome, reason])
            .inc();
        self.module_load.observe(took.as_secs_f64());
    }

    /// Counts a placement decision, and for a placed VM how long it was Pending.
    pub fn placement(&self, placed: bool, pending: Option<Duration>) {
        let result = if placed { "placed" } else { "unschedulable" };
        self.placements.with_label_values(&[result]).inc();
        if let Some(p) = pending {
            self.pending.observe(p.as_secs_f64());
        }
    }

    /// Whether this replica leads now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records a store operation (`get`, `scan`, `transact`) that took `took`.
    pub fn store_operation(&self, op: &str, took: Duration) {
        self.store
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
    }

    /// Records one reconciler pass's duration.
    pub fn pass(&self, took: Duration) {
        self.pass.observe(took.as_secs_f64());
    }

    /// Sets every node's last heartbeat (unix seconds; nodes not in `last` are dropped).
    /// Their ages are computed when scraped.
    pub fn set_heartbeats(&self, last: BTreeMap<String, u64>) {
        self.heartbeat_age.set_all(last);
    }

    /// Sets one node's last heartbeat (`None`: it is gone).
    pub fn set_heartbeat(&self, node: &str, last: Option<u64>) {
        self.heartbeat_age.set(node, last);
    }

    /// Counts a refused authentication.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// The text exposition of every family, from counters kept up to date (no scan of
    /// the store per scrape).
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| Error::Metrics(e.to_string()))?;
        String::from_utf8(out).map_err(|e| Error::Metrics(e.to_string()))
    }
}

/// Why a request was refused authentication (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header, or not of that form.
    Missing,
    /// Not a token this control plane signed, or not well-formed, or not yet valid, or
    /// for another audience.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// For a tenant that does not exist.
    UnknownTenant,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
            AuthFailure::UnknownTenant => "unknown_tenant",
        }
    }
}
