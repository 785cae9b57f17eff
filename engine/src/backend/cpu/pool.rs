//! A tiny fork-join thread pool for the forward pass. A decode step runs ~150 parallel regions
//! of a few tens of microseconds each, so waking threads through a channel or a condvar per
//! region would cost more than the work; workers spin on a state word for a while and only
//! then park.
//!
//! The machine is often shared (builds, other services), so the caller never waits for a
//! worker that has not started: tasks are claimed one at a time with a compare-and-swap on a
//! word that packs (epoch, task count, next task), the caller claims tasks too, and it waits
//! only for tasks that were actually claimed. A descheduled worker therefore costs nothing.
//!
//! # Safety
//! `run` publishes a pointer to a closure on its own stack. A worker dereferences it only
//! after claiming a task of the current epoch, and `run` returns only after every claimed task
//! of its epoch has finished, so the closure outlives every use.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};

/// How many spin iterations a worker waits before parking: long enough to bridge the gaps
/// between the parallel regions of one forward pass, short enough not to burn a core while
/// the engine is idle.
const SPINS_BEFORE_PARK: u32 = 1 << 14;

/// Pure spinning (lowest wake-up latency) covers the gaps inside one forward pass.
const SPINS_BEFORE_YIELD: u32 = 1 << 11;

const IDX_BITS: u64 = 20;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;

fn pack(epoch: u64, n: u64, next: u64) -> u64 {
    (epoch << (2 * IDX_BITS)) | (n << IDX_BITS) | next
}

fn unpack(s: u64) -> (u64, u64, u64) {
    (
        s >> (2 * IDX_BITS),
        (s >> IDX_BITS) & IDX_MASK,
        s & IDX_MASK,
    )
}

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Shared {
    /// (epoch, n_tasks, next task).
    state: AtomicU64,
    job: AtomicPtr<()>,
    done: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleeping: Vec<AtomicBool>,
}

impl Shared {
    /// Claims the next task of the current job, if any is left.
    fn claim(&self) -> Option<usize> {
        let mut s = self.state.load(Acquire);
        loop {
            let (_, n, next) = unpack(s);
            if next >= n {
                return None;
            }
            match self.state.compare_exchange_weak(s, s + 1, AcqRel, Acquire) {
                Ok(_) => return Some(next as usize),
                Err(cur) => s = cur,
            }
        }
    }

    fn run_claimed(&self, mut i: usize) {
        loop {
            // Reloaded for every task: after the last task of one job, `claim` may succeed on
            // the next job, whose closure is a different one.
            // SAFETY: a task of the current epoch is claimed; see the module docs.
            let job = unsafe { &*(self.job.load(Acquire) as *const Job) };
            if catch_unwind(AssertUnwindSafe(|| (job.f)(i))).is_err() {
                self.panicked.store(true, SeqCst);
            }
            self.done.fetch_add(1, Release);
            match self.claim() {
                Some(j) => i = j,
                None => return,
            }
        }
    }
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    threads: Vec<Thread>,
    handles: Vec<JoinHandle<()>>,
    /// Serializes `run` calls: the pool runs one job at a time.
    lock: Mutex<u64>,
}

impl ThreadPool {
    /// A pool of `n_threads` including the calling thread (so `n_threads - 1` workers).
    pub fn new(n_threads: usize) -> Self {
        let n_workers = n_threads.max(1) - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
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
            lock: Mutex::new(0),
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
        assert!((n_tasks as u64) < IDX_MASK, "too many tasks for one run");
        let mut epoch = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        *epoch = (*epoch + 1) & ((1 << 24) - 1);
        let s = &*self.shared;
        let job = Job { f };
        s.job.store(&job as *const Job as *mut (), Release);
        s.done.store(0, Release);
        s.state.store(pack(*epoch, n_tasks as u64, 0), Release);
        for (i, t) in self.threads.iter().enumerate() {
            if s.sleeping[i].load(SeqCst) {
                t.unpark();
            }
        }
        if let Some(i) = s.claim() {
            s.run_claimed(i);
        }
        let mut spins = 0u32;
        while s.done.load(Acquire) != n_tasks {
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
            } else {
                // The worker holding the last task may have been descheduled: let it run.
                std::thread::yield_now();
            }
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a task of the engine thread pool panicked");
        }
    }
}

fn worker(s: Arc<Shared>, idx: usize) {
    let mut spins = 0u32;
    loop {
        if let Some(i) = s.claim() {
            s.run_claimed(i);
            spins = 0;
            continue;
        }
        if s.shutdown.load(Acquire) {
            return;
        }
        spins += 1;
        if spins < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            continue;
        }
        if spins < SPINS_BEFORE_PARK {
            // Between forward passes the engine thread and the callers need the cores (to
            // sample, complete, submit the next step): yield rather than burn them.
            std::thread::yield_now();
            continue;
        }
        // Dekker-style handshake with `run`: announce sleep, then re-check for work.
        s.sleeping[idx].store(true, SeqCst);
        let (_, n, next) = unpack(s.state.load(SeqCst));
        if next >= n && !s.shutdown.load(SeqCst) {
            std::thread::park_timeout(std::time::Duration::from_millis(100));
        }
        s.sleeping[idx].store(false, SeqCst);
        spins = 0;
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
impl<T> SyncPtr<T> {
    /// The pointer. A method (rather than `.0`) so that closures capture the whole `SyncPtr`.
    #[inline(always)]
    pub fn ptr(&self) -> *mut T {
        self.0
    }
}
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
