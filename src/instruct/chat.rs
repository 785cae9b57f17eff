//! The streaming chat decoder: generated tokens in, one event per batch out.
//!
//! - a stop token (see [`Template::stop_tokens`](super::template::Template::stop_tokens))
//!   ends the turn: `Done(full text)`; the decoder then starts a new turn with the rest of
//!   the batch, so one decoder serves a whole conversation;
//! - another special token is not text: `Interrupt(id)` (the first one of the batch); text
//!   decoded in the same batch is kept and comes with the next delta;
//! - otherwise `Delta(new text)`, possibly empty (the SDK reports that as idle), e.g. while
//!   a multi-byte character is still incomplete.

use std::collections::HashSet;
use std::sync::Arc;

use engine::Tokenizer;

use super::detok::Detokenizer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    Delta(String),
    Interrupt(u32),
    Done(String),
}

pub struct ChatDecoder {
    tok: Arc<Tokenizer>,
    stops: HashSet<u32>,
    special: HashSet<u32>,
    detok: Detokenizer,
}

impl ChatDecoder {
    pub fn new(tok: Arc<Tokenizer>, stops: &[u32], special: HashSet<u32>) -> ChatDecoder {
        ChatDecoder {
            tok,
            stops: stops.iter().copied().collect(),
            special,
            detok: Detokenizer::new(),
        }
    }

    pub fn feed(&mut self, tokens: &[u32]) -> Result<ChatEvent, String> {
        let mut interrupt = None;
        for (i, &t) in tokens.iter().enumerate() {
            if self.stops.contains(&t) {
                self.detok.flush(&self.tok)?;
                let text = self.detok.text().to_string();
                self.reset();
                // The rest of the batch belongs to the next turn.
                for &t in &tokens[i + 1..] {
                    if !self.special.contains(&t) {
                        self.detok.push(t);
                    }
                }
                return Ok(ChatEvent::Done(text));
            }
            if self.special.contains(&t) {
                interrupt.get_or_insert(t);
            } else {
                self.detok.push(t);
            }
        }
        if let Some(id) = interrupt {
            return Ok(ChatEvent::Interrupt(id));
        }
        Ok(ChatEvent::Delta(self.detok.delta(&self.tok)?))
    }

    pub fn reset(&mut self) {
        self.detok = Detokenizer::new();
    }
}
