//! The chat template's pieces as token sequences: one turn of a role, the generation cue,
//! the end-of-turn seal, the stop tokens.
//!
//! The fillers are stateless (a function of the model and one message), but a chat template
//! renders whole conversations and may treat the first message specially (a default system
//! prompt, a BOS token). So a turn is rendered *in the middle* of a small conversation and
//! taken as the difference: `render(base + [turn]) - render(base)`, with a `base` that the
//! template accepts before that role (roles must alternate in some templates). A system turn
//! is rendered alone, from the start of the conversation, because that is where one goes:
//! it keeps what the template puts first (BOS, date lines). The seal is what the template
//! writes after an assistant's content; the stop tokens are the special tokens in the seal
//! plus the end-of-text tokens the vocabulary has.

use std::collections::HashSet;

use engine::{ChatTemplate, Message, Tokenizer};

/// Placeholder contents of the surrounding turns; never returned.
const FILL: &str = "\u{2063}filler\u{2063}";
/// Marks where the content sits when a turn is cut around it.
const MARK: &str = "\u{2063}pied-mark\u{2063}";

/// End-of-text spellings across model families; those present in the vocabulary stop
/// generation in addition to the template's own end-of-turn token.
const END_TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
];

pub struct Template<'a> {
    pub tok: &'a Tokenizer,
    pub chat: &'a ChatTemplate,
}

fn msg(role: &str, content: &str) -> Message {
    Message::new(role, content)
}

impl<'a> Template<'a> {
    pub fn new(tok: &'a Tokenizer, chat: &'a ChatTemplate) -> Template<'a> {
        Template { tok, chat }
    }

    fn render(&self, messages: &[Message], cue: bool) -> Result<String, String> {
        self.chat
            .render(messages, cue, None)
            .map_err(|e| e.to_string())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tok.encode(text, false).map_err(|e| e.to_string())
    }

    /// The text a turn adds after `base`, for the first base the template accepts.
    fn turn_text(&self, bases: &[&[Message]], turn: Message) -> Result<String, String> {
        let mut last_err = String::from("no conversation shape fits");
        for base in bases {
            let before = match self.render(base, false) {
                Ok(t) => t,
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            let mut all = base.to_vec();
            all.push(turn.clone());
            match self.render(&all, false) {
                Ok(after) => match after.strip_prefix(&before) {
                    Some(delta) => return Ok(delta.to_string()),
                    None => last_err = "the template re-renders earlier turns".into(),
                },
                Err(e) => last_err = e,
            }
        }
        Err(format!(
            "the model's chat template cannot render a {} turn: {last_err}",
            turn.role
        ))
    }

    pub fn system_text(&self, content: &str) -> Result<String, String> {
        self.render(&[msg("system", content)], false)
            .map_err(|e| format!("the model's chat template cannot render a system turn: {e}"))
    }

    pub fn user_text(&self, content: &str) -> Result<String, String> {
        let sys_user_asst = [
            msg("system", FILL),
            msg("user", FILL),
            msg("assistant", FILL),
        ];
        let user_asst = [msg("user", FILL), msg("assistant", FILL)];
        self.turn_text(&[&sys_user_asst, &user_asst, &[]], msg("user", content))
    }

    pub fn assistant_text(&self, content: &str) -> Result<String, String> {
        let sys_user = [msg("system", FILL), msg("user", FILL)];
        let user = [msg("user", FILL)];
        self.turn_text(&[&sys_user, &user], msg("assistant", content))
    }

    /// A turn of another role (`tool`), rendered where a user turn would go.
    pub fn role_text(&self, turn: Message) -> Result<String, String> {
        let sys_user_asst = [
            msg("system", FILL),
            msg("user", FILL),
            msg("assistant", FILL),
        ];
        let user_asst = [msg("user", FILL), msg("assistant", FILL)];
        self.turn_text(&[&sys_user_asst, &user_asst], turn)
    }

    /// The generation cue: what `add_generation_prompt` appends after a user turn.
    pub fn cue_text(&self) -> Result<String, String> {
        let sys_user = [msg("system", FILL), msg("user", FILL)];
        let user = [msg("user", FILL)];
        let mut last_err = String::new();
        for base in [&sys_user[..], &user[..]] {
            match (self.render(base, false), self.render(base, true)) {
                (Ok(plain), Ok(cued)) => match cued.strip_prefix(&plain) {
                    Some(cue) => return Ok(cue.to_string()),
                    None => last_err = "the cue re-renders earlier turns".into(),
                },
                (Err(e), _) | (_, Err(e)) => last_err = e,
            }
        }
        Err(format!(
            "the model's chat template has no generation cue: {last_err}"
        ))
    }

    /// What closes an assistant turn: the template's text after the assistant's content.
    pub fn seal_text(&self) -> Result<String, String> {
        let turn = self.assistant_text(MARK)?;
        let at = turn
            .find(MARK)
            .ok_or("the chat template does not echo the assistant's content")?;
        Ok(turn[at + MARK.len()..].to_string())
    }

    pub fn system(&self, content: &str) -> Result<Vec<u32>, String> {
        self.encode(&self.system_text(content)?)
    }

    pub fn user(&self, content: &str) -> Result<Vec<u32>, String> {
        self.encode(&self.user_text(content)?)
    }

    pub fn assistant(&self, content: &str) -> Result<Vec<u32>, String> {
        self.encode(&self.assistant_text(content)?)
    }

    pub fn cue(&self) -> Result<Vec<u32>, String> {
        self.encode(&self.cue_text()?)
    }

    pub fn seal(&self) -> Result<Vec<u32>, String> {
        self.encode(&self.seal_text()?)
    }

    /// Tokens that end the assistant's turn: the special tokens of the seal, then the
    /// vocabulary's end-of-text tokens.
    pub fn stop_tokens(&self) -> Result<Vec<u32>, String> {
        let special = special_tokens(self.tok);
        let mut stops: Vec<u32> = self
            .seal()?
            .into_iter()
            .filter(|t| special.contains(t))
            .collect();
        for name in END_TOKENS {
            if let Some(id) = self.tok.token_to_id(name)
                && !stops.contains(&id)
            {
                stops.push(id);
            }
        }
        Ok(stops)
    }
}

/// Ids of the tokenizer's special added tokens (control tokens, never plain text).
pub fn special_tokens(tok: &Tokenizer) -> HashSet<u32> {
    tok.inner()
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect()
}
