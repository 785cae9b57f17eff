//! `pie:core/session` semantics: the channel between one process and its user.
//!
//! **Outbound** (`send`, `send-file`): every client following the process (`pie-ctl attach`,
//! a foreground `pie-ctl launch`, `logs -f`) gets each item sent while it follows. While
//! nobody follows, items are kept in a bounded buffer (the most recent [`OUTBOX_BYTES`]) and
//! handed to the next follower first; what the bound pushed out is counted and reported to
//! that follower as a [`Outgoing::Dropped`] notice, never lost silently. A follower that
//! reads too slowly is told the same way. Once the process has ended, the buffer shrinks to
//! its newest [`ENDED_OUTBOX_BYTES`] (counted the same way) for a late `attach`.
//!
//! **Inbound** (`receive`, `receive-file`): `pie-ctl signal ID MESSAGE`, the lines an
//! attached `pie-ctl attach` reads from its stdin, and `pie-ctl send-file` land in bounded
//! inboxes; a full inbox refuses the message with an error the sender sees. Only a process
//! that can receive (an inferlet: its host state calls [`Session::open_inbox`]) accepts them.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::mailbox::{Bounds, ITEM_OVERHEAD, Mailbox, PushError};

/// Bytes of outbound items kept while nobody follows the process (the newest win).
pub const OUTBOX_BYTES: usize = 4 << 20;
/// Bytes of unfollowed output kept once the process has ended (the newest win): enough for a
/// late `attach` to see how it finished, small enough that many ended processes cost little.
pub const ENDED_OUTBOX_BYTES: usize = 64 << 10;
/// Outbound items a follower may have in flight before it counts as too slow.
const FOLLOWER_QUEUE: usize = 4096;
/// Largest single message or file, either way.
pub const MAX_ITEM_BYTES: usize = 16 << 20;
/// Bounds of each inbox (text messages, files).
pub const INBOX_BOUNDS: Bounds = Bounds {
    max_items: 1024,
    max_bytes: 32 << 20,
};

/// What a process sends to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Message(String),
    File(Vec<u8>),
    /// Items this follower will never see: pushed out of the buffer while nobody followed,
    /// or not taken fast enough.
    Dropped {
        items: u64,
        bytes: u64,
    },
}

impl Outgoing {
    fn cost(&self) -> usize {
        ITEM_OVERHEAD
            + match self {
                Outgoing::Message(s) => s.len(),
                Outgoing::File(b) => b.len(),
                Outgoing::Dropped { .. } => 0,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The process does not read session messages (a plain WASI program).
    NoReceiver,
    /// The process has ended.
    Ended,
    /// The inbox is full: the process is not calling `receive`.
    InboxFull {
        items: usize,
        bytes: usize,
    },
    TooLarge {
        size: usize,
        max: usize,
    },
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::NoReceiver => f.write_str(
                "the process does not receive session messages (it is not an inferlet); feed a WASI program's stdin with `launch -i` and `attach`",
            ),
            SessionError::Ended => f.write_str("the process has ended"),
            SessionError::InboxFull { items, bytes } => write!(
                f,
                "the process's inbox is full ({items} messages or {bytes} bytes): it is not calling receive"
            ),
            SessionError::TooLarge { size, max } => {
                write!(f, "{size} bytes is above the {max}-byte limit")
            }
        }
    }
}

impl std::error::Error for SessionError {}

pub struct Session {
    outbox: Mutex<Outbox>,
    messages: Mailbox<String>,
    files: Mailbox<Vec<u8>>,
    accepting: AtomicBool,
    closed: AtomicBool,
    /// Text of a stdin line not yet ended by `\n` (attach forwards stdin in chunks).
    partial_line: Mutex<Vec<u8>>,
}

#[derive(Default)]
struct Outbox {
    buffered: VecDeque<Outgoing>,
    bytes: usize,
    dropped_items: u64,
    dropped_bytes: u64,
    followers: Vec<Follower>,
}

struct Follower {
    tx: mpsc::Sender<Outgoing>,
    lagged_items: u64,
    lagged_bytes: u64,
}

/// A client following the session: the backlog first, then live items from `rx`.
pub struct Following {
    pub backlog: Vec<Outgoing>,
    pub rx: mpsc::Receiver<Outgoing>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("accepting", &self.accepting.load(Ordering::Relaxed))
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

impl Default for Session {
    fn default() -> Self {
        Session {
            outbox: Mutex::default(),
            messages: Mailbox::new(INBOX_BOUNDS),
            files: Mailbox::new(INBOX_BOUNDS),
            accepting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            partial_line: Mutex::default(),
        }
    }
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// The session of a process that ended in an earlier daemon run.
    pub fn ended() -> Session {
        let s = Session::default();
        s.close();
        s
    }

    // ── outbound ────────────────────────────────────────────────────────────

    /// Sends a message to the user (`session.send`).
    pub fn send(&self, message: String) -> Result<(), SessionError> {
        self.send_item(Outgoing::Message(message))
    }

    /// Sends a file to the user (`session.send-file`).
    pub fn send_file(&self, data: Vec<u8>) -> Result<(), SessionError> {
        self.send_item(Outgoing::File(data))
    }

    fn send_item(&self, item: Outgoing) -> Result<(), SessionError> {
        let size = item.cost() - ITEM_OVERHEAD;
        if size > MAX_ITEM_BYTES {
            return Err(SessionError::TooLarge {
                size,
                max: MAX_ITEM_BYTES,
            });
        }
        let mut out = self.outbox.lock().unwrap();
        out.followers.retain(|f| !f.tx.is_closed());
        if out.followers.is_empty() {
            out.buffer(item);
            return Ok(());
        }
        for f in &mut out.followers {
            if f.lagged_items > 0 {
                let notice = Outgoing::Dropped {
                    items: f.lagged_items,
                    bytes: f.lagged_bytes,
                };
                if f.tx.try_send(notice).is_ok() {
                    f.lagged_items = 0;
                    f.lagged_bytes = 0;
                }
            }
            if f.lagged_items > 0 || f.tx.try_send(item.clone()).is_err() {
                f.lagged_items += 1;
                f.lagged_bytes += size as u64;
            }
        }
        Ok(())
    }

    /// Starts following: takes the buffered backlog (preceded by a `Dropped` notice when
    /// the buffer lost items) and registers for live items.
    pub fn follow(&self) -> Following {
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        let mut out = self.outbox.lock().unwrap();
        let mut backlog = Vec::with_capacity(out.buffered.len() + 1);
        if out.dropped_items > 0 {
            backlog.push(Outgoing::Dropped {
                items: std::mem::take(&mut out.dropped_items),
                bytes: std::mem::take(&mut out.dropped_bytes),
            });
        }
        backlog.extend(out.buffered.drain(..));
        out.bytes = 0;
        // An ended session gets no more items: the follower takes the backlog only (its
        // receiver sees the channel closed), and the ended session keeps no follower list.
        if !self.closed.load(Ordering::SeqCst) {
            out.followers.push(Follower {
                tx,
                lagged_items: 0,
                lagged_bytes: 0,
            });
        }
        Following { backlog, rx }
    }

    /// Items waiting for a follower (for `inspect`-style reporting and tests).
    pub fn buffered(&self) -> usize {
        self.outbox.lock().unwrap().buffered.len()
    }

    // ── inbound ─────────────────────────────────────────────────────────────

    /// Marks the process as one that receives (an inferlet); until then inbound items are
    /// refused with [`SessionError::NoReceiver`].
    pub fn open_inbox(&self) {
        if !self.is_closed() {
            self.accepting.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the process takes inbound items (an inferlet that has not ended).
    pub fn accepts(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Ends the inbound side (the process is gone) and trims the unfollowed output to
    /// [`ENDED_OUTBOX_BYTES`], counting what goes.
    pub fn close(&self) {
        self.outbox.lock().unwrap().trim(ENDED_OUTBOX_BYTES);
        self.closed.store(true, Ordering::SeqCst);
        self.accepting.store(false, Ordering::SeqCst);
        self.messages.close();
        self.files.close();
    }

    fn check_accepting(&self) -> Result<(), SessionError> {
        if self.accepting.load(Ordering::SeqCst) {
            Ok(())
        } else if self.is_closed() {
            Err(SessionError::Ended)
        } else {
            Err(SessionError::NoReceiver)
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Delivers a message to the process's `receive` (`pie-ctl signal`).
    pub fn signal(&self, message: String) -> Result<(), SessionError> {
        self.check_accepting()?;
        self.messages.try_push(message).map_err(inbox_error)
    }

    /// Delivers a file to the process's `receive-file`.
    pub fn deliver_file(&self, data: Vec<u8>) -> Result<(), SessionError> {
        self.check_accepting()?;
        self.files.try_push(data).map_err(inbox_error)
    }

    /// Delivers stdin bytes from an attached client: each complete line (without its line
    /// end) becomes one message; `eof` flushes an unterminated last line. Returns how many
    /// messages it delivered.
    pub fn deliver_lines(&self, data: &[u8], eof: bool) -> Result<usize, SessionError> {
        self.check_accepting()?;
        let mut partial = self.partial_line.lock().unwrap();
        partial.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = partial.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
        }
        if eof && !partial.is_empty() {
            lines.push(std::mem::take(&mut *partial));
        }
        if partial.len() > MAX_ITEM_BYTES {
            partial.clear();
            return Err(SessionError::TooLarge {
                size: MAX_ITEM_BYTES + 1,
                max: MAX_ITEM_BYTES,
            });
        }
        drop(partial);
        let n = lines.len();
        for line in lines {
            self.messages
                .try_push(String::from_utf8_lossy(&line).into_owned())
                .map_err(inbox_error)?;
        }
        Ok(n)
    }

    /// A future resolving to the next message (`session.receive`); `None` if the process's
    /// session closed first. The message is taken only when the future completes.
    pub fn receive(
        self: &std::sync::Arc<Self>,
    ) -> impl Future<Output = Option<String>> + Send + 'static {
        let me = self.clone();
        async move { me.messages.recv().await }
    }

    /// A future resolving to the next file (`session.receive-file`).
    pub fn receive_file(
        self: &std::sync::Arc<Self>,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send + 'static {
        let me = self.clone();
        async move { me.files.recv().await }
    }
}

fn inbox_error(e: PushError) -> SessionError {
    match e {
        PushError::Full { items, bytes } => SessionError::InboxFull { items, bytes },
        PushError::TooLarge { size, max } => SessionError::TooLarge { size, max },
        PushError::Closed => SessionError::Ended,
    }
}

impl Outbox {
    fn buffer(&mut self, item: Outgoing) {
        self.bytes += item.cost();
        self.buffered.push_back(item);
        self.trim(OUTBOX_BYTES);
    }

    /// Drops the oldest items until at most `max` bytes remain (the newest item stays).
    fn trim(&mut self, max: usize) {
        while self.bytes > max && self.buffered.len() > 1 {
            let old = self.buffered.pop_front().unwrap();
            self.bytes -= old.cost();
            self.dropped_items += 1;
            self.dropped_bytes += (old.cost() - ITEM_OVERHEAD) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn msg(s: &str) -> Outgoing {
        Outgoing::Message(s.to_string())
    }

    #[test]
    fn messages_wait_for_the_first_follower() {
        let s = Session::new();
        s.send("a".into()).unwrap();
        s.send_file(vec![1, 2, 3]).unwrap();
        let mut f = s.follow();
        assert_eq!(f.backlog, vec![msg("a"), Outgoing::File(vec![1, 2, 3])]);
        s.send("live".into()).unwrap();
        assert_eq!(f.rx.try_recv().unwrap(), msg("live"));
        // A second follower gets live items too, not the backlog again.
        let mut g = s.follow();
        assert!(g.backlog.is_empty());
        s.send("both".into()).unwrap();
        assert_eq!(f.rx.try_recv().unwrap(), msg("both"));
        assert_eq!(g.rx.try_recv().unwrap(), msg("both"));
        // Once every follower is gone, buffering resumes.
        drop(f);
        drop(g);
        s.send("later".into()).unwrap();
        assert_eq!(s.buffered(), 1);
    }

    #[test]
    fn the_buffer_keeps_the_newest_and_counts_the_rest() {
        let s = Session::new();
        let chunk = "x".repeat(1 << 20);
        for _ in 0..6 {
            s.send(chunk.clone()).unwrap();
        }
        s.send("last".into()).unwrap();
        let f = s.follow();
        let Outgoing::Dropped { items, bytes } = f.backlog[0] else {
            panic!("expected a dropped notice first, got {:?}", f.backlog[0]);
        };
        assert!(items >= 2, "{items}");
        assert_eq!(bytes, items << 20);
        assert_eq!(f.backlog.last(), Some(&msg("last")));
        assert_eq!(f.backlog.len() as u64 - 1 + items, 7);
    }

    #[test]
    fn an_ended_process_keeps_only_the_newest_output() {
        let s = Session::new();
        for _ in 0..4 {
            s.send("y".repeat(40 << 10)).unwrap();
        }
        s.close();
        let f = s.follow();
        assert_eq!(
            f.backlog[0],
            Outgoing::Dropped {
                items: 3,
                bytes: 3 * (40 << 10)
            }
        );
        assert_eq!(f.backlog.len(), 2);
    }

    #[tokio::test]
    async fn inbound_needs_a_receiver_and_wakes_it() {
        let s = Arc::new(Session::new());
        assert_eq!(s.signal("hi".into()), Err(SessionError::NoReceiver));
        s.open_inbox();
        let waiting = tokio::spawn(s.receive());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        s.signal("hi".into()).unwrap();
        assert_eq!(waiting.await.unwrap().as_deref(), Some("hi"));
        s.deliver_file(vec![7; 10]).unwrap();
        assert_eq!(s.receive_file().await, Some(vec![7; 10]));
        s.close();
        assert_eq!(s.signal("late".into()), Err(SessionError::Ended));
        assert_eq!(s.receive().await, None);
    }

    #[tokio::test]
    async fn stdin_chunks_become_lines() {
        let s = Arc::new(Session::new());
        s.open_inbox();
        assert_eq!(s.deliver_lines(b"first li", false).unwrap(), 0);
        assert_eq!(s.deliver_lines(b"ne\r\nsecond\nthi", false).unwrap(), 2);
        assert_eq!(s.deliver_lines(b"rd", true).unwrap(), 1);
        for want in ["first line", "second", "third"] {
            assert_eq!(s.receive().await.as_deref(), Some(want));
        }
    }

    #[test]
    fn a_full_inbox_is_an_error_for_the_sender() {
        let s = Session::new();
        s.open_inbox();
        for i in 0..INBOX_BOUNDS.max_items {
            s.signal(i.to_string()).unwrap();
        }
        let e = s.signal("one too many".into()).unwrap_err();
        assert!(e.to_string().contains("not calling receive"), "{e}");
    }
}
