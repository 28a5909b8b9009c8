//! `modvisor node ...`: the nodes, as the admin sees them: list, show, cordon, uncordon,
//! and drain (which says what it will stop first, and acts only when told yes).

use crate::client::ApiArgs;
use crate::table::render;
use anyhow::{bail, Result};
use clap::Subcommand;
use modvisor_control_plane_api::types::{Node, NodeState, Vm};
use std::io::{BufRead, IsTerminal, Write};

/// `modvisor node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes.
    List,
    /// Show one node, with what is placed on it.
    Get {
        /// Node name.
        name: String,
    },
    /// The node agent's own metrics (Prometheus text; admin or metrics token).
    Metrics {
        /// Node name.
        name: String,
    },
    /// Place no new VM on the node (its VMs keep running).
    Cordon {
        /// Node name.
        name: String,
    },
    /// Place VMs on the node again.
    Uncordon {
        /// Node name.
        name: String,
    },
    /// Cordon the node and recreate its VMs elsewhere (they reboot; their modules load
    /// again). Says what it will stop and asks, unless `--yes`.
    Drain {
        /// Node name.
        name: String,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
    },
}

fn rows(nodes: &[Node]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                match n.state {
                    NodeState::Ready => "Ready".into(),
                    NodeState::NotReady => "NotReady".into(),
                },
                if n.cordoned { "yes" } else { "no" }.into(),
                format!("{}/{}", n.allocated.vcpus, n.capacity.vcpus),
                format!("{}/{}", n.allocated.memory_mib, n.capacity.memory_mib),
                n.driver.clone(),
                n.last_heartbeat.clone(),
            ]
        })
        .collect();
    render(
        &[
            "NAME",
            "STATE",
            "CORDONED",
            "VCPUS",
            "MEMORY_MIB",
            "DRIVER",
            "LAST_HEARTBEAT",
        ],
        &rows,
    )
}

/// What draining `name` does, in words: the VMs it stops and where they can go.
fn drain_plan(name: &str, on_it: &[Vm], nodes: &[Node]) -> String {
    let elsewhere = nodes
        .iter()
        .filter(|n| n.name != name && n.state == NodeState::Ready && !n.cordoned)
        .count();
    let mut plan = format!(
        "draining {name} stops {} VM(s) and recreates them elsewhere (they reboot; their modules load again)",
        on_it.len()
    );
    for vm in on_it {
        plan.push_str(&format!("\n  {} {} ({})", vm.id, vm.spec.name, vm.tenant));
    }
    if elsewhere == 0 && !on_it.is_empty() {
        plan.push_str("\nno other Ready, uncordoned node can take them: they will wait Pending");
    }
    plan
}

/// Runs a `node` subcommand.
pub fn node(args: &ApiArgs, cmd: NodeCommand) -> Result<()> {
    let api = args.client()?;
    let shown = match cmd {
        NodeCommand::List => {
            let all = api.list_nodes()?;
            return crate::client::print(args, &all[..], |n, _| rows(n));
        }
        NodeCommand::Get { name } => {
            let detail = api.get_node(&name)?;
            return crate::client::print(args, &detail, |d, _| rows(std::slice::from_ref(&d.node)));
        }
        NodeCommand::Metrics { name } => {
            print!("{}", api.node_metrics(&name)?);
            return Ok(());
        }
        NodeCommand::Cordon { name } => api.node_action(&name, "cordon")?,
        NodeCommand::Uncordon { name } => api.node_action(&name, "uncordon")?,
        NodeCommand::Drain { name, yes } => {
            // The node first: a name that is not one is its 404, before anything else.
            api.get_node(&name)?;
            let on_it: Vec<Vm> = api
                .list_vms(1000)?
                .into_iter()
                .filter(|v| v.status.node.as_deref() == Some(name.as_str()) && !v.deleting)
                .collect();
            let plan = drain_plan(&name, &on_it, &api.list_nodes()?);
            eprintln!("{plan}");
            if !yes && !on_it.is_empty() {
                if !std::io::stdin().is_terminal() {
                    bail!(
                        "not draining {name}: it would stop {} VM(s); pass --yes",
                        on_it.len()
                    );
                }
                eprint!("Drain {name}? [y/N] ");
                std::io::stderr().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not draining {name}");
                }
            }
            api.node_action(&name, "drain")?
        }
    };
    crate::client::print(args, &shown, |n, _| rows(std::slice::from_ref(n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use modvisor_control_plane_api::types::{Phase, VmSpec, VmStatus};

    fn node(name: &str, state: NodeState, cordoned: bool) -> Node {
        let json = serde_json::json!({
            "name": name, "address": "https://127.0.0.1:1",
            "capacity": {"vcpus": 4, "memory_mib": 4096},
            "allocated": {"vcpus": 0, "memory_mib": 0},
            "driver": "qemu", "hardware_virtualization": false,
            "kernel_release": "6.1.0-1-cloud-amd64", "state": state,
            "cordoned": cordoned, "last_heartbeat": "now", "last_heartbeat_unix": 0,
            "registered_at": "then",
        });
        serde_json::from_value(json).unwrap()
    }

    fn vm(name: &str) -> Vm {
        Vm {
            id: format!("id-{name}"),
            tenant: "tenant-a".into(),
            spec: VmSpec {
                name: name.into(),
                kernel_mode: Default::default(),
                vcpus: 1,
                memory_mib: 256,
                modules: Vec::new(),
                power_state: Default::default(),
                user_data: None,
                network: None,
            },
            status: VmStatus::new(Phase::Running, Some("n1".into()), None),
            generation: 1,
            created_at: "t".into(),
            updated_at: "t".into(),
            deleting: false,
        }
    }

    #[test]
    fn a_drain_says_what_it_stops_and_whether_anything_can_take_it() {
        let alone = [node("n1", NodeState::Ready, false)];
        let plan = drain_plan("n1", &[vm("web"), vm("db")], &alone);
        assert!(plan.starts_with("draining n1 stops 2 VM(s)"), "{plan}");
        assert!(plan.contains("id-web web (tenant-a)"), "{plan}");
        assert!(plan.contains("will wait Pending"), "{plan}");
        let more = [
            node("n1", NodeState::Ready, false),
            node("n2", NodeState::Ready, false),
        ];
        assert!(!drain_plan("n1", &[vm("web")], &more).contains("Pending"));
        let unusable = [
            node("n1", NodeState::Ready, false),
            node("n2", NodeState::NotReady, false),
            node("n3", NodeState::Ready, true),
        ];
        assert!(drain_plan("n1", &[vm("web")], &unusable).contains("Pending"));
    }
}
