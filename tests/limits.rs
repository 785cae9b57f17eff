//! Limits and faults: deadlines, kill, memory cap, fuel, traps, the process cap. Each ends
//! only the offending process, with a clear reason; the daemon keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn assert_still_serves(pied: &Pied) {
    let out = pied.ctl(&["launch", path_str(&guest("hello"))]);
    assert!(
        out.status.success(),
        "daemon stopped serving: {}",
        text(&out.stderr)
    );
}

#[test]
fn busy_loop_is_stopped_by_its_deadline() {
    let pied = Pied::start("");
    let start = Instant::now();
    let out = pied.ctl(&["launch", "--deadline", "300ms", path_str(&guest("spin"))]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("deadline exceeded (300 ms)"),
        "{}",
        text(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_still_serves(&pied);
}

#[test]
fn kill_stops_a_busy_loop_at_once() {
    let pied = Pied::start("");
    let id = pied.launch_detached(&[path_str(&guest("spin"))]);
    // Let it get going.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pied.inspect(id)["state"], "Running");
    let start = Instant::now();
    let out = pied.ctl(&["kill", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = pied.wait_exit(id);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "kill took {:?}",
        start.elapsed()
    );
    assert!(info["state"]["Exited"]["Killed"].is_string(), "{info}");
    // A follower of the killed process gets its end and pie-ctl exits 137.
    let out = pied.ctl(&["attach", &id.to_string()]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    // Killing it again is a clear error.
    let out = pied.ctl(&["kill", &id.to_string()]);
    assert!(
        text(&out.stderr).contains("already ended"),
        "{}",
        text(&out.stderr)
    );
    assert_still_serves(&pied);
}

#[test]
fn kill_stops_a_process_blocked_in_a_host_call() {
    let pied = Pied::start("");
    let id = pied.launch_detached(&[path_str(&guest("sleep"))]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(pied.ctl(&["kill", &id.to_string()]).status.success());
    let info = pied.wait_exit(id);
    assert!(info["state"]["Exited"]["Killed"].is_string(), "{info}");
}

#[test]
fn memory_hog_is_stopped_by_its_cap() {
    let pied = Pied::start("");
    let out = pied.ctl(&["launch", "--memory", "32M", path_str(&guest("hog"))]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("memory limit exceeded (33554432 bytes)"),
        "{}",
        text(&out.stderr)
    );
    // It got close to the cap before it was stopped.
    assert!(
        text(&out.stdout).contains("16 MiB"),
        "{}",
        text(&out.stdout)
    );
    assert_still_serves(&pied);
}

#[test]
fn fuel_runs_out() {
    let pied = Pied::start("");
    let out = pied.ctl(&["launch", "--fuel", "5000000", path_str(&guest("spin"))]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("fuel exhausted (5000000 units)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn trap_ends_only_that_process() {
    let pied = Pied::start("");
    let sleeper = pied.launch_detached(&[path_str(&guest("sleep"))]);
    let out = pied.ctl(&["launch", path_str(&guest("trap"))]);
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("about to trap"));
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(pied.inspect(sleeper)["state"], "Running");
    assert_still_serves(&pied);
}

#[test]
fn limits_above_the_maximum_are_refused() {
    let pied = Pied::start(
        "[limits.max]\nmemory_mib = 64\ndeadline_ms = 60000\n[limits.default]\nmemory_mib = 32\ndeadline_ms = 1000\n",
    );
    let out = pied.ctl(&["launch", "--memory", "128M", path_str(&guest("hello"))]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("above the daemon's maximum"),
        "{}",
        text(&out.stderr)
    );
    let out = pied.ctl(&["launch", "--deadline", "0", path_str(&guest("hello"))]);
    assert!(
        text(&out.stderr).contains("deadline (ms) unlimited"),
        "{}",
        text(&out.stderr)
    );
    // The configured default deadline applies when none is asked for.
    let out = pied.ctl(&["launch", path_str(&guest("spin"))]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
}

#[test]
fn process_cap_is_enforced() {
    let pied = Pied::start("[runtime]\nmax_processes = 2\n");
    let a = pied.launch_detached(&[path_str(&guest("sleep"))]);
    let _b = pied.launch_detached(&[path_str(&guest("sleep"))]);
    let out = pied.ctl(&["launch", "-d", path_str(&guest("sleep"))]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("max_processes"),
        "{}",
        text(&out.stderr)
    );
    // A slot frees up when a process ends.
    pied.ctl(&["kill", &a.to_string()]);
    pied.wait_exit(a);
    let _c = pied.launch_detached(&[path_str(&guest("sleep"))]);
}

#[test]
fn ctrl_c_on_a_foreground_launch_kills_the_program() {
    let pied = Pied::start("");
    let child = pied
        .ctl_cmd(&["launch", path_str(&guest("spin"))])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the program runs, then interrupt pie-ctl.
    let start = Instant::now();
    loop {
        let ps: serde_json::Value =
            serde_json::from_slice(&pied.ctl(&["ps", "--json"]).stdout).unwrap();
        if ps.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "spin never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let ps: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["ps", "--json"]).stdout).unwrap();
    assert_eq!(ps.as_array().unwrap().len(), 0, "{ps}");
}
