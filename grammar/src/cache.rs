//! Compiled grammars per tokenizer environment, so that a grammar used again (every request
//! of a JSON-mode client, the same tool schema) is compiled once.
//!
//! An entry is a matcher in its initial state; a new matcher is a clone of it, which shares
//! the compiled grammar (`Arc`) and llguidance's lazily built lexer automaton (behind its own
//! mutex), so later matchers also start with a warm lexer.

use crate::grammar::GrammarKind;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// At most this many compiled grammars are kept per environment; the oldest goes first.
const CAPACITY: usize = 64;

type Key = (GrammarKind, String);

#[derive(Default)]
pub(crate) struct GrammarCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, llguidance::Matcher>,
    order: VecDeque<Key>,
}

impl GrammarCache {
    pub(crate) fn get(&self, key: &Key) -> Option<llguidance::Matcher> {
        let entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        entries.map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: Key, matcher: &llguidance::Matcher) {
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if entries.map.contains_key(&key) {
            return;
        }
        if entries.order.len() >= CAPACITY
            && let Some(old) = entries.order.pop_front()
        {
            entries.map.remove(&old);
        }
        entries.order.push_back(key.clone());
        entries.map.insert(key, matcher.clone());
    }

    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}
