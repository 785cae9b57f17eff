//! pie-ctl: administers pied over its Unix socket.

mod client;
mod manifest;
mod render;
mod store;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use proto::{
    ErrorCode, Event, EventKind, ExitStatus, Grants, LaunchSpec, LimitOverrides, RequestBody,
    ResponseBody, SessionOutput, StdinMode,
};
use sha2::{Digest, Sha256};

use client::{Client, DaemonError};
use proto::cli::ModelCommand;

#[derive(Parser)]
#[command(
    name = "pie-ctl",
    version,
    about = "Administer the pied inference daemon"
)]
struct Cli {
    /// Admin socket of pied
    #[arg(
        long,
        global = true,
        env = "PIE_SOCKET",
        default_value = "/run/pied.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the daemon's state
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show client, daemon and protocol versions
    Version {
        #[arg(long)]
        json: bool,
    },
    /// Run a program: a .wasm file (uploaded when the daemon lacks it), an installed name
    /// or a sha256 prefix. Follows its output and exits with its status unless -d.
    Launch(LaunchArgs),
    /// List processes (running ones unless --all)
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a process's output and events
    Logs {
        id: u64,
        /// Keep following new output until the process ends
        #[arg(short, long)]
        follow: bool,
        /// Only the last N events
        #[arg(long)]
        tail: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one process
    Inspect {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Stream a running process's output and feed it this terminal's stdin. An inferlet
    /// gets each stdin line as one session message (its `receive`), and what it sent while
    /// nobody was attached is shown first.
    Attach {
        id: u64,
        /// Save files the inferlet sends (session.send-file) into DIR
        #[arg(long, value_name = "DIR")]
        files: Option<PathBuf>,
    },
    /// Send one message to an inferlet's session (its `receive`)
    Signal { id: u64, message: String },
    /// Send a file to an inferlet's session (its `receive-file`)
    SendFile { id: u64, file: PathBuf },
    /// Stop a process at once
    Kill { id: u64 },
    /// Manage installed programs
    Programs {
        #[command(subcommand)]
        command: ProgramsCommand,
    },
    /// Make the daemon re-read its config file (limits and grants)
    Reload,
    /// Manage the daemon's model store
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Read the tenant's key-value store (what inferlets launched with --kv keep)
    Kv {
        #[command(subcommand)]
        command: store::KvCommand,
    },
    /// Print a process's journal (pied:store/journal), one JSON line per record
    Journal {
        id: u64,
        /// Start at this sequence number
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Write man pages and shell completions into DIR (for packaging)
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Subcommand)]
enum ProgramsCommand {
    /// List installed programs
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Install a program without running it
    Add {
        file: PathBuf,
        /// Declared-capability manifest (TOML) to embed: imports it does not declare fail to link
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
    /// Remove a program (by name or sha256 prefix)
    Rm { program: String },
}

#[derive(clap::Args)]
struct LaunchArgs {
    /// Detach: print the process id and return
    #[arg(short, long)]
    detach: bool,
    /// Feed this file to the program's stdin
    #[arg(long, value_name = "FILE", conflicts_with = "interactive")]
    stdin: Option<PathBuf>,
    /// Keep stdin open: forward this terminal's stdin (or feed it later with attach)
    #[arg(short, long)]
    interactive: bool,
    /// Give the program its tenant's scratch tree at /scratch (daemon must allow_fs)
    #[arg(long)]
    fs: bool,
    /// Allow outbound HTTP to HOST (`host`, `*.domain`, `host:port`, `https://host`), within
    /// the daemon's `[http] allow`; `config` grants all of it. Repeatable
    #[arg(long = "allow-http", value_name = "HOST")]
    allow_http: Vec<String>,
    /// Grant the MCP server NAME (a `[[mcp]]` of the daemon's config). Repeatable
    #[arg(long, value_name = "NAME")]
    mcp: Vec<String>,
    /// Grant the directory NAME of the tenant's mount table (`[[mount]]`). Repeatable
    #[arg(long, value_name = "NAME")]
    mount: Vec<String>,
    /// Grant the tenant's key-value store (`pied:store/kv`)
    #[arg(long)]
    kv: bool,
    /// Fuel limit (wasm instructions, roughly); 0 = unmetered
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline, e.g. 500ms, 30s, 5m, 1h; 0 = none
    #[arg(long, value_parser = parse_duration_ms)]
    deadline: Option<u64>,
    /// Memory cap, e.g. 64M, 1G (plain numbers are MiB)
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Declared-capability manifest (TOML) to embed in the program: imports it does not
    /// declare fail to link
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Save files the inferlet sends (session.send-file) into DIR
    #[arg(long, value_name = "DIR")]
    files: Option<PathBuf>,
    /// The program: a .wasm path, an installed name, or a sha256 prefix
    program: String,
    /// Arguments passed to the program (after --). An inferlet gets them as its JSON input, as
    /// Pie's `pie run` makes it: `--max-tokens 32` → `"max_tokens": 32` (numbers and booleans
    /// typed, a bare flag is true, other words under `_positional`); `--input JSON` alone
    /// passes JSON verbatim
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 5m or 1h"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let upper = s.to_ascii_uppercase();
    let t = upper.trim_end_matches("IB").trim_end_matches('B');
    let (num, shift) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        _ => (t, 20),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n << shift)
        .map_err(|_| format!("{s:?} is not a size like 64M or 1G"))
}

fn main() -> ExitCode {
    // Like other Unix tools: a closed pipe (`pie-ctl ps | head -1`) ends pie-ctl quietly
    // instead of a panic in println!. Rust ignores SIGPIPE by default.
    // SAFETY: setting a signal disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pie-ctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::GenerateDocs { dir } = &cli.command {
        use clap::CommandFactory;
        proto::cli::generate(Cli::command(), dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Version { json } = &cli.command {
        return version(&cli.socket, *json);
    }
    let mut client = Client::connect(&cli.socket)?;
    match cli.command {
        Command::Version { .. } | Command::GenerateDocs { .. } => unreachable!("handled above"),
        Command::Status { json } => {
            let ResponseBody::Status(s) = client.call(RequestBody::Status)? else {
                bail!("unexpected reply");
            };
            render::status(&s, json)?;
        }
        Command::Launch(args) => return launch(&mut client, args),
        Command::Ps { all, json } => {
            let ResponseBody::Processes(list) = client.call(RequestBody::Ps { all })? else {
                bail!("unexpected reply");
            };
            render::processes(&list, json)?;
        }
        Command::Logs {
            id,
            follow,
            tail,
            json,
        } => {
            let out = Output::new(json);
            let mut saver = FileSaver::new(id, None);
            client.stream(
                RequestBody::Logs { id, follow, tail },
                |e| out.event(&e),
                |s| out.session(&s, &mut saver),
                |_| {},
            )?;
        }
        Command::Inspect { id, json } => {
            let ResponseBody::Process(p) = client.call(RequestBody::Inspect { id })? else {
                bail!("unexpected reply");
            };
            render::process(&p, json)?;
        }
        Command::Attach { id, files } => return attach(&mut client, id, files),
        Command::Signal { id, message } => {
            client.call(RequestBody::Signal { id, message })?;
        }
        Command::SendFile { id, file } => {
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            client.call(RequestBody::SendFile { id, data })?;
        }
        Command::Kill { id } => {
            client.call(RequestBody::Kill { id })?;
        }
        Command::Programs { command } => match command {
            ProgramsCommand::Ls { json } => {
                let ResponseBody::Programs(list) = client.call(RequestBody::ProgramsList)? else {
                    bail!("unexpected reply");
                };
                render::programs(&list, json)?;
            }
            ProgramsCommand::Add { file, manifest } => {
                let wasm = manifest::read_program(&file, manifest.as_deref())?;
                let info = upload(&mut client, &file, &wasm)?;
                println!("{}  {}", info.sha256, info.name);
            }
            ProgramsCommand::Rm { program } => {
                if let ResponseBody::Programs(list) =
                    client.call(RequestBody::ProgramRemove { program })?
                {
                    for p in list {
                        println!("removed {}  {}", p.sha256, p.name);
                    }
                }
            }
        },
        Command::Reload => {
            client.call(RequestBody::Reload)?;
            println!("config reloaded");
        }
        Command::Model { command } => model(&mut client, command)?,
        Command::Kv { command } => store::kv(&mut client, command)?,
        Command::Journal { id, from } => store::journal(&mut client, id, from)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn model(client: &mut Client, command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Import { path, name } => {
            // The daemon resolves the path, so make it absolute here.
            let path = std::path::absolute(&path)
                .with_context(|| format!("bad path {}", path.display()))?;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let list = client.call_with_progress(
                RequestBody::ModelImport {
                    path: path.display().to_string(),
                    name,
                },
                |stage, done, total| {
                    if tty {
                        eprint!("\r{}", proto::progress_line(stage, done, total));
                    }
                },
            )?;
            if tty {
                eprintln!();
            }
            if let ResponseBody::Models(list) = list {
                render::models(&list, false)?;
            }
        }
        ModelCommand::Ls { json } => {
            let ResponseBody::Models(list) = client.call(RequestBody::ModelList)? else {
                bail!("unexpected reply");
            };
            render::models(&list, json)?;
        }
        ModelCommand::Rm { name } => {
            client.call(RequestBody::ModelRemove { name: name.clone() })?;
            println!("removed {name}");
        }
    }
    Ok(())
}

fn version(socket: &Path, json: bool) -> Result<ExitCode> {
    let daemon = Client::connect(socket).and_then(|mut c| match c.call(RequestBody::Version)? {
        ResponseBody::Version(v) => Ok(v),
        other => bail!("unexpected reply: {other:?}"),
    });
    render::version(daemon.as_ref().ok(), json)?;
    if let Err(e) = daemon {
        eprintln!("pie-ctl: daemon version unknown: {e:#}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn upload(client: &mut Client, path: &Path, wasm: &[u8]) -> Result<proto::ProgramInfo> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match client.call(RequestBody::Upload {
        name,
        wasm: wasm.to_vec(),
    })? {
        ResponseBody::Uploaded(info) => Ok(info),
        other => bail!("unexpected reply: {other:?}"),
    }
}

fn is_code(e: &anyhow::Error, code: ErrorCode) -> bool {
    e.downcast_ref::<DaemonError>()
        .is_some_and(|d| d.0.code == code)
}

fn launch(client: &mut Client, args: LaunchArgs) -> Result<ExitCode> {
    if !args.detach {
        // Catch Ctrl-C before the process exists, so none can slip between launch and follow.
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        }
    }
    let stdin = match (&args.stdin, args.interactive) {
        (Some(path), _) => StdinMode::Data(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, true) => StdinMode::Open,
        (None, false) => StdinMode::Closed,
    };
    // A path to a file is launched by content hash; it is uploaded only when the daemon
    // does not have it yet, so repeated launches send 64 bytes, not the program.
    let local = Path::new(&args.program);
    let file = if local.is_file() {
        Some(manifest::read_program(local, args.manifest.as_deref())?)
    } else {
        if args.manifest.is_some() {
            bail!("--manifest needs a .wasm file path, not an installed program");
        }
        None
    };
    let program = match &file {
        Some(wasm) => hex::encode(Sha256::digest(wasm)),
        None => args.program.clone(),
    };
    let mut spec = LaunchSpec {
        program,
        args: args.args,
        stdin,
        fs: args.fs,
        limits: LimitOverrides {
            fuel: args.fuel,
            deadline_ms: args.deadline,
            memory_bytes: args.memory,
        },
        grants: Grants {
            http: args.allow_http,
            mcp: args.mcp,
            mounts: args.mount,
            kv: args.kv,
        },
    };
    let id = match client.call(RequestBody::Launch(spec.clone())) {
        Ok(r) => launched_id(r)?,
        Err(e) if file.is_some() && is_code(&e, ErrorCode::UnknownProgram) => {
            let info = upload(client, local, file.as_deref().unwrap())?;
            spec.program = info.sha256;
            launched_id(client.call(RequestBody::Launch(spec))?)?
        }
        Err(e) => return Err(e),
    };
    if args.detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    kill_on_interrupt(client.sender(), id);
    let input = if args.interactive {
        Input::Stdin
    } else {
        Input::None
    };
    follow(
        client,
        id,
        input,
        args.files,
        RequestBody::Logs {
            id,
            follow: true,
            tail: None,
        },
    )
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Ctrl-C on a foreground launch stops the program, as it would a local one: SIGINT (caught
/// from the start of `launch`) asks pied to kill the process, and pie-ctl then reports its
/// end as usual.
fn kill_on_interrupt(sender: client::Sender, id: u64) {
    std::thread::spawn(move || {
        while !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = sender.send(RequestBody::Kill { id });
    });
}

fn launched_id(r: ResponseBody) -> Result<u64> {
    match r {
        ResponseBody::Launched { id } => Ok(id),
        other => bail!("unexpected reply: {other:?}"),
    }
}

/// What a follower forwards from this terminal's stdin.
enum Input {
    None,
    /// Raw bytes to the process's open stdin (inferlets get them as lines, in pied).
    Stdin,
    /// Each line as a session message (an inferlet without an open stdin).
    Lines,
}

fn attach(client: &mut Client, id: u64, files: Option<PathBuf>) -> Result<ExitCode> {
    let info = match client.call(RequestBody::Inspect { id })? {
        ResponseBody::Process(p) => p,
        other => bail!("unexpected reply: {other:?}"),
    };
    let input = if info.stdin_open {
        Input::Stdin
    } else if info.state.is_running() {
        Input::Lines
    } else {
        Input::None
    };
    follow(client, id, input, files, RequestBody::Attach { id })
}

/// Streams a process's events to this terminal, optionally forwarding stdin, and turns
/// its end into pie-ctl's exit code.
fn follow(
    client: &mut Client,
    id: u64,
    input: Input,
    files: Option<PathBuf>,
    request: RequestBody,
) -> Result<ExitCode> {
    if let Input::Lines = input {
        let sender = client.sender();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(message) = line else { return };
                if sender.send(RequestBody::Signal { id, message }).is_err() {
                    return;
                }
            }
        });
    }
    if let Input::Stdin = input {
        let sender = client.sender();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = sender.send(RequestBody::CloseStdin { id });
                        return;
                    }
                    Ok(n) => {
                        if sender
                            .send(RequestBody::Stdin {
                                id,
                                data: buf[..n].to_vec(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
    let out = Output::new(false);
    let mut saver = FileSaver::new(id, files);
    let mut status = None;
    let mut warned = false;
    client.stream(
        request,
        |e| {
            if let EventKind::Exit(s) = &e.kind {
                status = Some(s.clone());
            }
            out.event(&e)
        },
        |s| out.session(&s, &mut saver),
        |other| {
            if let ResponseBody::Error(e) = other
                && !warned
            {
                warned = true;
                eprintln!("pie-ctl: input not delivered: {}", e.message);
            }
        },
    )?;
    Ok(match status {
        Some(s) => exit_code(id, &s),
        None => ExitCode::SUCCESS,
    })
}

/// pie-ctl's exit status for a process's end: its own code, or one that names the cause
/// the way shells do (124 timeout, 137 killed).
fn exit_code(id: u64, status: &ExitStatus) -> ExitCode {
    match status {
        ExitStatus::Code(c) => ExitCode::from((*c).clamp(0, 255) as u8),
        other => {
            eprintln!("pie-ctl: process {id} {other}");
            ExitCode::from(match other {
                ExitStatus::Killed(_) => 137,
                ExitStatus::DeadlineExceeded { .. } => 124,
                ExitStatus::FuelExhausted { .. } | ExitStatus::MemoryLimit { .. } => 125,
                ExitStatus::Trap(_) => 134,
                ExitStatus::Failed(_) => 126,
                ExitStatus::Lost | ExitStatus::Code(_) => 1,
            })
        }
    }
}

/// Where files an inferlet sends go: numbered files in a directory, or only a notice.
struct FileSaver {
    id: u64,
    dir: Option<PathBuf>,
    count: u64,
}

impl FileSaver {
    fn new(id: u64, dir: Option<PathBuf>) -> FileSaver {
        FileSaver { id, dir, count: 0 }
    }

    /// Saves `data`; returns where, or `None` when no directory was given.
    fn save(&mut self, data: &[u8]) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        self.count += 1;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("pie-{}-{}.bin", self.id, self.count));
        std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(path))
    }
}

/// Where events go: raw bytes to stdout/stderr, or one JSON object per line.
struct Output {
    json: bool,
}

impl Output {
    fn new(json: bool) -> Output {
        Output { json }
    }

    fn event(&self, e: &Event) -> Result<()> {
        if self.json {
            let line = render::event_json(e);
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            return Ok(out.flush()?);
        }
        match &e.kind {
            EventKind::Stdout(b) => {
                let mut out = std::io::stdout().lock();
                out.write_all(b)?;
                out.flush()?;
            }
            EventKind::Stderr(b) => {
                let mut err = std::io::stderr().lock();
                err.write_all(b)?;
                err.flush()?;
            }
            EventKind::Notice(n) => eprintln!("pie-ctl: notice: {n}"),
            EventKind::Exit(_) => {}
        }
        Ok(())
    }

    /// Session output: messages to stdout as they are (an inferlet streaming text sends
    /// pieces), files saved or announced, losses reported.
    fn session(&self, s: &SessionOutput, saver: &mut FileSaver) -> Result<()> {
        let saved = match s {
            SessionOutput::File(data) => saver.save(data)?,
            _ => None,
        };
        if self.json {
            let line = match s {
                SessionOutput::Message(m) => serde_json::json!({"kind": "message", "data": m}),
                SessionOutput::File(data) => serde_json::json!({
                    "kind": "file", "bytes": data.len(),
                    "saved": saved.as_ref().map(|p| p.display().to_string()),
                }),
                SessionOutput::Dropped { items, bytes } => {
                    serde_json::json!({"kind": "dropped", "items": items, "bytes": bytes})
                }
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            return Ok(out.flush()?);
        }
        match s {
            SessionOutput::Message(m) => {
                let mut out = std::io::stdout().lock();
                out.write_all(m.as_bytes())?;
                out.flush()?;
            }
            SessionOutput::File(data) => match saved {
                Some(path) => eprintln!(
                    "pie-ctl: received a file ({} bytes), saved as {}",
                    data.len(),
                    path.display()
                ),
                None => eprintln!(
                    "pie-ctl: received a file ({} bytes); pass --files DIR to save files",
                    data.len()
                ),
            },
            SessionOutput::Dropped { items, bytes } => eprintln!(
                "pie-ctl: notice: {items} session messages ({bytes} bytes) were dropped: sent while nobody was attached and over the buffer's bound, or not read fast enough"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("3"), Ok(3000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("16"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("lots").is_err());
    }
}
