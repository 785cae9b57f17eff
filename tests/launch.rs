//! Launching programs through pie-ctl: arguments, stdin, output, exit status, p1 modules,
//! attach, the program store.

mod common;

use common::*;

#[test]
fn hello_component_gets_args_and_nothing_else() {
    let pied = Pied::start("");
    let hello = guest("hello");
    let out = pied.ctl(&["launch", path_str(&hello), "--", "a", "b c", "--exit", "0"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("hello from pied"), "{stdout}");
    assert!(
        stdout.contains(r#"args: ["a", "b c", "--exit", "0"]"#),
        "{stdout}"
    );
    // No environment leaks into the sandbox.
    assert!(stdout.contains("env vars: 0"), "{stdout}");
    assert!(text(&out.stderr).contains("this line goes to stderr"));
}

#[test]
fn exit_status_is_passed_through() {
    let pied = Pied::start("");
    // Rust's wasip2 std reports a nonzero exit through `wasi:cli/exit.exit(err)`, which
    // carries failure but no code: pie-ctl exits 1. Core modules keep the code.
    let out = pied.ctl(&["launch", path_str(&guest("hello")), "--", "--exit", "7"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = pied.ctl(&["launch", path_str(&guest_p1("hello")), "--", "--exit", "7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn word_count_through_stdin_detached() {
    let pied = Pied::start("");
    let notes = pied.dir.join("notes.txt");
    std::fs::write(&notes, "one two three\nfour five\nsix seven\n").unwrap();
    let id = pied.launch_detached(&["--stdin", path_str(&notes), path_str(&guest("wc"))]);
    let out = pied.ctl(&["logs", &id.to_string(), "-f"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "3 7 34");
    let info = pied.wait_exit(id);
    assert_eq!(info["state"]["Exited"]["Code"], 0);
}

#[test]
fn wasip1_core_module_runs() {
    let pied = Pied::start("");
    let out = pied.ctl(&[
        "launch",
        path_str(&guest_p1("hello")),
        "--",
        "p1",
        "--exit",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("hello from pied"), "{stdout}");
    assert!(
        stdout.contains(r#"args: ["p1", "--exit", "4"]"#),
        "{stdout}"
    );
    let out = pied.ctl(&["programs", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["kind"], "Module");
}

#[test]
fn attach_feeds_stdin_and_gets_exit_status() {
    let pied = Pied::start("");
    let id = pied.launch_detached(&["-i", path_str(&guest("echo"))]);
    let out = pied.ctl_with_stdin(&["attach", &id.to_string()], b"one\ntwo\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("echo: one\necho: two\nbye"), "{stdout}");
    // The whole log, including what was printed before the attach.
    let logs = text(&pied.ctl(&["logs", &id.to_string()]).stdout);
    assert!(logs.starts_with("ready\n"), "{logs}");
}

#[test]
fn logs_tail_json_and_ps() {
    let pied = Pied::start("");
    let hello = guest("hello");
    let id = pied.launch_detached(&[path_str(&hello), "--", "x"]);
    pied.wait_exit(id);
    let out = pied.ctl(&["logs", &id.to_string(), "--tail", "1", "--json"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["kind"], "exit");
    assert_eq!(lines[0]["data"]["Code"], 0);
    // Sequence numbers are contiguous from 0.
    let all = text(&pied.ctl(&["logs", &id.to_string(), "--json"]).stdout);
    for (i, l) in all.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["seq"], i as u64);
    }
    // Ended processes show up only with --all.
    let ps: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["ps", "--json"]).stdout).unwrap();
    assert_eq!(ps.as_array().unwrap().len(), 0);
    let ps: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["ps", "-a", "--json"]).stdout).unwrap();
    assert_eq!(ps[0]["id"], id);
    assert_eq!(ps[0]["args"][0], "x");
}

#[test]
fn program_store_is_content_addressed_and_cached() {
    let pied = Pied::start("");
    let hello = guest("hello");
    let out = pied.ctl(&["programs", "add", path_str(&hello)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sha = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(sha.len(), 64);
    assert!(pied.state.join(format!("programs/{sha}.wasm")).exists());
    assert!(pied.state.join(format!("programs/{sha}.cwasm")).exists());
    // Launch by name and by sha prefix.
    assert!(pied.ctl(&["launch", "hello"]).status.success());
    assert!(pied.ctl(&["launch", &sha[..10]]).status.success());
    let list: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["programs", "ls", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["compiled"], true);
    let out = pied.ctl(&["programs", "rm", "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!pied.state.join(format!("programs/{sha}.wasm")).exists());
    let out = pied.ctl(&["launch", "hello"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no program \"hello\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn invalid_programs_are_refused_clearly() {
    let pied = Pied::start("[runtime]\nmax_program_bytes = 200000\n");
    let junk = pied.dir.join("junk.wasm");
    std::fs::write(&junk, b"#!/bin/sh\necho not wasm\n").unwrap();
    let out = pied.ctl(&["launch", path_str(&junk)]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a WebAssembly binary"),
        "{}",
        text(&out.stderr)
    );
    // Right header, broken body.
    let broken = pied.dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0\x01\xff\xff\xff").unwrap();
    let out = pied.ctl(&["launch", path_str(&broken)]);
    assert!(
        text(&out.stderr).contains("invalid program"),
        "{}",
        text(&out.stderr)
    );
    // Too large for the configured cap.
    let big = pied.dir.join("big.wasm");
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.resize(300_000, 0);
    std::fs::write(&big, bytes).unwrap();
    let out = pied.ctl(&["launch", path_str(&big)]);
    assert!(
        text(&out.stderr).contains("max_program_bytes"),
        "{}",
        text(&out.stderr)
    );
    // The daemon still serves.
    assert!(
        pied.ctl(&["launch", path_str(&guest("hello"))])
            .status
            .success()
    );
}

#[test]
fn version_and_status_json() {
    let pied = Pied::start("");
    let v: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["version", "--json"]).stdout).unwrap();
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["daemon"]["server_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["daemon"]["protocol_version"], proto::PROTOCOL_VERSION);
    let s: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(s["you"]["uid"], 0);
    assert_eq!(s["you"]["admin"], true);
    assert_eq!(s["running"], 0);
    // PIE_SOCKET picks the socket when --socket is absent.
    let out = std::process::Command::new(pie_ctl_bin())
        .arg("status")
        .env("PIE_SOCKET", &pied.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn unreachable_daemon_gives_actionable_error() {
    let out = std::process::Command::new(pie_ctl_bin())
        .args(["--socket", "/nonexistent/pied.sock", "ps"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is pied running?"), "{err}");
}
