//! An inferlet's input: the launch arguments turned into the JSON string its `run` gets,
//! the way Pie's `pie run` does it.
//!
//! - `--input JSON` (or `--input=JSON`) as the only argument passes JSON verbatim;
//! - `--some-flag value` → `"some_flag": value` (`-` becomes `_`); `--flag=value` too;
//! - values that parse as integers, floats or `true`/`false` are typed, others are strings;
//! - a flag followed by another flag (or by nothing) is `true`;
//! - other arguments are collected, in order, under `"_positional"`;
//! - no arguments at all → `{}`.

use serde_json::{Map, Value};

pub fn from_args(args: &[String]) -> Result<String, String> {
    match args {
        [flag, json] if flag == "--input" => return verbatim(json),
        [one] if one.starts_with("--input=") => return verbatim(&one["--input=".len()..]),
        _ => {}
    }
    let mut obj = Map::new();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--").filter(|f| !f.is_empty()) {
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => match args.get(i + 1) {
                    Some(next) if !is_flag(next) => {
                        i += 1;
                        (flag, Some(next.clone()))
                    }
                    _ => (flag, None),
                },
            };
            if name == "input" {
                return Err("--input JSON must be the only argument of an inferlet".into());
            }
            let value = value.map_or(Value::Bool(true), |v| typed(&v));
            obj.insert(name.replace('-', "_"), value);
        } else {
            positional.push(Value::String(a.clone()));
        }
        i += 1;
    }
    if !positional.is_empty() {
        obj.insert("_positional".into(), Value::Array(positional));
    }
    Ok(Value::Object(obj).to_string())
}

fn is_flag(s: &str) -> bool {
    s.starts_with("--") && s.len() > 2
}

fn verbatim(json: &str) -> Result<String, String> {
    serde_json::from_str::<Value>(json).map_err(|e| format!("--input is not valid JSON: {e}"))?;
    Ok(json.to_string())
}

fn typed(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(args: &[&str]) -> Value {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        serde_json::from_str(&from_args(&a).unwrap()).unwrap()
    }

    #[test]
    fn flags_become_typed_json() {
        assert_eq!(
            j(&[
                "--prompt",
                "hi there",
                "--max-tokens",
                "32",
                "--temp",
                "0.5",
                "--greedy",
                "--stream",
                "false",
                "x"
            ]),
            serde_json::json!({"prompt": "hi there", "max_tokens": 32, "temp": 0.5, "greedy": true, "stream": false, "_positional": ["x"]})
        );
        assert_eq!(j(&["--a=1", "--b"]), serde_json::json!({"a": 1, "b": true}));
        assert_eq!(j(&[]), serde_json::json!({}));
    }

    #[test]
    fn input_is_verbatim() {
        let a = vec!["--input".to_string(), r#"{"x": [1, 2]}"#.to_string()];
        assert_eq!(from_args(&a).unwrap(), r#"{"x": [1, 2]}"#);
        let bad = vec!["--input".to_string(), "{".to_string()];
        assert!(from_args(&bad).unwrap_err().contains("not valid JSON"));
    }
}
