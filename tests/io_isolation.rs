//! An inferlet's I/O never stalls the engine: a CPU-bound inferlet generates as fast while
//! other processes wait on a slow HTTP server as it does alone. Prints the figures.
//! (MCP waits are covered by tests/mcp.rs: a quick call while another process waits on a
//! slow tool.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

/// A loopback server that answers every request after `delay` (bounded: at most `max`
/// connections, and it stops accepting after two minutes).
fn slow_server(delay: Duration, max: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        for conn in listener.incoming().take(max) {
            if Instant::now() > end {
                return;
            }
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                std::thread::sleep(delay);
                let body = "finally";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// Tokens per second of one text-completion run of `tokens` tokens (launch to exit).
fn generation_rate(pied: &Pied, tokens: usize) -> f64 {
    let wasm = inferlet("text-completion");
    let start = Instant::now();
    let out = pied.ctl(&[
        "launch",
        path_str(&wasm),
        "--",
        "--prompt",
        "Once upon a time, in a small village by the sea,",
        "--max-tokens",
        &tokens.to_string(),
    ]);
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out.stderr));
    tokens as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn generation_keeps_its_speed_while_others_wait_on_http() {
    const WAITERS: usize = 8;
    const TOKENS: usize = 48;
    let port = slow_server(Duration::from_secs(12), WAITERS + 2);
    let pied = pied_with_model(&format!(
        "[http]\nallow = [{{ host = \"127.0.0.1\", port = {port}, scheme = \"http\", private = true }}]\ntimeout_ms = 60000\n"
    ));
    let _warm = generation_rate(&pied, 4);
    let alone = median((0..3).map(|_| generation_rate(&pied, TOKENS)).collect());

    let http = guest("http");
    let url = format!("http://127.0.0.1:{port}/wait");
    let waiters: Vec<u64> = (0..WAITERS)
        .map(|_| {
            pied.launch_detached(&["--allow-http", "config", path_str(&http), "--", "get", &url])
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // all of them are in their request
    let started = Instant::now();
    let busy = median((0..3).map(|_| generation_rate(&pied, TOKENS)).collect());
    let measured_within = started.elapsed();
    for &id in &waiters {
        assert_eq!(
            pied.inspect(id)["state"],
            "Running",
            "waiter {id} ended early"
        );
    }
    println!(
        "text-completion, {TOKENS} tokens: alone {alone:.1} tok/s; while {WAITERS} processes \
         wait on HTTP: {busy:.1} tok/s ({:.0}%)",
        100.0 * busy / alone
    );
    assert!(
        measured_within < Duration::from_secs(12),
        "the measurement outlasted the server's delay; waiters were not waiting throughout"
    );
    assert!(
        busy > 0.7 * alone,
        "generation slowed from {alone:.1} to {busy:.1} tok/s while others waited on I/O"
    );
    // The waiters get their answers in the end.
    for id in waiters {
        let end = pied.wait_exit(id);
        let logs = || text(&pied.ctl(&["logs", &id.to_string()]).stdout);
        assert_eq!(end["state"]["Exited"]["Code"], 0, "{end}\n{}", logs());
        assert!(logs().contains("finally"), "{}", logs());
    }
}
