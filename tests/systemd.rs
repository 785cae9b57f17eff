//! systemd integration without systemd as PID 1: a fake notify socket receives pied's
//! sd_notify messages, and systemd-socket-activate hands it a listening socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// Collects notify datagrams until one contains `want` (or panics after 10 s).
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    while !seen
        .iter()
        .any(|m| m.lines().any(|l| l == want || l.starts_with(want)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {want} in {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn notify_ready_status_watchdog_reload_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut pied = Pied::prepare(dir.path(), "");
    pied.env = vec![
        ("NOTIFY_SOCKET".into(), notify_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "200000".into()),
    ];
    // systemd names the watched pid; a shell that execs pied knows it beforehand.
    pied.wrapper = vec![
        "sh".into(),
        "-c".into(),
        r#"WATCHDOG_PID=$$ exec "$0" "$@""#.into(),
    ];
    pied.spawn();
    let mut seen = Vec::new();
    wait_for(&notify, &mut seen, "READY=1");
    wait_for(&notify, &mut seen, "STATUS=serving on");
    wait_for(&notify, &mut seen, "WATCHDOG=1");

    seen.clear();
    assert!(pied.ctl(&["reload"]).status.success());
    wait_for(&notify, &mut seen, "RELOADING=1");
    wait_for(&notify, &mut seen, "READY=1");
    let reloading = seen.iter().position(|m| m.contains("RELOADING=1")).unwrap();
    let ready = seen.iter().rposition(|m| m.contains("READY=1")).unwrap();
    assert!(reloading <= ready, "{seen:?}");

    seen.clear();
    assert_eq!(pied.terminate().code(), Some(0));
    wait_for(&notify, &mut seen, "STOPPING=1");
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut pied = Pied::prepare(dir.path(), "");
    let socket = pied.socket.display().to_string();
    pied.wrapper = vec!["systemd-socket-activate".into(), "-l".into(), socket];
    pied.spawn();
    let out = pied.ctl(&["launch", path_str(&guest("hello")), "--", "activated"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#"args: ["activated"]"#));
    assert!(
        pied.daemon_log().contains("activated=true"),
        "{}",
        pied.daemon_log()
    );
    assert_eq!(pied.terminate().code(), Some(0));
}
