//! Test harness: builds the guest programs, starts real pied daemons on temp sockets and
//! drives them with the real pie-ctl binary.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Directory holding the built pied and pie-ctl binaries.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pied"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn pied_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pied"))
}

pub fn pie_ctl_bin() -> PathBuf {
    let p = bin_dir().join("pie-ctl");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        p.display()
    );
    p
}

/// Builds the test guests (once per test binary) and returns the wasm file of `name`
/// for wasm32-wasip2.
pub fn guest(name: &str) -> PathBuf {
    guests()
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

/// The wasm32-wasip1 core-module build of `name`.
pub fn guest_p1(name: &str) -> PathBuf {
    guests()
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"))
}

fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target/guests");
        for triple in ["wasm32-wasip2", "wasm32-wasip1"] {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--release", "--quiet", "--target", triple])
                .current_dir(root.join("tests/guests"))
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .expect("cannot run cargo to build the test guests");
            assert!(
                status.success(),
                "building test guests for {triple} failed (is the target installed? rustup target add {triple})"
            );
        }
        target
    })
}

pub struct Pied {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// Extra environment for the daemon (systemd's NOTIFY_SOCKET and friends).
    pub env: Vec<(String, String)>,
    /// Runs pied under this wrapper command (e.g. systemd-socket-activate ...).
    pub wrapper: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// A config for a test daemon living in `dir`, plus extra TOML appended by the test.
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nsocket_mode = \"0666\"\nshutdown_grace_ms = 1000\n{extra}\n",
        dir.join("pied.sock").display(),
        dir.join("state").display()
    )
}

impl Pied {
    /// Starts a daemon in a fresh temp dir. `runtime` and `limits` are TOML fragments
    /// for those sections (may be empty).
    pub fn start(extra: &str) -> Pied {
        let tmp = tempfile::tempdir().unwrap();
        // World-traversable, so a test can talk to the daemon as another uid.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut p = Pied::start_in(tmp.path(), extra);
        p._tmp = Some(tmp);
        p
    }

    /// Starts a daemon whose socket, state and config live in `dir` (kept across restarts).
    pub fn start_in(dir: &Path, extra: &str) -> Pied {
        let mut p = Pied::prepare(dir, extra);
        p.spawn();
        p
    }

    /// A daemon set up in `dir` but not started: set `env`/`wrapper`, then `spawn`.
    pub fn prepare(dir: &Path, extra: &str) -> Pied {
        let config = dir.join("pied.toml");
        std::fs::write(&config, config_text(dir, extra)).unwrap();
        Pied {
            child: None,
            dir: dir.to_owned(),
            socket: dir.join("pied.sock"),
            state: dir.join("state"),
            config,
            env: Vec::new(),
            wrapper: Vec::new(),
            _tmp: None,
        }
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pied.log"))
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pied_bin());
                c
            }
            None => Command::new(pied_bin()),
        };
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start pied");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.socket.exists() && self.ctl(&["status"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pied exited during start ({status}): {}", self.daemon_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "pied did not start serving: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pied.log")).unwrap_or_default()
    }

    pub fn ctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(pie_ctl_bin());
        c.arg("--socket").arg(&self.socket).args(args);
        c.env_remove("PIE_SOCKET");
        c
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs pie-ctl as another uid (the test runs as root). The binary is copied into the
    /// test's world-readable dir first: the checkout may sit below a directory that other
    /// users cannot enter.
    pub fn ctl_as(&self, uid: u32, args: &[&str]) -> Output {
        let copy = self.dir.join("pie-ctl");
        if !copy.exists() {
            std::fs::copy(pie_ctl_bin(), &copy).unwrap();
        }
        Command::new(&copy)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("PIE_SOCKET")
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ctl_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .ctl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Launches detached and returns the process id.
    pub fn launch_detached(&self, args: &[&str]) -> u64 {
        let mut all = vec!["launch", "-d"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(out.status.success(), "launch failed: {}", text(&out.stderr));
        text(&out.stdout)
            .trim()
            .parse()
            .expect("launch -d prints the id")
    }

    /// Waits for a process to end and returns its `inspect --json`.
    pub fn wait_exit(&self, id: u64) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.inspect(id);
            if v["state"] != "Running" {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "process {id} did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn inspect(&self, id: u64) -> serde_json::Value {
        let out = self.ctl(&["inspect", &id.to_string(), "--json"]);
        assert!(
            out.status.success(),
            "inspect failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "pied did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pied {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Builds the example inferlet `name` (package name, e.g. `text-completion`) of the
/// `inferlets/` workspace for wasm32-wasip2 and returns its component.
pub fn inferlet(name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/inferlets");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "-p",
            name,
        ])
        .current_dir(root.join("inferlets"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cannot run cargo to build the inferlets");
    assert!(
        status.success(),
        "building inferlet {name} failed (rustup target add wasm32-wasip2; crates.io needed once)"
    );
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// The default model's directory (made by scripts/fetch-model).
pub fn default_model_dir() -> PathBuf {
    let p = std::env::var_os("PIE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("state/models/smollm2-135m"));
    assert!(
        p.join("config.json").exists(),
        "{} is missing: run scripts/fetch-model first",
        p.display()
    );
    p
}

/// A daemon serving the default model as `smollm2-135m` (linked into its model store).
/// `extra` is appended to the config.
pub fn pied_with_model(extra: &str) -> Pied {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let models = tmp.path().join("state/models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(default_model_dir(), models.join("smollm2-135m")).unwrap();
    let mut p = Pied::start_in(
        tmp.path(),
        &format!("[[model]]\nname = \"smollm2-135m\"\ndefault = true\n{extra}"),
    );
    p._tmp = Some(tmp);
    p
}
