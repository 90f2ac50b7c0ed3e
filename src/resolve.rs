//! Stage 4, resolve: service version constraints -> concrete tags.
//!
//! An exact version is its own tag. A constraint (`^1.0.0`, `>=1.2, <2`,
//! `1.x`, `*`) needs the tags that exist, from a [`Tags`] provider (an OCI
//! registry's tag list or a repository's git tags, configured per service);
//! without one it is unresolved, and the environment is left untouched with a
//! `VersionUnresolved` condition rather than half-applied. `sue` environments
//! resolve against the dev tags. Pure: the provider hands in tag lists.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::claim::Claim;

/// Tag lists per service. `dev` asks for the dev tags (for `sue`).
pub trait Tags: Sync {
    /// The tags that exist for `service`, or `None` when no tag list is known.
    fn tags(&self, service: &str, dev: bool) -> Option<Vec<String>>;
}

/// No tag source configured: only exact versions resolve.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTags;

impl Tags for NoTags {
    fn tags(&self, _service: &str, _dev: bool) -> Option<Vec<String>> {
        None
    }
}

/// Fixed tag lists, for tests and the plan of a pull request.
#[derive(Debug, Default, Clone)]
pub struct StaticTags(pub BTreeMap<String, Vec<String>>);

impl Tags for StaticTags {
    fn tags(&self, service: &str, _dev: bool) -> Option<Vec<String>> {
        self.0.get(service).cloned()
    }
}

/// One service's resolved version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Resolved {
    /// The tag to deploy.
    pub tag: String,
    /// The constraint as written in the claim.
    pub constraint: String,
}

/// A service whose constraint matched no tag (or had no tag list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    pub service: String,
    pub constraint: String,
    pub reason: String,
}

/// Resolves every service of a claim; all or nothing.
pub fn resolve(
    claim: &Claim,
    dev_tags: bool,
    tags: &dyn Tags,
) -> Result<BTreeMap<String, Resolved>, Vec<Unresolved>> {
    let mut resolved = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (name, service) in &claim.services {
        let constraint = service.version.to_string();
        if let crate::claim::Constraint::Exact(v) = &service.version {
            resolved.insert(
                name.clone(),
                Resolved {
                    tag: v.to_string(),
                    constraint,
                },
            );
            continue;
        }
        let Some(list) = tags.tags(name, dev_tags) else {
            unresolved.push(Unresolved {
                service: name.clone(),
                reason: format!("no tag list is configured for service {name:?}, so {constraint:?} cannot be resolved"),
                constraint,
            });
            continue;
        };
        match service.version.pick(list.iter().map(String::as_str)) {
            Some(tag) => {
                resolved.insert(
                    name.clone(),
                    Resolved {
                        tag: tag.to_owned(),
                        constraint,
                    },
                );
            }
            None => unresolved.push(Unresolved {
                service: name.clone(),
                reason: format!(
                    "no tag of service {name:?} matches {constraint:?} ({} tags known)",
                    list.len()
                ),
                constraint,
            }),
        }
    }
    if unresolved.is_empty() {
        Ok(resolved)
    } else {
        Err(unresolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(services: &serde_json::Value) -> Claim {
        Claim::from_document(
            "f",
            json!({
                "user": "u@x.io", "environment_pool": "team1", "creation_date": "2024-01-15T10:30:00Z",
                "environment_name": "e", "environment_type": "dev", "deployment_method": "dynamic",
                "services": services.clone()
            }),
        )
        .expect("valid")
    }

    #[test]
    fn exact_versions_need_no_tag_list_and_constraints_do() {
        let c = claim(&json!({"a": "v1.2.3", "b": {"version": "1.2.3.4"}}));
        let r = resolve(&c, false, &NoTags).expect("resolves");
        assert_eq!(r["a"].tag, "v1.2.3");
        assert_eq!(r["b"].tag, "1.2.3.4");
        let c = claim(&json!({"a": "v1.2.3", "b": "^2.1.0"}));
        let u = resolve(&c, false, &NoTags).expect_err("unresolved");
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].service, "b");
    }

    #[test]
    fn constraints_pick_the_highest_matching_tag() {
        let tags = StaticTags(BTreeMap::from([
            (
                "b".to_owned(),
                vec![
                    "2.1.0".into(),
                    "2.4.1".into(),
                    "3.0.0".into(),
                    "2.5.0-rc.1".into(),
                ],
            ),
            ("c".to_owned(), vec!["0.9".into()]),
        ]));
        let r = resolve(&claim(&json!({"b": "^2.1.0"})), false, &tags).expect("resolves");
        assert_eq!(
            r["b"],
            Resolved {
                tag: "2.4.1".into(),
                constraint: "^2.1.0".into()
            }
        );
        let u = resolve(&claim(&json!({"c": ">=1.0, <2.0"})), false, &tags).expect_err("no match");
        assert!(u[0].reason.contains("1 tags known"), "{}", u[0].reason);
    }
}
