//! `modvisor vm exec NAME -- CMD ARGS...`: runs a command in a VM's guest (the tenant
//! context), prints its stdout and stderr, and exits with its code.

use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_control_plane_api::types::{ExecRequest, Vm};
use modvisor_control_plane_api::ApiClient;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// `modvisor vm exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The VM's name or id.
    pub vm: String,
    /// Seconds before the command is killed (1..=600).
    #[arg(long, default_value_t = modvisor_node_api::exec::DEFAULT_TIMEOUT_S)]
    pub timeout: u32,
    /// An environment variable for the command, NAME=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Give the command this CLI's stdin (UTF-8, up to 48 KiB); without it, its stdin is
    /// empty.
    #[arg(long)]
    pub stdin: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// The VM named `name_or_id` among the caller's (by name first, then by id). An admin
/// naming a name several tenants use is told to give the id.
pub fn find_vm(api: &ApiClient, name_or_id: &str) -> Result<Vm> {
    // A name the API would refuse (an id has upper-case hex or is too long) is an id.
    let named = match api.vms_named(name_or_id) {
        Ok(vms) => vms,
        Err(e) if e.status() == Some(400) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    match named.as_slice() {
        [vm] => return Ok(vm.clone()),
        [] => {}
        several => bail!(
            "{} VMs are named {name_or_id:?} (tenants {}): give the id",
            several.len(),
            several
                .iter()
                .map(|v| v.tenant.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    // Not a name: an id, or the API's own 404 (one line, as every error).
    Ok(api.get_vm(name_or_id)?.value)
}

/// Runs the command; the exit status to end with (its code, 128 + its signal).
pub fn exec(api: &ApiClient, json: bool, cmd: ExecArgs) -> Result<u8> {
    let vm = find_vm(api, &cmd.vm)?;
    let mut env = BTreeMap::new();
    for kv in &cmd.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected NAME=VALUE");
        };
        env.insert(k.to_string(), v.to_string());
    }
    let stdin = if cmd.stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin (it must be UTF-8 text)")?;
        Some(s)
    } else {
        None
    };
    let req = ExecRequest {
        argv: cmd.argv,
        stdin,
        timeout_s: Some(cmd.timeout),
        env,
    };
    let result = api.exec(&vm.id, &req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        std::io::stdout().write_all(result.stdout.as_bytes())?;
        std::io::stderr().write_all(result.stderr.as_bytes())?;
        if result.truncated {
            eprintln!("modvisor: output cut at 1 MiB per stream");
        }
        if result.timed_out {
            eprintln!("modvisor: killed after its timeout of {} s", cmd.timeout);
        }
    }
    Ok(match (result.exit_code, result.signal) {
        (Some(code), _) => u8::try_from(code.rem_euclid(256)).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig).clamp(0, 255)).unwrap_or(1),
        (None, None) => 1,
    })
}
