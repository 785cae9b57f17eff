//! A process's event log: stdout/stderr chunks, notices and the exit status, each with a
//! sequence number.
//!
//! Every event is appended to a per-process log file (so `logs` works after the process
//! ended and after a daemon restart) and kept in a bounded in-memory ring (so followers
//! of a live process rarely touch the disk). Followers wait on a watch channel that carries
//! the next sequence number and then fetch what they miss, from the ring when it still holds
//! it, else from the file: a slow follower never blocks the process and never loses events.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proto::{Event, EventKind};
use tokio::sync::watch;

use crate::util::unix_ms;

pub struct EventLog {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// The sequence number the next event will get; bumped after each append.
    next_seq: watch::Sender<u64>,
}

struct Inner {
    next_seq: u64,
    ring: VecDeque<Event>,
    ring_bytes: usize,
    ring_cap: usize,
    /// `None` once a write failed: the log then lives in the ring only, and a notice says so.
    file: Option<File>,
    ended: bool,
}

fn event_size(e: &Event) -> usize {
    64 + match &e.kind {
        EventKind::Stdout(b) | EventKind::Stderr(b) => b.len(),
        EventKind::Notice(s) => s.len(),
        EventKind::Exit(_) => 0,
    }
}

impl EventLog {
    /// Creates the log of a new process (the file must not exist yet).
    pub fn create(path: &Path, ring_cap: usize) -> std::io::Result<EventLog> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(EventLog {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                next_seq: 0,
                ring: VecDeque::new(),
                ring_bytes: 0,
                ring_cap,
                file: Some(file),
                ended: false,
            }),
            next_seq: watch::channel(0).0,
        })
    }

    /// Opens the log of a process that ended in an earlier daemon run (read-only). A log
    /// whose last event is not an exit (the daemon died first) gets `status` appended, so
    /// every log ends with its exit and followers terminate.
    pub fn reopen(path: &Path, status: proto::ExitStatus) -> EventLog {
        let events = read_file(path);
        let next = events.last().map_or(0, |e| e.seq + 1);
        let has_end = events
            .last()
            .is_some_and(|e| matches!(e.kind, EventKind::Exit(_)));
        let log = EventLog {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                next_seq: next,
                ring: VecDeque::new(),
                ring_bytes: 0,
                ring_cap: 0,
                file: OpenOptions::new().append(true).open(path).ok(),
                ended: false,
            }),
            next_seq: watch::channel(next).0,
        };
        if !has_end {
            log.append(EventKind::Exit(status));
        }
        log.inner.lock().unwrap().ended = true;
        log
    }

    /// Appends one event and wakes followers. Never fails: a failing disk turns the log
    /// into a memory-only one and says so in a notice.
    pub fn append(&self, kind: EventKind) {
        let mut inner = self.inner.lock().unwrap();
        if inner.ended {
            return;
        }
        let ends = matches!(kind, EventKind::Exit(_));
        let event = Event {
            seq: inner.next_seq,
            unix_ms: unix_ms(),
            kind,
        };
        inner.next_seq += 1;
        if let Some(file) = inner.file.as_mut()
            && let Err(e) = file.write_all(&proto::encode_frame(&event))
        {
            inner.file = None;
            let notice = Event {
                seq: inner.next_seq,
                unix_ms: unix_ms(),
                kind: EventKind::Notice(format!(
                    "writing the log file {} failed ({e}); later output is kept in memory only",
                    self.path.display()
                )),
            };
            inner.next_seq += 1;
            tracing::warn!(path = %self.path.display(), error = %e, "log write failed");
            inner.push_ring(event);
            inner.push_ring(notice);
            return self.publish(inner, ends);
        }
        inner.push_ring(event);
        self.publish(inner, ends)
    }

    fn publish(&self, mut inner: std::sync::MutexGuard<'_, Inner>, ends: bool) {
        if ends {
            inner.ended = true;
        }
        let next = inner.next_seq;
        drop(inner);
        self.next_seq.send_replace(next);
    }

    /// A receiver that changes whenever events are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next_seq.subscribe()
    }

    pub fn next_seq(&self) -> u64 {
        self.inner.lock().unwrap().next_seq
    }

    /// Events with `seq >= from`, from the ring when it holds them all, else from the file.
    pub fn since(&self, from: u64) -> Vec<Event> {
        {
            let inner = self.inner.lock().unwrap();
            if from >= inner.next_seq {
                return Vec::new();
            }
            let ring_start = inner.ring.front().map_or(inner.next_seq, |e| e.seq);
            if from >= ring_start || inner.file.is_none() {
                return inner
                    .ring
                    .iter()
                    .filter(|e| e.seq >= from)
                    .cloned()
                    .collect();
            }
        }
        let mut events = read_file(&self.path);
        events.retain(|e| e.seq >= from);
        // Events the file missed after a write failure are still in the ring.
        let inner = self.inner.lock().unwrap();
        let last = events.last().map(|e| e.seq);
        events.extend(
            inner
                .ring
                .iter()
                .filter(|e| last.is_none_or(|l| e.seq > l) && e.seq >= from)
                .cloned(),
        );
        events
    }

    /// The sequence number from which the last `n` events start.
    pub fn tail_start(&self, n: u64) -> u64 {
        self.next_seq().saturating_sub(n)
    }
}

impl Inner {
    fn push_ring(&mut self, e: Event) {
        self.ring_bytes += event_size(&e);
        self.ring.push_back(e);
        while self.ring_bytes > self.ring_cap && self.ring.len() > 1 {
            let old = self.ring.pop_front().unwrap();
            self.ring_bytes -= event_size(&old);
        }
    }
}

/// Reads every complete event record of a log file; a torn last record (the daemon died
/// mid-write) is ignored.
pub fn read_file(path: &Path) -> Vec<Event> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut r = BufReader::new(file);
    let mut events = Vec::new();
    while let Ok(payload) = proto::read_frame(&mut r, proto::MAX_FRAME) {
        match proto::decode_payload::<Event>(&payload) {
            Ok(e) => events.push(e),
            Err(_) => break,
        }
    }
    // Drain so an unreadable tail does not leave a half-open reader around.
    let _ = r.read_to_end(&mut Vec::new());
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> EventKind {
        EventKind::Stdout(s.as_bytes().to_vec())
    }

    #[test]
    fn events_survive_in_the_file_after_the_ring_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let log = EventLog::create(&path, 200).unwrap();
        for i in 0..50 {
            log.append(out(&format!("line {i}\n")));
        }
        log.append(EventKind::Exit(proto::ExitStatus::Code(3)));
        let all = log.since(0);
        assert_eq!(all.len(), 51);
        assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as u64));
        assert_eq!(log.since(49).len(), 2);
        // After "restart": the file alone gives the same events.
        let again = EventLog::reopen(&path, proto::ExitStatus::Lost);
        assert_eq!(again.since(0), all);
        assert_eq!(again.tail_start(5), 46);
    }

    #[test]
    fn a_process_without_an_end_is_marked_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2.log");
        let log = EventLog::create(&path, 1 << 20).unwrap();
        log.append(out("partial"));
        drop(log);
        let again = EventLog::reopen(&path, proto::ExitStatus::Lost);
        let events = again.since(0);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventKind::Exit(proto::ExitStatus::Lost));
    }

    #[test]
    fn torn_records_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("3.log");
        let log = EventLog::create(&path, 1 << 20).unwrap();
        log.append(out("a"));
        log.append(out("b"));
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 2).unwrap();
        assert_eq!(read_file(&path).len(), 1);
    }
}
