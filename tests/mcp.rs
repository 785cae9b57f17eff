//! MCP end to end: real pied supervising the `mcp-demo` stdio server (tools/mcp-demo), real
//! pie-ctl, the `mcp-tool` example inferlet (inferlets/mcp-tool) on the default model.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The demo server, built with the workspace (`cargo build --release --workspace`).
fn demo_bin() -> PathBuf {
    let p = bin_dir().join("mcp-demo");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        p.display()
    );
    p
}

/// `[[mcp]]` tables: `demo` (add, a resource, a prompt), `testing` (also crash and sleep;
/// each start appends a line with its pid to `marker`), `broken` (a command that does not
/// exist).
fn servers(marker: &Path) -> String {
    let demo = demo_bin();
    format!(
        "[[mcp]]\nname = \"demo\"\ncommand = \"{demo}\"\n\n\
         [[mcp]]\nname = \"testing\"\ncommand = \"{demo}\"\n\
         args = [\"--test-tools\", \"--marker\", \"{marker}\"]\ntimeout_ms = 2000\n\n\
         [[mcp]]\nname = \"broken\"\ncommand = \"/nonexistent/mcp-server\"\n",
        demo = demo.display(),
        marker = marker.display()
    )
}

/// Runs mcp-tool in the foreground with `launch_args` before the program and `args` after;
/// returns (success, stdout, stderr, seconds it took).
fn tool(pied: &Pied, launch_args: &[&str], args: &[&str]) -> (bool, String, String, f64) {
    let wasm = inferlet("mcp-tool");
    let mut all = vec!["launch"];
    all.extend_from_slice(launch_args);
    all.push(path_str(&wasm));
    all.push("--");
    all.extend_from_slice(args);
    let t = Instant::now();
    let out = pied.ctl(&all);
    (
        out.status.success(),
        text(&out.stdout),
        text(&out.stderr),
        t.elapsed().as_secs_f64(),
    )
}

/// The JSON record an mcp-tool run printed last.
fn record(out: &str) -> Value {
    let last = out.trim().lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn starts(marker: &Path) -> Vec<i32> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start ")?.parse().ok())
        .collect()
}

#[test]
fn tools_resources_prompts_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("starts");
    let pied = pied_with_model(&servers(&marker));

    // A launch may be granted only configured servers.
    let (ok, _, err, _) = tool(&pied, &["--mcp", "unknown"], &[]);
    assert!(!ok);
    assert!(err.contains("unknown") && err.contains("demo"), "{err}");

    // Nothing granted: none available, and connecting to a configured server is refused.
    let (ok, _, err, _) = tool(&pied, &[], &[]);
    assert!(!ok);
    assert!(err.contains("no MCP server is granted"), "{err}");
    let (ok, _, err, _) = tool(&pied, &["--mcp", "demo"], &["--server", "testing"]);
    assert!(!ok);
    assert!(
        err.contains("not granted") && err.contains("testing"),
        "{err}"
    );

    // Tools, resources, prompts.
    let (ok, out, err, _) = tool(
        &pied,
        &["--mcp", "demo"],
        &["--call", "add", "--args", r#"{"a":2,"b":3.5}"#],
    );
    assert!(ok, "{err}");
    let r = record(&out);
    assert_eq!(r["result"]["structuredContent"]["sum"], 5.5, "{r}");
    assert_eq!(r["result"]["content"][0]["text"], "5.5", "{r}");
    let (ok, out, err, _) = tool(&pied, &["--mcp", "demo"], &["--read", "demo://greeting"]);
    assert!(ok, "{err}");
    assert_eq!(
        record(&out)["contents"][0]["text"],
        "Hello from the mcp-demo server!"
    );
    let (ok, out, err, _) = tool(
        &pied,
        &["--mcp", "demo"],
        &["--get-prompt", "greet", "--args", r#"{"name":"Ada"}"#],
    );
    assert!(ok, "{err}");
    assert_eq!(
        record(&out)["messages"][0]["content"]["text"],
        "Please greet Ada warmly."
    );
    // A server's JSON-RPC error comes back as such.
    let (ok, _, err, _) = tool(
        &pied,
        &["--mcp", "demo"],
        &["--read", "demo://nothing-here"],
    );
    assert!(!ok);
    assert!(err.contains("no resource"), "{err}");

    // The model picks a listed tool and its arguments; the call goes through MCP.
    let (ok, out, err, secs) = tool(&pied, &["--mcp", "demo"], &[]);
    assert!(ok, "{err}\n{out}");
    let r = record(&out);
    println!("model-picked call: {} ({secs:.1} s)", r["call"]);
    let offered: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(offered, ["add"]);
    assert!(
        offered.contains(&r["call"]["name"].as_str().unwrap()),
        "{r}"
    );
    assert!(r["call"]["arguments"].is_object(), "{r}");
    assert!(r["result"]["content"].is_array(), "{r}");

    // A server that cannot start fails calls fast, naming it.
    let (ok, _, err, secs) = tool(
        &pied,
        &["--mcp", "broken"],
        &["--call", "add", "--args", "{}"],
    );
    assert!(!ok);
    assert!(
        err.contains("\"broken\"") && err.contains("not running"),
        "{err}"
    );
    assert!(secs < 10.0, "took {secs} s");

    // The server's stderr goes to pied's log, with its name.
    let log = pied.daemon_log();
    assert!(
        log.contains("mcp=demo") && log.contains("mcp-demo: serving on stdio"),
        "{log}"
    );
}

#[test]
fn crash_restart_timeout_and_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("starts");
    let mut pied = Pied::start(&servers(&marker));
    let testing = ["--mcp", "testing"];
    let add = [
        "--server",
        "testing",
        "--call",
        "add",
        "--args",
        r#"{"a":1,"b":1}"#,
    ];

    let (ok, out, err, _) = tool(&pied, &testing, &add);
    assert!(ok, "{err}");
    assert_eq!(record(&out)["result"]["structuredContent"]["sum"], 2.0);
    assert_eq!(starts(&marker).len(), 1);

    // The server dies during the call: the caller gets a clear error at once.
    let (ok, _, err, secs) = tool(&pied, &testing, &["--server", "testing", "--call", "crash"]);
    assert!(!ok);
    assert!(
        err.contains("\"testing\"")
            && (err.contains("went down") || err.contains("connection lost")),
        "{err}"
    );
    assert!(secs < 5.0, "took {secs} s");
    println!("crash: the caller's error came after {secs:.2} s (launch included)");

    // pied restarts it; a later call succeeds.
    let t = Instant::now();
    loop {
        let (ok, out, err, _) = tool(&pied, &testing, &add);
        if ok {
            assert_eq!(record(&out)["result"]["structuredContent"]["sum"], 2.0);
            break;
        }
        assert!(
            err.contains("not running") || err.contains("starting"),
            "{err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no restart: {err}\n{}",
            pied.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(starts(&marker).len(), 2, "{}", pied.daemon_log());
    println!(
        "restart: a call succeeded {:.2} s after the crash's error",
        t.elapsed().as_secs_f64()
    );

    // `pie-ctl status` shows each supervisor: up after a restart, and why one is down.
    let out = pied.ctl(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mcp = status["mcp"].as_array().unwrap();
    let by_name = |n: &str| mcp.iter().find(|m| m["name"] == n).unwrap().clone();
    assert_eq!(by_name("testing")["state"], "up", "{status}");
    assert_eq!(by_name("testing")["connects"], 2, "{status}");
    let broken = by_name("broken");
    assert!(
        broken["state"].as_str().unwrap().starts_with("down: "),
        "{broken}"
    );
    assert_eq!(broken["connects"], 0);
    let shown = text(&pied.ctl(&["status"]).stdout);
    assert!(shown.contains("mcp:         testing ("), "{shown}");

    // A call past timeout_ms (2 s) fails with a timeout; the connection stays usable.
    let (ok, _, err, secs) = tool(
        &pied,
        &testing,
        &[
            "--server",
            "testing",
            "--call",
            "sleep",
            "--args",
            r#"{"ms":6000}"#,
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("did not answer tools/call within 2000 ms"),
        "{err}"
    );
    assert!((1.5..5.5).contains(&secs), "took {secs} s");
    println!("timeout: a 6 s call failed after {secs:.2} s (timeout_ms = 2000, launch included)");

    // While one process waits on a slow call, another's calls go through.
    let wasm = inferlet("mcp-tool");
    let slow = pied.launch_detached(&[
        "--mcp",
        "testing",
        path_str(&wasm),
        "--",
        "--server",
        "testing",
        "--call",
        "sleep",
        "--args",
        r#"{"ms":1500}"#,
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let (ok, _, err, secs) = tool(&pied, &testing, &add);
    assert!(ok, "{err}");
    assert!(
        secs < 1.2,
        "the quick call waited for the slow one ({secs} s)"
    );
    println!("concurrency: an add call took {secs:.2} s while another process waited on sleep");
    assert_eq!(pied.inspect(slow)["state"], "Running");
    assert_eq!(
        pied.wait_exit(slow)["state"],
        serde_json::json!({"Exited": {"Code": 0}})
    );
    assert_eq!(starts(&marker).len(), 2, "the timeout must not restart it");

    // Shutdown ends the servers.
    let pids = starts(&marker);
    assert!(pied.terminate().success());
    let t = Instant::now();
    // Alive: /proc/PID exists and is not a zombie waiting for its reaper.
    let alive = |p: &i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    };
    while pids.iter().any(alive) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "an MCP server outlived pied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn streamable_http_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _server = Child(
        std::process::Command::new(demo_bin())
            .args(["--http", &addr])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "mcp-demo --http did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pied = Pied::start(&format!(
        "[[mcp]]\nname = \"web\"\nurl = \"http://{addr}/mcp\"\ntimeout_ms = 5000\n"
    ));
    let web = ["--mcp", "web"];
    let (ok, out, err, _) = tool(
        &pied,
        &web,
        &["--call", "add", "--args", r#"{"a":40,"b":2}"#],
    );
    assert!(ok, "{err}\n{}", pied.daemon_log());
    assert_eq!(record(&out)["result"]["structuredContent"]["sum"], 42.0);
    let (ok, out, err, _) = tool(&pied, &web, &["--read", "demo://greeting"]);
    assert!(ok, "{err}");
    assert_eq!(
        record(&out)["contents"][0]["text"],
        "Hello from the mcp-demo server!"
    );
    let (ok, out, err, _) = tool(
        &pied,
        &web,
        &["--get-prompt", "greet", "--args", r#"{"name":"Lin"}"#],
    );
    assert!(ok, "{err}");
    assert_eq!(
        record(&out)["messages"][0]["content"]["text"],
        "Please greet Lin warmly."
    );
}
