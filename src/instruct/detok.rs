//! Incremental detokenization: text deltas from a growing token list.
//!
//! Decoding token by token is wrong for byte-level BPE (a character can span tokens) and for
//! SentencePiece (a token's leading space depends on what precedes it), and decoding the
//! whole list at every step is quadratic. So, as Hugging Face's text-generation-inference
//! does, a delta is the text of a short window (`prefix..`) minus the text of the window's
//! already-emitted part (`prefix..read`); the window slides forward once a delta is
//! complete, and a delta ending in U+FFFD (an unfinished UTF-8 sequence) is held back until
//! the next token completes it.

use engine::Tokenizer;

pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    /// Everything emitted so far.
    text: String,
}

impl Detokenizer {
    pub fn new() -> Detokenizer {
        Detokenizer {
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            text: String::new(),
        }
    }

    pub fn push(&mut self, id: u32) {
        self.ids.push(id);
    }

    /// The text the pushed tokens completed since the last call ("" when none).
    pub fn delta(&mut self, tok: &Tokenizer) -> Result<String, String> {
        if self.read == self.ids.len() {
            return Ok(String::new());
        }
        let decode = |ids: &[u32]| tok.decode(ids, false).map_err(|e| e.to_string());
        let before = decode(&self.ids[self.prefix..self.read])?;
        let now = decode(&self.ids[self.prefix..])?;
        if now.len() < before.len()
            || now.ends_with('\u{FFFD}')
            || !now.is_char_boundary(before.len())
        {
            return Ok(String::new());
        }
        let delta = now[before.len()..].to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        self.text.push_str(&delta);
        Ok(delta)
    }

    /// All the text so far, including a held-back tail (decoded as it stands).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<String, String> {
        let d = self.delta(tok)?;
        if self.read < self.ids.len() {
            let before = tok
                .decode(&self.ids[self.prefix..self.read], false)
                .map_err(|e| e.to_string())?;
            let now = tok
                .decode(&self.ids[self.prefix..], false)
                .map_err(|e| e.to_string())?;
            let tail = now.get(before.len()..).unwrap_or(&now).to_string();
            self.text.push_str(&tail);
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(d + &tail);
        }
        Ok(d)
    }

    /// Everything emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Default for Detokenizer {
    fn default() -> Self {
        Detokenizer::new()
    }
}
