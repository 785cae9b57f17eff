//! Tenants' scratch trees (`<state>/scratch/<tenant>`, `/scratch` in a granted process) and
//! their size quota (`[runtime] scratch_quota_mib`).
//!
//! WASI writes go straight to host files, so there is no write path to meter. The quota is
//! kept by measuring instead: a launch is refused while the tree is at or over the quota, and
//! a watcher measures it every [`WATCH_INTERVAL`] while a granted process runs and kills that
//! process once the tree is over. A process can thus overshoot by what it writes within one
//! interval; what it wrote stays (nothing is lost), and the tenant must delete files to launch
//! again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::procs::Process;

/// How often a running process' scratch tree is measured against the quota.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Bytes held by the files under `dir` (apparent sizes; symlinks not followed). A missing
/// directory holds nothing; entries that vanish while walking are skipped.
pub fn usage(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// The quota check at launch: `Err` says how full the tree is.
pub fn check_launch(dir: &Path, quota_bytes: u64, tenant: &str) -> Result<(), String> {
    let used = usage(dir);
    if used >= quota_bytes {
        return Err(format!(
            "tenant {tenant:?}'s scratch tree holds {} and its quota is {} \
             ([runtime] scratch_quota_mib); delete files from it to launch with --fs",
            mib(used),
            mib(quota_bytes)
        ));
    }
    Ok(())
}

/// Measures `dir` while `process` runs and kills it once the tree is over quota. Ends with
/// the process.
pub fn watch(dir: PathBuf, quota_bytes: u64, process: Arc<Process>) {
    tokio::spawn(async move {
        let control = &process.control;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = control.killed() => return,
                _ = tick.tick() => {}
            }
            if !process.is_running() {
                return;
            }
            let d = dir.clone();
            let used = match tokio::task::spawn_blocking(move || usage(&d)).await {
                Ok(used) => used,
                Err(_) => return,
            };
            if used > quota_bytes {
                control.kill(&format!(
                    "scratch quota exceeded: the tenant's tree holds {}, quota {}",
                    mib(used),
                    mib(quota_bytes)
                ));
                return;
            }
        }
    });
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_nested_files_and_not_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
        std::fs::write(dir.path().join("d/e/b"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        let used = usage(dir.path());
        // The symlink itself counts as its (short) target path, never what it points to.
        assert!((1024..1024 + 64).contains(&used), "{used}");
        assert_eq!(usage(&dir.path().join("missing")), 0);
        assert!(check_launch(dir.path(), 2048, "t").is_ok());
        let e = check_launch(dir.path(), 1000, "t").unwrap_err();
        assert!(e.contains("scratch_quota_mib"), "{e}");
    }
}
