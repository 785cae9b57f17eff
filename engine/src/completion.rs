//! A one-shot completion that the engine thread fills and a caller either blocks on
//! (`wait`) or awaits (it implements `Future`), so the same request API serves sync code and
//! the daemon's async runtime without depending on one. If the engine side is dropped without
//! completing (the engine thread died), the caller gets `Error::Shutdown` instead of hanging.

use crate::error::{Error, Result};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    state: Mutex<(Option<Result<T>>, Option<Waker>)>,
    ready: Condvar,
}

/// The receiving half.
pub struct Completion<T> {
    slot: Arc<Slot<T>>,
}

/// The sending half, kept by the engine.
pub struct Completer<T> {
    slot: Option<Arc<Slot<T>>>,
}

pub fn completion<T>() -> (Completer<T>, Completion<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new((None, None)),
        ready: Condvar::new(),
    });
    (
        Completer {
            slot: Some(slot.clone()),
        },
        Completion { slot },
    )
}

impl<T> Completer<T> {
    pub fn complete(mut self, value: Result<T>) {
        self.fill(value);
    }

    fn fill(&mut self, value: Result<T>) {
        let Some(slot) = self.slot.take() else { return };
        let waker = {
            let mut g = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            g.0 = Some(value);
            g.1.take()
        };
        slot.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        self.fill(Err(Error::Shutdown));
    }
}

impl<T> Completion<T> {
    /// Blocks the calling thread until the value arrives.
    pub fn wait(self) -> Result<T> {
        let mut g = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = g.0.take() {
                return v;
            }
            g = self.slot.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The value if it has arrived.
    pub fn try_take(&mut self) -> Option<Result<T>> {
        self.slot
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .take()
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_poll_and_dropped_completer() {
        let (tx, rx) = completion::<u32>();
        std::thread::spawn(move || tx.complete(Ok(7)));
        assert_eq!(rx.wait().unwrap(), 7);

        let (tx, mut rx) = completion::<u32>();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        tx.complete(Ok(8));
        assert!(matches!(
            Pin::new(&mut rx).poll(&mut cx),
            Poll::Ready(Ok(8))
        ));

        let (tx, rx) = completion::<u32>();
        drop(tx);
        assert!(matches!(rx.wait(), Err(Error::Shutdown)));
    }
}
