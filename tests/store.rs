//! The KV store and the journal (`pied:store`) end to end: real pied, real pie-ctl, the
//! example inferlet `inferlets/kv-memory`.

mod common;

use common::*;
use serde_json::Value;

/// Runs pie-ctl; returns (success, stdout, stderr).
fn run(pied: &Pied, args: &[&str]) -> (bool, String, String) {
    let out = pied.ctl(args);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Launches detached, waits for the end; returns (id, exit code).
fn launch(pied: &Pied, args: &[&str]) -> (u64, i64) {
    let id = pied.launch_detached(args);
    let info = pied.wait_exit(id);
    let code = info["state"]["Exited"]["Code"].as_i64().unwrap_or(-1);
    (id, code)
}

/// `pie-ctl journal ID` as parsed JSON lines.
fn journal(pied: &Pied, id: u64) -> Vec<Value> {
    let (ok, out, err) = run(pied, &["journal", &id.to_string()]);
    assert!(ok, "journal {id} failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// `pie-ctl kv ls --json [args]`.
fn kv_ls(pied: &Pied, args: &[&str]) -> Value {
    let mut all = vec!["kv", "ls", "--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = run(pied, &all);
    assert!(ok, "kv ls failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn logs_of(pied: &Pied, id: u64) -> String {
    text(&pied.ctl(&["logs", &id.to_string()]).stdout)
}

#[test]
fn kv_memory_remembers_across_a_restart_and_journals_what_it_did() {
    let mut pied = pied_with_model("");
    let km = inferlet("kv-memory");
    let km = path_str(&km);
    let fact = "The cat is named Whiskers";

    let (first, code) = launch(&pied, &["--kv", km, "--", "--remember", fact]);
    assert_eq!(code, 0, "{}", logs_of(&pied, first));

    // pie-ctl kv ls / get: one key under the example's prefix, the fact as its value.
    let (ok, out, err) = run(&pied, &["kv", "ls"]);
    assert!(ok, "{err}");
    let line = out.lines().next().unwrap_or_default().to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(line.contains("kv-memory/fact/"), "{out}");
    assert!(err.contains("1 keys"), "{err}");
    let key = line.split_whitespace().nth(1).unwrap().to_string();
    let size: usize = line.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(size, fact.len());
    let (ok, out, err) = run(&pied, &["kv", "get", &key]);
    assert!(ok, "{err}");
    assert_eq!(out, fact);
    let (ok, _, err) = run(&pied, &["kv", "get", "no/such/key"]);
    assert!(!ok && err.contains("no key \"no/such/key\""), "{err}");

    // pie-ctl journal: one JSON line per record.
    let records = journal(&pied, first);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["seq"], 0);
    assert_eq!(records[0]["kind"], "remember");
    assert_eq!(records[0]["payload"]["fact"], fact);
    assert_eq!(records[0]["payload"]["key"], key.as_str());
    assert!(records[0]["unix_ms"].as_u64().unwrap() > 0);

    // The daemon restarts on the same state dir: the store is still there.
    let status = pied.terminate();
    assert!(status.success(), "{}", pied.daemon_log());
    pied.spawn();
    let listed = kv_ls(&pied, &[]);
    assert_eq!(listed["keys"][0]["key"], key.as_str(), "{listed}");
    assert_eq!(
        listed["used_bytes"].as_u64().unwrap() as usize,
        key.len() + fact.len()
    );
    assert_eq!(journal(&pied, first).len(), 1);

    // Run 2 sees the fact: it is in the prompt it journals (not judged by the model's words).
    let (second, code) = launch(
        &pied,
        &[
            "--kv",
            km,
            "--",
            "--ask",
            "What is the cat's name?",
            "--max-tokens",
            "8",
        ],
    );
    assert_eq!(code, 0, "{}", logs_of(&pied, second));
    let records = journal(&pied, second);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["kind"], "ask");
    assert_eq!(records[0]["payload"]["facts"], 1);
    let system = records[0]["payload"]["system"].as_str().unwrap();
    assert!(system.contains(fact), "{system}");
    let answer = records[0]["payload"]["answer"].as_str().unwrap();
    assert!(
        logs_of(&pied, second).contains(answer.trim()),
        "the answer is the output"
    );
}

#[test]
fn tenants_are_isolated() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run pie-ctl as another uid");
        return;
    }
    let pied = Pied::start("");
    let km = inferlet("kv-memory");
    let km = path_str(&km);

    let (mine, code) = launch(&pied, &["--kv", km, "--", "--remember", "root's secret"]);
    assert_eq!(code, 0, "{}", logs_of(&pied, mine));
    let my_key = kv_ls(&pied, &[])["keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();

    // nobody (65534) remembers its own fact and sees only its own.
    let out = pied.ctl_as(
        65534,
        &[
            "launch",
            "-d",
            "--kv",
            km,
            "--",
            "--remember",
            "nobody's note",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let their_id: u64 = text(&out.stdout).trim().parse().unwrap();
    assert_eq!(pied.wait_exit(their_id)["state"]["Exited"]["Code"], 0);
    let out = pied.ctl_as(65534, &["launch", "--kv", km, "--", "--recall"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "nobody's note");
    let out = pied.ctl_as(65534, &["kv", "ls", "--json"]);
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs["tenant"], "nobody");
    assert_eq!(theirs["keys"].as_array().unwrap().len(), 1, "{theirs}");
    assert_ne!(theirs["keys"][0]["key"], my_key.as_str());
    // The same key name is another key in another tenant.
    let out = pied.ctl_as(65534, &["kv", "get", &my_key]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no key"),
        "{}",
        text(&out.stderr)
    );
    // A non-admin may not name another tenant; an admin may.
    let out = pied.ctl_as(65534, &["kv", "get", "--tenant", "root", &my_key]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only root or the admin group"),
        "{}",
        text(&out.stderr)
    );
    let out = pied.ctl_as(65534, &["kv", "ls", "--tenant", "root"]);
    assert!(!out.status.success());
    let (ok, out, err) = run(&pied, &["kv", "get", "--tenant", "root", &my_key]);
    assert!(ok && out == "root's secret", "{err}");
    let root_view = kv_ls(&pied, &[]);
    assert_eq!(
        root_view["keys"].as_array().unwrap().len(),
        1,
        "{root_view}"
    );
    let their_view = kv_ls(&pied, &["--tenant", "nobody"]);
    assert_eq!(their_view["keys"].as_array().unwrap().len(), 1);

    // Journals: the owner and admins read them, another tenant does not.
    let out = pied.ctl_as(65534, &["journal", &mine.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("another user"),
        "{}",
        text(&out.stderr)
    );
    let out = pied.ctl_as(65534, &["journal", &their_id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nobody's note"));
    assert_eq!(
        journal(&pied, their_id)[0]["payload"]["fact"],
        "nobody's note"
    );
}

#[test]
fn without_the_grant_kv_is_refused_and_the_journal_still_works() {
    let pied = Pied::start("");
    let km = inferlet("kv-memory");
    let km = path_str(&km);
    let (ok, _, err) = run(&pied, &["launch", km, "--", "--remember", "x"]);
    assert!(!ok);
    assert!(err.contains("not granted: launch with --kv"), "{err}");
    let (id, code) = launch(&pied, &[km, "--", "--recall"]);
    assert_eq!(code, 1);
    let records = journal(&pied, id);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["kind"], "error");
    let e = records[0]["payload"]["error"].as_str().unwrap();
    assert!(e.contains("not granted: launch with --kv"), "{e}");
    // Nothing was stored.
    assert_eq!(kv_ls(&pied, &[])["keys"].as_array().unwrap().len(), 0);
    let (ok, _, err) = run(&pied, &["journal", "999"]);
    assert!(!ok && err.contains("999"), "{err}");
}

#[test]
fn limits_give_clear_errors_and_the_daemon_keeps_serving() {
    let pied = Pied::start("[store]\nmax_value_bytes = 64\nmax_tenant_bytes = 200\n");
    let km = inferlet("kv-memory");
    let km = path_str(&km);
    let big = "x".repeat(65);
    let (ok, _, err) = run(&pied, &["launch", "--kv", km, "--", "--remember", &big]);
    assert!(!ok);
    assert!(
        err.contains("larger than the limit of 64 bytes ([store] max_value_bytes)"),
        "{err}"
    );
    // Each fact takes its key (37 bytes) + 60: the third is over the 200-byte quota.
    let fact = "y".repeat(60);
    for _ in 0..2 {
        let (ok, _, err) = run(&pied, &["launch", "--kv", km, "--", "--remember", &fact]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = run(&pied, &["launch", "--kv", km, "--", "--remember", &fact]);
    assert!(!ok);
    assert!(err.contains("over its quota of 200 bytes"), "{err}");
    assert!(err.contains("max_tenant_bytes"), "{err}");
    // Still serving: status answers, forgetting frees the quota.
    assert!(run(&pied, &["status"]).0);
    let (ok, out, err) = run(&pied, &["launch", "--kv", km, "--", "--forget"]);
    assert!(ok && out.contains("forgot 2 facts"), "{err}");
    assert_eq!(kv_ls(&pied, &[])["used_bytes"], 0);
    let (ok, _, err) = run(&pied, &["launch", "--kv", km, "--", "--remember", &fact]);
    assert!(ok, "{err}");
    // A bad [store] value is refused with its key.
    let bad = config_text(&pied.dir, "[store]\nmax_value_bytes = 0\n");
    std::fs::write(&pied.config, bad).unwrap();
    let (ok, _, err) = run(&pied, &["reload"]);
    assert!(!ok && err.contains("max_value_bytes"), "{err}");
}

/// Prints what a store call costs an inferlet (no assertion on time: the disk decides).
#[test]
fn store_calls_from_an_inferlet_cost() {
    let pied = Pied::start("");
    let km = inferlet("kv-memory");
    let (ok, out, err) = run(
        &pied,
        &["launch", "--kv", path_str(&km), "--", "--bench", "200"],
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    for k in ["set_us", "get_us", "delete_us", "journal_append_us"] {
        assert!(v[k].as_f64().is_some(), "{v}");
    }
    eprintln!("store calls from an inferlet (mean µs per call): {v}");
    // The benchmark cleans up after itself.
    assert_eq!(kv_ls(&pied, &[])["used_bytes"], 0);
}

/// A write the inferlet saw succeed is on disk: the daemon killed with SIGKILL right after
/// (no drain, no shutdown) still has it at the next start.
#[test]
fn writes_survive_a_daemon_killed_with_sigkill() {
    let mut pied = Pied::start("");
    let km = inferlet("kv-memory");
    let km = path_str(&km);
    let (id, code) = launch(
        &pied,
        &["--kv", km, "--", "--remember", "kept through a crash"],
    );
    assert_eq!(code, 0, "{}", logs_of(&pied, id));
    let mut child = pied.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    pied.spawn();
    let (ok, out, err) = run(&pied, &["launch", "--kv", km, "--", "--recall"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "kept through a crash");
    let records = journal(&pied, id);
    assert_eq!(records[0]["payload"]["fact"], "kept through a crash");
}
