//! The crate's error type: one variant per way a grammar, tokenizer or token can be refused.

/// Errors of this crate. Messages are lower case and name what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The `tokenizer.json` could not be read or its vocabulary turned into bytes, or the EOS
    /// ids are missing or out of range.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The JSON Schema is not JSON, not an object or boolean, or uses something llguidance
    /// does not support (it says which).
    #[error("invalid JSON Schema: {0}")]
    JsonSchema(String),
    /// The regular expression does not parse (Rust `regex` syntax).
    #[error("invalid regex: {0}")]
    Regex(String),
    /// The EBNF (GBNF or llguidance's Lark dialect) does not parse or is inconsistent.
    #[error("invalid EBNF grammar: {0}")]
    Ebnf(String),
    /// The grammar is valid on its own but could not be compiled against this tokenizer (for
    /// example it names a special token the vocabulary lacks, or exceeds llguidance's limits).
    #[error("grammar does not compile for this tokenizer: {0}")]
    Compile(String),
    /// `accept_tokens` was given a token the grammar does not allow there; the matcher's
    /// state is as it was before the call.
    #[error("token {token} ({text:?}) at index {index} is not allowed by the grammar here")]
    Rejected {
        /// Position of the offending token in the slice passed to `accept_tokens`.
        index: usize,
        /// Its id.
        token: u32,
        /// Its text as the grammar sees it.
        text: String,
    },
    /// The matcher failed internally (llguidance's limits, an internal error); it stays
    /// failed until `reset`.
    #[error("matcher failed: {0}")]
    Matcher(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// llguidance errors can carry the whole grammar and parser state; keep messages readable.
pub(crate) fn short(e: impl std::fmt::Display) -> String {
    const MAX: usize = 600;
    let s = e.to_string();
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
