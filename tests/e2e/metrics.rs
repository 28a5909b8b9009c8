//! The control plane's metrics say what happened: refused authentications by reason, VMs
//! by tenant and phase, scheduling decisions and reconciler passes (the module outcomes of
//! real guests are checked in `user_data.rs`).

use crate::support::{metric_value, wait_until, Plane};
use reqwest::Method;

#[test]
fn metrics_count_refusals_vms_placements_and_passes() {
    let p = Plane::start();
    let admin = p.token("admin");
    let scrape = || p.get_text(&admin, "/metrics");

    p.call(Method::GET, None, "/v1/vms", None, &[]).expect(401);
    p.call(Method::GET, Some("garbage"), "/v1/vms", None, &[])
        .expect(401);
    let expired = p.offline_token(&["--role", "tenant", "--tenant", "tenant-a", "--ttl", "1"]);
    // Past its expiry and the verifier's leeway.
    std::thread::sleep(std::time::Duration::from_secs(
        2 + modvisor_control_plane::auth::LEEWAY_SECS,
    ));
    p.get(&expired, "/v1/vms").expect(401);
    let m = scrape();
    for (reason, n) in [("missing", 1.0), ("invalid", 1.0), ("expired", 1.0)] {
        assert_eq!(
            metric_value(&m, "modvisor_auth_failures_total", &[("reason", reason)]),
            Some(n),
            "{reason}: {m}"
        );
    }

    // No node here: the VM stays Pending, and every decision says it was unschedulable.
    p.create_vm(&p.token("tenant-a"), "m1");
    wait_until("the metrics show tenant-a's Pending VM", 30, || {
        let m = scrape();
        metric_value(
            &m,
            "modvisor_vms",
            &[("tenant", "tenant-a"), ("phase", "Pending")],
        ) == Some(1.0)
            && metric_value(
                &m,
                "modvisor_vms",
                &[("tenant", "tenant-a"), ("phase", "Running")],
            ) == Some(0.0)
            && metric_value(
                &m,
                "modvisor_scheduler_placements_total",
                &[("result", "unschedulable")],
            )
            .is_some_and(|n| n >= 1.0)
    });
    let m = scrape();
    assert!(
        metric_value(&m, "modvisor_reconciler_pass_duration_seconds_count", &[])
            .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "modvisor_vms", &[("tenant", "tenant-b")]),
        None,
        "a tenant without VMs has no series: {m}"
    );
    // One replica on sled: it leads; the store's operations are timed by kind.
    assert_eq!(metric_value(&m, "modvisor_leader", &[]), Some(1.0), "{m}");
    for op in ["get", "scan", "transact"] {
        assert!(
            metric_value(
                &m,
                "modvisor_store_operation_duration_seconds_count",
                &[("op", op)]
            )
            .is_some_and(|n| n >= 1.0),
            "{op}: {m}"
        );
    }
}
