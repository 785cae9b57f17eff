//! Per-process limits: the memory cap (a `StoreLimits` wrapped so that hitting it ends the
//! process with a typed reason), the kill switch, and the errors that say why a process was
//! stopped from outside its own code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder, UpdateDeadline};

/// Why the host stopped a process. Returned as the error of the wasm call so the runner can
/// tell a limit from a trap in the guest's own code.
#[derive(Debug, Clone)]
pub enum Stop {
    Killed(String),
    Deadline,
    Memory { limit_bytes: u64 },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Killed(why) => write!(f, "killed: {why}"),
            Stop::Deadline => write!(f, "deadline exceeded"),
            Stop::Memory { limit_bytes } => write!(f, "memory limit of {limit_bytes} bytes hit"),
        }
    }
}

impl std::error::Error for Stop {}

/// Shared between the process table (which may kill) and the running store (which checks
/// on every epoch tick and waits on `notify` while blocked in host calls).
pub struct Control {
    killed: AtomicBool,
    reason: std::sync::Mutex<String>,
    notify: Notify,
}

impl Control {
    pub fn new() -> Arc<Control> {
        Arc::new(Control {
            killed: AtomicBool::new(false),
            reason: std::sync::Mutex::new(String::new()),
            notify: Notify::new(),
        })
    }

    pub fn kill(&self, reason: &str) {
        *self.reason.lock().unwrap() = reason.to_string();
        self.killed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> String {
        self.reason.lock().unwrap().clone()
    }

    /// Resolves once `kill` has been called (immediately if it already was).
    pub async fn killed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    /// The epoch callback: called each tick (10 ms) while wasm runs. Yielding here is what
    /// lets a thousand busy processes share the runtime's threads.
    pub fn on_epoch(&self, deadline: Option<Instant>) -> wasmtime::Result<UpdateDeadline> {
        if self.is_killed() {
            return Err(Stop::Killed(self.reason()).into());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Deadline.into());
        }
        Ok(UpdateDeadline::Yield(1))
    }
}

/// Caps a store's linear memories and tables. Growing past the cap traps with
/// [`Stop::Memory`] instead of letting `memory.grow` return -1, so a process that hits its
/// cap ends with a reason that names the cap rather than an allocator abort.
pub struct MemoryCap {
    inner: StoreLimits,
    limit_bytes: u64,
}

impl MemoryCap {
    pub fn new(limit_bytes: u64) -> MemoryCap {
        MemoryCap {
            inner: StoreLimitsBuilder::new()
                .memory_size(limit_bytes as usize)
                .table_elements(1 << 20)
                .trap_on_grow_failure(false)
                .build(),
            limit_bytes,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.inner.memory_growing(current, desired, maximum)? {
            Ok(true)
        } else if maximum.is_some_and(|m| desired > m) {
            // The module's own declared maximum: an ordinary failed grow, not our cap.
            Ok(false)
        } else {
            Err(Stop::Memory {
                limit_bytes: self.limit_bytes,
            }
            .into())
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
}
