//! Stage 2, parse: source bytes -> JSON documents, plus diagnostics.
//!
//! JSON with `serde_json` (recursion-limited), YAML with serde-saphyr under an
//! explicit [`Budget`](serde_saphyr::Budget): alias bombs, deep nesting and
//! node floods are refused fast with bounded memory. One environment per file:
//! a multi-document YAML file is an error for that file. Size caps are applied
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
        Format::Json => serde_json::from_str(text)
            .map_err(|e| Diagnostic::new(path, "", "json", format!("invalid JSON: {e}")))?,
        Format::Yaml => serde_saphyr::from_str_with_options(text, crate::yaml::options())
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

fn yaml_error(path: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let message = e.to_string();
    let first = message.lines().next().unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let rule = if matches!(e, serde_saphyr::Error::MultipleDocuments { .. })
        || lower.contains("multiple documents")
        || (lower.contains("budget") && lower.contains("document"))
    {
        return Diagnostic::new(
            path,
            "",
            "one-document",
            "file holds several YAML documents: one environment per file",
        );
    } else if lower.contains("budget") {
        "yaml-budget"
    } else {
        "yaml"
    };
    Diagnostic::new(
        path,
        "",
        rule,
        format!("invalid YAML: {}", truncate(first, 300)),
    )
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
        assert_eq!(rule("dup.yaml", "a: 1\na: 2\n"), "yaml");
        let bad = SourceFile::new(
            "bin.yaml".into(),
            Content::Bytes(vec![b'a', b':', 0xff].into()),
        );
        assert_eq!(parse(&bad).expect_err("refused").rule, "utf-8");
    }

    #[test]
    fn duplicate_names_conflict_on_every_file() {
        let d = conflicts([("x", "a.yaml"), ("y", "b.yaml"), ("x", "c.json")]);
        assert_eq!(d.len(), 2);
        assert!(d[0].message.contains("c.json"));
        assert!(d[1].message.contains("a.yaml"));
    }
}
