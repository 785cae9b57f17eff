//! GBNF (the `root ::= ...` EBNF of llama.cpp and XGrammar, which Pie's runtime takes for
//! `grammar.from-ebnf`) translated to llguidance's Lark dialect, so that unmodified inferlets
//! written for Pie keep working.
//!
//! Supported: rules `name ::= body` (bodies may span lines), `"strings"` with `\n \r \t \\ \"
//! \xHH \uHHHH \UHHHHHHHH` escapes, character classes `[a-z]` / `[^...]`, `.` (any
//! character), grouping, `|`, `*` `+` `?`, `{m}` `{m,}` `{m,n}`, `#` comments. The start rule
//! is `root`. Not supported (an error, never silently dropped): XGrammar's lookahead
//! assertions `(= ...)` and macros such as `TagDispatch(...)`.
//!
//! Whitespace is never implicit in GBNF, and the translation adds no `%ignore`, so the two
//! grammars accept the same strings.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Whether `src` looks like GBNF: its first definition is `name ::=`. Lark definitions are
/// `name:` (or directives), so the two cannot be confused.
pub(crate) fn is_gbnf(src: &str) -> bool {
    let mut rest = src;
    loop {
        rest = rest.trim_start();
        if let Some(comment) = rest.strip_prefix('#').or_else(|| rest.strip_prefix("//")) {
            rest = comment.split_once('\n').map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    name_len > 0
        && rest[name_len..]
            .trim_start_matches([' ', '\t'])
            .starts_with("::=")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Define,
    Str(String),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Any,
    Punct(char),
    Repeat(u32, Option<u32>),
}

/// A token and the line it is on.
type Spanned = (Tok, usize);

/// One rule: its name, the line it starts on, its body.
struct Rule {
    name: String,
    line: usize,
    body: Vec<Spanned>,
}

/// Translates GBNF to Lark; errors name the line.
pub(crate) fn to_lark(src: &str) -> Result<String, String> {
    let toks = lex(src)?;
    // A rule starts at every `name ::=`.
    let mut rules: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match (&toks[i], toks.get(i + 1)) {
            ((Tok::Name(n), line), Some((Tok::Define, _))) => {
                rules.push(Rule {
                    name: n.clone(),
                    line: *line,
                    body: Vec::new(),
                });
                i += 2;
            }
            ((_, line), _) => {
                let Some(rule) = rules.last_mut() else {
                    return Err(format!("line {line}: expected `name ::=` to start a rule"));
                };
                rule.body.push(toks[i].clone());
                i += 1;
            }
        }
    }
    if rules.is_empty() {
        return Err("no rules".into());
    }
    let mut seen = HashSet::new();
    for Rule { name, line, body } in &rules {
        if !seen.insert(name.as_str()) {
            return Err(format!("line {line}: rule `{name}` is defined twice"));
        }
        if body.is_empty() {
            return Err(format!("line {line}: rule `{name}` has an empty body"));
        }
    }
    if !seen.contains("root") {
        return Err("no `root` rule (the start rule of a GBNF grammar)".into());
    }
    let names = lark_names(rules.iter().map(|r| r.name.as_str()));

    let mut out = format!("start: {}\n", names["root"]);
    for Rule { name, body, .. } in &rules {
        let _ = write!(out, "{}:", names[name.as_str()]);
        for (tok, line) in body {
            out.push(' ');
            match tok {
                Tok::Name(n) => match names.get(n.as_str()) {
                    Some(m) => out.push_str(m),
                    None => return Err(format!("line {line}: undefined rule `{n}`")),
                },
                Tok::Str(s) => lark_string(&mut out, s),
                Tok::Class { negated, ranges } => {
                    out.push_str(if *negated { "/[^" } else { "/[" });
                    for &(lo, hi) in ranges {
                        class_char(&mut out, lo);
                        if hi != lo {
                            out.push('-');
                            class_char(&mut out, hi);
                        }
                    }
                    out.push_str("]/");
                }
                Tok::Any => out.push_str("/(?s:.)/"),
                Tok::Punct(c) => out.push(*c),
                Tok::Repeat(m, None) => {
                    let _ = write!(out, "{{{m},}}");
                }
                Tok::Repeat(m, Some(n)) if m == n => {
                    let _ = write!(out, "{{{m}}}");
                }
                Tok::Repeat(m, Some(n)) => {
                    let _ = write!(out, "{{{m},{n}}}");
                }
                Tok::Define => unreachable!("split off above"),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Lark rule names: lower case, starting with a letter, `start` reserved. Names that are
/// already valid are kept (so errors mention them); others are sanitized and made unique.
fn lark_names<'a>(names: impl Iterator<Item = &'a str> + Clone) -> HashMap<&'a str, String> {
    let valid = |n: &str| {
        n != "start"
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    let mut used: HashSet<String> = names
        .clone()
        .filter(|n| valid(n))
        .map(String::from)
        .collect();
    used.insert("start".into());
    let mut map = HashMap::new();
    for n in names {
        if valid(n) {
            map.insert(n, n.to_string());
            continue;
        }
        let mut base: String = n
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '-' | '_' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
            base.insert(0, 'r');
        }
        let mut candidate = base.clone();
        let mut k = 2;
        while used.contains(&candidate) {
            candidate = format!("{base}_{k}");
            k += 1;
        }
        used.insert(candidate.clone());
        map.insert(n, candidate);
    }
    map
}

/// A Lark string literal (JSON syntax; DEL escaped too, which Lark's lexer requires).
fn lark_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A character inside a regex class: alphanumerics as themselves, everything else as
/// `\x{..}`, so no character can act as class syntax (`]`, `-`, `^`, `&&`, `[`) or end the
/// Lark `/.../` literal.
fn class_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:x}}}", c as u32);
    }
}

fn lex(src: &str) -> Result<Vec<Spanned>, String> {
    let mut toks = Vec::new();
    let mut chars = src.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        let err = |what: String| Err(format!("line {line}: {what}"));
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let mut name = String::from(c);
                while let Some(c) =
                    chars.next_if(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    name.push(c);
                }
                if chars.peek() == Some(&'(') {
                    return err(format!("`{name}(...)` macros are not supported"));
                }
                toks.push((Tok::Name(name), line));
            }
            ':' => {
                if chars.next() == Some(':') && chars.next() == Some('=') {
                    toks.push((Tok::Define, line));
                } else {
                    return err("expected `::=`".into());
                }
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            s.push(escape(&mut chars).map_err(|e| format!("line {line}: {e}"))?)
                        }
                        Some('\n') => return err("newline in a string".into()),
                        Some(c) => s.push(c),
                    }
                }
                toks.push((Tok::Str(s), line));
            }
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    let lo = match chars.next() {
                        None | Some('\n') => return err("unterminated character class".into()),
                        Some(']') => break,
                        Some('\\') => {
                            escape(&mut chars).map_err(|e| format!("line {line}: {e}"))?
                        }
                        Some(c) => c,
                    };
                    let mut hi = lo;
                    if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        if !matches!(ahead.peek(), Some(']') | None) {
                            chars.next();
                            hi = match chars.next() {
                                Some('\\') => {
                                    escape(&mut chars).map_err(|e| format!("line {line}: {e}"))?
                                }
                                Some(c) => c,
                                None => return err("unterminated character class".into()),
                            };
                            if hi < lo {
                                return err(format!("empty range {lo:?}-{hi:?}"));
                            }
                        }
                    }
                    ranges.push((lo, hi));
                }
                if ranges.is_empty() {
                    return err("empty character class".into());
                }
                toks.push((Tok::Class { negated, ranges }, line));
            }
            '.' => toks.push((Tok::Any, line)),
            '(' if chars.peek() == Some(&'=') => {
                return err("lookahead assertions `(= ...)` are not supported".into());
            }
            '(' | ')' | '|' | '*' | '+' | '?' => toks.push((Tok::Punct(c), line)),
            '{' => {
                let mut body = String::new();
                loop {
                    match chars.next() {
                        None => return err("unterminated `{`".into()),
                        Some('}') => break,
                        Some(c) => body.push(c),
                    }
                }
                let num = |s: &str| {
                    s.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("line {line}: bad repetition `{{{body}}}`"))
                };
                let (m, n) = match body.split_once(',') {
                    None => {
                        let m = num(&body)?;
                        (m, Some(m))
                    }
                    Some((m, n)) => {
                        let m = if m.trim().is_empty() { 0 } else { num(m)? };
                        let n = if n.trim().is_empty() {
                            None
                        } else {
                            Some(num(n)?)
                        };
                        (m, n)
                    }
                };
                if n.is_some_and(|n| n < m) {
                    return err(format!("bad repetition `{{{body}}}`"));
                }
                toks.push((Tok::Repeat(m, n), line));
            }
            c => return err(format!("unexpected {c:?}")),
        }
    }
    Ok(toks)
}

fn escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
        let s: String = (0..n).filter_map(|_| chars.next()).collect();
        u32::from_str_radix(&s, 16)
            .ok()
            .filter(|_| s.len() == n)
            .and_then(char::from_u32)
            .ok_or_else(|| format!("bad escape `{s}`"))
    };
    match chars.next() {
        Some('n') => Ok('\n'),
        Some('r') => Ok('\r'),
        Some('t') => Ok('\t'),
        Some('0') => Ok('\0'),
        Some('x') => hex(chars, 2),
        Some('u') => hex(chars, 4),
        Some('U') => hex(chars, 8),
        Some(c @ ('\\' | '"' | '\'' | '[' | ']' | '-' | '^' | '/' | '.')) => Ok(c),
        Some(c) => Err(format!("unknown escape `\\{c}`")),
        None => Err("escape at the end".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_gbnf() {
        assert!(is_gbnf("root ::= \"a\""));
        assert!(is_gbnf("# comment\n  root-rule\t::= x"));
        assert!(!is_gbnf("start: \"a\""));
        assert!(!is_gbnf("%import common.NUMBER\nstart: NUMBER"));
        assert!(!is_gbnf("// c\nstart: \"::=\""));
        assert!(!is_gbnf(""));
    }

    #[test]
    fn translates() {
        let lark = to_lark(
            "root ::= Greeting ws [a-z\\-]{2,5} (\"!\" | \"?\")* . # tail\n\
             Greeting ::= \"hi\\t\\\"x\\\"\"\n  | \"yo\"\n\
             ws ::= [ \\t\\n]+ [^/]",
        )
        .unwrap();
        assert_eq!(
            lark,
            "start: root\n\
             root: greeting ws /[a-z\\x{2d}]/ {2,5} ( \"!\" | \"?\" ) * /(?s:.)/\n\
             greeting: \"hi\\t\\\"x\\\"\" | \"yo\"\n\
             ws: /[\\x{20}\\x{9}\\x{a}]/ + /[^\\x{2f}]/\n"
        );
    }

    #[test]
    fn names_are_made_valid_and_unique() {
        let lark = to_lark("root ::= start Start x\nstart ::= \"a\"\nStart ::= \"b\"\nx ::= \"c\"")
            .unwrap();
        assert!(
            lark.starts_with("start: root\nroot: start_2 start_3 x\n"),
            "{lark}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_translate() {
        for (src, what) in [
            ("root ::= a", "undefined rule `a`"),
            ("x ::= \"a\"", "no `root` rule"),
            ("root ::= \"a\" (= \"b\")", "lookahead"),
            ("root ::= TagDispatch(x)", "macros"),
            (
                "root ::= \"a\nroot2 ::= \"b\"",
                "line 1: newline in a string",
            ),
            ("root ::= [z-a]", "empty range"),
            ("root ::= \"a\"{3,1}", "bad repetition"),
            ("root ::= \"a\"\nroot ::= \"b\"", "defined twice"),
            ("root ::=", "empty body"),
            ("\"a\" root ::= \"a\"", "expected `name ::=`"),
            ("root ::= \"\\q\"", "unknown escape"),
        ] {
            let e = to_lark(src).unwrap_err();
            assert!(e.contains(what), "{src:?}: {e}");
        }
    }
}
