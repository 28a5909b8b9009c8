//! modvisor's benchmarks: each prints figures next to a peer measured in the same run.
//! The `modvisor` CLI runs them as `modvisor bench <which>`; they start the `modvisor`
//! binary they run in (its own executable) where they need separate processes.

#![forbid(unsafe_code)]

pub mod api;
pub mod exec;
pub mod flood;
pub mod handler;
pub mod idle;
pub mod isolation;
pub mod modprobe;
pub mod network;
pub mod scheduler;
pub mod up;
pub mod vmm;

use clap::Subcommand;

/// `modvisor bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Throughput and latency of the REST API from a separate load-generating process.
    Api(api::BenchApiArgs),
    /// `exec true` through the whole path next to the guest agent's own health round
    /// trip (the floor).
    Exec(exec::BenchExecArgs),
    /// One tenant floods the API; another's latency alone, under the flood held to its
    /// rate limits, and (the peer) under the same flood unlimited.
    Flood(flood::BenchFloodArgs),
    /// The in-kernel request handler (khttpd, operator-signed) next to the same response
    /// from user space in the same guest, driven from a second VM over the tenant network.
    Handler(handler::BenchHandlerArgs),
    /// A module request through the whole path next to `finit_module` in the guest.
    Modprobe(modprobe::BenchModprobeArgs),
    /// TCP throughput and RTT between two VMs of a tenant on one node and on two, next to
    /// two plain namespaces on the host.
    Network(network::BenchNetworkArgs),
    /// Placements per second through the real scheduler and store; create-to-Running.
    Scheduler(scheduler::BenchSchedulerArgs),
    /// Start time and memory overhead of our VMM next to QEMU microvm, same probe guest.
    Vmm(vmm::BenchVmmArgs),
    /// The same tiny workload as a jailed process (container), a microVM under our vmm
    /// and a QEMU guest: start latency and memory overhead side by side.
    Isolation(isolation::BenchIsolationArgs),
}

/// Runs one benchmark and prints its figures.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Api(args) => api::run(args),
        BenchCommand::Exec(args) => exec::run(args),
        BenchCommand::Flood(args) => flood::run(args),
        BenchCommand::Handler(args) => handler::run(args),
        BenchCommand::Modprobe(args) => modprobe::run(args),
        BenchCommand::Network(args) => network::run(args),
        BenchCommand::Scheduler(args) => scheduler::run(args),
        BenchCommand::Vmm(args) => vmm::run(args),
        BenchCommand::Isolation(args) => isolation::run(args),
    }
}
