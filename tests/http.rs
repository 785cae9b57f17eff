//! Outbound HTTP (`wasi:http`): the `[http]` allow-list, `--allow-http` narrowing it,
//! private-address refusal, timeouts and per-process caps, end to end against a small
//! HTTP/1.1 server on 127.0.0.1 (loopback only, hand-written responses, bounded in time).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What the server saw: (method, path, body).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

struct Server {
    port: u16,
    seen: Seen,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves on 127.0.0.1 until dropped (or two minutes at most):
    ///   /hello       200 "hello from the test server"
    ///   /echo        200 with the request body
    ///   /redirect    302 to http://other.invalid/hello (a host no test grants)
    ///   /slow        nothing for 3 s, then 200
    ///   /slow-body   200 head and 5 bytes, then nothing for 3 s
    ///   /big         200 with 150000 bytes
    ///   /page        200 with a small HTML page
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Seen::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(conn, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { port, seen, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen_paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p, _)| p.clone())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, seen: Seen) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    seen.lock()
        .unwrap()
        .push((method.clone(), path.clone(), body.clone()));
    let mut conn = conn;
    let respond = |conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body);
    };
    match path.as_str() {
        "/hello" => respond(&mut conn, "200 OK", "", b"hello from the test server"),
        "/echo" => respond(&mut conn, "200 OK", "", &body),
        "/redirect" => respond(
            &mut conn,
            "302 Found",
            "Location: http://other.invalid/hello\r\n",
            b"",
        ),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            respond(&mut conn, "200 OK", "", b"too late");
        }
        "/slow-body" => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst");
            std::thread::sleep(Duration::from_secs(3));
            let _ = conn.write_all(b"later");
        }
        "/big" => respond(&mut conn, "200 OK", "", &vec![b'x'; 150_000]),
        "/page" => respond(
            &mut conn,
            "200 OK",
            "Content-Type: text/html\r\n",
            b"<html><head><title>Otters</title><style>p{}</style></head><body><h1>Sea otters</h1>\
              <p>Sea otters hold hands while they sleep so that they do not drift apart. \
              They eat sea urchins and use stones as tools.</p></body></html>",
        ),
        _ => respond(&mut conn, "404 Not Found", "", b"no such page"),
    }
}

/// A daemon whose config allows the server's port on 127.0.0.1 with `private = true`,
/// and 127.0.0.1 on any port without it.
fn daemon(server: &Server, caps: &str) -> Pied {
    Pied::start(&format!(
        "[http]\nallow = [\"127.0.0.1\", {{ host = \"127.0.0.1\", port = {}, scheme = \"http\", private = true }}]\n{caps}",
        server.port
    ))
}

/// Runs the http guest in the foreground: (exit ok, stdout + stderr).
fn http(pied: &Pied, grants: &[&str], args: &[&str]) -> (bool, String) {
    let wasm = guest("http");
    let mut all = vec!["launch"];
    for g in grants {
        all.extend_from_slice(&["--allow-http", g]);
    }
    all.extend_from_slice(&[path_str(&wasm), "--"]);
    all.extend_from_slice(args);
    let out = pied.ctl(&all);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn granted_requests_work_and_everything_else_is_refused() {
    let server = Server::start();
    let pied = daemon(
        &server,
        "max_requests = 20\nmax_response_bytes = 100000\nmax_concurrent = 2\n",
    );
    let grant = format!("127.0.0.1:{}", server.port);
    let g = [grant.as_str()];

    let (ok, out) = http(&pied, &g, &["get", &server.url("/hello")]);
    assert!(ok, "{out}");
    assert!(
        out.contains("status 200") && out.contains("hello from the test server"),
        "{out}"
    );

    let (ok, out) = http(&pied, &g, &["post", &server.url("/echo"), "posted body"]);
    assert!(ok && out.contains("status 200\nposted body"), "{out}");
    assert!(
        server
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|(m, p, b)| m == "POST" && p == "/echo" && b == b"posted body")
    );

    // A host outside the grant: refused before any connection, with the reason on stderr.
    let (ok, out) = http(&pied, &g, &["get", "http://example.com/"]);
    assert!(!ok, "{out}");
    assert!(out.contains("error: HttpRequestDenied"), "{out}");
    assert!(
        out.contains("pied: http: GET http://example.com:80 denied")
            && out.contains("not in this process' HTTP grant"),
        "{out}"
    );
    // Another port of the granted host is outside the grant too.
    let (ok, out) = http(&pied, &g, &["get", "http://127.0.0.1:1/hello"]);
    assert!(!ok && out.contains("HttpRequestDenied"), "{out}");

    // No --allow-http: no HTTP at all.
    let (ok, out) = http(&pied, &[], &["get", &server.url("/hello")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("HttpRequestDenied") && out.contains("no HTTP grant"),
        "{out}"
    );

    // Asking for more than the config allows is refused at launch.
    let out = pied.ctl(&[
        "launch",
        "--allow-http",
        "example.com",
        path_str(&guest("http")),
        "--",
        "get",
        "http://example.com/",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("\"example.com\" is not covered by the daemon's [http] allow list")
            && err.contains("127.0.0.1"),
        "{err}"
    );

    // A redirect to a host outside the grant: the guest follows it and is denied.
    let (ok, out) = http(&pied, &g, &["follow", &server.url("/redirect")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("redirect http://other.invalid/hello")
            && out.contains("error: HttpRequestDenied")
            && out.contains("other.invalid"),
        "{out}"
    );

    // The response byte cap (100000 per process) ends the body with an error.
    let (ok, out) = http(&pied, &g, &["get", &server.url("/big")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("error: body: HTTP response body size exceeds limit: 100000 bytes")
            && out.contains("max_response_bytes"),
        "{out}"
    );

    // The request cap (20 per process).
    let (ok, out) = http(&pied, &g, &["repeat", "25", &server.url("/hello")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("ok 20") && out.contains("request cap reached"),
        "{out}"
    );

    // At most 2 requests in flight (a response holds its slot until it is dropped).
    let (ok, out) = http(&pied, &g, &["parallel", "3", &server.url("/hello")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("ok 2")
            && out.contains("error: ConnectionLimitReached")
            && out.contains("2 requests already in flight"),
        "{out}"
    );

    // The daemon keeps serving, and a fresh process has fresh caps.
    let (ok, out) = http(&pied, &g, &["get", &server.url("/hello")]);
    assert!(ok && out.contains("hello from the test server"), "{out}");
    assert!(pied.ctl(&["status"]).status.success());
    assert!(!server.seen_paths().iter().any(|p| p.contains("other")));
}

#[test]
fn loopback_needs_private_in_the_config_entry() {
    let server = Server::start();
    let other = Server::start();
    let pied = daemon(&server, "");
    // 127.0.0.1 on another port is allowed by the plain "127.0.0.1" entry, which is not
    // `private`: the address is loopback, so the request is refused before connecting.
    let grant = format!("127.0.0.1:{}", other.port);
    let (ok, out) = http(&pied, &[&grant], &["get", &other.url("/hello")]);
    assert!(!ok, "{out}");
    assert!(out.contains("error: DestinationIpProhibited"), "{out}");
    assert!(
        out.contains("is 127.0.0.1 (loopback)") && out.contains("private = true"),
        "{out}"
    );
    assert!(other.seen_paths().is_empty());
    // The same through a name: the check is on what the name resolves to.
    let named = Pied::start(&format!(
        "[http]\nallow = [\"localhost\", {{ host = \"localhost\", port = {}, private = true }}]\n",
        server.port
    ));
    let (ok, out) = http(
        &named,
        &["localhost"],
        &["get", &format!("http://localhost:{}/hello", other.port)],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("DestinationIpProhibited") && out.contains("(loopback)"),
        "{out}"
    );
    assert!(other.seen_paths().is_empty());
    let (ok, out) = http(
        &named,
        &["config"],
        &["get", &format!("http://localhost:{}/hello", server.port)],
    );
    assert!(ok && out.contains("hello from the test server"), "{out}");
    // `--allow-http config` grants the whole list, the private entry included.
    let (ok, out) = http(&pied, &["config"], &["get", &server.url("/hello")]);
    assert!(ok && out.contains("hello from the test server"), "{out}");
}

#[test]
fn slow_servers_hit_the_timeout() {
    let server = Server::start();
    let pied = daemon(&server, "timeout_ms = 500\n");
    let grant = format!("127.0.0.1:{}", server.port);
    let start = Instant::now();
    let (ok, out) = http(&pied, &[&grant], &["get", &server.url("/slow")]);
    assert!(!ok, "{out}");
    assert!(out.contains("error: ConnectionReadTimeout"), "{out}");
    let (ok, out) = http(&pied, &[&grant], &["get", &server.url("/slow-body")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("error: body: connection read timeout") && out.contains("timed out"),
        "{out}"
    );
    // A guest asking for a longer timeout is clamped to the config's.
    let (ok, out) = http(
        &pied,
        &[&grant],
        &["timeout", "60000", &server.url("/slow")],
    );
    assert!(!ok && out.contains("ConnectionReadTimeout"), "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn bad_http_config_is_rejected_with_the_entry() {
    for (allow, want) in [
        ("[\"ftp://x.org\"]", "unknown scheme"),
        ("[\"x.org:0\"]", "port 0"),
        ("[\"a*.org\"]", "bad host"),
        ("[{ host = \"x.org\", port = 0 }]", "port 0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pied.toml");
        std::fs::write(
            &cfg,
            config_text(dir.path(), &format!("[http]\nallow = {allow}\n")),
        )
        .unwrap();
        let out = std::process::Command::new(pied_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!out.status.success(), "{allow}: {all}");
        assert!(all.contains("http") && all.contains(want), "{allow}: {all}");
    }
}

#[test]
fn http_summarise_fetches_and_summarises_a_page() {
    let server = Server::start();
    let pied = pied_with_model(&format!(
        "[http]\nallow = [{{ host = \"127.0.0.1\", port = {}, private = true }}]\n",
        server.port
    ));
    let wasm = inferlet("http-summarise");
    let grant = format!("http://127.0.0.1:{}", server.port);
    let url = server.url("/page");
    let out = pied.ctl(&[
        "launch",
        "--allow-http",
        &grant,
        path_str(&wasm),
        "--",
        "--url",
        &url,
        "--max-tokens",
        "16",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(server.seen_paths().contains(&"/page".to_string()));
    // The 135M model's summary is poor; what matters is that it generated something.
    assert!(!stdout.trim().is_empty(), "empty summary: {stderr}");

    // Without the grant, the fetch fails and the inferlet says why.
    let out = pied.ctl(&["launch", path_str(&wasm), "--", "--url", &url]);
    assert!(!out.status.success());
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(
        all.contains("fetching") && all.contains("no HTTP grant"),
        "{all}"
    );
    assert_eq!(
        server
            .seen_paths()
            .iter()
            .filter(|p| p.as_str() == "/page")
            .count(),
        1
    );
}
