//! Diagnostics: what every stage says about bad input.
//!
//! A [`Diagnostic`] names the file, the JSON pointer inside it and the rule that
//! failed, so a user can fix the claim without reading converge's code. Stages
//! return `(T, Vec<Diagnostic>)` instead of failing: bad input for one claim is
//! that claim's diagnostic, never an error of the whole pass.

use std::fmt;

use serde::Serialize;

/// One problem with one input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file as the user knows it (relative to the source root, prefixed by
    /// the source name when it is not the only source).
    pub file: String,
    /// JSON pointer into the document (`""` is the whole document).
    pub pointer: String,
    /// The rule that failed: a JSON Schema keyword, `yaml`, `policy`, ...
    pub rule: String,
    /// What is wrong, in lower case, without the file or pointer.
    pub message: String,
    /// The environment the file claims, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl Diagnostic {
    #[must_use]
    pub fn new(
        file: impl Into<String>,
        pointer: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            pointer: pointer.into(),
            rule: rule.into(),
            message: message.into(),
            environment: None,
        }
    }

    #[must_use]
    pub fn for_environment(mut self, name: Option<&str>) -> Self {
        self.environment = name.map(str::to_owned);
        self
    }
}

impl fmt::Display for Diagnostic {
    /// `claims/dev-x.yaml: /environment_name: does not match ... (pattern)`; the
    /// whole document is shown as `/`. Control characters are escaped so a
    /// hostile file cannot forge extra lines of output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{}: {}: {} ({})",
            one_line(&self.file),
            one_line(pointer),
            one_line(&self.message),
            self.rule
        )
    }
}

/// Escapes control characters so one diagnostic is always one line.
fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars().flat_map(char::escape_default).collect()
    } else {
        s.to_owned()
    }
}

/// Appends a key to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
#[must_use]
pub fn pointer_join(base: &str, key: &str) -> String {
    let mut out = String::with_capacity(base.len() + key.len() + 1);
    out.push_str(base);
    out.push('/');
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// An error and its sources, as one line, in words: a cause whose text the
/// line already holds is left out, and no `Debug` output is ever shown.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_pointer_and_rule_on_one_line() {
        let d = Diagnostic::new("claims/a.yaml", "/environment_name", "pattern", "bad\nname");
        assert_eq!(
            d.to_string(),
            "claims/a.yaml: /environment_name: bad\\nname (pattern)"
        );
        let whole = Diagnostic::new("a.json", "", "json", "empty document");
        assert_eq!(whole.to_string(), "a.json: /: empty document (json)");
    }

    #[test]
    fn pointer_join_escapes_rfc6901() {
        assert_eq!(pointer_join("/services", "a/b~c"), "/services/a~1b~0c");
    }
}
