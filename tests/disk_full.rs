//! A full disk under the state dir: launches and uploads fail with a clear error, a running
//! process's output keeps flowing to followers (from memory, with a notice), and the daemon
//! keeps serving. Needs root to mount a small tmpfs; skips itself (saying so) otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` until writes fail.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn full_disk_gives_clear_errors_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(&dir.path().join("state"), "8M") else {
        eprintln!("skipping: cannot mount a tmpfs here (not root?)");
        return;
    };
    let pied = Pied::start_in(dir.path(), "");
    let echo = pied.launch_detached(&["-i", path_str(&guest("echo"))]);
    // Let it print its first line while there is space, so the failure comes with the
    // output the attach below sees.
    let start = std::time::Instant::now();
    while !text(&pied.ctl(&["logs", &echo.to_string()]).stdout).contains("ready") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "echo never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fill(&pied.state);

    // The running process's output still reaches its follower, with a notice.
    // A long line: the log file needs new blocks for it, and there are none.
    let mut input = vec![b'x'; 20_000];
    input.extend_from_slice(b"\nstill here\n");
    let out = pied.ctl_with_stdin(&["attach", &echo.to_string()], &input);
    assert!(
        out.status.success(),
        "{:?} {} {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("echo: still here"),
        "{} / {} / {}",
        text(&out.stdout),
        pied.inspect(echo),
        text(&pied.ctl(&["logs", &echo.to_string()]).stdout)
    );
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        text(&out.stderr)
    );

    // New launches and uploads are refused with the reason.
    let out = pied.ctl(&["launch", path_str(&guest("hello"))]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        text(&out.stderr)
    );
    let programs: Vec<_> = std::fs::read_dir(pied.state.join("programs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(programs.is_empty(), "temp files left behind: {programs:?}");

    // Space comes back: everything works again.
    std::fs::remove_file(pied.state.join("filler")).unwrap();
    let out = pied.ctl(&["launch", path_str(&guest("hello"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(pied.ctl(&["status"]).status.success());
}
