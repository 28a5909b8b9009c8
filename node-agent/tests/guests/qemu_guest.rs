//! Real guests under the qemu driver: Debian's cloud kernel, our agent as PID 1.

use modvisor_guest_protocol::message::{ErrorCode, ErrorReply};
use modvisor_guest_protocol::{Frame, MsgType, HEADER_LEN, MAX_PAYLOAD};
use modvisor_node_agent::channel::ChannelError;
use modvisor_node_agent::driver::GuestState;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The agent's answer to a raw frame of ours with `id` (replies to hellos that timed out
/// while the guest booted may come first).
fn reply_to(g: &crate::support::TestGuest, id: u32) -> Frame {
    loop {
        match g.client.read_frame(T).unwrap() {
            Ok(f) if f.id == id => return f,
            _ => continue,
        }
    }
}

#[test]
fn agent_survives_hostile_frames_and_powers_off() {
    let mut g = crate::support::boot("hostile");
    // A corrupted frame, an unknown type and an oversized header: each gets an error reply.
    let mut corrupted = Frame::new(MsgType::List, 900, vec![]).encode();
    corrupted[HEADER_LEN] ^= 0xff;
    g.client.send_raw(&corrupted).unwrap();
    let f = reply_to(&g, 900);
    assert_eq!((f.id, f.msg_type), (900, MsgType::Error as u8));
    assert_eq!(
        ErrorReply::decode(&f.payload).unwrap().code,
        ErrorCode::BadChecksum as u32
    );

    g.client
        .send_raw(
            &Frame {
                msg_type: 0x33,
                id: 901,
                payload: vec![1, 2],
            }
            .encode(),
        )
        .unwrap();
    let f = reply_to(&g, 901);
    assert_eq!(
        ErrorReply::decode(&f.payload).unwrap().code,
        ErrorCode::UnknownType as u32
    );

    let mut big = Frame::new(MsgType::Load, 902, vec![]).encode();
    big[12..16].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
    big.truncate(HEADER_LEN);
    g.client.send_raw(&big).unwrap();
    let f = reply_to(&g, 902);
    assert_eq!(
        ErrorReply::decode(&f.payload).unwrap().code,
        ErrorCode::TooLarge as u32
    );
    // Whatever the oversized frame's body was, the agent skips it as garbage.
    g.client.send_raw(&[0x5a; 4096]).unwrap();

    // Requests not sealed with this boot's key: refused, never served.
    let forged = modvisor_guest_protocol::seal::ChannelKey::from_slice(&[7; 32]).unwrap();
    for (id, payload) in [
        (903, vec![]),
        (
            904,
            forged.seal(
                modvisor_guest_protocol::seal::Direction::ToAgent,
                MsgType::Poweroff as u8,
                904,
                u64::MAX,
                &[],
            ),
        ),
    ] {
        g.client
            .send_raw(&Frame::new(MsgType::Poweroff, id, payload).encode())
            .unwrap();
        let f = reply_to(&g, id);
        assert_eq!(f.id, id);
        assert_eq!(
            ErrorReply::decode(&f.payload).unwrap().code,
            ErrorCode::AuthFailed as u32
        );
    }

    // Garbage bytes, then a normal request: still served.
    g.client.send_raw(b"\x00\xffMVG garbage MVGA\x09").unwrap();
    let health = g.client.health(T).unwrap();
    assert!(health.bad_frames >= 5, "{health:?}");
    assert!(g.client.list(T).is_ok());

    g.client.poweroff(T).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while g.guest.status() == GuestState::Running {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest did not power off"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(g.guest.status(), GuestState::Exited);
}

#[test]
fn raw_load_of_a_signed_module_and_an_unsigned_copy() {
    let mut g = crate::support::boot("rawload");
    let path = g.kernel.module_path("tcp_bbr").expect("tcp_bbr.ko");
    let image = std::fs::read(&path).unwrap();
    let t0 = std::time::Instant::now();
    g.client.load("tcp_bbr", "", &image, T).unwrap();
    eprintln!(
        "tcp_bbr ({} bytes) loaded over the channel in {:?}",
        image.len(),
        t0.elapsed()
    );
    let list = g.client.list(T).unwrap();
    assert!(list.iter().any(|m| m.name == "tcp_bbr"), "{list:?}");
    // Loading it again: EEXIST from the guest kernel.
    match g.client.load("tcp_bbr", "", &image, T) {
        Err(ChannelError::Agent { errno, .. }) => assert_eq!(errno, 17),
        other => panic!("{other:?}"),
    }
    g.client.unload("tcp_bbr", T).unwrap();
    assert!(!g
        .client
        .list(T)
        .unwrap()
        .iter()
        .any(|m| m.name == "tcp_bbr"));

    // The same module with its signature stripped: the guest kernel refuses it.
    let stripped = crate::support::strip_signature(&image);
    match g.client.load("tcp_bbr", "", &stripped, T) {
        Err(ChannelError::Agent { errno, message, .. }) => {
            assert_eq!(errno, 129, "EKEYREJECTED expected: {message}");
        }
        other => panic!("an unsigned module must be refused: {other:?}"),
    }
    g.guest.stop(Duration::from_secs(5));
}
