//! A VM's phase, decided in one place: nodes observe (heartbeats, ensure replies), the
//! reconciler decides. The table in control-plane/README.md lists every move.

use crate::model::{ModuleRequest, Phase, PowerState, RequestState, UserDataState, Vm};
use crate::store::Observation;

/// The phase (and reason) a VM should take from what its node observes, or `None` when
/// nothing changes. Observations of another node (a VM that moved) and of VMs being
/// deleted are ignored; `Pending` and `Scheduled` move only by the reconciler's own
/// actions (placement, asking the node). A `Lost` VM's observations were forgotten when it
/// was lost, so one here is news from its node, back before the fencing bound: the VM
/// takes the phase its node reports.
pub fn decide_phase(vm: &Vm, observed: Option<&Observation>) -> Option<(Phase, Option<String>)> {
    let o = observed?;
    if vm.deleting || vm.status.node.as_deref() != Some(o.node.as_str()) {
        return None;
    }
    if matches!(vm.status.phase, Phase::Pending | Phase::Scheduled) {
        return None;
    }
    // A node holds a VM Starting, Running, Stopped or Failed; it never reports the
    // control plane's own phases.
    if matches!(
        o.phase,
        Phase::Pending | Phase::Scheduled | Phase::Lost | Phase::Stopping
    ) {
        return None;
    }
    if o.phase == vm.status.phase && o.reason == vm.status.reason {
        return None;
    }
    Some((o.phase, o.reason.clone()))
}

/// The first-boot script to start now, if any: the VM runs, its script has not started,
/// and every module it asked for has settled (Loaded, or Rejected or Failed: the script
/// starts either way, and may look).
pub fn user_data_due<'a>(vm: &'a Vm, requests: &[ModuleRequest]) -> Option<&'a str> {
    let pending = vm
        .status
        .user_data
        .as_ref()
        .is_some_and(|u| u.state == UserDataState::Pending);
    let settled = requests.iter().all(|r| {
        !r.want_loaded || !matches!(r.state, RequestState::Pending | RequestState::Vetting)
    });
    (vm.status.phase == Phase::Running && pending && settled && !vm.deleting)
        .then_some(vm.spec.user_data.as_deref())
        .flatten()
}

/// Whether the VM's node must be told its desired state.
pub fn needs_ensure(vm: &Vm) -> bool {
    matches!(
        (vm.status.phase, vm.spec.power_state),
        (Phase::Scheduled | Phase::Starting, _)
            | (Phase::Running, PowerState::Stopped)
            | (Phase::Stopped, PowerState::Running)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(phase: Phase, node: Option<&str>) -> Vm {
        crate::reconciler::test_vm("v1", phase, node)
    }

    fn seen(node: &str, phase: Phase, reason: Option<&str>) -> Observation {
        Observation {
            node: node.into(),
            phase,
            reason: reason.map(str::to_string),
            boot: None,
        }
    }

    #[test]
    fn an_observation_of_the_vms_node_moves_its_phase() {
        let v = vm(Phase::Starting, Some("n1"));
        assert_eq!(
            decide_phase(&v, Some(&seen("n1", Phase::Running, None))),
            Some((Phase::Running, None))
        );
        assert_eq!(
            decide_phase(&v, Some(&seen("n1", Phase::Failed, Some("OOM: x")))),
            Some((Phase::Failed, Some("OOM: x".into())))
        );
        let running = vm(Phase::Running, Some("n1"));
        assert_eq!(
            decide_phase(&running, Some(&seen("n1", Phase::Running, None))),
            None,
            "no change, no write"
        );
    }

    #[test]
    fn a_lost_vm_whose_node_reports_again_takes_the_reported_phase() {
        let v = vm(Phase::Lost, Some("n1"));
        assert_eq!(
            decide_phase(&v, Some(&seen("n1", Phase::Running, None))),
            Some((Phase::Running, None))
        );
    }

    #[test]
    fn observations_never_move_the_control_planes_own_phases() {
        for phase in [Phase::Pending, Phase::Scheduled] {
            let v = vm(phase, Some("n1"));
            assert_eq!(
                decide_phase(&v, Some(&seen("n1", Phase::Running, None))),
                None
            );
        }
        let mut deleting = vm(Phase::Running, Some("n1"));
        deleting.deleting = true;
        assert_eq!(
            decide_phase(&deleting, Some(&seen("n1", Phase::Stopped, None))),
            None
        );
    }

    #[test]
    fn another_nodes_observation_is_ignored() {
        let v = vm(Phase::Running, Some("n2"));
        assert_eq!(
            decide_phase(&v, Some(&seen("n1", Phase::Failed, None))),
            None
        );
        assert_eq!(decide_phase(&v, None), None);
    }
}
