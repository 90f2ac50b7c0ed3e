//! Stage 2, parse: source bytes -> JSON documents, plus diagnostics.
//!
//! JSON with `serde_json` (recursion-limited), YAML with serde-saphyr under an
//! explicit [`Budget`](serde_saphyr::Budget): alias bombs, deep nesting and
//! node floods are refused fast with bounded memory. A key repeated in one
//! mapping is an error in both formats (`serde_json` alone would keep the last
//! one; [`json`] refuses it with the repeat's pointer). One environment per
//! file: a multi-document YAML file is an error for that file. Size caps are applied
//! by the sources before any byte is read. This module also finds conflicts:
//! two files claiming the same `environment_name`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::source::{Content, SourceFile};

/// The document format, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    #[must_use]
    pub fn of(path: &str) -> Format {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Parses one file into a JSON object. Every failure is one diagnostic.
pub fn parse(file: &SourceFile) -> Result<Value, Diagnostic> {
    let path = file.path.as_str();
    let bytes = match &file.content {
        Content::Bytes(b) => b,
        Content::TooLarge { size, limit } => {
            return Err(Diagnostic::new(
                path,
                "",
                "max-size",
                format!(
                    "file is {size} bytes, more than the limit of {limit} bytes; refused without parsing"
                ),
            ));
        }
        Content::Unreadable(e) => {
            return Err(Diagnostic::new(
                path,
                "",
                "read",
                format!("cannot read file: {e}"),
            ));
        }
        Content::Refused { rule, message } => {
            return Err(Diagnostic::new(path, "", *rule, message.as_str()));
        }
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Diagnostic::new(
            path,
            "",
            "utf-8",
            format!(
                "file is not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(Diagnostic::new(
            path,
            "",
            "empty",
            "file is empty: expected one environment claim",
        ));
    }
    let format = Format::of(path);
    let value: Value = match format {
        Format::Json => json(text).map_err(|e| match e {
            JsonError::DuplicateKey { pointer, key } => Diagnostic::new(
                path,
                pointer,
                "duplicate-key",
                format!("key {key:?} appears more than once in this mapping"),
            ),
            JsonError::Syntax(e) => Diagnostic::new(path, "", "json", format!("invalid JSON: {e}")),
        })?,
        Format::Yaml => serde_saphyr::from_str_with_options(text, crate::yaml_limits::options())
            .map_err(|e| yaml_error(path, &e))?,
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err(Diagnostic::new(
            path,
            "",
            "empty",
            "document is empty: expected one environment claim",
        )),
        other => Err(Diagnostic::new(
            path,
            "",
            "type",
            format!(
                "document is {}, expected a mapping (one environment claim)",
                kind(&other)
            ),
        )),
    }
}

/// Why a JSON document was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// A mapping names `key` twice; `pointer` is the repeat's JSON pointer.
    #[error("{pointer}: key {key:?} appears more than once")]
    DuplicateKey { pointer: String, key: String },
}

/// Parses one JSON document into a value, refusing a key repeated within a
/// mapping (`serde_json`'s own `Value` keeps the last one). Its
/// recursion limit still applies.
pub fn json(text: &str) -> Result<Value, JsonError> {
    let repeat = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde::de::DeserializeSeed::deserialize(Document { repeat: &repeat }, &mut de)
        .and_then(|value| de.end().map(|()| value));
    match (parsed, repeat.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some((pointer, key))) => Err(JsonError::DuplicateKey { pointer, key }),
        (Err(e), None) => Err(JsonError::Syntax(e)),
    }
}

/// A JSON value as [`Value`] deserializes it, except that a repeated key is
/// an error. The repeat is recorded in `repeat` as (pointer, key); each
/// enclosing mapping or list prefixes its key or index as the error returns,
/// so a document without repeats builds no pointer at all.
#[derive(Clone, Copy)]
struct Document<'a> {
    repeat: &'a std::cell::RefCell<Option<(String, String)>>,
}

impl Document<'_> {
    /// Prefixes the recorded repeat's pointer with `key` (one level up).
    fn within(self, key: &str) {
        if let Some((pointer, _)) = self.repeat.borrow_mut().as_mut() {
            *pointer = crate::diagnostic::pointer_join("", key) + pointer.as_str();
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Document<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Document<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    self.within(&items.len().to_string());
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match map.next_value_seed(self) {
                Ok(value) => value,
                Err(e) => {
                    self.within(&key);
                    return Err(e);
                }
            };
            match object.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(first) => {
                    let key = first.key().clone();
                    let pointer = crate::diagnostic::pointer_join("", &key);
                    let message = format!("key {key:?} appears more than once");
                    *self.repeat.borrow_mut() = Some((pointer, key));
                    return Err(serde::de::Error::custom(message));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

fn yaml_error(path: &str, e: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach as B;
    let at = |line: u64| format!("line {line}: ");
    // The cause, under a snippet and the alias it came through.
    let mut e = e.without_snippet();
    while let E::AliasError { error, .. } = e {
        e = error.without_snippet();
    }
    match e {
        E::MultipleDocuments { .. }
        | E::Budget {
            breach: B::Documents { .. },
            ..
        } => Diagnostic::new(
            path,
            "",
            "one-document",
            "file holds several YAML documents: one environment per file",
        ),
        E::DuplicateMappingKey { key, location } => Diagnostic::new(
            path,
            "",
            "duplicate-key",
            format!(
                "{}the key {} appears twice in one mapping",
                at(location.line()),
                key.as_deref().map_or_else(
                    || "(not a string)".to_owned(),
                    |k| format!("{:?}", truncate(k, 100))
                )
            ),
        ),
        E::Budget { breach, location } => {
            let what = match breach {
                B::Nodes { .. } => "has too many nodes",
                B::Depth { .. } | B::InclusionDepth { .. } => "is nested too deeply",
                B::Aliases { .. } | B::AliasAnchorRatio { .. } => "has too many aliases",
                B::Anchors { .. } => "has too many anchors",
                B::ScalarBytes { .. } => "has too much text",
                _ => "is too large",
            };
            Diagnostic::new(
                path,
                "",
                "yaml-budget",
                format!(
                    "{}the document {what} for a claim; refused",
                    at(location.line())
                ),
            )
        }
        other => {
            let message = other.to_string();
            let first = message.lines().next().unwrap_or_default();
            Diagnostic::new(
                path,
                "",
                "yaml",
                format!("invalid YAML: {}", truncate(first, 300)),
            )
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Shortens a message to at most `max` characters.
#[must_use]
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// Groups files by the environment they claim; a name claimed by more than one
/// file is a conflict, reported on every file that claims it.
pub fn conflicts<'a>(claimed: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Diagnostic> {
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, file) in claimed {
        by_name.entry(name).or_default().push(file);
    }
    let mut out = Vec::new();
    for (name, files) in by_name {
        if files.len() < 2 {
            continue;
        }
        for file in &files {
            let others: Vec<&str> = files.iter().copied().filter(|f| f != file).collect();
            out.push(
                Diagnostic::new(
                    *file,
                    "/environment_name",
                    "duplicate-environment",
                    format!(
                        "environment {name:?} is also claimed by {}; neither claim is applied",
                        others.join(", ")
                    ),
                )
                .for_environment(Some(name)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path.into(), Content::Bytes(text.as_bytes().to_vec().into()))
    }

    fn rule(path: &str, text: &str) -> String {
        parse(&file(path, text)).expect_err("refused").rule
    }

    #[test]
    fn yaml_and_json_parse_to_the_same_document() {
        let y = parse(&file("a.yaml", "a: 1\nb: [x]\n")).expect("yaml");
        let j = parse(&file("a.json", r#"{"a": 1, "b": ["x"]}"#)).expect("json");
        assert_eq!(y, j);
    }

    #[test]
    fn hostile_and_broken_inputs_get_their_rule() {
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
        assert!(rule("bomb.yaml", bomb).starts_with("yaml"));
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(rule("deep.json", &deep), "json");
        assert!(rule("deep.yaml", &deep).starts_with("yaml"));
        assert_eq!(rule("multi.yaml", "a: 1\n---\nb: 2\n"), "one-document");
        assert_eq!(rule("empty.yaml", ""), "empty");
        assert_eq!(rule("empty.json", "  \n"), "empty");
        assert_eq!(rule("comment.yaml", "# nothing\n"), "empty");
        assert_eq!(rule("list.yaml", "- a\n"), "type");
        assert_eq!(rule("dup.yaml", "a: 1\na: 2\n"), "duplicate-key");
        let bad = SourceFile::new(
            "bin.yaml".into(),
            Content::Bytes(vec![b'a', b':', 0xff].into()),
        );
        assert_eq!(parse(&bad).expect_err("refused").rule, "utf-8");
    }

    #[test]
    fn json_with_a_repeated_key_is_refused_with_the_pointer_of_the_repeat() {
        let top = parse(&file(
            "dev-x.json",
            r#"{"environment_type": "dev", "user": "a", "environment_type": "prod"}"#,
        ))
        .expect_err("refused");
        assert_eq!(
            (top.file.as_str(), top.pointer.as_str(), top.rule.as_str()),
            ("dev-x.json", "/environment_type", "duplicate-key")
        );
        assert!(top.message.contains("environment_type"), "{}", top.message);
        let nested = parse(&file(
            "a.json",
            r#"{"services": [{"x": 1}, {"a/b": {"v": 1, "v": 2}}]}"#,
        ))
        .expect_err("refused");
        assert_eq!(nested.pointer, "/services/1/a~1b/v");
        assert_eq!(nested.rule, "duplicate-key");
        // Equal keys in different objects are not repeats.
        let fine = parse(&file(
            "b.json",
            r#"{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}"#,
        ))
        .expect("parses");
        assert_eq!(
            fine,
            serde_json::json!({"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]})
        );
    }

    #[test]
    fn duplicate_names_conflict_on_every_file() {
        let d = conflicts([("x", "a.yaml"), ("y", "b.yaml"), ("x", "c.json")]);
        assert_eq!(d.len(), 2);
        assert!(d[0].message.contains("c.json"));
        assert!(d[1].message.contains("a.yaml"));
    }
}
