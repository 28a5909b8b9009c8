//! `modvisor_node_heartbeat_age_seconds{node}`, computed when scraped: the reconciler
//! keeps each node's last heartbeat time here (all of them after a full read of the
//! nodes, the changed ones after a pass over changes), and a scrape turns them into ages.
//! Setting every node's age each second instead cost an idle leader with 10,000 nodes
//! about 2% of a core.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const NAME: &str = "modvisor_node_heartbeat_age_seconds";
const HELP: &str = "Seconds since each node's last heartbeat (as the leader last read it)";

/// Each node's last heartbeat (unix seconds), as a collector of their ages.
#[derive(Clone)]
pub(super) struct HeartbeatAges {
    desc: Desc,
    last: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl HeartbeatAges {
    /// The collector, with no node yet.
    pub(super) fn new() -> prometheus::Result<Self> {
        Ok(HeartbeatAges {
            desc: Desc::new(
                NAME.into(),
                HELP.into(),
                vec!["node".into()],
                Default::default(),
            )?,
            last: Default::default(),
        })
    }

    /// Replaces every node's last heartbeat.
    pub(super) fn set_all(&self, last: BTreeMap<String, u64>) {
        match self.last.lock() {
            Ok(mut held) => *held = last,
            Err(_) => tracing::error!("the heartbeat metric's table is poisoned"),
        }
    }

    /// Sets one node's last heartbeat (`None`: the node is gone).
    pub(super) fn set(&self, node: &str, last: Option<u64>) {
        let Ok(mut held) = self.last.lock() else {
            tracing::error!("the heartbeat metric's table is poisoned");
            return;
        };
        match last {
            Some(t) => {
                held.insert(node.to_string(), t);
            }
            None => {
                held.remove(node);
            }
        }
    }

    /// The family as of `now` (unix seconds).
    fn family_at(&self, now: u64) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(NAME.into());
        family.set_help(HELP.into());
        family.set_field_type(MetricType::GAUGE);
        let Ok(held) = self.last.lock() else {
            tracing::error!("the heartbeat metric's table is poisoned");
            return family;
        };
        let metrics = held
            .iter()
            .map(|(node, last)| {
                let mut label = LabelPair::default();
                label.set_name("node".into());
                label.set_value(node.clone());
                let mut gauge = Gauge::default();
                gauge.set_value(now.saturating_sub(*last) as f64);
                let mut m = Metric::from_label(vec![label]);
                m.set_gauge(gauge);
                m
            })
            .collect();
        family.set_metric(metrics);
        family
    }
}

impl Collector for HeartbeatAges {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family_at(modvisor_auth::unix_now())]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ages_are_taken_at_scrape_time_and_gone_nodes_drop_out() {
        let ages = HeartbeatAges::new().unwrap();
        ages.set_all(BTreeMap::from([("n1".into(), 100), ("n2".into(), 90)]));
        ages.set("n2", Some(104));
        ages.set("n3", Some(95));
        ages.set("n1", None);
        let family = ages.family_at(105);
        let seen: Vec<(String, f64)> = family
            .get_metric()
            .iter()
            .map(|m| {
                (
                    m.get_label()[0].value().to_string(),
                    m.get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(seen, [("n2".to_string(), 1.0), ("n3".to_string(), 10.0)]);
        // A heartbeat from the future (clock skew between replicas) is age 0.
        ages.set("n3", Some(200));
        assert_eq!(
            ages.family_at(105).get_metric()[1].get_gauge().get_value(),
            0.0
        );
    }
}
