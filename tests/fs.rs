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

/// Runs the fs guest with extra launch flags (`--mount NAME`, …).
fn fs_with(pied: &Pied, flags: &[&str], args: &[&str]) -> (bool, String) {
    let fs_wasm = guest("fs");
    let mut all = vec!["launch"];
    all.extend_from_slice(flags);
    all.extend_from_slice(&[path_str(&fs_wasm), "--"]);
    all.extend_from_slice(args);
    let out = pied.ctl(&all);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

fn mount_config(dir: &std::path::Path) -> String {
    format!(
        r#"[runtime]
allow_fs = true

[[mount]]
name = "docs"
host = "{docs}"
guest = "/docs"
tenants = ["*"]

[[mount]]
name = "home"
host = "{homes}/{{tenant}}"
guest = "/home"
mode = "rw"
tenants = ["root"]
"#,
        docs = dir.join("docs").display(),
        homes = dir.join("homes").display()
    )
}

#[test]
fn mounts_are_granted_by_name_with_their_mode_and_confined() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::create_dir_all(dir.path().join("homes/root")).unwrap();
    std::fs::write(docs.join("readme.txt"), "read me").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), docs.join("link")).unwrap();
    let pied = Pied::start_in(dir.path(), &mount_config(dir.path()));

    // Read-only: reads work, writes do not.
    let (ok, out) = fs_with(&pied, &["--mount", "docs"], &["read", "/docs/readme.txt"]);
    assert!(ok && out.contains("ok: read me"), "{out}");
    let (ok, out) = fs_with(
        &pied,
        &["--mount", "docs"],
        &["write", "/docs/new.txt", "x"],
    );
    assert!(!ok && out.contains("error:"), "{out}");
    assert!(!docs.join("new.txt").exists());

    // Read-write, per tenant ({tenant} = root here).
    let (ok, out) = fs_with(
        &pied,
        &["--mount", "home", "--mount", "docs"],
        &["write", "/home/notes.txt", "mine"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("homes/root/notes.txt")).unwrap(),
        "mine"
    );

    // No escape through `..` or a symlink that leads out of the mount.
    for attempt in [
        vec!["read", "/docs/../secret.txt"],
        vec!["read", "/docs/link"],
        vec!["read", "/home/../../secret.txt"],
        vec!["write", "/home/../docs/readme.txt", "overwritten"],
    ] {
        let (ok, out) = fs_with(&pied, &["--mount", "docs", "--mount", "home"], &attempt);
        assert!(
            !ok && out.contains("error:"),
            "{attempt:?} should fail: {out}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(docs.join("readme.txt")).unwrap(),
        "read me"
    );

    // Not granted at launch: not there.
    let (ok, out) = fs_with(&pied, &[], &["read", "/docs/readme.txt"]);
    assert!(!ok && out.contains("error:"), "{out}");

    // Unknown names and tenants outside the entry's list are refused at launch.
    let (ok, out) = fs_with(&pied, &["--mount", "nope"], &["ls", "/"]);
    assert!(!ok && out.contains("no mount named \"nope\""), "{out}");
    let fs_wasm = guest("fs");
    let out = pied.ctl_as(
        65534,
        &[
            "launch",
            "--mount",
            "home",
            path_str(&fs_wasm),
            "--",
            "ls",
            "/home",
        ],
    );
    let msg = text(&out.stderr);
    assert!(
        !out.status.success() && msg.contains("may not use mount \"home\""),
        "{msg}"
    );
    // The entry open to every tenant works for another tenant too.
    let out = pied.ctl_as(
        65534,
        &[
            "launch",
            "--mount",
            "docs",
            path_str(&fs_wasm),
            "--",
            "read",
            "/docs/readme.txt",
        ],
    );
    assert!(
        text(&out.stdout).contains("ok: read me"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_mount_entry_with_a_relative_host_path_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let pied = Pied::prepare(
        dir.path(),
        "[[mount]]\nname = \"x\"\nhost = \"relative/dir\"\nguest = \"/x\"\ntenants = [\"*\"]\n",
    );
    let out = std::process::Command::new(pied_bin())
        .arg("--config")
        .arg(&pied.config)
        .output()
        .unwrap();
    let msg = text(&out.stderr);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains("[mount] host") && msg.contains("absolute"),
        "{msg}"
    );
}

#[test]
fn scratch_quota_refuses_launches_and_kills_a_process_that_overfills() {
    let pied = Pied::start("[runtime]\nallow_fs = true\nscratch_quota_mib = 1\n");
    // 8 MiB, written slowly: the watcher kills it soon after it passes 1 MiB.
    let fs_wasm = guest("fs");
    let id = pied.launch_detached(&[
        "--fs",
        path_str(&fs_wasm),
        "--",
        "fill",
        "/scratch/big",
        &(8u64 << 20).to_string(),
    ]);
    let end = pied.wait_exit(id);
    let reason = end["state"]["Exited"]["Killed"]
        .as_str()
        .unwrap_or_else(|| panic!("{end}"));
    assert!(reason.contains("scratch quota exceeded"), "{reason}");
    let size = std::fs::metadata(pied.state.join("scratch/root/big"))
        .unwrap()
        .len();
    assert!((1 << 20) < size && size < 8 << 20, "{size}");

    // While over quota, launches with the filesystem are refused; others still run.
    let (ok, out) = fs(&pied, &["ls", "/scratch"]);
    assert!(!ok && out.contains("scratch_quota_mib"), "{out}");
    let out = pied.ctl(&["launch", path_str(&guest("hello"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Freed space: launches work again.
    std::fs::remove_file(pied.state.join("scratch/root/big")).unwrap();
    let (ok, out) = fs(&pied, &["write", "/scratch/small", "fits"]);
    assert!(ok, "{out}");
}

#[test]
fn files_written_before_a_crash_or_sigterm_are_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("homes/root")).unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    let mut pied = Pied::start_in(dir.path(), &mount_config(dir.path()));
    let fs_wasm = guest("fs");
    let wait_written = |pied: &Pied, id: u64| {
        let start = std::time::Instant::now();
        loop {
            let logs = text(&pied.ctl(&["logs", &id.to_string()]).stdout);
            if logs.contains("ok: written") {
                return;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "{logs}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // The daemon is SIGKILLed while the writer still runs.
    let a = pied.launch_detached(&[
        "--fs",
        path_str(&fs_wasm),
        "--",
        "write-and-wait",
        "/scratch/before-crash.txt",
        "crash-safe",
    ]);
    let b = pied.launch_detached(&[
        "--mount",
        "home",
        path_str(&fs_wasm),
        "--",
        "write-and-wait",
        "/home/mounted.txt",
        "also kept",
    ]);
    wait_written(&pied, a);
    wait_written(&pied, b);
    // inspect shows what each was granted.
    assert_eq!(
        pied.inspect(b)["grants"]["mounts"],
        serde_json::json!(["home"])
    );
    assert_eq!(pied.inspect(a)["fs"], true);
    let shown = text(&pied.ctl(&["inspect", &b.to_string()]).stdout);
    assert!(shown.contains("mounts:    home"), "{shown}");
    let mut child = pied.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    pied.spawn();
    let (ok, out) = fs(&pied, &["read", "/scratch/before-crash.txt"]);
    assert!(ok && out.contains("ok: crash-safe"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("homes/root/mounted.txt")).unwrap(),
        "also kept"
    );

    // SIGTERM: the daemon drains, kills the writer at the grace period, and exits.
    let c = pied.launch_detached(&[
        "--fs",
        path_str(&fs_wasm),
        "--",
        "write-and-wait",
        "/scratch/before-term.txt",
        "term-safe",
    ]);
    wait_written(&pied, c);
    assert_eq!(pied.terminate().code(), Some(0));
    pied.spawn();
    let (ok, out) = fs(&pied, &["read", "/scratch/before-term.txt"]);
    assert!(ok && out.contains("ok: term-safe"), "{out}");
}
