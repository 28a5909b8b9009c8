//! The tenant context in a real guest: what tenant root can do (run commands, be root in
//! its namespaces) and every way around the module allow-list it must not have, each
//! tried from inside with `tenant_probe` (tests/probes) or busybox, then checked from the
//! host.

use modvisor_guest_protocol::exec::{ExecEnd, ExecReply, ExecRequest};
use modvisor_guest_protocol::{Frame, MsgType};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn exec(g: &crate::support::TestGuest, argv: &[&str], stdin: &[u8]) -> ExecReply {
    let req = ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        stdin: stdin.to_vec(),
        timeout_ms: 60_000,
        output_limit: 1 << 20,
    };
    g.client.exec(&req, T).unwrap()
}

pub(crate) fn sh(
    g: &crate::support::TestGuest,
    script: &str,
    stdin: &[u8],
) -> (i32, String, String) {
    let r = exec(g, &["sh", "-c", script], stdin);
    let code = match r.end {
        ExecEnd::Exited(c) => c,
        ExecEnd::Signaled(s) => 128 + s,
    };
    (
        code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// The probe's result for `what` (the raw syscall return: -errno when refused).
fn probe(g: &crate::support::TestGuest, what: &str, arg: &str) -> i64 {
    let (_, out, err) = sh(g, &format!("/tmp/tenant_probe {what} {arg}"), b"");
    out.trim()
        .strip_prefix(what)
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("probe {what}: {out:?} {err:?}"))
}

fn loaded(g: &crate::support::TestGuest, name: &str) -> bool {
    g.client.list(T).unwrap().iter().any(|m| m.name == name)
}

#[test]
fn tenant_root_cannot_load_modules_or_reach_the_agent() {
    let g = crate::support::boot("tenant");
    let dir = tempfile::tempdir().unwrap();

    // Tenant root: root, in the guest kernel, with busybox.
    let (code, out, _) = sh(&g, "id -u; uname -r", b"");
    assert_eq!(code, 0);
    assert_eq!(out, format!("0\n{}\n", g.kernel.release));

    // Its bounding set lacks the denied capabilities: CAP_SYS_MODULE (16), CAP_SYS_RAWIO
    // (17), CAP_SYS_PTRACE (19), CAP_SYS_BOOT (22), CAP_PERFMON (38), CAP_BPF (39); it
    // keeps CAP_SYS_ADMIN (21) and CAP_NET_ADMIN (12).
    let (_, status, _) = sh(&g, "grep -E '^Cap(Bnd|Eff|Inh)' /proc/self/status", b"");
    for line in status.lines() {
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        for bit in [16, 17, 19, 22, 38, 39] {
            assert_eq!(mask & (1 << bit), 0, "bit {bit} in {line}");
        }
        if line.starts_with("CapBnd") || line.starts_with("CapEff") {
            assert_ne!(mask & (1 << 21), 0, "CAP_SYS_ADMIN kept: {line}");
            assert_ne!(mask & (1 << 12), 0, "CAP_NET_ADMIN kept: {line}");
        }
    }

    // The usermode helpers' sets lack CAP_SYS_MODULE and CAP_SYS_ADMIN.
    let (_, bset, _) = sh(&g, "cat /proc/sys/kernel/usermodehelper/bset", b"");
    let low: u64 = bset.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(low & (1 << 16), 0, "{bset}");
    assert_eq!(low & (1 << 21), 0, "{bset}");
    // ... and tenant root cannot put them back.
    let (code, _, err) = sh(
        &g,
        "echo '4294967295 4294967295' > /proc/sys/kernel/usermodehelper/bset",
        b"",
    );
    assert_ne!(code, 0, "{err}");

    // The agent is not in the tenant's PID namespace: PID 1 there is the tenant's init.
    let (_, cmdline, _) = sh(&g, "tr '\\0' ' ' < /proc/1/cmdline", b"");
    assert!(cmdline.starts_with("modvisor-tenant-init"), "{cmdline}");
    let (_, all, _) = sh(&g, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '", b"");
    assert!(
        !all.contains("/init") && !all.contains("guest-agent"),
        "{all}"
    );

    // A Debian-signed module that is not approved, pushed into the guest by the tenant.
    let dummy = std::fs::read(g.kernel.module_path("dummy").unwrap()).unwrap();
    let (code, _, _) = sh(&g, "cat > /tmp/dummy.ko", &dummy);
    assert_eq!(code, 0);
    let probe_bin = crate::probe::tenant_probe(dir.path());
    let (code, _, _) = sh(
        &g,
        "cat > /tmp/tenant_probe && chmod +x /tmp/tenant_probe",
        &probe_bin,
    );
    assert_eq!(code, 0);

    // Direct loads: insmod, finit_module, init_module all fail with EPERM.
    let (code, _, err) = sh(&g, "insmod /tmp/dummy.ko", b"");
    assert_ne!(code, 0);
    assert!(err.contains("not permitted"), "{err}");
    assert_eq!(probe(&g, "finit", "/tmp/dummy.ko"), -1);
    assert_eq!(probe(&g, "init", "/tmp/dummy.ko"), -1);
    assert!(!loaded(&g, "dummy"));

    // Auto-loading: the tenant's own helper as the kernel's modprobe, then a request for a
    // module (`ip link add ... type dummy` asks for rtnl-link-dummy). The helper runs (it
    // leaves a mark) but cannot load anything.
    let helper = "#!/bin/sh\necho \"$@\" >> /tmp/helper-ran\nexec insmod /tmp/dummy.ko\n";
    let (code, _, err) = sh(
        &g,
        "cat > /tmp/helper && chmod +x /tmp/helper && echo /tmp/helper > /proc/sys/kernel/modprobe && cat /proc/sys/kernel/modprobe",
        helper.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = sh(&g, "ip link add x0 type dummy", b"");
    assert_ne!(code, 0, "no dummy driver may appear");
    let (_, ran, _) = sh(&g, "cat /tmp/helper-ran", b"");
    assert!(
        ran.contains("dummy"),
        "the helper was asked for the dummy driver: {ran:?}"
    );
    assert!(!loaded(&g, "dummy"));

    // The agent's memory, ptrace, BPF, perf, kexec, raw I/O: refused.
    assert_eq!(probe(&g, "ptrace", "1"), -1);
    let mem = probe(&g, "mem", "1");
    assert!(mem == -1 || mem == -13, "/proc/1/mem opened: {mem}");
    for what in ["bpf", "perf", "kexec", "iopl"] {
        assert_eq!(probe(&g, what, ""), -1, "{what}");
    }

    // The channel: tenant root can make a node for the port and write to it (that goes to
    // the host, which takes no unsealed reply), but cannot inject input (TIOCSTI).
    let before = g.client.health(T).unwrap();
    assert_eq!(probe(&g, "tiocsti", "/dev/ttyS0"), -1);
    let (code, _, err) = sh(&g, "mknod /tmp/s1 c 4 65", b"");
    assert_eq!(code, 0, "{err}");
    let ti = probe(&g, "tiocsti", "/tmp/s1");
    assert!(ti == -1 || ti == -16, "TIOCSTI into the channel: {ti}");
    let forged = [
        Frame::new(MsgType::Poweroff, 1, vec![]).encode(),
        Frame::new(MsgType::HealthReply, 2, vec![0; 32]).encode(),
    ]
    .concat();
    let (code, _, err) = sh(&g, "cat > /tmp/s1", &forged);
    assert!(code == 0 || err.contains("busy"), "{err}");
    // Still served, with a sealed answer, after all of it.
    let after = g.client.health(T).unwrap();
    assert!(after.uptime_ms > before.uptime_ms);

    // The host itself loads the same module through the agent: it was loadable all along
    // (signed by Debian); only the tenant could not.
    g.client.load("dummy", "", &dummy, T).unwrap();
    assert!(loaded(&g, "dummy"));
}
