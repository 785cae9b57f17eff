//! A one-shot completion that the engine thread fills and a caller either blocks on
//! (`wait`) or awaits (it implements `Future`), so the same request API serves sync code and
//! the daemon's async runtime without depending on one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    state: Mutex<(Option<T>, Option<Waker>)>,
    ready: Condvar,
}

/// The receiving half.
pub struct Completion<T> {
    slot: Arc<Slot<T>>,
}

/// The sending half, kept by the engine.
pub struct Completer<T> {
    slot: Arc<Slot<T>>,
}

pub fn completion<T>() -> (Completer<T>, Completion<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new((None, None)),
        ready: Condvar::new(),
    });
    (Completer { slot: slot.clone() }, Completion { slot })
}

impl<T> Completer<T> {
    pub fn complete(self, value: T) {
        let waker = {
            let mut g = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
            g.0 = Some(value);
            g.1.take()
        };
        self.slot.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Completion<T> {
    /// Blocks the calling thread until the value arrives.
    pub fn wait(self) -> T {
        let mut g = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = g.0.take() {
                return v;
            }
            g = self.slot.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The value if it has arrived.
    pub fn try_take(&mut self) -> Option<T> {
        self.slot
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .take()
    }
}

impl<T> Future for Completion<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut g = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        match g.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
