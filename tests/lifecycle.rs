//! The daemon's life: config validation, reload, SIGTERM drain, restart with state kept,
//! and tenancy between uids.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn invalid_config_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[daemon]\nsocket = \"/tmp/x.sock\"\n\n[runtime]\nmax_procesess = 3\n",
    )
    .unwrap();
    let out = std::process::Command::new(pied_bin())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("line 5") && err.contains("max_procesess"),
        "{err}"
    );
    // check-config says the same without starting.
    let out = std::process::Command::new(pied_bin())
        .args(["--config", path_str(&config), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn reload_changes_grants_keeps_processes_and_refuses_bad_configs() {
    let pied = Pied::start("");
    let sleeper = pied.launch_detached(&[path_str(&guest("sleep"))]);
    let fs_wasm = guest("fs");
    let out = pied.ctl(&["launch", "--fs", path_str(&fs_wasm), "--", "ls", "/scratch"]);
    assert!(text(&out.stderr).contains("allow_fs = false"));

    // Grant the filesystem and reload.
    std::fs::write(
        &pied.config,
        config_text(&pied.dir, "[runtime]\nallow_fs = true\n"),
    )
    .unwrap();
    let out = pied.ctl(&["reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = pied.ctl(&["launch", "--fs", path_str(&fs_wasm), "--", "ls", "/scratch"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pied.inspect(sleeper)["state"], "Running");

    // An invalid config is refused and the old one stays.
    std::fs::write(
        &pied.config,
        config_text(&pied.dir, "[runtime]\nallow_fs = maybe\n"),
    )
    .unwrap();
    let out = pied.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("old config stays in force"),
        "{}",
        text(&out.stderr)
    );
    let out = pied.ctl(&["launch", "--fs", path_str(&fs_wasm), "--", "ls", "/scratch"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // SIGHUP reloads too.
    std::fs::write(&pied.config, config_text(&pied.dir, "")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pied.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let start = Instant::now();
    loop {
        let out = pied.ctl(&["launch", "--fs", path_str(&fs_wasm), "--", "ls", "/scratch"]);
        if text(&out.stderr).contains("allow_fs = false") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pied.inspect(sleeper)["state"], "Running");
}

#[test]
fn sigterm_drains_then_kills_and_restart_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut pied = Pied::start_in(dir.path(), "");
    let hello = guest("hello");
    let done = pied.launch_detached(&[path_str(&hello), "--", "kept"]);
    pied.wait_exit(done);
    // One process finishes inside the grace period (1 s), one never does.
    let quick = pied.launch_detached(&[path_str(&guest("sleep")), "--", "300"]);
    let stuck = pied.launch_detached(&[path_str(&guest("spin"))]);

    let start = Instant::now();
    let status = pied.terminate();
    assert_eq!(status.code(), Some(0), "{}", pied.daemon_log());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!pied.socket.exists(), "socket file left behind");

    pied.spawn();
    // Program store, logs and process records survived.
    let list: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["programs", "ls", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let logs = text(&pied.ctl(&["logs", &done.to_string()]).stdout);
    assert!(logs.contains(r#"args: ["kept"]"#), "{logs}");
    assert_eq!(pied.inspect(quick)["state"]["Exited"]["Code"], 0);
    let stuck_info = pied.inspect(stuck);
    let reason = stuck_info["state"]["Exited"]["Killed"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("daemon shutdown"), "{stuck_info}");
    // Following an ended process's log after a restart ends with its exit.
    let out = pied.ctl(&["logs", "-f", &stuck.to_string()]);
    assert!(out.status.success());
    // New ids do not reuse old ones.
    let next = pied.launch_detached(&[path_str(&hello)]);
    assert!(next > stuck);
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let pied = Pied::start("");
    let out = std::process::Command::new(pied_bin())
        .args(["--config", path_str(&pied.config)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already serving"),
        "{}",
        text(&out.stderr)
    );
    assert!(pied.ctl(&["status"]).status.success());
}

#[test]
fn other_uids_see_only_their_own_processes() {
    let pied = Pied::start("");
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping the uid part: the test does not run as root");
        return;
    }
    let nobody = 65534;
    let root_proc = pied.launch_detached(&[path_str(&guest("sleep"))]);

    // Another uid does not see root's process and cannot touch it.
    let out = pied.ctl_as(nobody, &["ps", "-a", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    for cmd in ["kill", "inspect", "logs"] {
        let out = pied.ctl_as(nobody, &[cmd, &root_proc.to_string()]);
        assert!(!out.status.success(), "{cmd} should be refused");
        assert!(
            text(&out.stderr).contains("belongs to another user"),
            "{cmd}: {}",
            text(&out.stderr)
        );
    }
    let out = pied.ctl_as(nobody, &["reload"]);
    assert!(text(&out.stderr).contains("only root or the admin group"));
    let status: serde_json::Value =
        serde_json::from_slice(&pied.ctl_as(nobody, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["you"]["uid"], nobody);
    assert_eq!(status["you"]["admin"], false);

    // It can run its own programs; root (admin) sees them, with the tenant recorded.
    let wasm = pied.dir.join("hello-nobody.wasm");
    std::fs::copy(guest("hello"), &wasm).unwrap();
    let out = pied.ctl_as(nobody, &["launch", "-d", path_str(&wasm)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id: u64 = text(&out.stdout).trim().parse().unwrap();
    let info = pied.wait_exit(id);
    assert_eq!(info["owner_uid"], nobody);
    assert_eq!(pied.inspect(root_proc)["state"], "Running");
    // The program root uploaded is not visible to nobody, and vice versa nobody's own is.
    let progs: serde_json::Value =
        serde_json::from_slice(&pied.ctl_as(nobody, &["programs", "ls", "--json"]).stdout).unwrap();
    assert_eq!(progs.as_array().unwrap().len(), 1);
}
