//! Version resolution against the tags that exist: `registry.rs` against the
//! CNCF distribution registry (no auth, htpasswd basic auth, bearer tokens;
//! pages of 2 tags), `hostile.rs` against a hostile registry (huge token
//! lifetimes, foreign realms, redirects to another host), `git.rs` against
//! `git daemon`. The daemon following new
//! tags is in `daemon/tags.rs`.

mod git;
mod hostile;
mod registry;

use std::fmt::Write as _;

use crate::support::Project;

/// A claim of `env_type` for `name` with these services (YAML mapping lines,
/// indented by two spaces).
pub fn claim_with(name: &str, env_type: &str, services: &[(&str, &str)]) -> String {
    let mut out = format!(
        "user: john.doe@company.com\nenvironment_pool: team1\ncreation_date: \"2024-01-15T10:30:00Z\"\n\
         environment_name: {name}\nenvironment_type: {env_type}\ndeployment_method: dynamic\n"
    );
    if env_type == "sue" {
        // A sue environment lives 24 h from its creation date unless told.
        out.push_str("expiration_date: \"2099-01-01T00:00:00Z\"\n");
    }
    out.push_str("services:\n");
    for (s, v) in services {
        let _ = writeln!(out, "  {s}: \"{v}\"");
    }
    out
}

/// Every `image:` of an environment's rendered objects, sorted.
pub fn images(p: &Project, env: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(p.path(&format!("out/{env}")))
        .into_iter()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(image) = line.trim().strip_prefix("image: ") {
                out.push(image.trim_matches('"').to_owned());
            }
        }
    }
    out.sort();
    out
}

/// The `versions:`/`images:` config of a registry tag source at `host`.
pub fn registry_config(host: &str, extra: &str) -> String {
    format!(
        "state_dir: .converge\nimages:\n  registry: {host}/releases\n  dev_registry: {host}/snapshots\n\
         versions:\n  from: registry\n  plain_http: true\n  page_size: 2\n  interval: 1s\n  timeout: 3s\n{extra}"
    )
}
