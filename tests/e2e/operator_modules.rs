//! An operator's own module, before any guest: built against the guest kernel's real
//! headers (reproducibly), signed with an operator key made by `module keygen`, verified
//! by the vetting against that certificate only, and trusted through the admin API.

use crate::support::{modvisor, Plane};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/modules/sample/khttpd");

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run(args: &[&str]) -> Output {
    modvisor().args(args).output().unwrap()
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
    let keygen = [
        "module",
        "keygen",
        "--name",
        "acme modules",
        "--bits",
        "2048",
        "--key",
    ];
    ok(run(
        &[&keygen[..], &[&s(&key), "--cert", &s(&cert)]].concat()
    ));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = run(&[&keygen[..], &[&s(&key), "--cert", &s(&cert)]].concat());
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
    let line = ok(run(&[
        "module",
        "sign",
        &s(&ko),
        "--key",
        &s(&key),
        "--cert",
        &s(&cert),
        "--out",
        &s(&signed),
    ]));
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
    let twice = run(&[
        "module",
        "sign",
        &s(&signed),
        "--key",
        &s(&key),
        "--cert",
        &s(&cert),
    ]);
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
    let nobody = p.cli(
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
            "nobody",
        ],
    );
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("400 invalid-field"),
        "{nobody:?}"
    );
    let set = p.cli_ok(
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
    assert_eq!(set, "khttpd: approved for tenant-a; signers: acme\n");
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
