//! YAML parser limits: every YAML converge parses (claims, the config file,
//! custom templates' output) goes through serde-saphyr under one of these
//! budgets, so alias bombs, deep nesting and node floods are refused fast
//! with bounded memory. A leaf module. (Writing YAML is [`crate::render::yaml`].)

/// Parser limits for claim files (and the config file).
#[must_use]
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_nodes: 20_000,
            max_events: 100_000,
            max_documents: 1,
            max_aliases: 64,
            max_anchors: 64,
            max_total_scalar_bytes: 1024 * 1024,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

/// Parser limits for the output of custom templates (many documents per file).
#[must_use]
pub fn template_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_nodes: 100_000,
            max_documents: 256,
            max_aliases: 64,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}
