//! An operator's own module, before any guest: built against the guest kernel's real
//! headers (reproducibly), signed with an operator key made by `module keygen`, verified
//! by the vetting against that certificate only, and trusted through the admin API.

use crate::support::{modvisor, Plane};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/modules/sample/khttpd");

use crate::fixtures::ok;

fn run(args: &[&str]) -> Output {
    modvisor().args(args).output().unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `module keygen --name NAME --bits 2048 --key KEY --cert CERT`.
fn keygen(name: &str, key: &Path, cert: &Path) -> Output {
    run(&[
        "module",
        "keygen",
        "--name",
        name,
        "--bits",
        "2048",
        "--key",
        path_str(key),
        "--cert",
        path_str(cert),
    ])
}

/// `module sign KO --key KEY --cert CERT [--out OUT]`.
fn sign(ko: &Path, key: &Path, cert: &Path, out: Option<&Path>) -> Output {
    let mut args = vec![
        "module",
        "sign",
        path_str(ko),
        "--key",
        path_str(key),
        "--cert",
        path_str(cert),
    ];
    if let Some(out) = out {
        args.extend(["--out", path_str(out)]);
    }
    run(&args)
}

/// `module build SRC --out OUT --json`: the one module's (sha256, kernel release).
fn build(src: &Path, out: &Path) -> (String, String) {
    let text = ok(run(&[
        "module",
        "build",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    let built: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(built.as_array().unwrap().len(), 1, "{built}");
    let m = &built[0];
    assert_eq!(m["module"], "khttpd");
    (
        m["sha256"].as_str().unwrap().to_string(),
        m["kernel_release"].as_str().unwrap().to_string(),
    )
}

#[test]
fn an_operator_builds_signs_and_has_its_module_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // The key pair: the private key is 0600, and never overwritten.
    let (key, cert) = (d("operator.pem"), d("operator.crt"));
    ok(keygen("acme modules", &key, &cert));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = keygen("acme modules", &key, &cert);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));

    // Built twice, from two copies of the sources in different places: the same bytes.
    let (first, release) = build(Path::new(SAMPLE), &d("out1"));
    let copy = d("src-copy");
    std::fs::create_dir(&copy).unwrap();
    for f in ["khttpd.c", "Kbuild", "Makefile"] {
        std::fs::copy(Path::new(SAMPLE).join(f), copy.join(f)).unwrap();
    }
    let (second, _) = build(&copy, &d("out2"));
    assert_eq!(first, second, "the build is not reproducible");
    let ko = d("out1").join("khttpd.ko");

    // Unsigned: vetting refuses it. Signed with the operator key: accepted against its
    // certificate, and still refused against the guest kernel's own keys.
    let inspect = |file: &Path, trust: Option<&Path>| {
        let mut args = vec![
            "module".to_string(),
            "inspect".into(),
            s(file),
            "--kernel-release".into(),
            release.clone(),
        ];
        if let Some(t) = trust {
            args.extend(["--trust".into(), s(t)]);
        }
        modvisor().args(&args).output().unwrap()
    };
    let unsigned = inspect(&ko, Some(&cert));
    assert_eq!(unsigned.status.code(), Some(1), "{unsigned:?}");
    assert!(String::from_utf8_lossy(&unsigned.stdout).contains("not signed"));
    let signed = d("khttpd.signed.ko");
    let line = ok(sign(&ko, &key, &cert, Some(&signed)));
    assert!(line.contains("signed by CN=acme modules"), "{line}");
    let accepted = inspect(&signed, Some(&cert));
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stdout)
    );
    let by_kernel = inspect(&signed, None);
    assert_eq!(by_kernel.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&by_kernel.stdout).contains("untrusted"));
    // Signing twice is refused: sign the unsigned build.
    let twice = sign(&signed, &key, &cert, None);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("signed already"));

    // The admin trusts the certificate and names it as the module's signer.
    let p = Plane::start();
    let listed = p.cli_ok("admin", &["trust", "add", "acme", "--cert", &s(&cert)]);
    assert!(
        listed.contains("CN=acme modules") && listed.contains("rsa-2048"),
        "{listed}"
    );
    let refused = p.cli("tenant-a", &["trust", "list"]);
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("error: 403"));
    p.publish_for("khttpd", &release, true, &std::fs::read(&signed).unwrap())
        .expect(201);
    // `module policy set khttpd --approve --tenant tenant-a` with `extra` arguments.
    let policy_set = |extra: &[&str]| {
        let mut args = vec![
            "module",
            "policy",
            "set",
            "khttpd",
            "--approve",
            "--tenant",
            "tenant-a",
        ];
        args.extend_from_slice(extra);
        p.cli("admin", &args)
    };
    let nobody = policy_set(&["--signer", "nobody"]);
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("400 invalid-field"),
        "{nobody:?}"
    );
    let set = policy_set(&["--signer", "acme"]);
    assert_eq!(
        String::from_utf8_lossy(&set.stdout),
        "khttpd: approved for tenant-a; signers: acme\n",
        "{set:?}"
    );
    // A license beyond the GPL-compatible ones: accepted by name, kept with the signers,
    // taken back with `none`; one that is no license string is refused.
    let lic = policy_set(&["--license", "Proprietary"]);
    assert_eq!(
        String::from_utf8_lossy(&lic.stdout),
        "khttpd: approved for tenant-a; signers: acme; also licenses: Proprietary\n",
        "{lic:?}"
    );
    let bad = policy_set(&["--license", " padded"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("400 invalid-field"),
        "{bad:?}"
    );
    let none = policy_set(&["--license", "none"]);
    assert_eq!(
        String::from_utf8_lossy(&none.stdout),
        "khttpd: approved for tenant-a; signers: acme\n",
        "{none:?}"
    );
    // In use: not removable until the policy no longer names it.
    let in_use = p.cli("admin", &["trust", "remove", "acme"]);
    assert!(
        String::from_utf8_lossy(&in_use.stderr).contains("409"),
        "{in_use:?}"
    );
    p.cli_ok(
        "admin",
        &[
            "module", "policy", "set", "khttpd", "--revoke", "--signer", "kernel",
        ],
    );
    p.cli_ok("admin", &["trust", "remove", "acme"]);
    assert!(!p.cli_ok("admin", &["trust", "list"]).contains("acme"));
    let events = p.cli_ok("admin", &["events", "--limit", "1000"]);
    assert!(
        events.contains("trust.add") && events.contains("trust.remove"),
        "{events}"
    );
}

/// Publishes `file` as khttpd for `release` (replacing what was published).
fn publish(p: &Plane, release: &str, file: &Path) {
    p.publish_for("khttpd", release, false, &std::fs::read(file).unwrap())
        .expect(201);
}

/// The whole story on a real node: the admin trusts an operator's certificate, publishes
/// its signed khttpd and approves it for tenant A; A runs it in an `operator-modules` VM
/// with parameters; A's other VM fetches a page from it over A's network; B can neither
/// request it nor reach it; the unload stops it. Then builds that must not load (unsigned,
/// signed by a key nobody trusts) are refused with their typed reason, nothing reaching
/// the guest.
#[test]
fn the_in_kernel_handler_serves_a_tenant_network_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let keys = |name: &str| {
        let (key, cert) = (d(&format!("{name}.pem")), d(&format!("{name}.crt")));
        ok(keygen(name, &key, &cert));
        (key, cert)
    };
    let (key, cert) = keys("acme");
    let (rogue_key, rogue_cert) = keys("rogue");
    let (_, release) = build(Path::new(SAMPLE), &d("out"));
    let unsigned = d("out").join("khttpd.ko");
    let (signed, rogue) = (d("khttpd.acme.ko"), d("khttpd.rogue.ko"));
    ok(sign(&unsigned, &key, &cert, Some(&signed)));
    ok(sign(&unsigned, &rogue_key, &rogue_cert, Some(&rogue)));

    let (p, _cleanup) = Plane::with_node("opmod", 2_900_000, &["--catalog", "none"]);
    let (a, b) = (p.token("tenant-a"), p.token("tenant-b"));
    let admin = p.token("admin");
    crate::fixtures::wait_for("the node Ready", 120, || {
        let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
        nodes.to_string().contains("\"Ready\"").then_some(nodes)
    });
    p.cli_ok("admin", &["trust", "add", "acme", "--cert", &s(&cert)]);
    publish(&p, &release, &signed);
    p.cli_ok(
        "admin",
        &[
            "module",
            "policy",
            "set",
            "khttpd",
            "--approve",
            "--tenant",
            "tenant-a",
            "--signer",
            "acme",
        ],
    );

    // The kernel mode is the tenant's only with an operator-signed module approved.
    let vm = |name: &str, mode: &str| json!({"name": name, "vcpus": 1, "memory_mib": 256, "kernel_mode": mode});
    let r = p
        .post(&b, "/v1/vms", &vm("srv", "operator-modules"))
        .expect(403);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("operator-signed"),
        "{}",
        r.body
    );
    let create = |token: &str, body: Value| {
        p.post(token, "/v1/vms", &body).expect(201).body["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let cli = create(&a, vm("cli", "standard"));
    let srv = create(&a, vm("srv", "operator-modules"));
    let bvm = create(&b, vm("other", "standard"));
    for (token, id, mode) in [
        (&a, &cli, "standard"),
        (&a, &srv, "operator-modules"),
        (&b, &bvm, "standard"),
    ] {
        let v = p.wait_running(token, id);
        assert_eq!(v["spec"]["kernel_mode"], mode, "{v}");
        let v = crate::fixtures::wait_for("the boot's kernel mode reported", 60, || {
            let v = p.get(token, &format!("/v1/vms/{id}")).expect(200).body;
            (v["status"]["kernel_mode"] == mode).then_some(v)
        });
        assert!(v["status"]["module_taints"].is_null(), "{v}");
    }
    // Fixed at creation.
    let mut replaced = p.get(&a, &format!("/v1/vms/{cli}")).expect(200).body["spec"].clone();
    replaced["kernel_mode"] = json!("operator-modules");
    p.put(&a, &format!("/v1/vms/{cli}"), &replaced).expect(409);

    // Parameters: only those khttpd declares, and no quoting tricks.
    let request = |token: &str, id: &str, params: Value| {
        p.post(
            token,
            &format!("/v1/vms/{id}/modules"),
            &json!({"name": "khttpd", "params": params}),
        )
    };
    let r = request(&a, &srv, json!({"nope": "1"})).expect(400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("declares no parameter nope"),
        "{}",
        r.body
    );
    request(&a, &srv, json!({"body": "a\"b"})).expect(400);
    // B: not approved.
    request(&b, &bvm, json!({})).expect(403);

    request(
        &a,
        &srv,
        json!({"port": "8080", "body": "hello-from-kernel-space"}),
    )
    .expect(202);
    let r = crate::fixtures::request_settled(&p, &a, &srv, "khttpd", 240);
    assert_eq!(r["state"], "Loaded", "{r}");
    let v = crate::fixtures::wait_for("khttpd's taint reported", 60, || {
        let v = p.get(&a, &format!("/v1/vms/{srv}")).expect(200).body;
        v["status"]["module_taints"]["khttpd"]
            .as_str()
            .is_some()
            .then_some(v)
    });
    let taint = v["status"]["module_taints"]["khttpd"].as_str().unwrap();
    assert!(taint.contains('O') && taint.contains('E'), "{v}");

    let srv_ip = crate::dataplane::ip_of(&p, &a, &srv);
    // busybox wget's own -T crashes it here; `timeout` bounds the fetch instead.
    let fetch = format!("timeout 10 wget -q -O - http://{srv_ip}:8080/");
    let page = crate::dataplane::sh(&p, &a, &cli, &fetch);
    assert_eq!(page["stdout"], "hello-from-kernel-space", "{page}");
    // B's VM, on B's own network (the same CIDR), does not reach it.
    if crate::dataplane::ip_of(&p, &b, &bvm) != srv_ip {
        let out = crate::dataplane::sh(&p, &b, &bvm, &fetch);
        assert_ne!(
            out["exit_code"], 0,
            "B reached A's in-kernel handler: {out}"
        );
    }

    // The unload stops it.
    p.delete(&a, &format!("/v1/vms/{srv}/modules/khttpd"))
        .expect(202);
    let r = crate::fixtures::request_settled(&p, &a, &srv, "khttpd", 240);
    assert_eq!(r["state"], "Unloaded", "{r}");
    let out = crate::dataplane::sh(&p, &a, &cli, &fetch);
    assert_ne!(
        out["exit_code"], 0,
        "khttpd answers after its unload: {out}"
    );
    // The guest's own list, reported with the node's next observation, drops it too.
    let listed = |v: &Value| {
        v["status"]["guest_modules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "khttpd")
    };
    crate::fixtures::wait_for("the guest's list without khttpd", 60, || {
        let v = p.get(&a, &format!("/v1/vms/{srv}")).expect(200).body;
        (!listed(&v)).then_some(v)
    });

    // Builds that must not load: each refused with its typed reason; the guest's module
    // list never shows khttpd again.
    for (file, why) in [(&unsigned, "is not signed"), (&rogue, "untrusted key")] {
        publish(&p, &release, file);
        request(&a, &srv, json!({})).expect(202);
        let r = crate::fixtures::request_settled(&p, &a, &srv, "khttpd", 240);
        assert_eq!(r["state"], "Rejected", "{r}");
        assert!(r["reason"].as_str().unwrap().contains(why), "{r}");
        let v = p.get(&a, &format!("/v1/vms/{srv}")).expect(200).body;
        assert!(!listed(&v), "{v}");
    }
    // One built for another kernel release is refused at publish, by its vermagic.
    let r = p
        .publish_for(
            "khttpd",
            "6.1.0-0-cloud-amd64",
            true,
            &std::fs::read(&signed).unwrap(),
        )
        .expect(400);
    assert_eq!(r.body["field"], "kernel_release", "{}", r.body);
}

/// `modvisor bench handler`, short: every server answers every request (no errors), its
/// CPU per request is measured, and the ratios are printed.
#[test]
fn bench_handler_measures_both_servers_with_the_same_load() {
    let text = crate::support::bench_output(&[
        "handler",
        "--seconds",
        "2",
        "--connections",
        "2",
        "--body-bytes",
        "64",
        "--rounds",
        "1",
    ]);
    for row in [
        "in-kernel khttpd, keep-alive",
        "user-space mvhttp (epoll), keep-alive",
        "in-kernel khttpd, a connection per request",
        "user-space mvhttp, a connection per request",
        "busybox httpd (a process per connection)",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{row}: {text}"));
        let figures: Vec<f64> = line[row.len()..]
            .split_whitespace()
            .map(|w| {
                w.trim_end_matches('%')
                    .parse()
                    .unwrap_or_else(|e| panic!("{w}: {e}: {text}"))
            })
            .collect();
        // req/s, errors, p50, p99, CPU us per request, system share
        assert!(figures[0] > 0.0, "no requests: {line}");
        assert_eq!(figures[1], 0.0, "errors: {line}");
        assert!(figures[4] > 0.0, "no CPU time per request: {line}");
    }
    for ratio in [
        "keep-alive: in-kernel",
        "a connection per request: in-kernel",
    ] {
        assert!(text.contains(ratio), "{ratio}: {text}");
    }
}
