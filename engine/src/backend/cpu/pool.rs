//! A tiny fork-join thread pool for the forward pass. A decode step runs ~200 parallel regions
//! of a few tens of microseconds each, so waking threads through a channel or a condvar per
//! region would cost more than the work; workers spin on an epoch counter for a while and only
//! then park. Tasks are handed out through an atomic counter (dynamic load balancing).
//!
//! # Safety
//! `run` publishes a pointer to a closure on its own stack and does not return until every
//! worker has acknowledged that epoch, so no worker can touch the closure after `run` returns.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};

/// How many spin iterations a worker waits before parking: long enough to bridge the gaps
/// between the parallel regions of one forward pass, short enough not to burn a core while
/// the engine is idle.
const SPINS_BEFORE_PARK: u32 = 1 << 16;

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

struct Shared {
    epoch: AtomicUsize,
    job: AtomicPtr<()>,
    next: AtomicUsize,
    active: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleeping: Vec<AtomicBool>,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    threads: Vec<Thread>,
    handles: Vec<JoinHandle<()>>,
    /// Serializes `run` calls: the pool runs one job at a time.
    lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` including the calling thread (so `n_threads - 1` workers).
    pub fn new(n_threads: usize) -> Self {
        let n_workers = n_threads.max(1) - 1;
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut handles = Vec::new();
        for i in 0..n_workers {
            let s = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("engine-cpu-{i}"))
                    .spawn(move || worker(s, i))
                    .expect("spawn engine worker thread"),
            );
        }
        let threads = handles.iter().map(|h| h.thread().clone()).collect();
        ThreadPool {
            shared,
            threads,
            handles,
            lock: Mutex::new(()),
        }
    }

    /// Number of threads that run tasks, the caller included.
    pub fn n_threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs `f(0..n_tasks)` across the pool and returns when all tasks are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.handles.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let job = Job { f, n_tasks };
        s.job.store(&job as *const Job as *mut (), SeqCst);
        s.next.store(0, SeqCst);
        s.active.store(self.handles.len(), SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        for (i, t) in self.threads.iter().enumerate() {
            if s.sleeping[i].load(SeqCst) {
                t.unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| {
            loop {
                let i = s.next.fetch_add(1, AcqRel);
                if i >= n_tasks {
                    break;
                }
                f(i);
            }
        }));
        while s.active.load(Acquire) != 0 {
            std::hint::spin_loop();
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a task panicked on an engine worker thread");
        }
    }
}

fn worker(s: Arc<Shared>, idx: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Acquire);
            if e != seen {
                break e;
            }
            if s.shutdown.load(Acquire) {
                return;
            }
            spins += 1;
            if spins < SPINS_BEFORE_PARK {
                std::hint::spin_loop();
            } else {
                // Dekker-style handshake with `run`: announce sleep, then re-check the epoch.
                s.sleeping[idx].store(true, SeqCst);
                if s.epoch.load(SeqCst) == seen && !s.shutdown.load(SeqCst) {
                    std::thread::park_timeout(std::time::Duration::from_millis(50));
                }
                s.sleeping[idx].store(false, SeqCst);
            }
        };
        seen = epoch;
        // SAFETY: see the module docs; the job outlives this epoch because `run` waits for
        // `active` to reach zero.
        let job = unsafe { &*(s.job.load(Acquire) as *const Job) };
        let r = catch_unwind(AssertUnwindSafe(|| {
            loop {
                let i = s.next.fetch_add(1, AcqRel);
                if i >= job.n_tasks {
                    break;
                }
                (job.f)(i);
            }
        }));
        if r.is_err() {
            s.panicked.store(true, SeqCst);
        }
        s.active.fetch_sub(1, Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        for t in &self.threads {
            t.unpark();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A raw pointer that tasks on several threads may write through, each to a disjoint part.
/// The caller of `ThreadPool::run` guarantees the disjointness.
#[derive(Clone, Copy)]
pub struct SyncPtr<T>(pub *mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        let pool = ThreadPool::new(3);
        for n in [1usize, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
        }
    }
}
