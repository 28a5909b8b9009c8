//! Prometheus metrics: requests and latencies by route and status, VMs by phase.

use crate::error::{Error, Result};
use crate::model::Phase;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The control plane's metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    vms: IntGaugeVec,
}

impl Metrics {
    /// Registers the metric families.
    pub fn new() -> Result<Self> {
        let err = |e: prometheus::Error| Error::Metrics(e.to_string());
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "modvisor_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )
        .map_err(err)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "modvisor_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["method", "route"],
        )
        .map_err(err)?;
        let vms =
            IntGaugeVec::new(Opts::new("modvisor_vms", "VMs by phase"), &["phase"]).map_err(err)?;
        registry.register(Box::new(requests.clone())).map_err(err)?;
        registry.register(Box::new(latency.clone())).map_err(err)?;
        registry.register(Box::new(vms.clone())).map_err(err)?;
        let metrics = Metrics {
            registry,
            requests,
            latency,
            vms,
        };
        metrics.set_vms_by_phase(&BTreeMap::new());
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

    /// Sets the VMs-by-phase gauges (the reconciler does, from each pass's read of every
    /// VM); phases absent from `vms_by_phase` are 0.
    pub fn set_vms_by_phase(&self, vms_by_phase: &BTreeMap<Phase, u64>) {
        for phase in Phase::ALL {
            let n = vms_by_phase.get(&phase).copied().unwrap_or(0);
            self.vms
                .with_label_values(&[&format!("{phase:?}")])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
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
