//! The process table: every process this daemon ran, running or ended, with its metadata
//! persisted under `<state>/procs/<id>.json` and its event log under `<state>/logs/<id>.log`.
//!
//! Ids grow monotonically across restarts (the next id is one past the largest on disk), so
//! an id never names two processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use proto::{EventKind, ExitStatus, ProcessInfo, ProcessState};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use crate::bus::Session;
use crate::events::EventLog;
use crate::runtime::Control;
use crate::util::{Durability, unix_ms, write_atomic};

pub struct Process {
    pub id: u64,
    pub owner: u32,
    info: Mutex<ProcessInfo>,
    pub log: Arc<EventLog>,
    pub control: Arc<Control>,
    /// The channel between an inferlet and its user (`pie:core/session`).
    pub session: Arc<Session>,
    /// The host end of the guest's stdin while it is open.
    stdin: tokio::sync::Mutex<Option<DuplexStream>>,
    /// Becomes true once the process has ended and its end is recorded.
    ended: watch::Sender<bool>,
    meta_path: PathBuf,
}

impl Process {
    pub fn info(&self) -> ProcessInfo {
        self.info.lock().unwrap().clone()
    }

    pub fn is_running(&self) -> bool {
        !*self.ended.borrow()
    }

    /// Resolves once the process has ended.
    pub async fn wait(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Feeds bytes to the guest's stdin. Waits while the guest is not reading (backpressure).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), String> {
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(format!("process {} has no open stdin", self.id));
        };
        if let Err(e) = pipe.write_all(data).await {
            *stdin = None;
            return Err(format!("process {} stopped reading stdin: {e}", self.id));
        }
        Ok(())
    }

    pub async fn close_stdin(&self) {
        self.stdin.lock().await.take();
        self.info.lock().unwrap().stdin_open = false;
    }

    /// Records how the process ended: exit event, metadata, waiters.
    pub fn finish(&self, status: ExitStatus, fuel_used: Option<u64>) {
        self.session.close();
        // The exit event goes first: followers end on it, and it must be in the log
        // before anyone can see the process as ended.
        self.log.append(EventKind::Exit(status.clone()));
        let info = {
            let mut info = self.info.lock().unwrap();
            info.state = ProcessState::Exited(status.clone());
            info.ended_unix_ms = Some(unix_ms());
            info.fuel_used = fuel_used;
            info.stdin_open = false;
            info.clone()
        };
        if let Err(e) = save(&self.meta_path, &info) {
            tracing::warn!(id = self.id, "cannot record process end: {e:#}");
        }
        self.ended.send_replace(true);
    }
}

pub struct ProcessTable {
    procs_dir: PathBuf,
    logs_dir: PathBuf,
    procs: RwLock<BTreeMap<u64, Arc<Process>>>,
    next_id: AtomicU64,
}

fn save(path: &Path, info: &ProcessInfo) -> Result<()> {
    write_atomic(
        path,
        &serde_json::to_vec_pretty(info)?,
        Durability::Buffered,
    )
    .context("cannot write process metadata")
}

impl ProcessTable {
    /// Loads the processes of earlier runs. A process recorded as running did not survive
    /// the daemon's end: it is marked lost, in its metadata and in its log.
    pub fn open(state_dir: &Path) -> Result<ProcessTable> {
        let procs_dir = state_dir.join("procs");
        let logs_dir = state_dir.join("logs");
        for dir in [&procs_dir, &logs_dir] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut procs = BTreeMap::new();
        let mut max_id = 0;
        for entry in std::fs::read_dir(&procs_dir)?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let info: ProcessInfo = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "skipping unreadable process record: {e:#}");
                    continue;
                }
            };
            max_id = max_id.max(info.id);
            let log_path = logs_dir.join(format!("{}.log", info.id));
            let mut info = info;
            if info.state.is_running() {
                info.state = ProcessState::Exited(ExitStatus::Lost);
                info.ended_unix_ms = Some(unix_ms());
                info.stdin_open = false;
                save(&path, &info)?;
            }
            let ProcessState::Exited(status) = info.state.clone() else {
                unreachable!("marked exited above")
            };
            let log = Arc::new(EventLog::reopen(&log_path, status));
            procs.insert(
                info.id,
                Arc::new(Process {
                    id: info.id,
                    owner: info.owner_uid,
                    info: Mutex::new(info),
                    log,
                    control: Control::new(),
                    session: Arc::new(Session::ended()),
                    stdin: tokio::sync::Mutex::new(None),
                    ended: watch::channel(true).0,
                    meta_path: path,
                }),
            );
        }
        Ok(ProcessTable {
            procs_dir,
            logs_dir,
            procs: RwLock::new(procs),
            next_id: AtomicU64::new(max_id + 1),
        })
    }

    /// Registers a new running process; its metadata and log file exist when this returns.
    pub fn create(
        &self,
        mut info: ProcessInfo,
        stdin: Option<DuplexStream>,
        ring_bytes: usize,
    ) -> Result<Arc<Process>> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        info.id = id;
        let meta_path = self.procs_dir.join(format!("{id}.json"));
        let log = EventLog::create(&self.logs_dir.join(format!("{id}.log")), ring_bytes)
            .context("cannot create the process log")?;
        save(&meta_path, &info)?;
        let process = Arc::new(Process {
            id,
            owner: info.owner_uid,
            info: Mutex::new(info),
            log: Arc::new(log),
            control: Control::new(),
            session: Arc::new(Session::new()),
            stdin: tokio::sync::Mutex::new(stdin),
            ended: watch::channel(false).0,
            meta_path,
        });
        self.procs.write().unwrap().insert(id, process.clone());
        Ok(process)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Process>> {
        self.procs.read().unwrap().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Process>> {
        self.procs.read().unwrap().values().cloned().collect()
    }

    pub fn running(&self) -> Vec<Arc<Process>> {
        self.all().into_iter().filter(|p| p.is_running()).collect()
    }
}
