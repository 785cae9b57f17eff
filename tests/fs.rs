//! Filesystem grants: the tenant's scratch tree at /scratch when allowed and asked for,
//! nothing otherwise, and no way out of it.

mod common;

use common::*;

fn fs(pied: &Pied, args: &[&str]) -> (bool, String) {
    let fs_wasm = guest("fs");
    let mut all = vec!["launch", "--fs", path_str(&fs_wasm), "--"];
    all.extend_from_slice(args);
    let out = pied.ctl(&all);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn scratch_is_granted_persistent_and_confined() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[runtime]\nallow_fs = true\n";
    let mut pied = Pied::start_in(dir.path(), extra);
    let (ok, out) = fs(&pied, &["write", "/scratch/notes.txt", "remember me"]);
    assert!(ok, "{out}");
    let host = pied.state.join("scratch/root/notes.txt");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "remember me");

    // Escapes: parent dirs, absolute paths elsewhere, a symlink pointing out.
    std::fs::write(pied.state.join("scratch/secret.txt"), "other tenant's").unwrap();
    std::os::unix::fs::symlink("/etc", pied.state.join("scratch/root/etc-link")).unwrap();
    for attempt in [
        vec!["read", "/scratch/../secret.txt"],
        vec!["read", "/scratch/../../programs"],
        vec!["read", "/etc/passwd"],
        vec!["read", "/scratch/etc-link/passwd"],
        vec!["write", "/scratch/../escape.txt", "x"],
        vec!["write", "/tmp/escape.txt", "x"],
    ] {
        let (ok, out) = fs(&pied, &attempt);
        assert!(!ok, "{attempt:?} should fail: {out}");
        assert!(out.contains("error:"), "{attempt:?}: {out}");
    }
    assert!(!pied.state.join("escape.txt").exists());
    assert!(!pied.state.join("scratch/escape.txt").exists());

    // Files persist across runs and daemon restarts.
    assert_eq!(pied.terminate().code(), Some(0));
    pied.spawn();
    let (ok, out) = fs(&pied, &["read", "/scratch/notes.txt"]);
    assert!(ok && out.contains("ok: remember me"), "{out}");
}

#[test]
fn fs_is_refused_when_the_config_disallows_it() {
    let pied = Pied::start("");
    let (ok, out) = fs(&pied, &["ls", "/scratch"]);
    assert!(!ok);
    assert!(out.contains("allow_fs = false"), "{out}");
}

#[test]
fn without_the_grant_there_is_no_filesystem() {
    let pied = Pied::start("[runtime]\nallow_fs = true\n");
    let out = pied.ctl(&[
        "launch",
        path_str(&guest("fs")),
        "--",
        "write",
        "/scratch/x",
        "y",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("error:"),
        "{}",
        text(&out.stdout)
    );
    assert!(!pied.state.join("scratch/root/x").exists());
}
