//! `jail-probe`: tiny workloads run inside a jail by the jailer's tests and by
//! `modvisor bench isolation`.
//!
//! - `id`: prints what the process sees (pid, uid, gid, hostname, pids in `/proc`, the
//!   root directory) and which writes succeed, as `key=value` lines.
//! - `forkbomb`: every process forks until fork fails; the first prints how far it got.
//! - `hog MIB`: allocates and touches MIB MiB, 16 MiB at a time.
//! - `socket unix|inet`: opens a socket of that family.
//! - `sleep SECS`, `true`: as in coreutils.

use std::io::Write;

fn writable(path: &str) -> bool {
    std::fs::write(path, b"x").is_ok()
}

fn list(dir: &str) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join(",")
}

fn id() {
    // SAFETY: plain getters.
    let (pid, uid, gid) = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let pids: Vec<String> = list("/proc")
        .split(',')
        .filter(|s| s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty())
        .map(str::to_string)
        .collect();
    println!("pid={pid}");
    println!("uid={uid}");
    println!("gid={gid}");
    println!("hostname={}", host.trim());
    println!("procs={}", pids.join(","));
    println!("root={}", list("/"));
    println!("write_root={}", writable("/x"));
    println!("write_usr={}", writable("/usr/x"));
    println!("write_tmp={}", writable("/tmp/x"));
    println!("write_run={}", writable("/run/vm/x"));
    // SAFETY: prctl(PR_GET_NO_NEW_PRIVS) only reads a flag.
    let no_new_privs = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    println!("no_new_privs={no_new_privs}");
    let net = list("/proc/net/dev_snmp6");
    println!("netdevs={net}");
}

fn forkbomb() {
    let mut forks = 0u64;
    let me = std::process::id();
    loop {
        // SAFETY: the child only loops on fork and pauses.
        match unsafe { libc::fork() } {
            0 => forks = 0,
            n if n > 0 => forks += 1,
            _ => {
                let e = std::io::Error::last_os_error();
                if std::process::id() == me {
                    println!("forks={forks} error={e}");
                    let _ = std::io::stdout().flush();
                }
                loop {
                    // SAFETY: pause has no memory effects.
                    unsafe { libc::pause() };
                }
            }
        }
    }
}

fn hog(mib: usize) {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib.div_ceil(16) {
        held.push(vec![i as u8 | 1; 16 << 20]);
        println!("held={}", (i + 1) * 16);
        let _ = std::io::stdout().flush();
    }
    println!("survived");
}

fn socket(family: &str) -> i32 {
    let f = if family == "inet" {
        libc::AF_INET
    } else {
        libc::AF_UNIX
    };
    // SAFETY: socket(2) returns a descriptor or -1.
    let fd = unsafe { libc::socket(f, libc::SOCK_STREAM, 0) };
    println!("socket={fd}");
    i32::from(fd < 0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let code = match arg(0) {
        "id" => {
            id();
            0
        }
        "forkbomb" => {
            forkbomb();
            0
        }
        "hog" => {
            hog(arg(1).parse().unwrap_or(64));
            0
        }
        "socket" => socket(arg(1)),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(arg(1).parse().unwrap_or(60)));
            0
        }
        "true" => 0,
        other => {
            eprintln!("jail-probe: unknown mode {other:?} (id, forkbomb, hog MIB, socket unix|inet, sleep SECS, true)");
            2
        }
    };
    std::process::exit(code);
}
