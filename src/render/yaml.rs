//! A small, fast, deterministic YAML emitter for rendered objects.
//!
//! Rendering 10k environments means emitting ~200k objects, and a general
//! serializer spent most of a pass deciding how to quote. Objects are JSON
//! values, so the emitter needs only block mappings and sequences, and a
//! conservative scalar rule: a string is written plain only when no YAML 1.1
//! or 1.2 parser could read it as anything but that string; otherwise it is
//! double-quoted with JSON escapes (valid YAML). Multi-line string values
//! become literal blocks when that round-trips exactly. Keys have their own
//! path (`push_key`): plain or double-quoted on one line, never a block, and
//! in the explicit `? key` form when longer than an implicit key may be.

use std::fmt::Write;

use serde_json::{Map, Value};

/// The value as a YAML document (block style, keys in the value's order).
#[must_use]
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    match value {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0, false),
        Value::Array(s) if !s.is_empty() => seq(&mut out, s, 0),
        other => {
            scalar(&mut out, other, 0);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// The longest key written as an implicit key (`key: value`), in characters,
/// quotes included. YAML limits an implicit key to 1,024 characters; a
/// margin keeps every parser's way of counting within it. Longer keys use
/// the explicit form (`? key` then `: value` on the next line).
const MAX_IMPLICIT_KEY: usize = 1000;

/// Writes a mapping key on one line: plain when [`is_plain`], else
/// double-quoted (never a block scalar, which cannot be an implicit key).
/// Returns true when the key is too long for an implicit key and was written
/// in the explicit form (`? key`); the caller then writes `:` on its own line.
pub(super) fn push_key(out: &mut String, k: &str) -> bool {
    let start = out.len();
    if is_plain(k) {
        out.push_str(k);
    } else {
        quoted(out, k);
    }
    let written = &out[start..];
    let explicit = written.len() > MAX_IMPLICIT_KEY && written.chars().count() > MAX_IMPLICIT_KEY;
    if explicit {
        out.insert_str(start, "? ");
    }
    explicit
}

fn map(out: &mut String, m: &Map<String, Value>, at: usize, first_inline: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(out, at);
        }
        // An explicit key's value follows `:` on the next line, and a
        // collection value is indented below that `:`.
        let nested = if push_key(out, k) {
            out.push('\n');
            indent(out, at);
            at + 2
        } else {
            at
        };
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(out, inner, at + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                seq(out, items, nested);
            }
            other => {
                out.push(' ');
                scalar(out, other, at);
                out.push('\n');
            }
        }
    }
}

fn seq(out: &mut String, items: &[Value], at: usize) {
    for item in items {
        indent(out, at);
        out.push_str("- ");
        match item {
            Value::Object(inner) if !inner.is_empty() => map(out, inner, at + 2, true),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(out, inner, at + 2);
            }
            other => {
                scalar(out, other, at);
                out.push('\n');
            }
        }
    }
}

fn scalar(out: &mut String, v: &Value, at: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => push_string(out, s, at),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// Writes a string scalar: plain, a literal block, or double-quoted.
pub(super) fn push_string(out: &mut String, s: &str, at: usize) {
    if is_plain(s) {
        out.push_str(s);
    } else if is_literal_block(s) {
        out.push_str("|-");
        for line in s.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                indent(out, at + 2);
                out.push_str(line);
            }
        }
    } else {
        quoted(out, s);
    }
}

/// A double-quoted scalar with JSON-style escapes (valid YAML), in place.
/// Runs of characters that need no escape are copied in one go.
fn quoted(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push_str(escape);
        }
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// True when `s` reads back as exactly this string in YAML 1.1 and 1.2.
fn is_plain(s: &str) -> bool {
    const RESERVED: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf",
    ];
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == b'/' || first == b'_') {
        return false; // digits, signs and dots could be numbers, dates or .inf
    }
    if b.last() == Some(&b':') {
        return false;
    }
    if !b.iter().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, b'_' | b'.' | b'/' | b':' | b'@' | b'+' | b'=' | b'-')
    }) {
        return false;
    }
    !(s.len() <= 5 && RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)))
}

/// A multi-line string that a literal block (`|-`) reproduces exactly.
fn is_literal_block(s: &str) -> bool {
    s.contains('\n')
        && !s.ends_with('\n')
        && !s.starts_with([' ', '\n'])
        && !s.contains(['\r', '\t'])
        && s.split('\n')
            .all(|l| !l.ends_with(' ') && !l.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Strings that stress the emitter: YAML indicators, comments, line
    /// breaks, spaces at either end, look-alikes of other types, and any
    /// unicode at all.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ a-z0-9:#\n\r\t\"'\\{}\\[\\],&*!|>%@`?.~-]{0,24}",
            Just(String::new()),
            prop_oneof![
                Just("true"),
                Just("No"),
                Just("null"),
                Just("~"),
                Just("0x1f"),
                Just("1e3"),
                Just(".inf"),
                Just("2024-01-15"),
                Just("- a"),
                Just("---"),
                Just("..."),
                Just("a: b"),
                Just("a #b"),
                Just(" lead"),
                Just("trail "),
                Just("multi\nline"),
                Just("multi\n  indented\nlines"),
                Just("\nleading break"),
                Just("é\u{2028}\u{85}\u{feff}"),
            ]
            .prop_map(str::to_owned),
        ]
    }

    /// Keys: any [`text`], and now and then one too long for an implicit key.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => text(),
            1 => ("[a-z]{1,3}", 1000..1100usize).prop_map(|(s, n)| s.repeat(n)),
            1 => (text(), 1000..1100usize).prop_map(|(s, n)| format!("{}\n{s}", "k".repeat(n))),
        ]
    }

    /// Any JSON value: nested mappings and lists of scalars of every kind.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", serde_json::Number::from_f64)
                .prop_map(Value::Number),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_value_emitted_as_yaml_parses_back_to_the_same_value(v in value()) {
            let text = to_string(&v);
            let back: Value = serde_saphyr::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("invalid YAML ({e}):\n{text}")))?;
            prop_assert_eq!(back, v, "{}", text);
        }
    }

    #[test]
    fn keys_are_never_blocks_and_long_keys_read_back() {
        let long = "k".repeat(2000);
        let v = json!({
            "multi\nline": {"a\nb": ["x"]},
            "trailing\n": 1,
            long.clone(): {"nested": [1, {long.clone(): "v"}]},
            "list": [{long.clone(): [1, 2], "b": {}}],
        });
        let text = to_string(&v);
        assert!(!text.contains("|-"), "{text}");
        let back: Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn emits_kubectl_style_blocks_that_read_back_identically() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "a"}},
            "list": [{"a": 1, "b": [true, null]}, "s", [1, 2], {}, []],
            "empty": {},
            "data": {"claim.json": "{\n  \"a\": 1\n}", "odd": "ends\n", "cr": "a\r\nb"},
        });
        let text = to_string(&v);
        assert!(
            text.starts_with("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"),
            "{text}"
        );
        assert!(
            text.contains("  claim.json: |-\n    {\n      \"a\": 1\n    }\n"),
            "{text}"
        );
        let back: Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn ambiguous_scalars_are_quoted() {
        for s in [
            "",
            "1",
            "1.5",
            "100m",
            "1Gi",
            "0x1f",
            "2024-01-15",
            "true",
            "No",
            "null",
            "~",
            "-a",
            ".inf",
            "a: b",
            "a #b",
            "x:",
            "*a",
            "&a",
            "!t",
            "a b",
            "tab\there",
            "bell\u{7}",
            "quote\"back\\slash",
            "line\u{2028}sep",
            "é",
        ] {
            let v = json!({ "k": s });
            let back: Value = serde_saphyr::from_str(&to_string(&v)).expect("valid YAML");
            assert_eq!(back, v, "{s:?} -> {}", to_string(&v));
            assert!(!is_plain(s), "{s:?} must be quoted");
        }
        for s in [
            "v1",
            "apps/v1",
            "converge",
            "john.doe@company.com",
            "sha256:abc",
            "a-b_c.d",
        ] {
            assert!(is_plain(s), "{s:?} can be plain");
        }
    }
}
