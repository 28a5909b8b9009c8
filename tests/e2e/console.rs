//! The serial console through the product: a WebSocket from the tenant to the control
//! plane, relayed to the node and the hypervisor; the recent output as text; one writer
//! at a time; another tenant gets 404; a guest flooding its console for 30 s does not grow
//! the node or the control plane; `modvisor vm console`.

use crate::support::{modvisor, wait_for, Plane};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<TcpStream>;

/// Opens the console of `id` as `token` (`write`: as its writer).
fn open(p: &Plane, token: &str, id: &str, write: bool) -> Result<Socket, tungstenite::Error> {
    let base = p.base.strip_prefix("http://").unwrap();
    let url = format!("ws://{base}/v1/vms/{id}/console?write={write}");
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(base).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    tungstenite::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })
}

/// What a session receives until `until` is in it (or `secs` pass): (output, close).
fn read_until(ws: &mut Socket, until: &str, secs: u64) -> (String, Option<(u16, String)>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Binary(b)) => seen.extend_from_slice(&b),
            Ok(Message::Text(t)) => seen.extend_from_slice(t.as_bytes()),
            Ok(Message::Close(frame)) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return (
                    String::from_utf8_lossy(&seen).into_owned(),
                    close.or(Some((1005, String::new()))),
                );
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("console session broke: {e}"),
        }
        if String::from_utf8_lossy(&seen).contains(until) {
            break;
        }
    }
    (String::from_utf8_lossy(&seen).into_owned(), None)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_tenant_uses_its_vms_serial_console_and_a_flood_stays_bounded() {
    let (p, _cleanup) = Plane::with_node("console", 2_500_000, &["--catalog", "none"]);
    let (a, b) = (p.token("tenant-a"), p.token("tenant-b"));
    let id = p.create_vm(&a, "term");
    p.wait_running(&a, &id);

    // The recent output as text: the guest agent said hello on the console at boot.
    let tail = p.api(&a).console_tail(&id, 4096).unwrap();
    assert!(tail.contains("modvisor-guest-agent"), "{tail}");
    let r = p.get(&a, &format!("/v1/vms/{id}/console?tail_bytes=0"));
    assert_eq!(r.status, 400);
    let r = p.get(&a, &format!("/v1/vms/{id}/console"));
    assert_eq!(
        (r.status, r.problem_slug()),
        (400, "invalid-field"),
        "not an upgrade"
    );

    // Another tenant: 404 before any upgrade.
    match open(&p, &b, &id, false) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("B opened A's console: {:?}", other.map(|_| ())),
    }

    // The writer sees the history, types a command, reads its output.
    let mut writer = open(&p, &a, &id, true).unwrap();
    let (history, _) = read_until(&mut writer, "modvisor-guest-agent", 20);
    assert!(history.contains("modvisor-guest-agent"), "{history}");
    let nonce = std::process::id();
    let line = format!("echo hello-$((6*7))-{nonce}\n");
    // The console shell starts when the agent is bound; the first line may meet it early.
    let output = wait_for("the shell's answer", 60, || {
        writer
            .send(Message::Binary(line.clone().into_bytes().into()))
            .unwrap();
        let (out, close) = read_until(&mut writer, &format!("hello-42-{nonce}"), 5);
        assert_eq!(close, None);
        out.contains(&format!("hello-42-{nonce}"))
            .then(|| json!(out))
    });
    assert!(output.as_str().unwrap().contains("hello-42"));

    // A viewer watches the same output; a second writer is refused with a clear reason.
    let mut viewer = open(&p, &a, &id, false).unwrap();
    let mut second = open(&p, &a, &id, true).unwrap();
    let (_, close) = read_until(&mut second, "\u{0}never", 20);
    let (code, reason) = close.expect("a close frame for the second writer");
    assert_eq!(code, 4409, "{reason}");
    assert!(reason.contains("another session is writing"), "{reason}");
    writer
        .send(Message::Binary(
            format!("echo seen-by-$((1+1))-viewers-{nonce}\n")
                .into_bytes()
                .into(),
        ))
        .unwrap();
    let (seen, _) = read_until(&mut viewer, &format!("seen-by-2-viewers-{nonce}"), 30);
    assert!(
        seen.contains(&format!("seen-by-2-viewers-{nonce}")),
        "{seen}"
    );

    // A guest flooding its console (until the writer has read 1.5 MiB: the emulated
    // 16550 carries ~40 KiB/s under TCG, less on a loaded host, so the flood is measured
    // by what it carried, not by how long it ran) while one session reads nothing at
    // all: the process serving the control plane and the node (`up` holds both) stays
    // bounded.
    const FLOOD_BYTES: usize = 3 << 19;
    let pid = p.pid();
    let before = rss_kib(pid);
    let started = p.post(
        &a,
        &format!("/v1/vms/{id}/exec"),
        &json!({"argv": ["sh", "-c", "setsid sh -c 'yes 0123456789abcdefghijklmnopqrstuvwxyz > /dev/ttyS0' </dev/null >/dev/null 2>&1 &"], "timeout_s": 30}),
    );
    assert_eq!(started.expect(200).body["exit_code"], 0);
    let mut peak = before;
    let since = Instant::now();
    let mut watched = 0usize;
    while watched < FLOOD_BYTES && since.elapsed() < Duration::from_secs(240) {
        // The writer reads everything; the viewer nothing.
        let (out, _) = read_until(&mut writer, "\u{0}never", 1);
        watched += out.len();
        peak = peak.max(rss_kib(pid));
    }
    let stopped = p.post(
        &a,
        &format!("/v1/vms/{id}/exec"),
        &json!({"argv": ["sh", "-c", "kill $(pidof yes)"], "timeout_s": 30}),
    );
    assert_eq!(
        stopped.expect(200).body["exit_code"],
        0,
        "the flood ran until stopped"
    );
    eprintln!(
        "console flood: {} s, {} KiB read by the writer; RSS of up {} KiB before, {} KiB at most (+{} KiB)",
        since.elapsed().as_secs(),
        watched / 1024,
        before,
        peak,
        peak.saturating_sub(before)
    );
    assert!(
        watched >= FLOOD_BYTES,
        "the flood reached the writer: {watched} bytes in {} s",
        since.elapsed().as_secs()
    );
    assert!(
        peak.saturating_sub(before) < 16 * 1024,
        "RSS grew by {} KiB",
        peak - before
    );
    // The viewer that did not read is told what it lost, once it reads.
    let (late, close) = read_until(&mut viewer, "console output dropped", 60);
    assert_eq!(close, None);
    assert!(
        late.contains("console output dropped"),
        "{} bytes, no notice",
        late.len()
    );
    drop(viewer);
    writer.close(None).unwrap();
    drop(writer);

    // The CLI, by name: what is typed reaches the shell; Ctrl-] detaches.
    let mut cli = modvisor()
        .args(["vm", "console", "term"])
        .env("MODVISOR_API", &p.base)
        .env("MODVISOR_TOKEN_FILE", p.token_file("tenant-a"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let (mut out, seen) = (cli.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // Typed again every 10 s until the shell's answer shows (a guest slowed by other
    // tests' guests may take a while), for at most a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut typed = Instant::now() - Duration::from_secs(10);
    let answered = loop {
        if String::from_utf8_lossy(&seen.lock().unwrap()).contains("cli-12") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        if typed.elapsed() >= Duration::from_secs(10) {
            stdin.write_all(b"echo cli-$((3*4))\n").unwrap();
            typed = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stdin.write_all(&[0x1d]).unwrap();
    let out = cli.wait_with_output().unwrap();
    reader.join().unwrap();
    let stdout = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let end = stdout.len().saturating_sub(600);
    assert!(
        answered,
        "stderr: {stderr}\nstdout ends: {}",
        &stdout[stdout.floor_char_boundary(end)..]
    );
    assert!(stderr.contains("detached"), "{stderr}");

    // Sessions are in the tenant's audit trail: who, which role, how long, how they ended.
    let events = p.get(&a, "/v1/events?limit=1000").expect(200).body;
    let sessions: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "vm.console")
        .collect();
    let details: Vec<&str> = sessions
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.starts_with("writer")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with("viewer")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("another session is writing")),
        "{details:?}"
    );
}
