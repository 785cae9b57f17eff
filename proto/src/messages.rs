//! The messages of the admin protocol. Adding a variant at the end of an enum is a
//! compatible change only together with a protocol version bump: bincode encodes variants
//! by index.

use serde::{Deserialize, Serialize};

/// First frame a client sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientHello {
    pub magic: [u8; 8],
    pub min_version: u32,
    pub max_version: u32,
    /// The client's own version, for logs and `pie-ctl version`.
    pub client_version: String,
}

/// The server's answer to a [`ClientHello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted(ServerHello),
    Rejected(ErrorReply),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerHello {
    /// The protocol version used for the rest of the connection.
    pub version: u32,
    pub server_version: String,
    /// Optional capabilities of this daemon, e.g. "fs", "socket-activation".
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub body: RequestBody,
}

/// A program to launch: an installed program (sha256 or name) plus launch options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// sha256 (full hex or a unique prefix) or name of an installed program.
    pub program: String,
    pub args: Vec<String>,
    pub stdin: StdinMode,
    /// Ask for the tenant's scratch tree at `/scratch` (needs `[runtime] allow_fs`).
    pub fs: bool,
    /// Per-launch overrides of the config's default limits (must stay within its maxima).
    pub limits: LimitOverrides,
    /// I/O capabilities beyond the scratch tree, each named here and bounded by the config.
    pub grants: Grants,
}

/// What a launch asks for beyond compute. Deny by default: an empty list grants nothing, and
/// every entry must be within what the daemon's config offers (a launch narrows, never widens).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Grants {
    /// Outbound HTTP destinations (`--allow-http`): `host`, `*.domain`, `host:port`,
    /// `scheme://host[:port]`, or `config` for everything `[http] allow` lists. Each must be
    /// covered by an entry of the config's allow-list.
    pub http: Vec<String>,
    /// MCP servers by their `[[mcp]]` name (`--mcp`).
    pub mcp: Vec<String>,
    /// Directories of the tenant's mount table by their `[[mount]]` name (`--mount`).
    pub mounts: Vec<String>,
    /// The tenant's key-value store (`--kv`, `pied:store/kv`).
    pub kv: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StdinMode {
    /// Stdin is at end-of-file from the start.
    Closed,
    /// Stdin holds these bytes, then end-of-file.
    Data(Vec<u8>),
    /// Stdin stays open: `attach` feeds it.
    Open,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RequestBody {
    Status,
    Version,
    /// Stores a program (a wasm component or core module); answered with `Uploaded`.
    Upload {
        name: String,
        wasm: Vec<u8>,
    },
    /// Answered with `Launched`, or `Error` with code `UnknownProgram` when the program
    /// must be uploaded first.
    Launch(LaunchSpec),
    Ps {
        all: bool,
    },
    Inspect {
        id: u64,
    },
    /// Streams `Event`s: the last `tail` (all when `None`), then new ones while `follow`,
    /// ending with `End` once the process has exited.
    Logs {
        id: u64,
        follow: bool,
        tail: Option<u64>,
    },
    /// Like `Logs { follow: true, tail: None }`; stdin is fed with `Stdin` requests.
    Attach {
        id: u64,
    },
    Stdin {
        id: u64,
        data: Vec<u8>,
    },
    CloseStdin {
        id: u64,
    },
    Kill {
        id: u64,
    },
    ProgramsList,
    ProgramRemove {
        program: String,
    },
    Reload,
    /// Imports a GGUF file or Hugging Face directory (a path on the daemon's host) into the
    /// model store. Streams `Progress`, then ends with `Models` holding the new entry.
    ModelImport {
        path: String,
        name: String,
    },
    ModelList,
    ModelRemove {
        name: String,
    },
    /// Delivers one message to an inferlet's `session.receive` (`pie-ctl signal`, and each
    /// stdin line of `pie-ctl attach` when the process has no open stdin). Answered `Ok`,
    /// or `Error` when the process does not receive (not an inferlet), has ended, or its
    /// inbox is full.
    Signal {
        id: u64,
        message: String,
    },
    /// Delivers a file to an inferlet's `session.receive-file`.
    SendFile {
        id: u64,
        data: Vec<u8>,
    },
    /// A value of a tenant's key-value store (`tenant`: admins only, else the caller's own).
    /// Answered with `KvValue`, or `Error` `NotFound`.
    KvGet {
        tenant: Option<String>,
        key: String,
    },
    /// A tenant's keys starting with `prefix`; answered with `KvKeys`.
    KvList {
        tenant: Option<String>,
        prefix: String,
    },
    /// A process' journal records from `from_seq` on (owner or admin); answered with
    /// `Journal`.
    Journal {
        id: u64,
        from_seq: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub body: ResponseBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ResponseBody {
    Ok,
    Error(ErrorReply),
    Status(DaemonStatus),
    Version(VersionInfo),
    Uploaded(ProgramInfo),
    Launched {
        id: u64,
    },
    Processes(Vec<ProcessInfo>),
    Process(ProcessInfo),
    Event(Event),
    /// Ends a stream of `Event`s.
    End,
    Programs(Vec<ProgramInfo>),
    /// Progress of a long operation (model import): `done` of `total` units of `stage`.
    Progress {
        stage: String,
        done: u64,
        total: u64,
    },
    Models(Vec<ModelInfo>),
    /// Something the process sent its user (`session.send`, `send-file`), interleaved in
    /// the event stream of `Attach` and of `Logs` with `follow` while the process runs.
    Session(SessionOutput),
    KvValue(Vec<u8>),
    KvKeys {
        tenant: String,
        keys: Vec<KvKey>,
        /// Bytes the tenant's keys and values take (what `[store] max_tenant_bytes` bounds).
        used_bytes: u64,
        /// More keys matched than the listing holds (10000).
        truncated: bool,
    },
    Journal(Vec<JournalRecord>),
}

/// A key of a tenant's key-value store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvKey {
    pub key: String,
    pub value_bytes: u64,
}

/// A record of a process' journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub seq: u64,
    pub unix_ms: u64,
    pub kind: String,
    /// A JSON text.
    pub payload_json: String,
}

/// What an inferlet sends its user. Items sent while no client follows the process are
/// buffered (bounded) and go to the next follower; `Dropped` says how many that bound (or a
/// slow follower) lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOutput {
    Message(String),
    File(Vec<u8>),
    Dropped { items: u64, bytes: u64 },
}

/// A model in the daemon's model store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    /// Where it was imported from: `gguf:<file>` or `hf:<dir>`.
    pub source: String,
    pub dtype: String,
    pub params: u64,
    pub bytes: u64,
    pub layers: u64,
    pub hidden: u64,
    pub vocab: u64,
    pub created_unix: u64,
    /// Whether pied.toml's `[[model]]` table names it as the default model.
    pub default: bool,
}

/// One line of a text progress bar, e.g. `convert [#####     ]  50%  134/268 MB`.
pub fn progress_line(stage: &str, done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let total = total.max(1);
    let filled = (done.min(total) * WIDTH / total) as usize;
    format!(
        "{stage:<8} [{}{}] {:>3}%  {}/{} MB",
        "#".repeat(filled),
        " ".repeat(WIDTH as usize - filled),
        done.min(total) * 100 / total,
        done >> 20,
        total >> 20
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A frame was not a valid message, too large or truncated.
    MalformedFrame,
    /// The client speaks no protocol version this daemon speaks.
    VersionMismatch,
    BadRequest,
    NotFound,
    PermissionDenied,
    /// The program is not in the store: upload it, then launch again.
    UnknownProgram,
    /// The upload is not a wasm component or module pied can run.
    InvalidProgram,
    TooLarge,
    /// A requested limit is above the config's maximum, or the process cap is reached.
    LimitExceeded,
    ShuttingDown,
    /// The new config is invalid; the old one stays in force.
    InvalidConfig,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub server_version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub uptime_ms: u64,
    pub socket: String,
    pub state_dir: String,
    pub config: Option<String>,
    pub running: u64,
    pub exited: u64,
    pub max_processes: u64,
    pub programs: u64,
    pub draining: bool,
    pub allow_fs: bool,
    pub default_limits: Limits,
    pub max_limits: Limits,
    /// The caller's identity as the daemon sees it.
    pub you: Caller,
    /// The models named by pied.toml's `[[model]]` tables and their engines.
    pub models: Vec<ModelStatus>,
    /// The MCP servers of pied.toml's `[[mcp]]` tables and their supervisors.
    pub mcp: Vec<McpStatus>,
}

/// A configured MCP server as its supervisor sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McpStatus {
    pub name: String,
    /// `command …` or the URL.
    pub target: String,
    /// "up", "starting", or "down: why (retry in N ms)".
    pub state: String,
    /// Connections made so far (1 + restarts once it has come up).
    pub connects: u64,
}

/// A configured model: loaded into an engine, or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    pub default: bool,
    /// `None` when loaded; else why the model could not be loaded.
    pub error: Option<String>,
    pub page_size: u64,
    pub kv_pages_total: u64,
    pub kv_pages_in_use: u64,
    /// Unreferenced pages kept for prefix reuse (available to new requests).
    pub kv_pages_cached: u64,
    pub batches: u64,
    pub mean_batch_size: f64,
    pub tokens_processed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub tenant: String,
    pub admin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub server_version: String,
    pub protocol_version: u32,
    pub min_protocol_version: u32,
    pub max_protocol_version: u32,
    pub wasmtime_version: String,
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wasm fuel (roughly instructions); 0 means unmetered.
    pub fuel: u64,
    /// Wall-clock deadline from start; 0 means none.
    pub deadline_ms: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramInfo {
    pub sha256: String,
    pub name: String,
    pub kind: ProgramKind,
    pub size: u64,
    /// Whether a compiled artifact is cached on disk.
    pub compiled: bool,
    pub added_unix_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgramKind {
    /// A wasm32-wasip2 component exporting `wasi:cli/run`.
    Component,
    /// A wasm32-wasip1 core module exporting `_start`.
    Module,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub id: u64,
    pub owner_uid: u32,
    pub tenant: String,
    pub program: String,
    pub program_name: String,
    pub args: Vec<String>,
    pub state: ProcessState,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub limits: Limits,
    pub fs: bool,
    pub stdin_open: bool,
    /// Fuel used so far (known once the process has ended, when fuel is metered).
    pub fuel_used: Option<u64>,
    /// What the launch was granted beyond `fs` (records written before grants existed
    /// read as none).
    #[serde(default)]
    pub grants: Grants,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessState {
    Running,
    Exited(ExitStatus),
}

impl ProcessState {
    pub fn is_running(&self) -> bool {
        matches!(self, ProcessState::Running)
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The program returned or called exit with this code.
    Code(i32),
    /// The program trapped (a wasm fault or a panic); the text is wasmtime's message.
    Trap(String),
    /// Stopped by `kill` (or by the daemon's shutdown after its grace period).
    Killed(String),
    DeadlineExceeded {
        deadline_ms: u64,
    },
    FuelExhausted {
        fuel: u64,
    },
    MemoryLimit {
        limit_bytes: u64,
    },
    /// The program could not be started (link error, instantiation failure, ...).
    Failed(String),
    /// The daemon stopped while the process ran and could not record its end.
    Lost,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with code {c}"),
            ExitStatus::Trap(why) => write!(f, "trapped: {why}"),
            ExitStatus::Killed(why) => write!(f, "killed: {why}"),
            ExitStatus::DeadlineExceeded { deadline_ms } => {
                write!(f, "deadline exceeded ({deadline_ms} ms)")
            }
            ExitStatus::FuelExhausted { fuel } => write!(f, "fuel exhausted ({fuel} units)"),
            ExitStatus::MemoryLimit { limit_bytes } => {
                write!(f, "memory limit exceeded ({limit_bytes} bytes)")
            }
            ExitStatus::Failed(why) => write!(f, "failed to start: {why}"),
            ExitStatus::Lost => write!(f, "lost: the daemon stopped while it ran"),
        }
    }
}

/// One entry of a process's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Starts at 0 and grows by one per event of the process; never reused.
    pub seq: u64,
    pub unix_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// A message from the daemon about the process (e.g. a log write failure).
    Notice(String),
    Exit(ExitStatus),
}
