//! MCP clients: one per `[[mcp]]` server of the config, shared by every inferlet process
//! (`pie:mcp`, see `inferlet/mcp.rs`).
//!
//! Each server has a supervisor task ([`Server::supervise`]) that owns the connection:
//! - it starts the server (a `command` is spawned with piped stdin/stdout for the protocol,
//!   its stderr forwarded line by line to pied's log with the server's name; a `url` is
//!   reached over streamable HTTP), performs the `initialize` handshake once, and publishes
//!   the connected peer;
//! - when the connection ends (the child exited or the HTTP session failed) it restarts it
//!   after a backoff that doubles from 200 ms up to 30 s and goes back to the start once a
//!   connection has stayed up for a minute;
//! - supervisors start with the daemon; a child is killed when its connection is dropped
//!   and, should pied die without cleaning up, by the kernel (`PR_SET_PDEATHSIG`).
//!
//! [`Server::request`] never hangs: it waits for a server that is starting (at most its
//! timeout), fails fast while the server is down (naming the server and why), and races
//! every request against the server going down and against `timeout_ms`.

pub mod config;
mod streamable;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientConfig, GetPromptRequestParams, PaginatedRequestParams,
    ReadResourceRequestParams,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::{Peer, ServiceExt};
use serde_json::Value;
use tokio::sync::watch;

pub use config::McpConfig;

/// JSON-RPC "invalid params".
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC "internal error": the server could not be reached or the connection broke.
pub const INTERNAL: i32 = -32603;
/// The request ran past the server's `timeout_ms`.
pub const TIMEOUT: i32 = -32001;
/// The server is not running (it exited or could not be started) and is being restarted.
pub const UNAVAILABLE: i32 = -32002;

/// An MCP error as `pie:mcp` returns it: the JSON-RPC error shape.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub code: i32,
    pub message: String,
    /// JSON text.
    pub data: Option<String>,
}

impl CallError {
    pub fn new(code: i32, message: String) -> CallError {
        CallError {
            code,
            message,
            data: None,
        }
    }
}

/// Every configured server, by name.
pub struct Mcp {
    servers: Vec<Arc<Server>>,
}

impl Mcp {
    /// One supervisor per server; they start at once when called inside a tokio runtime
    /// (the daemon), else on the first request.
    pub fn new(configs: &[McpConfig]) -> Arc<Mcp> {
        let servers: Vec<Arc<Server>> = configs.iter().map(|c| Server::new(c.clone())).collect();
        if tokio::runtime::Handle::try_current().is_ok() {
            for s in &servers {
                s.ensure_started();
            }
        }
        Arc::new(Mcp { servers })
    }

    /// The configured names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.config.name.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.servers.iter().find(|s| s.config.name == name).cloned()
    }

    /// What `pie-ctl status` shows of each server.
    pub fn status(&self) -> Vec<proto::McpStatus> {
        self.servers
            .iter()
            .map(|s| proto::McpStatus {
                name: s.config.name.clone(),
                target: match (&s.config.command, &s.config.url) {
                    (Some(cmd), _) => std::iter::once(cmd.as_str())
                        .chain(s.config.args.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(" "),
                    (None, Some(url)) => url.clone(),
                    (None, None) => String::new(),
                },
                state: match &*s.state.borrow() {
                    State::Starting => "starting".to_string(),
                    State::Up(_) => "up".to_string(),
                    State::Down { why, retry_at } => format!(
                        "down: {why} (retry in {} ms)",
                        retry_at
                            .saturating_duration_since(Instant::now())
                            .as_millis()
                    ),
                },
                connects: s.connects.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }
}

#[derive(Clone)]
enum State {
    /// Not started yet, or starting (spawning, handshaking).
    Starting,
    Up(Peer<RoleClient>),
    /// Down since `since`; the supervisor tries again at `retry_at`.
    Down {
        why: String,
        retry_at: Instant,
    },
}

pub struct Server {
    pub config: McpConfig,
    state: watch::Sender<State>,
    started: std::sync::Once,
    /// Successful connections (initialize done) so far: restarts show as growth.
    connects: std::sync::atomic::AtomicU64,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);

impl Server {
    fn new(config: McpConfig) -> Arc<Server> {
        Arc::new(Server {
            config,
            state: watch::Sender::new(State::Starting),
            started: std::sync::Once::new(),
            connects: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn ensure_started(self: &Arc<Self>) {
        self.started.call_once(|| {
            let me = self.clone();
            tokio::spawn(async move { me.supervise().await });
        });
    }

    /// Starts, watches and restarts the server for as long as pied runs.
    async fn supervise(self: Arc<Self>) {
        let name = self.config.name.clone();
        let mut backoff = BACKOFF_FIRST;
        loop {
            self.state.send_replace(State::Starting);
            let why = match tokio::time::timeout(self.timeout(), self.connect()).await {
                Ok(Ok(running)) => {
                    let up = Instant::now();
                    tracing::info!(mcp = %name, "MCP server connected");
                    self.connects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.state.send_replace(State::Up(running.peer().clone()));
                    let reason = running.waiting().await;
                    if up.elapsed() >= STABLE {
                        backoff = BACKOFF_FIRST;
                    }
                    match reason {
                        Ok(r) => format!("its connection ended ({r:?})"),
                        Err(e) => format!("its connection task failed ({e})"),
                    }
                }
                Ok(Err(e)) => format!("it could not be started: {e:#}"),
                Err(_) => format!(
                    "it did not finish the initialize handshake within {} ms",
                    self.config.timeout_ms
                ),
            };
            tracing::warn!(mcp = %name, retry_in = ?backoff, "MCP server is down: {why}");
            self.state.send_replace(State::Down {
                why,
                retry_at: Instant::now() + backoff,
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Starts the server (or opens the HTTP session) and performs `initialize`.
    async fn connect(&self) -> anyhow::Result<RunningService<RoleClient, ClientConfig>> {
        let info: ClientConfig = serde_json::from_value(serde_json::json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "pied", "version": env!("CARGO_PKG_VERSION") },
        }))?;
        if let Some(url) = &self.config.url {
            return streamable::connect(info, url).await;
        }
        let transport = self.spawn()?;
        Ok(info.serve(transport).await?)
    }

    fn spawn(&self) -> anyhow::Result<rmcp::transport::TokioChildProcess> {
        let c = &self.config;
        let program = c.command.as_deref().expect("validated: command or url");
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&c.args).env_clear();
        for k in ["PATH", "HOME", "LANG", "TZ"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(&c.env).kill_on_drop(true);
        if let Some(dir) = &c.cwd {
            cmd.current_dir(dir);
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Dies with pied even if pied is killed without cleaning up.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (child, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {program:?}: {e}"))?;
        tracing::info!(mcp = %c.name, pid = child.id(), "started MCP server {program:?}");
        if let Some(stderr) = stderr {
            let name = c.name.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(mcp = %name, "stderr: {line}");
                }
            });
        }
        Ok(child)
    }

    /// The connected peer: waits while the server is starting (up to the timeout), fails at
    /// once while it is down.
    async fn peer(self: &Arc<Self>) -> Result<Peer<RoleClient>, CallError> {
        self.ensure_started();
        let name = &self.config.name;
        let mut rx = self.state.subscribe();
        let wait = async {
            loop {
                let state = rx.borrow_and_update().clone();
                match state {
                    State::Up(peer) => return Ok(peer),
                    State::Down { why, retry_at } => {
                        let left = retry_at.saturating_duration_since(Instant::now());
                        return Err(CallError::new(
                            UNAVAILABLE,
                            format!(
                                "MCP server {name:?} is not running: {why}; pied restarts it \
                                 in {} ms",
                                left.as_millis()
                            ),
                        ));
                    }
                    State::Starting => {
                        if rx.changed().await.is_err() {
                            return Err(CallError::new(
                                UNAVAILABLE,
                                format!("MCP server {name:?} is shut down"),
                            ));
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout(), wait).await {
            Ok(r) => r,
            Err(_) => Err(CallError::new(
                TIMEOUT,
                format!(
                    "MCP server {name:?} did not finish starting within {} ms",
                    self.config.timeout_ms
                ),
            )),
        }
    }

    /// One request: `method` is the MCP method name (`tools/call`, …), `params` its
    /// JSON parameters; answers the JSON of the response's `result`.
    pub async fn request(
        self: &Arc<Self>,
        method: Method,
        params: Value,
    ) -> Result<String, CallError> {
        let started = Instant::now();
        let peer = self.peer().await?;
        let name = &self.config.name;
        let left = self.timeout().saturating_sub(started.elapsed());
        let mut rx = self.state.subscribe();
        rx.mark_unchanged();
        let down = async {
            // Ends when the connection this request went out on is gone.
            loop {
                if rx.changed().await.is_err() {
                    return;
                }
                if !matches!(*rx.borrow_and_update(), State::Up(_)) {
                    return;
                }
            }
        };
        let call = method.send(&peer, params);
        let what = method.name();
        tokio::select! {
            r = call => r.map_err(|e| self.service_error(what, e)),
            () = down => Err(CallError::new(
                UNAVAILABLE,
                format!("MCP server {name:?} went down during {what}; pied restarts it"),
            )),
            () = tokio::time::sleep(left) => Err(CallError::new(
                TIMEOUT,
                format!("MCP server {name:?} did not answer {what} within {} ms", self.config.timeout_ms),
            )),
        }
    }

    fn service_error(&self, what: &str, e: ServiceError) -> CallError {
        let name = &self.config.name;
        match e {
            ServiceError::McpError(e) => CallError {
                code: e.code.0,
                message: e.message.into_owned(),
                data: e.data.map(|d| d.to_string()),
            },
            ServiceError::Timeout { .. } => CallError::new(
                TIMEOUT,
                format!("MCP server {name:?} did not answer {what} in time"),
            ),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => CallError::new(
                UNAVAILABLE,
                format!(
                    "MCP server {name:?}: connection lost during {what} ({e}); pied restarts it"
                ),
            ),
            ServiceError::UnexpectedResponse => CallError::new(
                INTERNAL,
                format!(
                    "MCP server {name:?} answered {what} with something pied does not support (input requests or tasks)"
                ),
            ),
            e => CallError::new(INTERNAL, format!("MCP server {name:?}: {what} failed: {e}")),
        }
    }
}

/// The requests `pie:mcp` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ListTools,
    CallTool,
    ListResources,
    ReadResource,
    ListPrompts,
    GetPrompt,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::ListTools => "tools/list",
            Method::CallTool => "tools/call",
            Method::ListResources => "resources/list",
            Method::ReadResource => "resources/read",
            Method::ListPrompts => "prompts/list",
            Method::GetPrompt => "prompts/get",
        }
    }

    async fn send(self, peer: &Peer<RoleClient>, params: Value) -> Result<String, ServiceError> {
        fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ServiceError> {
            serde_json::from_value(v).map_err(|e| {
                ServiceError::McpError(rmcp::model::ErrorData::invalid_params(
                    format!("invalid parameters: {e}"),
                    None,
                ))
            })
        }
        let list = || -> Option<PaginatedRequestParams> { None };
        let json = |r: Result<Value, serde_json::Error>| {
            r.map(|v| v.to_string()).map_err(|e| {
                ServiceError::McpError(rmcp::model::ErrorData::internal_error(
                    format!("cannot encode the result: {e}"),
                    None,
                ))
            })
        };
        match self {
            Method::ListTools => json(serde_json::to_value(peer.list_tools(list()).await?)),
            Method::CallTool => json(serde_json::to_value(
                peer.call_tool(typed::<CallToolRequestParams>(params)?)
                    .await?,
            )),
            Method::ListResources => json(serde_json::to_value(peer.list_resources(list()).await?)),
            Method::ReadResource => json(serde_json::to_value(
                peer.read_resource(typed::<ReadResourceRequestParams>(params)?)
                    .await?,
            )),
            Method::ListPrompts => json(serde_json::to_value(peer.list_prompts(list()).await?)),
            Method::GetPrompt => json(serde_json::to_value(
                peer.get_prompt(typed::<GetPromptRequestParams>(params)?)
                    .await?,
            )),
        }
    }
}
