//! Stage 4, resolve: service version constraints -> concrete tags.
//!
//! An exact version is its own tag. A constraint (`^1.0.0`, `>=1.2, <2`,
//! `1.x`, `*`) needs the tags that exist: a [`TagSet`] the caller hands in
//! (the config's fixed `tags:` lists, or the lists the daemon last read from
//! an OCI registry or a repository's git tags). Without a list a constraint
//! is unresolved, and the environment is left untouched with a
//! `VersionUnresolved` condition rather than half-applied.
//!
//! Resolution never goes backwards on its own: given the versions the
//! environment runs now (the target's record), a constraint that is
//! unchanged keeps its tag when the list is unavailable or no longer holds
//! it (`ResolvedTagMissing`), and never picks a lower one. `sue`
//! environments (any type whose preset says `use_dev_tags`) resolve against
//! the dev lists. A service [`Catalog`] adds each requested service's
//! dependencies, transitively. Pure: no IO, the lists are data.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::Serialize;

use crate::claim::{Claim, Constraint, Version};

/// One repository's tags as last listed, with a digest of the list (so an
/// unchanged list is recognized without comparing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    pub tags: Vec<String>,
    pub digest: u64,
}

impl TagList {
    #[must_use]
    pub fn new(tags: Vec<String>) -> TagList {
        let mut h = std::hash::DefaultHasher::new();
        tags.hash(&mut h);
        TagList {
            digest: h.finish(),
            tags,
        }
    }
}

/// The tag lists resolution may use, per service: release lists and dev
/// lists (for environments whose preset uses dev tags). With `dev_fallback`
/// (the fixed `tags:` lists) a dev lookup uses the release list.
#[derive(Debug, Clone, Default)]
pub struct TagSet {
    release: BTreeMap<String, Arc<TagList>>,
    dev: BTreeMap<String, Arc<TagList>>,
    dev_fallback: bool,
}

impl TagSet {
    /// Fixed lists (the config's `tags:`); dev lookups use them too.
    #[must_use]
    pub fn fixed(lists: &BTreeMap<String, Vec<String>>) -> TagSet {
        TagSet {
            release: lists
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(TagList::new(v.clone()))))
                .collect(),
            dev: BTreeMap::new(),
            dev_fallback: true,
        }
    }

    /// Sets the list of `service` (its dev list when `dev`).
    pub fn insert(&mut self, service: &str, dev: bool, list: Arc<TagList>) {
        let map = if dev {
            &mut self.dev
        } else {
            &mut self.release
        };
        map.insert(service.to_owned(), list);
    }

    /// The list a service resolves against, if one is known.
    #[must_use]
    pub fn get(&self, service: &str, dev: bool) -> Option<&Arc<TagList>> {
        if dev {
            match self.dev.get(service) {
                Some(l) => Some(l),
                None if self.dev_fallback => self.release.get(service),
                None => None,
            }
        } else {
            self.release.get(service)
        }
    }

    /// Dev lookups without a dev list use the release list (no dev registry).
    #[must_use]
    pub fn with_dev_fallback(mut self, on: bool) -> TagSet {
        self.dev_fallback = on;
        self
    }

    /// True when no list is known at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.release.is_empty() && self.dev.is_empty()
    }
}

/// One service's resolved version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Resolved {
    /// The tag to deploy.
    pub tag: String,
    /// The constraint as written in the claim (or the catalog's default).
    pub constraint: String,
    /// The requested services this one came with as a dependency (empty
    /// when the claim names it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_of: Vec<String>,
}

/// A service whose constraint matched no tag (or had no tag list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    pub service: String,
    pub constraint: String,
    pub reason: String,
}

/// A service a catalog knows: what it needs, and the constraint it is
/// deployed at when it comes as a dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub depends_on: Vec<String>,
    pub version: Constraint,
}

/// The service catalog (`services:` in the config). Checked when built:
/// every dependency is a known service and there is no cycle.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    services: BTreeMap<String, CatalogEntry>,
}

/// Why a catalog cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("services.{service}.depends_on names {missing:?}, which is not in the catalog")]
    Unknown { service: String, missing: String },
    #[error("services: the dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

impl Catalog {
    /// Checks and builds a catalog.
    ///
    /// # Errors
    ///
    /// An unknown dependency or a cycle (named in full).
    pub fn new(services: BTreeMap<String, CatalogEntry>) -> Result<Catalog, CatalogError> {
        for (name, entry) in &services {
            if let Some(missing) = entry.depends_on.iter().find(|d| !services.contains_key(*d)) {
                return Err(CatalogError::Unknown {
                    service: name.clone(),
                    missing: missing.clone(),
                });
            }
        }
        // Depth-first search with colours: 1 = on the path, 2 = done.
        let mut colour: BTreeMap<&str, u8> = BTreeMap::new();
        for start in services.keys() {
            let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
            if colour.contains_key(start.as_str()) {
                continue;
            }
            colour.insert(start, 1);
            while let Some((node, next)) = path.last_mut() {
                let deps = &services[*node].depends_on;
                if let Some(dep) = deps.get(*next) {
                    *next += 1;
                    match colour.get(dep.as_str()) {
                        Some(1) => {
                            let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                path[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                            cycle.push(dep.clone());
                            return Err(CatalogError::Cycle(cycle));
                        }
                        Some(_) => {}
                        None => {
                            colour.insert(dep, 1);
                            path.push((dep, 0));
                        }
                    }
                } else {
                    colour.insert(node, 2);
                    path.pop();
                }
            }
        }
        Ok(Catalog { services })
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// One service an environment needs: its constraint, and the requested
/// services it came with as a dependency (empty when the claim names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub constraint: Constraint,
    pub dependency_of: Vec<String>,
}

/// The services a claim needs: the ones it names, at their constraints, and
/// their dependencies from the catalog, transitively, at the catalog's
/// constraint unless the claim names them too.
#[must_use]
pub fn requests(claim: &Claim, catalog: &Catalog) -> BTreeMap<String, Request> {
    let mut out: BTreeMap<String, Request> = claim
        .services
        .iter()
        .map(|(name, s)| {
            let request = Request {
                constraint: s.version.clone(),
                dependency_of: Vec::new(),
            };
            (name.clone(), request)
        })
        .collect();
    if catalog.is_empty() {
        return out;
    }
    for root in claim.services.keys() {
        let mut seen = BTreeSet::from([root.as_str()]);
        let mut stack: Vec<&str> = vec![root];
        while let Some(name) = stack.pop() {
            let Some(entry) = catalog.services.get(name) else {
                continue;
            };
            for dep in &entry.depends_on {
                if !seen.insert(dep) {
                    continue;
                }
                stack.push(dep);
                if claim.services.contains_key(dep) {
                    continue;
                }
                let request = out.entry(dep.clone()).or_insert_with(|| Request {
                    constraint: catalog.services[dep].version.clone(),
                    dependency_of: Vec::new(),
                });
                if !request.dependency_of.contains(root) {
                    request.dependency_of.push(root.clone());
                }
            }
        }
    }
    out
}

/// Something resolution wants the environment's conditions to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub service: String,
    pub message: String,
}

/// What resolving an environment's services gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub versions: BTreeMap<String, Resolved>,
    /// Tags kept because the list no longer holds them (`ResolvedTagMissing`).
    pub missing: Vec<Note>,
}

/// A digest of the tag lists these requests consult (their digests, in
/// request order). The requests themselves come from the claim, so for one
/// claim equal digests (and equal previous versions) mean an equal
/// resolution, and the caller can skip resolving and rendering.
#[must_use]
pub fn inputs_digest(requests: &BTreeMap<String, Request>, dev: bool, tags: &TagSet) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for (name, r) in requests {
        if matches!(r.constraint, Constraint::Exact(_)) {
            continue;
        }
        tags.get(name, dev).map(|l| l.digest).hash(&mut h);
    }
    h.finish()
}

/// True when every request is an exact version (no list, no previous
/// version matters).
#[must_use]
pub fn all_exact(requests: &BTreeMap<String, Request>) -> bool {
    requests
        .values()
        .all(|r| matches!(r.constraint, Constraint::Exact(_)))
}

/// Resolves every requested service; all or nothing. `previous` is what the
/// environment runs now (the target's record), if it exists: an unchanged
/// constraint never resolves below it, and keeps it when the list has lost
/// it or is unavailable.
pub fn resolve(
    requests: &BTreeMap<String, Request>,
    dev: bool,
    tags: &TagSet,
    previous: Option<&BTreeMap<String, Resolved>>,
) -> Result<Resolution, Vec<Unresolved>> {
    let mut versions = BTreeMap::new();
    let mut missing = Vec::new();
    let mut unresolved = Vec::new();
    for (name, request) in requests {
        let constraint = request.constraint.to_string();
        let resolved = |tag: &str| Resolved {
            tag: tag.to_owned(),
            constraint: constraint.clone(),
            dependency_of: request.dependency_of.clone(),
        };
        if let Constraint::Exact(v) = &request.constraint {
            versions.insert(name.clone(), resolved(&v.to_string()));
            continue;
        }
        // The tag in force, when the constraint is the one it was resolved for.
        let kept = previous
            .and_then(|p| p.get(name))
            .filter(|p| p.constraint == constraint)
            .and_then(|p| Some((Version::parse(&p.tag).ok()?, p.tag.as_str())))
            .filter(|(v, _)| request.constraint.matches(v));
        let Some(list) = tags.get(name, dev) else {
            if let Some((_, tag)) = kept {
                versions.insert(name.clone(), resolved(tag));
                continue;
            }
            unresolved.push(Unresolved {
                service: name.clone(),
                reason: format!(
                    "no tag list is known for service {name:?}{}, so {constraint:?} cannot be resolved",
                    if dev { " (dev tags)" } else { "" }
                ),
                constraint,
            });
            continue;
        };
        let picked = request
            .constraint
            .pick(list.tags.iter().map(String::as_str));
        match (picked, kept) {
            (_, Some((kv, ktag))) if !list.tags.iter().any(|t| t == ktag) => {
                // Gone from the list: keep it rather than fall back to an
                // older one; a newer matching tag still moves on.
                let newer = picked.filter(|p| Version::parse(p).is_ok_and(|pv| pv > kv));
                if let Some(p) = newer {
                    versions.insert(name.clone(), resolved(p));
                } else {
                    missing.push(Note {
                        service: name.clone(),
                        message: format!(
                            "service {name:?} keeps tag {ktag:?} ({constraint}), which is no longer in its tag list; no newer tag matches"
                        ),
                    });
                    versions.insert(name.clone(), resolved(ktag));
                }
            }
            (Some(p), Some((kv, ktag))) => {
                let lower = Version::parse(p).is_ok_and(|pv| pv < kv);
                versions.insert(name.clone(), resolved(if lower { ktag } else { p }));
            }
            (Some(p), None) => {
                versions.insert(name.clone(), resolved(p));
            }
            (None, Some((_, ktag))) => {
                versions.insert(name.clone(), resolved(ktag));
            }
            (None, None) => unresolved.push(Unresolved {
                service: name.clone(),
                reason: format!(
                    "no tag of service {name:?} matches {constraint:?} ({} tags known{})",
                    list.tags.len(),
                    if dev { ", dev tags" } else { "" }
                ),
                constraint,
            }),
        }
    }
    if unresolved.is_empty() {
        Ok(Resolution { versions, missing })
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

    fn tags(lists: &[(&str, &[&str])]) -> TagSet {
        TagSet::fixed(
            &lists
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|t| (*t).to_owned()).collect()))
                .collect(),
        )
    }

    fn plain(c: &Claim) -> BTreeMap<String, Request> {
        requests(c, &Catalog::default())
    }

    fn tag_of(r: &Resolution, s: &str) -> String {
        r.versions[s].tag.clone()
    }

    #[test]
    fn exact_versions_need_no_tag_list_and_constraints_do() {
        let c = claim(&json!({"a": "v1.2.3", "b": {"version": "1.2.3.4"}}));
        let r = resolve(&plain(&c), false, &TagSet::default(), None).expect("resolves");
        assert_eq!(tag_of(&r, "a"), "v1.2.3");
        assert_eq!(tag_of(&r, "b"), "1.2.3.4");
        let c = claim(&json!({"a": "v1.2.3", "b": "^2.1.0"}));
        let u = resolve(&plain(&c), false, &TagSet::default(), None).expect_err("unresolved");
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].service, "b");
    }

    #[test]
    fn constraints_pick_the_highest_matching_tag() {
        let t = tags(&[
            ("b", &["2.1.0", "2.4.1", "3.0.0", "2.5.0-rc.1"]),
            ("c", &["0.9"]),
        ]);
        let r =
            resolve(&plain(&claim(&json!({"b": "^2.1.0"}))), false, &t, None).expect("resolves");
        assert_eq!(
            r.versions["b"],
            Resolved {
                tag: "2.4.1".into(),
                constraint: "^2.1.0".into(),
                dependency_of: Vec::new(),
            }
        );
        let u = resolve(
            &plain(&claim(&json!({"c": ">=1.0, <2.0"}))),
            false,
            &t,
            None,
        )
        .expect_err("no match");
        assert!(u[0].reason.contains("1 tags known"), "{}", u[0].reason);
    }

    #[test]
    fn a_registry_listing_in_lexical_order_resolves_numerically() {
        // What a distribution registry returns: lexical order, signatures,
        // `latest`, pre-releases and 4-part tags mixed in.
        let listing: &[&str] = &[
            "latest",
            "sha256-0c3b1e8d.sig",
            "v1.10.0",
            "v1.2.0",
            "v1.2.10",
            "v1.2.9",
            "v1.3.0-rc.1",
            "v2.0.0.1",
        ];
        let t = tags(&[("s", listing)]);
        let table: &[(&str, &str)] = &[
            ("^1.2.0", "v1.10.0"),
            ("1.2.x", "v1.2.10"),
            (">=1.3.0-rc.1, <1.4.0", "v1.3.0-rc.1"),
            ("*", "v2.0.0.1"),
            ("^2.0.0.0", "v2.0.0.1"),
        ];
        for (constraint, want) in table {
            let r = resolve(&plain(&claim(&json!({ "s": constraint }))), false, &t, None)
                .unwrap_or_else(|u| panic!("{constraint}: {u:?}"));
            assert_eq!(tag_of(&r, "s"), *want, "{constraint}");
        }
    }

    #[test]
    fn resolution_never_goes_below_what_runs_and_keeps_a_vanished_tag() {
        let c = claim(&json!({"s": "^1.2.0"}));
        let prev = |tag: &str, constraint: &str| {
            BTreeMap::from([(
                "s".to_owned(),
                Resolved {
                    tag: tag.into(),
                    constraint: constraint.into(),
                    dependency_of: Vec::new(),
                },
            )])
        };
        // The running 1.2.4 was deleted from the registry: kept, with a note.
        let t = tags(&[("s", &["1.2.0", "1.2.3"])]);
        let running = prev("1.2.4", "^1.2.0");
        let r = resolve(&plain(&c), false, &t, Some(&running)).expect("resolves");
        assert_eq!(tag_of(&r, "s"), "1.2.4");
        assert_eq!(r.missing.len(), 1);
        assert!(r.missing[0].message.contains("1.2.4"), "{:?}", r.missing);
        // A newer one appears: followed.
        let t = tags(&[("s", &["1.2.0", "1.2.5"])]);
        let r = resolve(&plain(&c), false, &t, Some(&running)).expect("resolves");
        assert_eq!((tag_of(&r, "s"), r.missing.len()), ("1.2.5".to_owned(), 0));
        // No list at all (a restart during an outage): kept.
        let r = resolve(&plain(&c), false, &TagSet::default(), Some(&running)).expect("kept");
        assert_eq!(tag_of(&r, "s"), "1.2.4");
        // The claim changed its constraint: resolved afresh, even downwards.
        let r = resolve(
            &plain(&c),
            false,
            &tags(&[("s", &["1.2.3"])]),
            Some(&prev("2.0.0", "*")),
        )
        .expect("resolves");
        assert_eq!(tag_of(&r, "s"), "1.2.3");
    }

    #[test]
    fn dev_lookups_use_dev_lists_and_fixed_lists_serve_both() {
        let mut set = TagSet::default();
        set.insert("s", false, Arc::new(TagList::new(vec!["1.0.0".into()])));
        set.insert(
            "s",
            true,
            Arc::new(TagList::new(vec!["1.1.0-dev.3".into(), "1.1.0".into()])),
        );
        let c = claim(&json!({"s": "^1.0.0"}));
        let table = [(false, "1.0.0"), (true, "1.1.0")];
        for (dev, want) in table {
            let r = resolve(&plain(&c), dev, &set, None).expect("resolves");
            assert_eq!(tag_of(&r, "s"), want, "dev {dev}");
        }
        let mut only_release = TagSet::default();
        only_release.insert("s", false, Arc::new(TagList::new(vec!["1.0.0".into()])));
        assert!(resolve(&plain(&c), true, &only_release, None).is_err());
        let fixed = tags(&[("s", &["1.0.0"])]);
        assert!(resolve(&plain(&c), true, &fixed, None).is_ok());
    }

    fn catalog(entries: &[(&str, &[&str], &str)]) -> Result<Catalog, CatalogError> {
        Catalog::new(
            entries
                .iter()
                .map(|(name, deps, version)| {
                    (
                        (*name).to_owned(),
                        CatalogEntry {
                            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                            version: version.parse().expect("constraint"),
                        },
                    )
                })
                .collect(),
        )
    }

    type Want<'a> = &'a [(&'a str, &'a str, &'a [&'a str])];

    #[test]
    fn dependencies_come_along_transitively_at_the_catalog_constraint() {
        let cat = catalog(&[
            ("checkout", &["billing", "user-service"], "*"),
            ("billing", &["ledger"], "^1.0.0"),
            ("user-service", &[], "^2.0.0"),
            ("ledger", &[], "^3.0.0"),
            ("search", &[], "*"),
        ])
        .expect("valid");
        let table: &[(serde_json::Value, Want<'_>)] = &[
            (
                json!({"checkout": "1.0.0"}),
                &[
                    ("billing", "^1.0.0", &["checkout"]),
                    ("checkout", "1.0.0", &[]),
                    ("ledger", "^3.0.0", &["checkout"]),
                    ("user-service", "^2.0.0", &["checkout"]),
                ],
            ),
            // The claim names a dependency: its constraint wins, and it is
            // not marked as a dependency.
            (
                json!({"checkout": "1.0.0", "billing": "1.5.0"}),
                &[
                    ("billing", "1.5.0", &[]),
                    ("checkout", "1.0.0", &[]),
                    ("ledger", "^3.0.0", &["billing", "checkout"]),
                    ("user-service", "^2.0.0", &["checkout"]),
                ],
            ),
            (json!({"search": "1.0.0"}), &[("search", "1.0.0", &[])]),
            (json!({"unknown": "1.0.0"}), &[("unknown", "1.0.0", &[])]),
        ];
        for (services, want) in table {
            let got = requests(&claim(services), &cat);
            let got: Vec<(String, String, Vec<String>)> = got
                .into_iter()
                .map(|(k, r)| {
                    let mut deps = r.dependency_of;
                    deps.sort();
                    (k, r.constraint.to_string(), deps)
                })
                .collect();
            let want: Vec<(String, String, Vec<String>)> = want
                .iter()
                .map(|(k, c, d)| {
                    (
                        (*k).to_owned(),
                        (*c).to_owned(),
                        d.iter().map(|s| (*s).to_owned()).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{services}");
        }
    }

    #[test]
    fn catalog_cycles_and_unknown_dependencies_are_refused_by_name() {
        let err = catalog(&[("a", &["b"], "*"), ("b", &["c"], "*"), ("c", &["a"], "*")])
            .expect_err("cycle");
        assert_eq!(
            err.to_string(),
            "services: the dependencies form a cycle: a -> b -> c -> a"
        );
        let err = catalog(&[("a", &["a"], "*")]).expect_err("self");
        assert_eq!(
            err.to_string(),
            "services: the dependencies form a cycle: a -> a"
        );
        let err = catalog(&[("a", &["nope"], "*")]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "services.a.depends_on names \"nope\", which is not in the catalog"
        );
        catalog(&[("a", &["b", "c"], "*"), ("b", &["c"], "*"), ("c", &[], "*")])
            .expect("a diamond is fine");
    }
}
