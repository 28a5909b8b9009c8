//! The CLI against a running control plane.

use crate::support::{modvisor, Plane};
use std::process::Output;

fn run(p: &Plane, who: &str, args: &[&str]) -> Output {
    p.cli(who, args)
}

use crate::fixtures::ok;

#[test]
fn cli_round_trip() {
    let p = Plane::start();
    let created: serde_json::Value = serde_json::from_str(&ok(run(
        &p,
        "tenant-a",
        &[
            "vm",
            "create",
            "web-1",
            "--vcpus",
            "2",
            "--memory-mib",
            "256",
            "--json",
        ],
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["spec"]["vcpus"], 2);

    let table = ok(run(&p, "tenant-a", &["vm", "list"]));
    assert!(table.lines().next().unwrap().starts_with("NAME"));
    assert!(
        table.contains("web-1") && table.contains("Pending"),
        "{table}"
    );
    assert!(!ok(run(&p, "tenant-b", &["vm", "list"])).contains("web-1"));

    // By name as well as by id.
    let stopped: serde_json::Value = serde_json::from_str(&ok(run(
        &p,
        "tenant-a",
        &["vm", "power", "web-1", "stopped", "--json"],
    )))
    .unwrap();
    assert_eq!(stopped["spec"]["power_state"], "stopped");
    assert_eq!(stopped["id"], id.as_str());
    let by_name = ok(run(&p, "tenant-a", &["vm", "get", "web-1"]));
    assert!(by_name.contains(&id), "{by_name}");
    // Another tenant's VM name is nobody's to B.
    let out = run(&p, "tenant-b", &["vm", "get", "web-1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: 404 not-found"),
        "{out:?}"
    );

    // Errors are one line on stderr with a non-zero exit.
    let out = run(&p, "tenant-b", &["vm", "get", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: 404 not-found"), "{err}");

    let out = run(&p, "tenant-a", &["vm", "create", "BAD"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400 invalid-field"));

    ok(run(&p, "tenant-a", &["vm", "delete", &id]));
    assert!(!run(&p, "tenant-a", &["vm", "get", &id]).status.success());

    let tenants = ok(run(&p, "admin", &["tenant", "list"]));
    assert!(tenants.contains("tenant-a") && tenants.contains("tenant-b"));
    ok(run(
        &p,
        "admin",
        &[
            "tenant",
            "quota",
            "tenant-b",
            "--max-vms",
            "2",
            "--max-vcpus",
            "4",
            "--max-memory-mib",
            "1024",
        ],
    ));
    assert!(ok(run(&p, "tenant-b", &["tenant", "get", "tenant-b"])).contains("0/2"));
    let events = ok(run(&p, "tenant-a", &["events"]));
    assert!(
        events.contains("vm.create") && events.contains("vm.delete"),
        "{events}"
    );

    // A module's policy: set says approve or revoke (never revokes by omission), names
    // only tenants that exist, and get reads it back.
    p.publish("dummy", &crate::support::real_module("dummy"))
        .expect(201);
    let out = run(&p, "admin", &["module", "policy", "set", "dummy"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--approve"),
        "{out:?}"
    );
    let set = ["module", "policy", "set", "dummy", "--approve", "--tenant"];
    ok(run(&p, "admin", &[&set[..], &["tenant-a"]].concat()));
    let get = ["module", "policy", "get", "dummy"];
    assert_eq!(ok(run(&p, "admin", &get)), "dummy: approved for tenant-a\n");
    let out = run(&p, "admin", &[&set[..], &["nobody"]].concat());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("400 invalid-field"),
        "{out:?}"
    );
    assert_eq!(ok(run(&p, "admin", &get)), "dummy: approved for tenant-a\n");
    ok(run(
        &p,
        "admin",
        &["module", "policy", "set", "dummy", "--revoke"],
    ));
    assert_eq!(ok(run(&p, "admin", &get)), "dummy: not approved\n");
}

#[test]
fn token_issue_and_openapi_commands() {
    let p = Plane::start();
    let dir = p.data_dir();
    let out = modvisor()
        .args([
            "token",
            "issue",
            "--role",
            "tenant",
            "--tenant",
            "tenant-b",
            "--ttl",
            "60",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let token = ok(out).trim().to_string();
    p.get(&token, "/v1/vms").expect(200);
    for bad in [
        vec!["token", "issue", "--role", "tenant"],
        vec!["token", "issue", "--role", "admin", "--tenant", "tenant-a"],
    ] {
        let out = modvisor()
            .args(&bad)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1
        );
    }
    let out = modvisor()
        .args([
            "token",
            "issue",
            "--role",
            "admin",
            "--data-dir",
            "/nonexistent/dir",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no signing key"));
    // No token file: a clear message, not a crash.
    let out = modvisor()
        .args(["vm", "list"])
        .env_remove("MODVISOR_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token"));

    let printed = ok(modvisor().arg("openapi").output().unwrap());
    let served = p
        .http
        .get(format!("{}/openapi.json", p.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(printed, served);
}

#[test]
fn a_second_up_on_a_busy_store_or_port_fails_clearly() {
    let p = Plane::start();
    let out = modvisor()
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(p.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another modvisor process"), "{err}");
    let other = tempfile::tempdir().unwrap();
    let port = p.base.trim_start_matches("http://");
    let out = modvisor()
        .args(["up", "--listen", port, "--data-dir"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listening on") && err.contains("in use"),
        "{err}"
    );
    // The first one is unharmed.
    p.get(&p.token("tenant-a"), "/v1/vms").expect(200);
}

#[test]
fn dashboard_is_served_with_a_strict_policy() {
    let p = Plane::start();
    for (path, ty) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let r = p.http.get(format!("{}{path}", p.base)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ty));
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"));
    }
    let page = p
        .http
        .get(format!("{}/", p.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("/dashboard/app.js"));
    let js = p
        .http
        .get(format!("{}/dashboard/app.js", p.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!js.contains("innerHTML"), "server data must go in as text");
}

#[test]
fn module_inspect_exit_codes() {
    let kernel = modvisor_guest::kernel::resolve(|_| {}).expect("guest kernel");
    let wg = kernel.module_path("wireguard").unwrap();
    let out = modvisor()
        .args([
            "module",
            "inspect",
            "--json",
            "--kernel-release",
            &kernel.release,
        ])
        .arg(&wg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "accepted", "{report}");
    assert_eq!(report["signature"]["status"], "verified", "{report}");
    assert_eq!(
        report["signature"]["signer"]["common_name"],
        "Build time autogenerated kernel key"
    );
    // Built for another kernel: rejected, exit 1.
    let out = modvisor()
        .args(["module", "inspect", "--kernel-release", "5.10.0-1-amd64"])
        .arg(&wg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vermagic"));
    // Garbage: rejected as malformed, never a crash.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.ko");
    std::fs::write(&junk, b"\x7fELF\x02\x01\x01garbage").unwrap();
    let out = modvisor()
        .args(["module", "inspect"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Usage errors: exit 2.
    let out = modvisor()
        .args(["module", "inspect", "/nonexistent.ko"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = modvisor()
        .args(["module", "inspect"])
        .arg(&wg)
        .args(["--trust", "/etc/hostname"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tokens_are_created_listed_and_revoked_from_the_cli() {
    let p = Plane::start();
    let out = run(
        &p,
        "admin",
        &[
            "token", "create", "--role", "tenant", "--tenant", "tenant-b", "--ttl", "600",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let token = ok(out).trim().to_string();
    let jti = stderr
        .trim()
        .strip_prefix("token id (jti) ")
        .expect("the id on stderr")
        .to_string();
    p.get(&token, "/v1/vms").expect(200);
    let mine: serde_json::Value =
        serde_json::from_str(&ok(run(&p, "tenant-b", &["token", "list", "--json"]))).unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    let table = ok(run(&p, "admin", &["token", "list", "--all"]));
    assert!(table.starts_with("JTI") && table.contains(&jti), "{table}");
    // A tenant cannot revoke another's token; its own it can.
    let refused = run(&p, "tenant-a", &["token", "revoke", &jti]);
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
    assert!(ok(run(&p, "tenant-b", &["token", "revoke", &jti])).contains(&jti));
    p.get(&token, "/v1/vms").expect(401);
}

#[test]
fn whoami_says_who_and_whether_the_control_plane_takes_it() {
    let p = Plane::start();
    let out = ok(run(&p, "tenant-a", &["whoami"]));
    assert!(
        out.starts_with("tenant-a (role tenant, tenant tenant-a), token "),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&format!("{} takes it", p.base)),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let forged = dir.path().join("forged.jwt");
    std::fs::write(&forged, "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln").unwrap();
    let out = modvisor()
        .args(["whoami"])
        .env("MODVISOR_API", &p.base)
        .env("MODVISOR_TOKEN_FILE", &forged)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.starts_with("error: 401 unauthenticated"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The stderr lines `up` writes (at info) until one mentions `until`, or 60 s pass.
fn up_log_lines(format: &str, until: &str) -> Vec<String> {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = modvisor()
        .args([
            "up",
            "--nodes",
            "0",
            "--catalog",
            "none",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--log-format", format])
        .env("MODVISOR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut lines = Vec::new();
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let done = line.contains(until);
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[test]
fn logs_are_plain_text_off_a_terminal_or_json_lines_when_asked() {
    let text = up_log_lines("text", "listening");
    assert!(text.iter().any(|l| l.contains("listening")), "{text:?}");
    assert!(
        !text.iter().any(|l| l.contains('\u{1b}')),
        "colour codes: {text:?}"
    );
    let json = up_log_lines("json", "listening");
    let line = json
        .iter()
        .find(|l| l.contains("listening"))
        .unwrap_or_else(|| panic!("{json:?}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO", "{v}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("listening"),
        "{v}"
    );
}

#[test]
fn output_forms_profiles_waits_watches_and_completion() {
    let p = Plane::start();
    ok(run(&p, "tenant-a", &["vm", "create", "w1"]));
    // The events API filters by resource and follows by sequence number.
    let a = p.token("tenant-a");
    let w1 = p.get(&a, "/v1/vms?name=w1").expect(200).body["items"][0]["id"].clone();
    let page = p
        .get(
            &a,
            &format!("/v1/events?resource=vms/{}", w1.as_str().unwrap()),
        )
        .expect(200)
        .body;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["action"], "vm.create");
    let after = items[0]["seq"].as_u64().unwrap();
    let later = p
        .get(&a, &format!("/v1/events?after_seq={after}"))
        .expect(200);
    assert!(
        later.body["items"].as_array().unwrap().is_empty(),
        "{}",
        later.body
    );
    let r = p
        .get(&a, "/v1/events?after_seq=1&page_token=AAAAAAAAAAE")
        .expect(400);
    assert_eq!(r.body["field"], "after_seq");

    // -o yaml and -o wide, before or after the subcommand.
    let y = ok(run(&p, "tenant-a", &["-o", "yaml", "vm", "get", "w1"]));
    assert!(
        y.contains("name: w1") && y.contains("phase: Pending"),
        "{y}"
    );
    let wide = ok(run(&p, "tenant-a", &["vm", "list", "-o", "wide"]));
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert!(
        header.contains(&"REASON") && header.contains(&"TENANT"),
        "{wide}"
    );
    let narrow = ok(run(&p, "tenant-a", &["vm", "list"]));
    assert!(
        !narrow.lines().next().unwrap().contains("REASON"),
        "{narrow}"
    );

    // --wait: no node runs anything here, so the wait ends at its timeout, non-zero,
    // saying where the VM stands.
    let out = run(
        &p,
        "tenant-a",
        &["vm", "create", "w2", "--wait", "--timeout", "2"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VM w2 is Running: not within 2 s; now Pending"),
        "{err}"
    );

    // A profile of the config file stands in for the environment; flags win over it.
    let config = p.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "current_profile = \"b\"\n[profiles.b]\napi = \"{}\"\ntoken_file = \"{b}\"\n[profiles.nowhere]\napi = \"http://127.0.0.1:9\"\ntoken_file = \"{b}\"\n",
            p.base,
            b = p.token_file("tenant-b").display()
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        crate::support::modvisor()
            .args(args)
            .env_remove("MODVISOR_API")
            .env_remove("MODVISOR_TOKEN_FILE")
            .env("MODVISOR_CONFIG", &config)
            .output()
            .unwrap()
    };
    let who = ok(with_config(&["whoami"]));
    assert!(who.starts_with("tenant-b "), "{who}");
    let out = with_config(&["--profile", "nowhere", "vm", "list"]);
    assert!(!out.status.success(), "{out:?}");
    let out = with_config(&["--profile", "nowhere", "--api", &p.base, "vm", "list"]);
    assert!(out.status.success(), "{out:?}");
    let out = with_config(&["--profile", "c", "vm", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no profile c"), "{err}");

    // events --follow prints what happens after it started.
    let mut follow = crate::support::modvisor()
        .args(["events", "--follow", "-o", "json"])
        .env("MODVISOR_API", &p.base)
        .env("MODVISOR_TOKEN_FILE", p.token_file("tenant-a"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    ok(run(&p, "tenant-a", &["vm", "create", "w3"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let seen = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("\"vm.create\"") && line.starts_with('{') => break line,
            Ok(_) => {}
            Err(e) => panic!("events --follow never printed w3's creation: {e}"),
        }
    };
    let e: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(e["action"], "vm.create");
    follow.kill().unwrap();
    follow.wait().unwrap();

    // Completion scripts for the usual shells.
    let bash = ok(run(&p, "tenant-a", &["completion", "bash"]));
    assert!(
        bash.contains("_modvisor") && bash.contains("describe"),
        "{bash}"
    );
    for shell in ["zsh", "fish"] {
        assert!(!ok(run(&p, "tenant-a", &["completion", shell])).is_empty());
    }
}
