//! Inferlets talking: the chat template and decoder (`pie:instruct/chat`), the session
//! between an inferlet and its user (`pie:core/session` through `pie-ctl attach`/`signal`),
//! messaging between processes (`pie:core/messaging`), state in /scratch across runs, and
//! tool use (`pie:instruct/tool-use`). Real pied serving SmolLM2-135M-Instruct, real
//! pie-ctl, example inferlets from `inferlets/`.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Runs pie-ctl; returns (success, stdout, stderr).
fn run(pied: &Pied, args: &[&str]) -> (bool, String, String) {
    let out = pied.ctl(args);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The process's log (stdout and stderr events) as text.
fn logs(pied: &Pied, id: u64) -> String {
    let out = pied.ctl(&["logs", &id.to_string()]);
    text(&out.stdout) + &text(&out.stderr)
}

/// Waits until the process's log holds `n` occurrences of `needle`.
fn wait_for_log(pied: &Pied, id: u64, needle: &str, n: usize) {
    let start = Instant::now();
    loop {
        let l = logs(pied, id);
        if l.matches(needle).count() >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "process {id} never logged {needle:?} {n} times: {l}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn chat_answers_the_capital_question_with_paris() {
    let pied = pied_with_model("");
    let chat = inferlet("chat");
    let (ok, out, err) = run(
        &pied,
        &[
            "launch",
            path_str(&chat),
            "--",
            "--prompt",
            "What is the capital of France?",
            "--max-tokens",
            "32",
        ],
    );
    assert!(ok, "{err}");
    // Streamed through session.send, printed by the foreground pie-ctl as it came.
    assert!(out.contains("Paris"), "{out:?}");
    // Without streaming, the reply is the program's result instead.
    let (ok, quiet, err) = run(
        &pied,
        &[
            "launch",
            path_str(&chat),
            "--",
            "What is the capital of France?",
            "--max-tokens",
            "32",
            "--no-stream",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(quiet.trim(), out.trim());
}

#[test]
fn session_messages_are_buffered_then_replayed_on_attach() {
    let pied = pied_with_model("");
    let chat = inferlet("chat");
    let id = pied.launch_detached(&[
        path_str(&chat),
        "--",
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "32",
        "--interactive",
    ]);
    // The reply was sent while nobody was attached; the chat now waits for input.
    wait_for_log(&pied, id, "chat: waiting", 1);
    // Attaching replays it; each stdin line is one message to the inferlet's receive.
    let out = pied.ctl_with_stdin(&["attach", &id.to_string()], b"/quit\n");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Paris"), "{stdout:?}");
    let info = pied.wait_exit(id);
    assert_eq!(info["state"]["Exited"]["Code"], 0, "{info}");
    // Replayed once: a second attach to the ended process gets no second copy.
    let again = pied.ctl(&["attach", &id.to_string()]);
    assert!(
        !text(&again.stdout).contains("Paris"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn signal_reaches_receive() {
    let pied = pied_with_model("");
    let chat = inferlet("chat");
    let id = pied.launch_detached(&[
        path_str(&chat),
        "--",
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "32",
        "--interactive",
        "--no-stream",
    ]);
    let sid = id.to_string();
    wait_for_log(&pied, id, "chat: waiting", 1);
    let (ok, _, err) = run(&pied, &["signal", &sid, "What is the capital of Italy?"]);
    assert!(ok, "{err}");
    wait_for_log(&pied, id, "chat: waiting", 2);
    let (ok, _, err) = run(&pied, &["signal", &sid, "/quit"]);
    assert!(ok, "{err}");
    let info = pied.wait_exit(id);
    assert_eq!(info["state"]["Exited"]["Code"], 0, "{info}");
    // The result is the reply to the signalled question.
    let l = logs(&pied, id);
    assert!(l.contains("Rome"), "{l}");

    // Clear errors, and the daemon keeps serving.
    let (ok, _, err) = run(&pied, &["signal", &sid, "too late"]);
    assert!(!ok && err.contains("has ended"), "{err}");
    let (ok, _, err) = run(&pied, &["signal", "9999", "hello"]);
    assert!(!ok && err.contains("no process 9999"), "{err}");
    let sleeper = pied.launch_detached(&[path_str(&guest("sleep"))]);
    let (ok, _, err) = run(&pied, &["signal", &sleeper.to_string(), "hello"]);
    assert!(!ok && err.contains("not an inferlet"), "{err}");
    let (ok, _, err) = run(&pied, &["kill", &sleeper.to_string()]);
    assert!(ok, "{err}");
    assert!(run(&pied, &["status"]).0);
}

#[test]
fn messaging_between_two_processes() {
    let pied = pied_with_model("");
    let pair = inferlet("messaging-pair");
    let consumer = pied.launch_detached(&[path_str(&pair), "--", "--role", "consumer"]);
    let (ok, out, err) = run(
        &pied,
        &[
            "launch",
            path_str(&pair),
            "--",
            "--role",
            "producer",
            "--count",
            "3",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("consumer said ready; sent 3 jobs"), "{out}");
    let info = pied.wait_exit(consumer);
    assert_eq!(info["state"]["Exited"]["Code"], 0, "{info}");
    let l = logs(&pied, consumer);
    assert!(
        l.contains("broadcast: hello from the producer; jobs: job-0,job-1,job-2"),
        "{l}"
    );
    // A refused operation (here a topic name over the limit) ends the inferlet with the
    // reason, and the daemon keeps serving.
    let long = "t".repeat(300);
    let (ok, _, err) = run(
        &pied,
        &[
            "launch",
            path_str(&pair),
            "--",
            "--role",
            "consumer",
            "--topic",
            &long,
        ],
    );
    assert!(!ok && err.contains("bad topic name"), "{err}");
    assert!(run(&pied, &["status"]).0);
    // Topics are per tenant: a consumer of another user waits on its own, empty queue.
    if nix::unistd::Uid::effective().is_root() {
        let copy = pied.dir.join("messaging_pair.wasm");
        std::fs::copy(&pair, &copy).unwrap();
        let other = pied.ctl_as(
            65534,
            &["launch", "-d", path_str(&copy), "--", "--role", "consumer"],
        );
        assert!(other.status.success(), "{}", text(&other.stderr));
        let other: u64 = text(&other.stdout).trim().parse().unwrap();
        let mine = pied.launch_detached(&[path_str(&pair), "--", "--role", "consumer"]);
        let (ok, out, err) = run(
            &pied,
            &["launch", path_str(&pair), "--", "--role", "producer"],
        );
        assert!(ok && out.contains("sent 3 jobs"), "{err}{out}");
        assert_eq!(pied.wait_exit(mine)["state"]["Exited"]["Code"], 0);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(pied.inspect(other)["state"], "Running");
        assert!(run(&pied, &["kill", &other.to_string()]).0);
    }
}

#[test]
fn episodic_memory_remembers_across_runs() {
    let pied = pied_with_model("[runtime]\nallow_fs = true\n");
    let mem = inferlet("episodic-memory");
    let m = path_str(&mem);
    let (ok, out, err) = run(
        &pied,
        &[
            "launch",
            "--fs",
            m,
            "--",
            "--remember",
            "The secret word is banana.",
        ],
    );
    assert!(ok && out.contains("remembered (1 facts)"), "{err}{out}");
    let (ok, out, err) = run(&pied, &["launch", "--fs", m, "--", "--recall"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "The secret word is banana.");
    let (ok, out, err) = run(
        &pied,
        &[
            "launch",
            "--fs",
            m,
            "--",
            "--ask",
            "What is the secret word?",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.to_lowercase().contains("banana"), "{out}");
    // Without the filesystem grant it says what is missing.
    let (ok, _, err) = run(&pied, &["launch", m, "--", "--recall"]);
    assert!(!ok && err.contains("--fs"), "{err}");
}

#[test]
fn files_travel_both_ways_through_the_session() {
    let pied = pied_with_model("[runtime]\nallow_fs = true\n");
    let mem = inferlet("episodic-memory");
    let m = path_str(&mem);
    // In: pie-ctl send-file → session.receive-file (buffered until the inferlet asks).
    let id = pied.launch_detached(&["--fs", m, "--", "--import"]);
    let facts = pied.dir.join("facts.txt");
    std::fs::write(&facts, "Cats purr.\nThe sky is blue.\n").unwrap();
    let (ok, _, err) = run(&pied, &["send-file", &id.to_string(), path_str(&facts)]);
    assert!(ok, "{err}");
    assert_eq!(pied.wait_exit(id)["state"]["Exited"]["Code"], 0);
    assert!(
        logs(&pied, id).contains("imported 2 facts"),
        "{}",
        logs(&pied, id)
    );
    // Out: session.send-file → the foreground pie-ctl saves it with --files.
    let saved = pied.dir.join("saved");
    let (ok, out, err) = run(
        &pied,
        &[
            "launch",
            "--fs",
            "--files",
            path_str(&saved),
            m,
            "--",
            "--export",
        ],
    );
    assert!(ok && out.contains("exported 2 facts"), "{err}{out}");
    assert!(err.contains("saved as"), "{err}");
    let file = std::fs::read_dir(&saved)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "Cats purr.\nThe sky is blue."
    );
    let (ok, _, err) = run(&pied, &["send-file", &id.to_string(), path_str(&facts)]);
    assert!(!ok && err.contains("has ended"), "{err}");
}

#[test]
fn agent_equips_a_tool_and_answers_its_call() {
    let pied = pied_with_model("");
    let agent = inferlet("agent");
    let (ok, out, err) = run(
        &pied,
        &[
            "launch",
            path_str(&agent),
            "--",
            "--prompt",
            "What is the weather in Paris?",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    // The call is well formed (the host's call grammar) and names the equipped tool.
    assert_eq!(v["call"]["name"], "get_weather", "{v}");
    assert_eq!(v["call"]["arguments"]["city"], "Paris", "{v}");
    assert_eq!(
        v["result"]["weather"], "18 degrees Celsius and sunny",
        "{v}"
    );
    assert!(v["answer"].as_str().is_some_and(|a| !a.is_empty()), "{v}");
}
