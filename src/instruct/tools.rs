//! Tool use: registering tools in the prompt, framing results, finding calls in generated
//! text, and the grammar that makes a call well-formed.
//!
//! The call format is the model's own when its chat template renders `tools` (the tool block
//! the template writes before the first user turn is taken as the equip prefix). Otherwise
//! pied uses the widely trained Hermes convention, written as a system turn:
//! `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, with results framed as
//! `<tool_response>` in a user turn. The decoder accepts that tagged form and, at the start
//! of a turn, a bare `{"name": …, "arguments"|"parameters": …}` object (Llama 3.1 style).

use std::sync::Arc;

use engine::{Message, Tokenizer};
use serde_json::{Value, json};

use super::detok::Detokenizer;
use super::reasoning::partial_suffix;
use super::template::Template;

pub const CALL_START: &str = "<tool_call>";
pub const CALL_END: &str = "</tool_call>";
const MARK: &str = "\u{2063}pied-user\u{2063}";

/// One tool as the SDK sends it: `{"name", "description", "parameters"}` (an OpenAI-style
/// `{"type": "function", "function": {…}}` is unwrapped).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub json: Value,
}

pub fn parse_tools(tools: &[String]) -> Result<Vec<ToolSpec>, String> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v: Value =
                serde_json::from_str(t).map_err(|e| format!("tool {i}: not valid JSON ({e})"))?;
            let v = match v.get("function") {
                Some(f) if v.get("type").and_then(Value::as_str) == Some("function") => f.clone(),
                _ => v,
            };
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tool {i}: no \"name\" string"))?
                .to_string();
            if let Some(p) = v.get("parameters")
                && !p.is_object()
            {
                return Err(format!(
                    "tool {name}: \"parameters\" is not a JSON schema object"
                ));
            }
            Ok(ToolSpec { name, json: v })
        })
        .collect()
}

impl Template<'_> {
    /// The template's own tool block (everything it writes before the first user turn
    /// when given `tools`), or `None` when it ignores `tools`.
    fn native_tool_prefix(&self, tools: &[ToolSpec]) -> Option<String> {
        let list = Value::Array(tools.iter().map(|t| t.json.clone()).collect());
        let user = [Message::new("user", MARK)];
        let with = self.chat.render(&user, false, Some(&list)).ok()?;
        let without = self.chat.render(&user, false, None).ok()?;
        if with == without {
            return None;
        }
        let turn = self.user_text(MARK).ok()?;
        let head = &turn[..turn.find(MARK)?];
        let at = with.find(MARK)?;
        with[..at].strip_suffix(head).map(str::to_string)
    }

    pub fn equip_text(&self, tools: &[ToolSpec]) -> Result<String, String> {
        if tools.is_empty() {
            return Ok(String::new());
        }
        if let Some(prefix) = self.native_tool_prefix(tools) {
            return Ok(prefix);
        }
        let mut block = String::from(
            "You can call the following tools. Their signatures are JSON schemas inside <tools></tools>:\n<tools>\n",
        );
        for t in tools {
            block.push_str(&t.json.to_string());
            block.push('\n');
        }
        block.push_str(
            "</tools>\nTo call a tool, reply with only a JSON object holding its name and arguments inside <tool_call></tool_call> tags:\n<tool_call>\n{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}\n</tool_call>",
        );
        self.system_text(&block)
    }

    pub fn equip(&self, tools: &[String]) -> Result<Vec<u32>, String> {
        let text = self.equip_text(&parse_tools(tools)?)?;
        self.tok.encode(&text, false).map_err(|e| e.to_string())
    }

    /// A tool's result for the next turn.
    pub fn answer_text(&self, name: &str, value: &str) -> Result<String, String> {
        let probe = ToolSpec {
            name: "probe".into(),
            json: json!({"name": "probe", "description": "", "parameters": {"type": "object"}}),
        };
        if self.native_tool_prefix(&[probe]).is_some() {
            let mut m = Message::new("tool", value);
            m.extra.insert("name".into(), Value::String(name.into()));
            if let Ok(t) = self.role_text(m) {
                return Ok(t);
            }
        }
        let body = json!({"name": name, "content": value});
        self.user_text(&format!("<tool_response>\n{body}\n</tool_response>"))
    }

    pub fn answer(&self, name: &str, value: &str) -> Result<Vec<u32>, String> {
        let text = self.answer_text(name, value)?;
        self.tok.encode(&text, false).map_err(|e| e.to_string())
    }
}

/// A Lark grammar (llguidance dialect) for one tagged call of any of `tools`, its arguments
/// constrained by the tool's JSON schema.
pub fn call_grammar(tools: &[String]) -> Result<String, String> {
    let tools = parse_tools(tools)?;
    if tools.is_empty() {
        return Err("no tools to call".into());
    }
    Ok(format!(
        "start: \"{CALL_START}\\n\" call \"\\n{CALL_END}\"\ncall: %json {}\n",
        call_schema(&tools)
    ))
}

/// JSON schema of a call object of any of `tools`. It is tighter than the tools' own
/// schemas where those leave freedom a generating model only gets lost in: arguments have no
/// properties beyond the declared ones (unless a schema says otherwise), and the JSON is
/// written compactly on one line (`x-guidance`, llguidance's compile options).
pub fn call_schema(tools: &[ToolSpec]) -> Value {
    let alternatives: Vec<Value> = tools
        .iter()
        .map(|t| {
            let mut params = t
                .json
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            if let Some(obj) = params.as_object_mut()
                && obj.contains_key("properties")
                && !obj.contains_key("additionalProperties")
            {
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = if alternatives.len() == 1 {
        alternatives.into_iter().next().unwrap()
    } else {
        json!({ "anyOf": alternatives })
    };
    schema["x-guidance"] = json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    });
    schema
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// Nothing complete yet (inside a call or not): keep feeding.
    Start,
    Call(String, String),
}

pub struct ToolDecoder {
    tok: Arc<Tokenizer>,
    detok: Detokenizer,
    /// Decoded text not yet consumed.
    pending: String,
    in_call: bool,
    /// No text seen yet in this turn (a bare JSON call may start here).
    at_start: bool,
}

impl ToolDecoder {
    pub fn new(tok: Arc<Tokenizer>) -> ToolDecoder {
        ToolDecoder {
            tok,
            detok: Detokenizer::new(),
            pending: String::new(),
            in_call: false,
            at_start: true,
        }
    }

    pub fn feed(&mut self, tokens: &[u32]) -> Result<ToolEvent, String> {
        for &t in tokens {
            self.detok.push(t);
        }
        let text = self.detok.delta(&self.tok)?;
        self.pending.push_str(&text);
        if !self.in_call {
            if self.at_start {
                let trimmed = self.pending.trim_start();
                if trimmed.is_empty() {
                    return Ok(ToolEvent::Start);
                }
                if trimmed.starts_with('{') {
                    return self.bare_call();
                }
                self.at_start = false;
            }
            match self.pending.find(CALL_START) {
                Some(at) => {
                    self.pending.drain(..at + CALL_START.len());
                    self.in_call = true;
                }
                None => {
                    let keep = partial_suffix(&self.pending, CALL_START);
                    self.pending.drain(..self.pending.len() - keep);
                    return Ok(ToolEvent::Start);
                }
            }
        }
        let Some(end) = self.pending.find(CALL_END) else {
            return Ok(ToolEvent::Start);
        };
        let body: String = self.pending.drain(..end + CALL_END.len()).collect();
        self.in_call = false;
        parse_call(&body[..end])
    }

    /// A call written as a bare JSON object at the start of the turn, once it is complete.
    fn bare_call(&mut self) -> Result<ToolEvent, String> {
        let start = self.pending.len() - self.pending.trim_start().len();
        let mut stream =
            serde_json::Deserializer::from_str(&self.pending[start..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                let used = start + stream.byte_offset();
                self.pending.drain(..used);
                self.at_start = false;
                call_of(&v)
            }
            Some(Err(e)) if e.is_eof() => Ok(ToolEvent::Start),
            Some(Err(e)) => {
                // Not JSON after all: treat as plain text.
                self.at_start = false;
                let _ = e;
                Ok(ToolEvent::Start)
            }
            None => Ok(ToolEvent::Start),
        }
    }

    pub fn reset(&mut self) {
        self.detok = Detokenizer::new();
        self.pending.clear();
        self.in_call = false;
        self.at_start = true;
    }
}

fn parse_call(body: &str) -> Result<ToolEvent, String> {
    let v: Value = serde_json::from_str(body.trim())
        .map_err(|e| format!("tool call is not valid JSON ({e}): {}", body.trim()))?;
    call_of(&v)
}

fn call_of(v: &Value) -> Result<ToolEvent, String> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("tool call has no \"name\": {v}"))?;
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let args = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(ToolEvent::Call(name.to_string(), args))
}
