//! Prometheus metrics of one node agent: its VMs by phase, guest channel errors by kind,
//! module loads by outcome and their latency (vetting and delivery, on the node), and
//! heartbeats by result. The node serves them on its API to the control plane, which
//! serves them to admins and metrics tokens (`GET /v1/nodes/{name}/metrics`). Every label
//! has a bounded set of values.

use crate::modprobe::ModuleOutcome;
use modvisor_node_api::types::Phase;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Buckets (seconds) of a module load on the node.
const LOAD_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// The kinds of guest channel errors (see [`crate::channel::ChannelError::kind`]).
const CHANNEL_ERROR_KINDS: [&str; 7] = [
    "io",
    "timeout",
    "protocol",
    "closed",
    "not_attached",
    "corrupt_frame",
    "unsealed_reply",
];
/// The outcomes of a module on the node.
const LOAD_OUTCOMES: [&str; 4] = ["loaded", "already_loaded", "rejected", "failed"];

/// A metric family could not be registered or rendered.
#[derive(Debug, thiserror::Error)]
#[error("node metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The node agent's metric families.
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Registry,
    vms: IntGaugeVec,
    /// Guest channel failures by kind ([`crate::channel::AgentClient::count_errors_in`]).
    pub channel_errors: IntCounterVec,
    module_loads: IntCounterVec,
    module_load: Histogram,
    heartbeats: IntCounterVec,
}

impl NodeMetrics {
    /// Registers the metric families.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let vms = IntGaugeVec::new(
            Opts::new("modvisor_node_vms", "VMs on this node by phase"),
            &["phase"],
        )?;
        let channel_errors = IntCounterVec::new(
            Opts::new(
                "modvisor_node_guest_channel_errors_total",
                "Failed requests on guest channels and bad frames from guests, by kind",
            ),
            &["kind"],
        )?;
        let module_loads = IntCounterVec::new(
            Opts::new(
                "modvisor_node_module_loads_total",
                "Modules vetted and delivered to guests, by outcome",
            ),
            &["outcome"],
        )?;
        let module_load = Histogram::with_opts(
            HistogramOpts::new(
                "modvisor_node_module_load_duration_seconds",
                "A load request on the node: fetching, vetting and loading its closure",
            )
            .buckets(LOAD_BUCKETS.to_vec()),
        )?;
        let heartbeats = IntCounterVec::new(
            Opts::new(
                "modvisor_node_heartbeats_total",
                "Heartbeats to the control plane, by result",
            ),
            &["result"],
        )?;
        // Every series from the start (at 0), so that a rate over it is defined.
        for kind in CHANNEL_ERROR_KINDS {
            channel_errors.with_label_values(&[kind]);
        }
        for outcome in LOAD_OUTCOMES {
            module_loads.with_label_values(&[outcome]);
        }
        for result in ["ok", "failed"] {
            heartbeats.with_label_values(&[result]);
        }
        registry.register(Box::new(vms.clone()))?;
        registry.register(Box::new(channel_errors.clone()))?;
        registry.register(Box::new(module_loads.clone()))?;
        registry.register(Box::new(module_load.clone()))?;
        registry.register(Box::new(heartbeats.clone()))?;
        Ok(NodeMetrics {
            registry,
            vms,
            channel_errors,
            module_loads,
            module_load,
            heartbeats,
        })
    }

    /// Counts a load request's outcomes (one per module of its closure) and its duration.
    pub fn module_load(&self, outcomes: &[ModuleOutcome], took: Duration) {
        for o in outcomes {
            let outcome = match o {
                ModuleOutcome::Loaded { .. } => "loaded",
                ModuleOutcome::AlreadyLoaded { .. } => "already_loaded",
                ModuleOutcome::Rejected { .. } => "rejected",
                ModuleOutcome::Failed { .. } => "failed",
            };
            self.module_loads.with_label_values(&[outcome]).inc();
        }
        self.module_load.observe(took.as_secs_f64());
    }

    /// Counts a heartbeat.
    pub fn heartbeat(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.heartbeats.with_label_values(&[result]).inc();
    }

    /// The text exposition of every family, with the VMs by phase as `phases` says now.
    pub fn render(&self, phases: &[Phase]) -> Result<String, MetricsError> {
        let mut counts: BTreeMap<String, i64> = [
            Phase::Starting,
            Phase::Running,
            Phase::Stopped,
            Phase::Failed,
        ]
        .iter()
        .map(|p| (format!("{p:?}"), 0))
        .collect();
        for p in phases {
            *counts.entry(format!("{p:?}")).or_default() += 1;
        }
        self.vms.reset();
        for (phase, n) in &counts {
            self.vms.with_label_values(&[phase.as_str()]).set(*n);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_what_was_counted() {
        let m = NodeMetrics::new().unwrap();
        m.channel_errors.with_label_values(&["timeout"]).inc();
        m.heartbeat(true);
        m.heartbeat(false);
        m.module_load(
            &[ModuleOutcome::Failed {
                name: "x".into(),
                errno: 1,
                reason: "no".into(),
            }],
            Duration::from_millis(3),
        );
        let text = m
            .render(&[Phase::Running, Phase::Running, Phase::Failed])
            .unwrap();
        for line in [
            "modvisor_node_vms{phase=\"Running\"} 2",
            "modvisor_node_vms{phase=\"Failed\"} 1",
            "modvisor_node_vms{phase=\"Starting\"} 0",
            "modvisor_node_guest_channel_errors_total{kind=\"timeout\"} 1",
            "modvisor_node_guest_channel_errors_total{kind=\"unsealed_reply\"} 0",
            "modvisor_node_heartbeats_total{result=\"ok\"} 1",
            "modvisor_node_heartbeats_total{result=\"failed\"} 1",
            "modvisor_node_module_loads_total{outcome=\"failed\"} 1",
            "modvisor_node_module_load_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
