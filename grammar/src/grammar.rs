//! [`Grammar`]: what the output must look like, checked when it is made (no tokenizer needed)
//! and compiled per tokenizer by [`Matcher::new`](crate::Matcher::new).

use crate::error::{Error, Result, short};
use crate::gbnf;
use llguidance::api::{GrammarInit, ParserLimits, TopLevelGrammar};
use llguidance::earley::ValidationResult;
use serde_json::{Value, json};

/// Which constructor made a [`Grammar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrammarKind {
    /// [`Grammar::json_schema`].
    JsonSchema,
    /// [`Grammar::json`].
    Json,
    /// [`Grammar::regex`].
    Regex,
    /// [`Grammar::ebnf`].
    Ebnf,
}

impl GrammarKind {
    fn name(self) -> &'static str {
        match self {
            GrammarKind::JsonSchema => "json-schema",
            GrammarKind::Json => "json",
            GrammarKind::Regex => "regex",
            GrammarKind::Ebnf => "ebnf",
        }
    }
}

/// A validated grammar, independent of any tokenizer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Grammar {
    kind: GrammarKind,
    /// The text it was made from (schema, pattern, Lark source); the cache key.
    source: String,
    top: TopLevelGrammar,
}

/// JSON layout used unless a schema says otherwise in `"x-guidance"`: one space after `,` and
/// `:`, no other whitespace. llguidance's default (any whitespace between tokens) lets a small
/// model loop on newlines forever; this layout is also what models emit most often.
fn default_json_layout() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

impl Grammar {
    /// JSON that validates against `schema` (a JSON Schema document: an object, or `true` /
    /// `false`). The supported subset is llguidance's (types, properties/required,
    /// additionalProperties, items/prefixItems, enum/const, anyOf/oneOf/allOf, `$ref`/`$defs`,
    /// string length/pattern/format, numeric bounds, min/maxItems); unsupported keywords are
    /// an error, not ignored. Output is compact (`{"a": 1, "b": [2, 3]}`); an
    /// `"x-guidance"` object in the schema overrides that (see llguidance's
    /// `JsonCompileOptions`: `whitespace_flexible`, `item_separator`, `key_separator`, …).
    pub fn json_schema(schema: &str) -> Result<Grammar> {
        let mut value: Value = serde_json::from_str(schema)
            .map_err(|e| Error::JsonSchema(format!("not JSON: {e}")))?;
        match &mut value {
            Value::Object(map) => {
                map.entry("x-guidance").or_insert_with(default_json_layout);
            }
            // `true` is "anything": give it the same layout as `{}`. `false` matches nothing
            // and is left for llguidance to refuse.
            Value::Bool(true) => value = json!({ "x-guidance": default_json_layout() }),
            Value::Bool(false) => {}
            other => {
                return Err(Error::JsonSchema(format!(
                    "a schema is an object or a boolean, not {}",
                    json_type(other)
                )));
            }
        }
        let top = TopLevelGrammar::from_json_schema(value);
        validate(&top).map_err(Error::JsonSchema)?;
        Ok(Grammar {
            kind: GrammarKind::JsonSchema,
            source: schema.to_string(),
            top,
        })
    }

    /// Any JSON value (object, array, string, number, boolean or null), in the compact layout
    /// of [`Grammar::json_schema`].
    pub fn json() -> Grammar {
        let top = TopLevelGrammar::from_json_schema(json!({ "x-guidance": default_json_layout() }));
        Grammar {
            kind: GrammarKind::Json,
            source: String::new(),
            top,
        }
    }

    /// Text that matches `pattern` as a whole (implicitly anchored at both ends). The syntax
    /// is the Rust `regex` crate's; look-around and backreferences are not supported.
    pub fn regex(pattern: &str) -> Result<Grammar> {
        // `from_regex` turns the pattern into a one-rule Lark grammar; an unparsable pattern
        // shows up when that is validated.
        let top = TopLevelGrammar::from_regex(pattern);
        validate(&top).map_err(Error::Regex)?;
        Ok(Grammar {
            kind: GrammarKind::Regex,
            source: pattern.to_string(),
            top,
        })
    }

    /// A context-free grammar, in either of two dialects, told apart by the first rule:
    ///
    /// - **GBNF** (`root ::= ...`), the EBNF of llama.cpp and XGrammar that Pie's runtime
    ///   takes: translated to Lark (see `gbnf.rs` for what is supported). The start rule is
    ///   `root`.
    /// - **Lark** as llguidance takes it (`start: ...`): rules `name: alt1 | alt2`, terminals
    ///   in upper case, `"literals"`, `/regexes/`, `?` `*` `+` `{m,n}`, `%ignore`,
    ///   `%import common.X`, `<|special|>` tokens, `%json { schema }` to embed a JSON Schema.
    ///   The start rule is `start`. See
    ///   <https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md>.
    pub fn ebnf(src: &str) -> Result<Grammar> {
        if src.trim().is_empty() {
            return Err(Error::Ebnf("empty grammar".into()));
        }
        let lark = if gbnf::is_gbnf(src) {
            gbnf::to_lark(src).map_err(|e| Error::Ebnf(format!("GBNF: {e}")))?
        } else {
            src.to_string()
        };
        let top = TopLevelGrammar::from_lark(lark);
        validate(&top).map_err(Error::Ebnf)?;
        Ok(Grammar {
            kind: GrammarKind::Ebnf,
            source: src.to_string(),
            top,
        })
    }

    /// Which constructor made it.
    pub fn kind(&self) -> GrammarKind {
        self.kind
    }

    /// The text it was made from (empty for [`Grammar::json`]).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A human-readable description, `kind: source` (the WIT `to-string`; not for parsing).
    pub fn describe(&self) -> String {
        match self.kind {
            GrammarKind::Json => "json: any JSON value".to_string(),
            kind => format!("{}: {}", kind.name(), self.source),
        }
    }

    pub(crate) fn cache_key(&self) -> (GrammarKind, String) {
        (self.kind, self.source.clone())
    }

    pub(crate) fn top_level(&self) -> TopLevelGrammar {
        self.top.clone()
    }
}

impl std::fmt::Display for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Compiles the grammar to llguidance's internal form without a tokenizer: syntax errors,
/// undefined rules and unsupported schema keywords surface here. Warnings (such as "no
/// tokenizer - can't validate <special_token>") are not errors.
fn validate(top: &TopLevelGrammar) -> Result<(), String> {
    match GrammarInit::Serialized(top.clone()).validate(None, ParserLimits::default()) {
        ValidationResult::Error(e) => Err(short(e)),
        ValidationResult::Valid | ValidationResult::Warnings(_) => Ok(()),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
