//! The reasoning decoder: finds a thinking block (`<think>` … `</think>`) in generated text.
//!
//! The markers are matched in the decoded text (whether the vocabulary has them as single
//! tokens or not), with a carried tail so a marker split across batches is still found. A
//! model whose generation cue already opens the block (the cue ends with the start marker,
//! as DeepSeek-R1's does) starts inside it. A model without thinking markers in its
//! vocabulary never enters a block: every batch is an empty delta (idle).
//!
//! One event per batch: `Complete(full reasoning)` when the block closed, else `Start` when
//! it opened (its first text comes with the next delta), else `Delta(new reasoning text)`.

use std::sync::Arc;

use engine::Tokenizer;

use super::detok::Detokenizer;

pub const THINK_START: &str = "<think>";
pub const THINK_END: &str = "</think>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningEvent {
    Start,
    Delta(String),
    Complete(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    Inside,
}

pub struct ReasoningDecoder {
    tok: Arc<Tokenizer>,
    detok: Detokenizer,
    initial: State,
    state: State,
    /// Decoded text not yet scanned for a marker (a possible marker prefix).
    pending: String,
    /// Reasoning text of the open block.
    reasoning: String,
    /// How much of `reasoning` was reported.
    reported: usize,
    /// False when the vocabulary has no thinking markers at all.
    enabled: bool,
}

impl ReasoningDecoder {
    /// `cue` is the model's generation cue text; `enabled` whether it has thinking markers.
    pub fn new(tok: Arc<Tokenizer>, cue: &str, enabled: bool) -> ReasoningDecoder {
        let initial = if enabled && cue.trim_end().ends_with(THINK_START) {
            State::Inside
        } else {
            State::Outside
        };
        ReasoningDecoder {
            tok,
            detok: Detokenizer::new(),
            initial,
            state: initial,
            pending: String::new(),
            reasoning: String::new(),
            reported: 0,
            enabled,
        }
    }

    /// Whether `tok`'s vocabulary spells the thinking markers as tokens.
    pub fn markers_in(tok: &Tokenizer) -> bool {
        tok.token_to_id(THINK_START).is_some() && tok.token_to_id(THINK_END).is_some()
    }

    pub fn feed(&mut self, tokens: &[u32]) -> Result<ReasoningEvent, String> {
        if !self.enabled {
            return Ok(ReasoningEvent::Delta(String::new()));
        }
        for &t in tokens {
            self.detok.push(t);
        }
        let text = self.detok.delta(&self.tok)?;
        self.pending.push_str(&text);
        let mut started = false;
        let mut completed = None;
        loop {
            match self.state {
                State::Outside => match self.pending.find(THINK_START) {
                    Some(at) => {
                        self.pending.drain(..at + THINK_START.len());
                        self.state = State::Inside;
                        self.reasoning.clear();
                        self.reported = 0;
                        started = true;
                    }
                    None => {
                        keep_tail(&mut self.pending, THINK_START.len() - 1);
                        break;
                    }
                },
                State::Inside => match self.pending.find(THINK_END) {
                    Some(at) => {
                        self.reasoning.push_str(&self.pending[..at]);
                        self.pending.drain(..at + THINK_END.len());
                        self.state = State::Outside;
                        completed = Some(std::mem::take(&mut self.reasoning));
                        self.reported = 0;
                    }
                    None => {
                        // Keep a possible partial end marker back; the rest is reasoning.
                        let keep = partial_suffix(&self.pending, THINK_END);
                        let cut = self.pending.len() - keep;
                        self.reasoning.push_str(&self.pending[..cut]);
                        self.pending.drain(..cut);
                        break;
                    }
                },
            }
        }
        if let Some(full) = completed {
            return Ok(ReasoningEvent::Complete(full.trim().to_string()));
        }
        if started {
            return Ok(ReasoningEvent::Start);
        }
        if self.state == State::Inside {
            let delta = self.reasoning[self.reported..].to_string();
            self.reported = self.reasoning.len();
            return Ok(ReasoningEvent::Delta(delta));
        }
        Ok(ReasoningEvent::Delta(String::new()))
    }

    pub fn reset(&mut self) {
        self.detok = Detokenizer::new();
        self.state = self.initial;
        self.pending.clear();
        self.reasoning.clear();
        self.reported = 0;
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `marker`.
pub(crate) fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// Drops all but a possible marker prefix at the end of `s` (at most `n` bytes).
fn keep_tail(s: &mut String, n: usize) {
    if s.len() > n {
        let mut cut = s.len() - n;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}
