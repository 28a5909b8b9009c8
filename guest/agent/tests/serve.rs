//! The agent's serve loop against hostile and valid frames, on the host (no module is
//! loaded here: that is proven inside real guests by the node agent's tests), and its
//! `exec` with commands of this host (unconfined: the tenant context exists only in a
//! guest).

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modvisor_guest_agent::tenant::Unconfined;
use modvisor_guest_agent::{Agent, Next, ReplySink};
use modvisor_guest_protocol::exec::{ExecEnd, ExecReply, ExecRequest};
use modvisor_guest_protocol::message::{BindRequest, ErrorCode, ErrorReply, HelloReply, ListReply};
use modvisor_guest_protocol::seal::{ChannelKey, Direction};
use modvisor_guest_protocol::{Frame, FrameReader, MsgType, HEADER_LEN, MAX_PAYLOAD};
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Input delivered in small pieces, as a serial port does.
struct Trickle(Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Write for Collected {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn key() -> ChannelKey {
    ChannelKey::from_slice(&[0x5c; 32]).unwrap()
}

fn bind(id: u32) -> Vec<u8> {
    let b = BindRequest {
        key: key().as_bytes().to_vec(),
    };
    Frame::new(MsgType::Bind, id, b.encode()).encode()
}

fn sealed(t: MsgType, id: u32, seq: u64, body: &[u8]) -> Vec<u8> {
    let payload = key().seal(Direction::ToAgent, t as u8, id, seq, body);
    Frame::new(t, id, payload).encode()
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut r = FrameReader::new();
    r.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = r.next_frame() {
        out.push(f.unwrap());
    }
    out
}

/// Serves `input`; the replies sent until `expect` have come (or 20 s passed).
fn replies(input: Vec<u8>, expect: usize) -> (Vec<Frame>, Next) {
    let out = Collected::default();
    let sink = ReplySink::new(out.clone());
    let next = Agent::new(Arc::new(Unconfined))
        .serve(&mut Trickle(Cursor::new(input)), &sink)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = frames(&out.0.lock().unwrap());
        if got.len() >= expect || Instant::now() > deadline {
            return (got, next);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn error_code(f: &Frame) -> u32 {
    assert_eq!(f.msg_type, MsgType::Error as u8);
    ErrorReply::decode(&f.payload).unwrap().code
}

fn unsealed(f: &Frame, seq: u64) -> Vec<u8> {
    let (s, body) = key()
        .open(Direction::ToHost, f.msg_type, f.id, &f.payload)
        .expect("a sealed reply");
    assert_eq!(s, seq, "a reply carries its request's sequence number");
    body.to_vec()
}

#[test]
fn answers_everything_and_keeps_serving() {
    let mut corrupted = Frame::new(MsgType::Hello, 2, vec![]).encode();
    corrupted[HEADER_LEN] ^= 0x55; // the CRC
    let mut oversized = Frame::new(MsgType::Load, 3, vec![]).encode();
    oversized[12..16].copy_from_slice(&(MAX_PAYLOAD as u32 + 10).to_le_bytes());
    oversized.truncate(HEADER_LEN);
    oversized.extend(std::iter::repeat_n(0u8, 100_000));
    let input = [
        b"line noise from boot\r\n".to_vec(),
        Frame::new(MsgType::Hello, 1, vec![]).encode(),
        corrupted,
        oversized,
        Frame {
            msg_type: 0x42,
            id: 4,
            payload: vec![1, 2, 3],
        }
        .encode(),
        Frame {
            msg_type: 0x81,
            id: 5,
            payload: vec![],
        }
        .encode(),
        // Before the bind: refused, unsealed requests are not served.
        Frame::new(MsgType::List, 6, vec![]).encode(),
        bind(7),
        sealed(MsgType::Load, 8, 10, &[0xff; 3]),
        sealed(MsgType::List, 9, 11, &[]),
        sealed(MsgType::Health, 10, 12, &[]),
        // After the bind: unsealed, replayed and forged requests are refused.
        Frame::new(MsgType::List, 11, vec![]).encode(),
        sealed(MsgType::List, 12, 11, &[]),
        Frame::new(
            MsgType::List,
            13,
            ChannelKey::from_slice(&[1; 32])
                .unwrap()
                .seal(Direction::ToAgent, 0x04, 13, 99, &[]),
        )
        .encode(),
        sealed(MsgType::Poweroff, 14, 13, &[]),
        Frame::new(MsgType::Hello, 15, vec![]).encode(),
    ]
    .concat();
    let (out, next) = replies(input, 14);
    assert_eq!(next, Next::PowerOff, "stops serving only at poweroff");
    let ids: Vec<u32> = out.iter().map(|f| f.id).collect();
    assert_eq!(ids, (1..=14).collect::<Vec<u32>>());
    let hello = HelloReply::decode(&out[0].payload).unwrap();
    assert!(!hello.kernel_release.is_empty());
    assert_eq!(hello.agent_version, modvisor_guest_agent::VERSION);
    assert!(!hello.bound);
    assert_eq!(error_code(&out[1]), ErrorCode::BadChecksum as u32);
    assert_eq!(error_code(&out[2]), ErrorCode::TooLarge as u32);
    assert_eq!(error_code(&out[3]), ErrorCode::UnknownType as u32);
    assert_eq!(error_code(&out[4]), ErrorCode::UnknownType as u32);
    assert_eq!(error_code(&out[5]), ErrorCode::Unbound as u32);
    assert_eq!(out[6].msg_type, MsgType::BindReply as u8);
    unsealed(&out[6], 0);
    let body = unsealed(&out[7], 10);
    assert_eq!(out[7].msg_type, MsgType::Error as u8);
    assert_eq!(
        ErrorReply::decode(&body).unwrap().code,
        ErrorCode::BadPayload as u32
    );
    assert_eq!(out[8].msg_type, MsgType::ListReply as u8);
    ListReply::decode(&unsealed(&out[8], 11)).unwrap();
    assert_eq!(out[9].msg_type, MsgType::HealthReply as u8);
    unsealed(&out[9], 12);
    assert_eq!(
        error_code(&out[10]),
        ErrorCode::AuthFailed as u32,
        "unsealed"
    );
    assert_eq!(
        error_code(&out[11]),
        ErrorCode::AuthFailed as u32,
        "replayed"
    );
    assert_eq!(error_code(&out[12]), ErrorCode::AuthFailed as u32, "forged");
    assert_eq!(out[13].msg_type, MsgType::PoweroffReply as u8);
    unsealed(&out[13], 13);
}

#[test]
fn a_second_key_is_refused() {
    let other = BindRequest { key: vec![9; 32] };
    let input = [
        bind(1),
        Frame::new(MsgType::Bind, 2, other.encode()).encode(),
        bind(3),
        Frame::new(MsgType::Hello, 4, vec![]).encode(),
    ]
    .concat();
    let (out, _) = replies(input, 4);
    assert_eq!(out[0].msg_type, MsgType::BindReply as u8);
    assert_eq!(error_code(&out[1]), ErrorCode::AlreadyBound as u32);
    assert_eq!(
        out[2].msg_type,
        MsgType::BindReply as u8,
        "the same key again is fine"
    );
    assert!(HelloReply::decode(&out[3].payload).unwrap().bound);
}

fn exec(argv: &[&str], stdin: &[u8], timeout_ms: u32, limit: u32) -> (ExecReply, Duration) {
    let req = ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        stdin: stdin.to_vec(),
        timeout_ms,
        output_limit: limit,
    };
    let started = Instant::now();
    let (out, _) = replies(
        [bind(1), sealed(MsgType::Exec, 2, 5, &req.encode())].concat(),
        2,
    );
    let reply = out.iter().find(|f| f.id == 2).expect("an exec reply");
    assert_eq!(reply.msg_type, MsgType::ExecReply as u8, "{reply:?}");
    (
        ExecReply::decode(&unsealed(reply, 5)).unwrap(),
        started.elapsed(),
    )
}

#[test]
fn exec_runs_commands_with_stdin_env_and_exit_codes() {
    let (r, _) = exec(
        &["sh", "-c", "cat; echo \"$GREETING\" >&2; exit 3"],
        b"input",
        10_000,
        1 << 20,
    );
    assert_eq!(r.end, ExecEnd::Exited(3));
    assert_eq!(r.stdout, b"input");
    assert_eq!(r.stderr, b"hi\n");
    assert!(!r.timed_out && !r.stdout_truncated && !r.stderr_truncated);
}

#[test]
fn exec_truncates_output_at_the_limit() {
    let (r, _) = exec(&["sh", "-c", "head -c 100000 /dev/zero"], b"", 10_000, 1000);
    assert_eq!(r.end, ExecEnd::Exited(0));
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout_truncated);
}

#[test]
fn exec_kills_a_command_at_its_timeout_with_its_children() {
    let (r, took) = exec(&["sh", "-c", "sleep 30 & sleep 30"], b"", 500, 1000);
    assert!(r.timed_out);
    assert_eq!(r.end, ExecEnd::Signaled(9));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn exec_of_a_missing_program_is_an_error_reply() {
    let req = ExecRequest {
        argv: vec!["/nonexistent/program".into()],
        env: vec![],
        stdin: vec![],
        timeout_ms: 1000,
        output_limit: 10,
    };
    let (out, _) = replies(
        [bind(1), sealed(MsgType::Exec, 2, 5, &req.encode())].concat(),
        2,
    );
    let reply = out.iter().find(|f| f.id == 2).unwrap();
    assert_eq!(reply.msg_type, MsgType::Error as u8);
    let e = ErrorReply::decode(&unsealed(reply, 5)).unwrap();
    assert_eq!(e.code, ErrorCode::Spawn as u32);
    assert_eq!(e.errno, 2, "ENOENT");
}

#[test]
fn the_first_boot_script_runs_once_and_reports_how_it_ended() {
    use modvisor_guest_agent::user_data::FirstBoot;
    use modvisor_guest_protocol::user_data::ScriptState;
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("runs");
    let script = format!("echo ran >> {}; sleep 0.2; exit 4", mark.display());
    let fb = FirstBoot::default();
    assert_eq!(fb.status().state, ScriptState::NotStarted);
    let first = fb.run(script.clone(), Arc::new(Unconfined));
    assert!(matches!(
        first.state,
        ScriptState::Running | ScriptState::Exited(4)
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while fb.status().state == ScriptState::Running {
        assert!(Instant::now() < deadline, "never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = fb.status();
    assert_eq!(done.state, ScriptState::Exited(4));
    assert!(done.duration_ms >= 200, "{done:?}");
    // Asked again (a retried request, the same boot): not run again.
    assert_eq!(
        fb.run(script, Arc::new(Unconfined)).state,
        ScriptState::Exited(4)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ran\n");
}
