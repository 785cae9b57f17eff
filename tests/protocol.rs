//! Hostile and broken clients on the raw socket: each gets an error frame (where one can
//! be sent) and a closed connection, while other clients keep being served.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use proto::{ClientHello, ErrorCode, HelloReply, Request, RequestBody, Response, ResponseBody};

fn connect(pied: &Pied) -> UnixStream {
    let s = UnixStream::connect(&pied.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(min: u32, max: u32) -> ClientHello {
    ClientHello {
        magic: proto::MAGIC,
        min_version: min,
        max_version: max,
        client_version: "test".into(),
    }
}

fn read_hello(s: &mut UnixStream) -> HelloReply {
    let payload = proto::read_frame(s, proto::MAX_FRAME).unwrap();
    proto::decode_payload(&payload).unwrap()
}

fn handshaken(pied: &Pied) -> UnixStream {
    let mut s = connect(pied);
    proto::write_frame(
        &mut s,
        &hello(proto::MIN_PROTOCOL_VERSION, proto::PROTOCOL_VERSION),
    )
    .unwrap();
    assert!(matches!(read_hello(&mut s), HelloReply::Accepted(_)));
    s
}

fn read_response(s: &mut UnixStream) -> Response {
    let payload = proto::read_frame(s, proto::MAX_FRAME).unwrap();
    proto::decode_payload(&payload).unwrap()
}

/// The connection is closed by the daemon: a read sees end-of-file.
fn assert_closed(s: &mut UnixStream) {
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "connection should be closed");
}

#[test]
fn broken_clients_get_errors_and_others_keep_working() {
    let pied = Pied::start("");
    // A well-behaved client with a running process, used throughout.
    let sleeper = pied.launch_detached(&[path_str(&guest("sleep"))]);

    // 1. Plain text instead of a handshake.
    let mut s = connect(&pied);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    match read_hello(&mut s) {
        HelloReply::Rejected(e) => {
            assert_eq!(e.code, ErrorCode::MalformedFrame);
            assert!(e.message.contains("bad handshake"), "{}", e.message);
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    assert_closed(&mut s);

    // 2. A client from the future.
    let mut s = connect(&pied);
    proto::write_frame(&mut s, &hello(99, 120)).unwrap();
    match read_hello(&mut s) {
        HelloReply::Rejected(e) => {
            assert_eq!(e.code, ErrorCode::VersionMismatch);
            assert!(e.message.contains("99..=120"), "{}", e.message);
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    assert_closed(&mut s);

    // 3. Wrong magic.
    let mut s = connect(&pied);
    let mut h = hello(1, 1);
    h.magic = *b"NOTPIED!";
    proto::write_frame(&mut s, &h).unwrap();
    assert!(matches!(read_hello(&mut s), HelloReply::Rejected(_)));

    // 4. After the handshake: an oversized length prefix, answered before any payload.
    let mut s = handshaken(&pied);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let r = read_response(&mut s);
    match r.body {
        ResponseBody::Error(e) => {
            assert_eq!(e.code, ErrorCode::MalformedFrame);
            assert!(e.message.contains("exceeds the limit"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_closed(&mut s);

    // 5. A frame of garbage.
    let mut s = handshaken(&pied);
    s.write_all(&8u32.to_le_bytes()).unwrap();
    s.write_all(&[0xff; 8]).unwrap();
    match read_response(&mut s).body {
        ResponseBody::Error(e) => assert_eq!(e.code, ErrorCode::MalformedFrame),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_closed(&mut s);

    // 6. A truncated frame, then the client vanishes.
    let mut s = handshaken(&pied);
    s.write_all(&100u32.to_le_bytes()).unwrap();
    s.write_all(&[1, 2, 3]).unwrap();
    drop(s);

    // 7. A silent client holding a connection open does not block anyone.
    let _silent = connect(&pied);

    // Through all this the daemon served everyone else.
    let mut s = handshaken(&pied);
    proto::write_frame(
        &mut s,
        &Request {
            id: 5,
            body: RequestBody::Inspect { id: sleeper },
        },
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.id, 5);
    assert!(matches!(r.body, ResponseBody::Process(p) if p.state.is_running()));
    let out = pied.ctl(&["launch", path_str(&guest("hello"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn many_clients_in_parallel_while_one_misbehaves() {
    let pied = Pied::start("");
    let hello = guest("hello");
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let out = pied.ctl(&["launch", path_str(&hello), "--", "x"]);
                        assert!(out.status.success(), "{}", text(&out.stderr));
                        assert!(text(&out.stdout).contains("hello from pied"));
                    }
                })
            })
            .collect();
        for _ in 0..20 {
            let mut s = connect(&pied);
            let _ = s.write_all(&[0x41; 64]);
        }
        for w in workers {
            w.join().unwrap();
        }
    });
}

#[test]
fn requests_are_answered_by_id_and_unknown_ids_get_errors() {
    let pied = Pied::start("");
    let mut s = handshaken(&pied);
    proto::write_frame(
        &mut s,
        &Request {
            id: 41,
            body: RequestBody::Kill { id: 999 },
        },
    )
    .unwrap();
    proto::write_frame(
        &mut s,
        &Request {
            id: 42,
            body: RequestBody::Status,
        },
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.id, 41);
    match r.body {
        ResponseBody::Error(e) => {
            assert_eq!(e.code, ErrorCode::NotFound);
            assert!(e.message.contains("no process 999"));
        }
        other => panic!("{other:?}"),
    }
    let r = read_response(&mut s);
    assert_eq!(r.id, 42);
    assert!(matches!(r.body, ResponseBody::Status(_)));
}
