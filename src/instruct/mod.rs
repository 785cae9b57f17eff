//! `pie:instruct` semantics in plain Rust over the model's tokenizer and chat template:
//! turns rendered by the model's own template ([`template`]), the streaming chat decoder
//! ([`chat`]), the reasoning-block decoder ([`reasoning`]) and tool use ([`tools`]). The host
//! glue in `src/inferlet/instruct/` adapts these to the WIT; nothing here knows wasmtime.

pub mod chat;
pub mod detok;
pub mod reasoning;
pub mod template;
pub mod tools;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use engine::{ChatTemplate, Tokenizer};

pub use chat::{ChatDecoder, ChatEvent};
pub use reasoning::{ReasoningDecoder, ReasoningEvent};
pub use template::Template;
pub use tools::{ToolDecoder, ToolEvent};

/// A model's instruct capabilities: its tokenizer and chat template.
#[derive(Clone)]
pub struct Instruct {
    pub tok: Arc<Tokenizer>,
    pub chat: Arc<ChatTemplate>,
}

impl Instruct {
    /// `None` with the reason when the model lacks a tokenizer or a chat template.
    pub fn of(engine: &engine::Engine, model: &str) -> Result<Instruct, String> {
        let tok = engine
            .tokenizer()
            .ok_or_else(|| format!("model {model} has no tokenizer (tokenizer.json missing)"))?;
        let chat = engine.chat_template().ok_or_else(|| {
            format!(
                "model {model} has no chat template (tokenizer_config.json has no chat_template)"
            )
        })?;
        Ok(Instruct {
            tok: tok.clone(),
            chat: chat.clone(),
        })
    }

    pub fn template(&self) -> Template<'_> {
        Template::new(&self.tok, &self.chat)
    }

    pub fn chat_decoder(&self) -> Result<ChatDecoder, String> {
        let stops = self.template().stop_tokens()?;
        Ok(ChatDecoder::new(
            self.tok.clone(),
            &stops,
            template::special_tokens(&self.tok),
        ))
    }

    pub fn reasoning_decoder(&self) -> ReasoningDecoder {
        let cue = self.template().cue_text().unwrap_or_default();
        let enabled = ReasoningDecoder::markers_in(&self.tok);
        ReasoningDecoder::new(self.tok.clone(), &cue, enabled)
    }

    pub fn tool_decoder(&self) -> ToolDecoder {
        ToolDecoder::new(self.tok.clone())
    }
}
