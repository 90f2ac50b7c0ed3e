//! JSON Schema validation of claim documents.
//!
//! The built-in `schemas/claim.v1.json` (2020-12) is embedded; a config may
//! replace it. The schema is compiled once and shared by every thread; the
//! fast `is_valid` path runs first and the error walk only for bad documents.

use std::path::Path;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, pointer_join};
use crate::load::truncate;

/// The built-in claim schema.
pub const BUILTIN: &str = include_str!("../../schemas/claim.v1.json");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read schema {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid schema {path}: {message}")]
    Invalid { path: String, message: String },
}

/// A compiled claim schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// The embedded `schemas/claim.v1.json`.
    #[must_use]
    pub fn builtin() -> Schema {
        Self::compile("<built-in claim.v1.json>", BUILTIN).expect("the built-in schema compiles")
    }

    /// Reads and compiles a schema file.
    pub fn from_file(path: &Path) -> Result<Schema, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::compile(&path.display().to_string(), &text)
    }

    fn compile(name: &str, text: &str) -> Result<Schema, Error> {
        let invalid = |message: String| Error::Invalid {
            path: name.to_owned(),
            message,
        };
        let schema: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Schema { validator })
    }

    /// Every schema violation of `doc`, each naming its JSON pointer and keyword.
    #[must_use]
    pub fn check(&self, file: &str, doc: &Value) -> Vec<Diagnostic> {
        if self.validator.is_valid(doc) {
            return Vec::new();
        }
        let mut out: Vec<Diagnostic> = self
            .validator
            .iter_errors(doc)
            .map(|e| {
                let mut pointer = e.instance_path().to_string();
                let mut message = e.to_string();
                let kind = e.kind();
                if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
                    kind
                    && let [one] = unexpected.as_slice()
                {
                    pointer = pointer_join(&pointer, one);
                    message = format!("unknown field {one:?} (not allowed by the schema)");
                } else if may_hold_secrets(&pointer)
                    && !matches!(
                        kind,
                        jsonschema::error::ValidationErrorKind::Required { .. }
                            | jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
                    )
                {
                    // The message would quote the value: a secret, or the
                    // whole document with its secrets.
                    message = format!(
                        "the value breaks the schema's {:?} rule (values under secrets are never shown)",
                        kind.keyword()
                    );
                }
                Diagnostic::new(file, pointer, e.kind().keyword(), truncate(&message, 300))
            })
            .collect();
        out.sort_by(|a, b| a.pointer.cmp(&b.pointer).then_with(|| a.rule.cmp(&b.rule)));
        out.dedup();
        out
    }
}

/// Whether a schema message about the value at `pointer` could quote a
/// secret: the whole document, or anything under `secrets`.
fn may_hold_secrets(pointer: &str) -> bool {
    pointer.is_empty() || pointer == "/secrets" || pointer.starts_with("/secrets/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "user": "john.doe@company.com",
            "environment_pool": "team1",
            "creation_date": "2024-01-15T10:30:00Z",
            "environment_name": "dev-team1-feature-x",
            "environment_type": "dev",
            "expiration_date": null,
            "deployment_method": "dynamic",
            "services": {
                "user-service": "v1.2.3",
                "api-gateway": {"version": "v1.0.5", "docker_image": "artifactory/docker-releases/api-gateway:v1.0.5"}
            }
        })
    }

    fn problems(patch: impl FnOnce(&mut Value)) -> Vec<(String, String)> {
        let mut doc = valid();
        patch(&mut doc);
        Schema::builtin()
            .check("f.json", &doc)
            .into_iter()
            .map(|d| (d.pointer, d.rule))
            .collect()
    }

    #[test]
    fn a_schema_error_under_secrets_never_quotes_the_value() {
        for bad in [
            json!("x".repeat(70_000) + "canary"),
            json!(12_345_678),
            json!({"a": "canary"}),
        ] {
            let mut doc = valid();
            doc["secrets"] = json!({"db": bad});
            let got = Schema::builtin().check("f.json", &doc);
            assert!(!got.is_empty());
            for d in got {
                assert!(d.pointer.starts_with("/secrets"), "{d}");
                let text = d.to_string();
                assert!(
                    !text.contains("canary")
                        && !text.contains("12345678")
                        && !text.contains("xxxx"),
                    "{text}"
                );
            }
        }
        let mut doc = valid();
        doc["secrets"] = json!(["canary"]);
        for d in Schema::builtin().check("f.json", &doc) {
            assert!(!d.to_string().contains("canary"), "{d}");
        }
    }

    #[test]
    fn the_product_example_is_valid() {
        assert!(problems(|_| ()).is_empty());
    }

    #[test]
    fn each_rule_points_at_the_field() {
        type Patch = Box<dyn FnOnce(&mut Value)>;
        let table: Vec<(Patch, &str, &str)> = vec![
            (
                Box::new(|d| d["colour"] = json!("x")),
                "/colour",
                "additionalProperties",
            ),
            (
                Box::new(|d| d["environment_name"] = json!("Dev-X")),
                "/environment_name",
                "pattern",
            ),
            (
                Box::new(|d| d["environment_name"] = json!("a".repeat(64))),
                "/environment_name",
                "maxLength",
            ),
            (
                Box::new(|d| d["environment_type"] = json!("qa")),
                "/environment_type",
                "enum",
            ),
            (
                Box::new(|d| d["creation_date"] = json!("yesterday")),
                "/creation_date",
                "format",
            ),
            (
                Box::new(|d| d["creation_date"] = json!(5)),
                "/creation_date",
                "type",
            ),
            (
                Box::new(|d| d["services"]["x"] = json!(1.2)),
                "/services/x",
                "type",
            ),
            (
                Box::new(|d| d["services"]["api-gateway"]["colour"] = json!("x")),
                "/services/api-gateway/colour",
                "additionalProperties",
            ),
            (
                Box::new(|d| d["services"]["api-gateway"]["docker_image"] = json!("a\nb: c")),
                "/services/api-gateway/docker_image",
                "pattern",
            ),
            (
                Box::new(|d| d["services"]["billing"] = json!("1.0\n---")),
                "/services/billing",
                "pattern",
            ),
            (
                Box::new(|d| d["git_repository"] = json!("https://h/r.git\n---\nkind: X")),
                "/git_repository",
                "pattern",
            ),
            (
                Box::new(|d| drop(d.as_object_mut().map(|o| o.remove("user")))),
                "",
                "required",
            ),
        ];
        for (patch, pointer, rule) in table {
            let got = problems(patch);
            assert!(
                got.contains(&(pointer.to_owned(), rule.to_owned())),
                "want {pointer} {rule}, got {got:?}"
            );
        }
    }
}
