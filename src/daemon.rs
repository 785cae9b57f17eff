//! The daemon's shared state and the operations the admin server exposes: launch, kill,
//! reload, drain. Transport-free, so that the protocol layer only translates.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proto::{ErrorCode, ErrorReply, LaunchSpec, Limits, ProcessInfo, ProcessState, StdinMode};
use tokio::io::AsyncWriteExt;

use crate::config::{Config, within};
use crate::grants::ProcessGrants;
use crate::llm::Llm;
use crate::procs::{Process, ProcessTable};
use crate::programs::{ProgramStore, StoreError};
use crate::runtime::{ProcessIo, Runtime, RuntimeSizing};
use crate::tenancy::Caller;
use crate::util::unix_ms;

/// Bytes buffered between a writer of stdin (attach, --stdin) and the guest.
const STDIN_PIPE_BYTES: usize = 64 << 10;

pub struct Daemon {
    pub config: RwLock<Arc<Config>>,
    /// The file the config came from, re-read on reload.
    pub config_path: Option<PathBuf>,
    pub socket_path: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: Arc<Runtime>,
    pub programs: ProgramStore,
    pub procs: ProcessTable,
    pub llm: Llm,
    /// What inferlets share: served models, snapshots, messaging.
    pub pie: Arc<crate::inferlet::Shared>,
    running: AtomicUsize,
    draining: AtomicBool,
    started: Instant,
    /// Settings fixed at start: a reload that changes them is refused.
    sizing: RuntimeSizing,
}

pub type OpResult<T> = std::result::Result<T, ErrorReply>;

pub fn err(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply {
        code,
        message: message.into(),
    }
}

impl From<StoreError> for ErrorReply {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound(_) | StoreError::Ambiguous(_) => ErrorCode::UnknownProgram,
            StoreError::Invalid(_) => ErrorCode::InvalidProgram,
            StoreError::TooLarge { .. } => ErrorCode::TooLarge,
            StoreError::Io(_) => ErrorCode::Internal,
        };
        err(code, e.to_string())
    }
}

impl Daemon {
    pub fn open(
        config: Config,
        config_path: Option<PathBuf>,
        socket_path: PathBuf,
        state_dir: PathBuf,
    ) -> Result<Arc<Daemon>> {
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
        let sizing = RuntimeSizing {
            max_processes: config.runtime.max_processes,
            max_memory_bytes: config.limits.max_limits().memory_bytes,
            pooling: config.runtime.pooling,
        };
        let runtime = Runtime::new(&sizing)?;
        let programs = ProgramStore::open(&state_dir.join("programs"), runtime.clone())?;
        let procs = ProcessTable::open(&state_dir)?;
        std::fs::create_dir_all(state_dir.join("scratch"))?;
        let llm = Llm::load(&config, &state_dir);
        let pie = crate::inferlet::Shared::new(
            llm.engines(),
            config.default_model().map(str::to_owned),
            crate::mcp::Mcp::new(&config.mcp_servers),
        );
        let store = crate::store::Store::open(&state_dir.join("store.redb"), config.store.clone())?;
        let _ = pie.store.set(store);
        Ok(Arc::new(Daemon {
            config: RwLock::new(Arc::new(config)),
            config_path,
            socket_path,
            state_dir,
            runtime,
            programs,
            procs,
            llm,
            pie,
            running: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            sizing,
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn running_count(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Looks a process up for a caller; other tenants' processes look absent to
    /// non-admins, so ids do not leak what others run.
    pub fn process(&self, caller: &Caller, id: u64) -> OpResult<Arc<Process>> {
        match self.procs.get(id) {
            Some(p) if caller.may_access(p.owner) => Ok(p),
            Some(_) if caller.uid != 0 => Err(err(
                ErrorCode::PermissionDenied,
                format!(
                    "process {id} belongs to another user (only its owner, root or the admin group may act on it)"
                ),
            )),
            _ => Err(err(ErrorCode::NotFound, format!("no process {id}"))),
        }
    }

    /// Resolves the limits of a launch: the config's defaults, overridden by the launch,
    /// each within the config's maxima.
    fn limits_for(&self, config: &Config, o: &proto::LimitOverrides) -> OpResult<Limits> {
        let d = config.limits.default_limits();
        let m = config.limits.max_limits();
        let l = Limits {
            fuel: o.fuel.unwrap_or(d.fuel),
            deadline_ms: o.deadline_ms.unwrap_or(d.deadline_ms),
            memory_bytes: o.memory_bytes.unwrap_or(d.memory_bytes),
        };
        let over = |what: &str, asked: u64, max: u64| {
            err(
                ErrorCode::LimitExceeded,
                format!(
                    "{what} {} is above the daemon's maximum of {max} ([limits.max])",
                    if asked == 0 {
                        "unlimited".to_string()
                    } else {
                        asked.to_string()
                    }
                ),
            )
        };
        if !within(l.fuel, m.fuel) {
            return Err(over("fuel", l.fuel, m.fuel));
        }
        if !within(l.deadline_ms, m.deadline_ms) {
            return Err(over("deadline (ms)", l.deadline_ms, m.deadline_ms));
        }
        if l.memory_bytes == 0 || l.memory_bytes > m.memory_bytes {
            return Err(over("memory (bytes)", l.memory_bytes, m.memory_bytes));
        }
        Ok(l)
    }

    pub async fn launch(self: &Arc<Self>, caller: &Caller, spec: LaunchSpec) -> OpResult<u64> {
        if self.is_draining() {
            return Err(err(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down; launch refused",
            ));
        }
        let config = self.config();
        let scratch_quota = config.runtime.scratch_quota_mib << 20;
        let program = self
            .programs
            .resolve(&spec.program, caller.uid, caller.admin)?;
        let limits = self.limits_for(&config, &spec.limits)?;
        let scratch = if spec.fs {
            if !config.runtime.allow_fs {
                return Err(err(
                    ErrorCode::PermissionDenied,
                    "filesystem access is disabled by the daemon's config ([runtime] allow_fs = false)",
                ));
            }
            let dir = self.scratch_dir(&caller.tenant)?;
            if scratch_quota > 0 {
                crate::scratch::check_launch(&dir, scratch_quota, &caller.tenant)
                    .map_err(|m| err(ErrorCode::LimitExceeded, m))?;
            }
            Some(dir)
        } else {
            None
        };
        let grants = Arc::new(ProcessGrants::resolve(
            &config,
            &caller.tenant,
            &spec.grants,
        )?);
        let loaded = self.programs.load(&program).await?;

        let max = config.runtime.max_processes as usize;
        if self.running.fetch_add(1, Ordering::SeqCst) >= max {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(err(
                ErrorCode::LimitExceeded,
                format!("{max} processes are already running ([runtime] max_processes)"),
            ));
        }

        let (guest_stdin, host_stdin) = tokio::io::duplex(STDIN_PIPE_BYTES);
        let mut feed = None;
        let keep_open = match spec.stdin {
            StdinMode::Closed => {
                drop(host_stdin); // the guest reads end-of-file at once
                None
            }
            StdinMode::Data(bytes) => {
                feed = Some((host_stdin, bytes));
                None
            }
            StdinMode::Open => Some(host_stdin),
        };
        let info = ProcessInfo {
            id: 0,
            owner_uid: caller.uid,
            tenant: caller.tenant.clone(),
            program: program.sha256.clone(),
            program_name: program.name.clone(),
            args: spec.args.clone(),
            state: ProcessState::Running,
            started_unix_ms: unix_ms(),
            ended_unix_ms: None,
            limits,
            fs: spec.fs,
            stdin_open: keep_open.is_some(),
            fuel_used: None,
            grants: spec.grants.clone(),
        };
        let process = match self
            .procs
            .create(info, keep_open, config.daemon.event_ring_bytes)
        {
            Ok(p) => p,
            Err(e) => {
                self.running.fetch_sub(1, Ordering::SeqCst);
                return Err(err(ErrorCode::Internal, format!("{e:#}")));
            }
        };
        if let Some((mut pipe, bytes)) = feed {
            // Ends when everything is written or the guest is gone; dropping the pipe
            // then gives the guest end-of-file.
            tokio::spawn(async move {
                let _ = pipe.write_all(&bytes).await;
            });
        }
        let id = process.id;
        if matches!(*loaded, crate::runtime::Loaded::Inferlet { .. }) {
            // Inferlets read session messages (signal, attach's stdin lines) from the start.
            process.session.open_inbox();
        }
        if let (Some(dir), true) = (&scratch, scratch_quota > 0) {
            crate::scratch::watch(dir.clone(), scratch_quota, process.clone());
        }
        let mut argv = vec![program.name.clone()];
        argv.extend(spec.args);
        let io = ProcessIo {
            argv,
            stdin: Box::new(guest_stdin),
            log: process.log.clone(),
            scratch,
            process: crate::inferlet::ProcessMeta {
                id,
                tenant: caller.tenant.clone(),
                session: process.session.clone(),
                grants,
            },
            shared: self.pie.clone(),
        };
        let daemon = self.clone();
        tokio::spawn(async move {
            let outcome = daemon
                .runtime
                .run(&loaded, io, limits, process.control.clone())
                .await;
            // Free the slot first: whoever sees the process ended may launch at once.
            daemon.running.fetch_sub(1, Ordering::SeqCst);
            process.finish(outcome.status, outcome.fuel_used);
        });
        Ok(id)
    }

    fn scratch_dir(&self, tenant: &str) -> OpResult<PathBuf> {
        let dir = self.state_dir.join("scratch").join(tenant);
        std::fs::create_dir_all(&dir).map_err(|e| {
            err(
                ErrorCode::Internal,
                format!("cannot create scratch dir {}: {e}", dir.display()),
            )
        })?;
        Ok(dir)
    }

    pub fn kill(&self, caller: &Caller, id: u64) -> OpResult<()> {
        let p = self.process(caller, id)?;
        if !p.is_running() {
            return Err(err(
                ErrorCode::BadRequest,
                format!("process {id} has already ended"),
            ));
        }
        p.control.kill(&format!("by uid {}", caller.uid));
        Ok(())
    }

    /// Re-reads the config file. Limits and grants change for new launches; running
    /// processes keep theirs. Settings that need a restart must not change.
    pub fn reload(&self) -> OpResult<()> {
        let Some(path) = &self.config_path else {
            return Err(err(
                ErrorCode::BadRequest,
                "pied was started without a config file; nothing to reload",
            ));
        };
        let new = Config::load(path).map_err(|e| {
            err(
                ErrorCode::InvalidConfig,
                format!("{e:#}; the old config stays in force"),
            )
        })?;
        let old = self.config();
        let mut fixed = Vec::new();
        if new.runtime.max_processes != self.sizing.max_processes {
            fixed.push("[runtime] max_processes");
        }
        if new.limits.max_limits().memory_bytes > self.sizing.max_memory_bytes {
            fixed.push("[limits.max] memory_mib (above the value pied started with)");
        }
        if new.runtime.pooling != self.sizing.pooling {
            fixed.push("[runtime] pooling");
        }
        if new.daemon.state_dir != old.daemon.state_dir || new.daemon.socket != old.daemon.socket {
            fixed.push("[daemon] socket/state_dir");
        }
        let names = |c: &Config| {
            c.models
                .iter()
                .map(|m| (m.name.clone(), m.default))
                .collect::<Vec<_>>()
        };
        if names(&new) != names(&old) {
            fixed.push("[[model]]");
        }
        if new.mcp_servers != old.mcp_servers {
            fixed.push("[[mcp]]");
        }
        if new.engine != old.engine {
            fixed.push("[engine]");
        }
        if !fixed.is_empty() {
            return Err(err(
                ErrorCode::InvalidConfig,
                format!(
                    "{} cannot change without a restart; the old config stays in force",
                    fixed.join(", ")
                ),
            ));
        }
        if let Some(store) = self.pie.store.get() {
            store.set_config(new.store.clone());
        }
        *self.config.write().unwrap() = Arc::new(new);
        tracing::info!(path = %path.display(), "config reloaded");
        Ok(())
    }

    /// Stops new launches, waits up to the grace period for running processes, then
    /// kills the rest and waits for their ends to be recorded.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let grace = Duration::from_millis(self.config().daemon.shutdown_grace_ms);
        let running = self.procs.running();
        tracing::info!(running = running.len(), ?grace, "draining");
        let all_done = futures_wait_all(&running);
        if tokio::time::timeout(grace, all_done).await.is_err() {
            for p in self.procs.running() {
                p.control.kill("daemon shutdown (grace period over)");
            }
            futures_wait_all(&running).await;
        }
        // Logs and records are written without fsync while processes run; make them
        // durable before the daemon goes.
        if let Ok(dir) = std::fs::File::open(&self.state_dir) {
            let _ = nix::unistd::syncfs(&dir);
        }
    }
}

async fn futures_wait_all(procs: &[Arc<Process>]) {
    for p in procs {
        p.wait().await;
    }
}
