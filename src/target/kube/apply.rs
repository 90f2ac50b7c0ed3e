//! Applying: the server-side dry run of a change before its first write,
//! the ownership checks of objects not in the inventory, server-side apply
//! by rank, and the roll back of a Namespace created for a refused change.

use super::client::plural;
use super::drift::owners;
use super::error::{
    Failure, classify, is_immutable, is_not_found, missing_namespace, request_error,
    still_being_deleted,
};
use super::{Kubernetes, shown};
use crate::object::{ObjectRef, kind_rank};
use crate::render::{Digest, ENVIRONMENT_LABEL, MANAGED_BY, Rendered};
use crate::target::{EnvironmentChange, LiveEnvironment};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{DynamicObject, Patch, PatchParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How the dry run of one object went, short of an error that stops it.
pub(super) enum DryRun {
    /// The API server would accept it.
    Passed,
    /// Its Namespace does not exist (yet); `error` if that stays so.
    NoNamespace {
        namespace: String,
        error: crate::target::Error,
    },
    /// The API server refuses it.
    Refused(crate::target::Error),
}

/// A rendered object as the body of a server-side apply, in `namespace`
/// when the template left it out.
pub(super) fn manifest(
    rendered: &Rendered,
    namespace: Option<&str>,
) -> Result<serde_json::Value, crate::target::Error> {
    let mut doc: serde_json::Value =
        serde_saphyr::from_str_with_options(&rendered.yaml, crate::yaml_limits::template_options())
            .map_err(|source| {
                crate::target::Error::Invalid(Box::new(Failure::NotYaml {
                    object: rendered.object.id.to_string(),
                    source,
                }))
            })?;
    if let (Some(ns), Some(meta)) = (
        namespace,
        doc.get_mut("metadata").and_then(|m| m.as_object_mut()),
    ) {
        meta.entry("namespace")
            .or_insert_with(|| serde_json::Value::String(ns.to_owned()));
    }
    Ok(doc)
}

/// Items grouped by the apply rank of their kind, in apply order.
pub(super) fn by_rank<T>(items: &[T], id: impl Fn(&T) -> &ObjectRef) -> Vec<Vec<&T>> {
    let mut groups: BTreeMap<u8, Vec<&T>> = BTreeMap::new();
    for item in items {
        groups
            .entry(kind_rank(&id(item).kind))
            .or_default()
            .push(item);
    }
    groups.into_values().collect()
}

impl Kubernetes {
    /// What server-side applying `rendered` would change on the live object
    /// (a dry run, writing nothing); `None` when the object does not exist.
    pub(super) async fn preview_object(
        &self,
        rendered: &Rendered,
        environment: &str,
    ) -> Result<Option<Vec<crate::diff::FieldChange>>, crate::target::Error> {
        let id = &rendered.object.id;
        let (api, resource, ns) = self.api(id, environment).await?;
        let object = shown(ns.as_deref(), &id.name);
        let live = match api.get_opt(&id.name).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(None),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(classify(request_error(
                    "get",
                    &plural(&resource),
                    &object,
                    e,
                )));
            }
        };
        let doc = manifest(rendered, ns.as_deref())?;
        let params = PatchParams::apply(&self.options.field_manager)
            .force()
            .dry_run();
        let after = api
            .patch(&id.name, &params, &Patch::Apply(&doc))
            .await
            .map_err(|e| classify(request_error("patch", &plural(&resource), &object, e)))?;
        let to_json = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        let secret = &*id.kind == "Secret";
        Ok(Some(crate::diff::fields(
            &to_json(&live),
            &to_json(&after),
            secret,
        )))
    }

    /// Whether converge may write `id` for `environment`: it is absent, or it
    /// carries converge's labels for this environment. True when it exists.
    pub(super) async fn check_owner(
        &self,
        id: &ObjectRef,
        environment: &str,
    ) -> Result<bool, crate::target::Error> {
        let (api, resource, ns) = self.api(id, environment).await?;
        let found = api.get_metadata_opt(&id.name).await.map_err(|e| {
            classify(request_error(
                "get",
                &plural(&resource),
                &shown(ns.as_deref(), &id.name),
                e,
            ))
        })?;
        let Some(found) = found else {
            return Ok(false);
        };
        let labels = found.metadata.labels.unwrap_or_default();
        let ours = labels.get(MANAGED_BY).map(String::as_str) == Some("converge");
        let env = labels.get(ENVIRONMENT_LABEL).map(String::as_str);
        if ours && env == Some(environment) {
            return Ok(true);
        }
        let detail = match (ours, env) {
            (true, Some(other)) => format!("it belongs to environment {other}"),
            _ => "it has no converge ownership labels".to_owned(),
        };
        Err(crate::target::Error::Foreign {
            environment: environment.to_owned(),
            object: format!("{} {}", id.kind, shown(ns.as_deref(), &id.name).trim()),
            detail,
        })
    }

    /// Server-side applies one object.
    pub(super) async fn apply_object(
        &self,
        rendered: &Rendered,
        environment: &str,
    ) -> Result<(), crate::target::Error> {
        let id = &rendered.object.id;
        let (api, resource, ns) = self.api(id, environment).await?;
        let doc = manifest(rendered, ns.as_deref())?;
        let params = PatchParams::apply(&self.options.field_manager).force();
        let result = api.patch(&id.name, &params, &Patch::Apply(&doc)).await;
        match result {
            // An object still being deleted (a Namespace terminating right
            // after its environment was deleted): applied again once gone,
            // and its going is no drift.
            Ok(applied) if applied.metadata.deletion_timestamp.is_some() => {
                self.rebase(id, environment, None);
                Err(still_being_deleted(id, ns.as_deref()))
            }
            Ok(applied) => {
                let (ours, _) = owners(&applied.metadata, &self.options.field_manager);
                self.rebase(id, environment, Some((ours, applied.metadata.uid)));
                Ok(())
            }
            Err(e) if self.options.recreate && is_immutable(&e) => {
                self.delete_object(id, environment).await?;
                self.wait_gone(&api, &id.name).await;
                api.patch(&id.name, &params, &Patch::Apply(&doc))
                    .await
                    .map(|applied| {
                        let (ours, _) = owners(&applied.metadata, &self.options.field_manager);
                        self.rebase(id, environment, Some((ours, applied.metadata.uid)));
                    })
                    .map_err(|e| {
                        classify(request_error(
                            "patch",
                            &plural(&resource),
                            &shown(ns.as_deref(), &id.name),
                            e,
                        ))
                    })
            }
            Err(e) => Err(classify(request_error(
                "patch",
                &plural(&resource),
                &shown(ns.as_deref(), &id.name),
                e,
            ))),
        }
    }

    /// Objects not in the inventory: nobody else may own them. Objects in a
    /// Namespace this change creates need no look: it holds nothing yet.
    /// The Namespaces this change creates (absent now).
    pub(super) async fn check_new(
        &self,
        new: &[&Rendered],
        name: &str,
    ) -> Result<BTreeSet<String>, crate::target::Error> {
        let mut fresh = BTreeSet::new();
        for r in new.iter().filter(|r| &*r.object.id.kind == "Namespace") {
            if !self.check_owner(&r.object.id, name).await? {
                fresh.insert(r.object.id.name.to_string());
            }
        }
        // Cluster-scoped objects (no namespace) are looked up whatever
        // Namespace is fresh.
        let to_check: Vec<&ObjectRef> = new
            .iter()
            .map(|r| &r.object.id)
            .filter(|id| &*id.kind != "Namespace")
            .filter(|id| !id.namespace.as_deref().is_some_and(|ns| fresh.contains(ns)))
            .collect();
        let checks: Vec<_> = to_check
            .into_iter()
            .map(|id| self.check_owner(id, name))
            .collect();
        stream::iter(checks)
            .buffer_unordered(self.per_environment())
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(fresh)
    }

    /// Server-side applies one object as a dry run (`dryRun=All`: the API
    /// server authorizes, admits, defaults and validates it, and stores
    /// nothing), with the field manager and force of
    /// [`Kubernetes::apply_object`].
    pub(super) async fn dry_run_object(
        &self,
        rendered: &Rendered,
        environment: &str,
    ) -> Result<DryRun, crate::target::Error> {
        let id = &rendered.object.id;
        let (api, resource, ns) = self.api(id, environment).await?;
        let doc = manifest(rendered, ns.as_deref())?;
        let params = PatchParams::apply(&self.options.field_manager)
            .force()
            .dry_run();
        match api.patch(&id.name, &params, &Patch::Apply(&doc)).await {
            // As the real apply would find it: still being deleted.
            Ok(would) if would.metadata.deletion_timestamp.is_some() => {
                self.rebase(id, environment, None);
                Err(still_being_deleted(id, ns.as_deref()))
            }
            Ok(_) => Ok(DryRun::Passed),
            // The real apply deletes and creates it again.
            Err(e) if self.options.recreate && is_immutable(&e) => Ok(DryRun::Passed),
            Err(e) => {
                let missing = missing_namespace(&e)
                    .filter(|missing| ns.as_deref() == Some(*missing))
                    .map(str::to_owned);
                let error = classify(request_error(
                    "dry-run patch",
                    &plural(&resource),
                    &shown(ns.as_deref(), &id.name),
                    e,
                ));
                Ok(match missing {
                    Some(namespace) => DryRun::NoNamespace { namespace, error },
                    None => DryRun::Refused(error),
                })
            }
        }
    }

    /// Dry-runs `objects`, `per_environment` at once. Objects whose
    /// Namespace is missing but one of `creates` (Namespaces the change
    /// applies) are returned, to be dry-run once it exists. Any other
    /// refusal is the error: the first permanent one in apply order, else
    /// the first.
    pub(super) async fn dry_run_all<'r>(
        &self,
        objects: &[&'r Rendered],
        environment: &str,
        creates: &BTreeSet<&str>,
    ) -> Result<Vec<&'r Rendered>, crate::target::Error> {
        let runs: Vec<_> = objects
            .iter()
            .enumerate()
            .map(|(i, r)| async move { (i, self.dry_run_object(r, environment).await) })
            .collect();
        let mut done: Vec<(usize, Result<DryRun, crate::target::Error>)> = stream::iter(runs)
            .buffer_unordered(self.per_environment())
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);
        let mut later = Vec::new();
        let mut refused: Option<crate::target::Error> = None;
        for (i, outcome) in done {
            let error = match outcome {
                Ok(DryRun::Passed) => continue,
                Ok(DryRun::NoNamespace { namespace, .. })
                    if creates.contains(namespace.as_str()) =>
                {
                    later.push(objects[i]);
                    continue;
                }
                Ok(DryRun::NoNamespace { error, .. } | DryRun::Refused(error)) | Err(error) => {
                    error
                }
            };
            match &refused {
                Some(first) if !first.is_transient() || error.is_transient() => {}
                _ => refused = Some(error),
            }
        }
        refused.map_or(Ok(later), Err)
    }

    /// Takes back what [`Kubernetes::apply_one`] wrote before a dry run in
    /// the Namespaces it had just created was refused: those Namespaces
    /// (empty but for what the cluster put there) are deleted and the
    /// inventory is as it was (`before`; deleted when there was none). A
    /// Namespace that could not be deleted stays listed, so nothing is
    /// orphaned. The refusal is the result.
    pub(super) async fn roll_back(
        &self,
        name: &str,
        namespaces: &[&Rendered],
        mut before: LiveEnvironment,
        recorded: bool,
        refusal: crate::target::Error,
    ) -> Result<Option<LiveEnvironment>, crate::target::Error> {
        self.fence(name)?;
        for r in namespaces {
            if let Err(e) = self.delete_object(&r.object.id, name).await {
                tracing::warn!(
                    environment = name,
                    namespace = %r.object.id.name,
                    error = %e,
                    "a Namespace created for a refused environment could not be deleted; it stays listed"
                );
                before.objects.insert(r.object.id.clone(), r.object.digest);
            }
        }
        self.fence(name)?;
        if !recorded && before.objects.is_empty() {
            self.delete_inventory(name).await?;
        } else {
            self.write_inventory(name, &before).await?;
        }
        Err(refusal)
    }

    /// Applies one rank of objects in parallel; each applied object's
    /// digest goes into `live`. The first failure is the result.
    pub(super) async fn apply_rank(
        &self,
        group: Vec<&Rendered>,
        name: &str,
        live: &mut LiveEnvironment,
    ) -> Result<(), crate::target::Error> {
        let applies: Vec<_> = group
            .into_iter()
            .map(|r| async move { (r, self.apply_object(r, name).await) })
            .collect();
        let done: Vec<(&Rendered, Result<(), crate::target::Error>)> = stream::iter(applies)
            .buffer_unordered(self.per_environment())
            .collect()
            .await;
        let mut result = Ok(());
        for (r, outcome) in done {
            match outcome {
                Ok(()) => {
                    live.objects.remove(&r.object.id);
                    live.objects.insert(r.object.id.clone(), r.object.digest);
                }
                Err(e) if result.is_ok() => result = Err(e),
                Err(_) => {}
            }
        }
        result
    }

    /// The first dry run of `change`: every object outside `fresh` (the
    /// Namespaces it creates), and the kinds of those inside (a kind the
    /// cluster does not serve, or serves cluster-wide, is refused before
    /// any Namespace is created for it). The objects to dry-run once their
    /// Namespace exists, and the Namespaces to create first.
    pub(super) async fn dry_run_outside<'r>(
        &self,
        change: &EnvironmentChange<'r>,
        fresh: &BTreeSet<String>,
    ) -> Result<(Vec<&'r Rendered>, Vec<&'r Rendered>), crate::target::Error> {
        let name = change.name;
        let creates: BTreeSet<&str> = change
            .upserts
            .iter()
            .filter(|r| &*r.object.id.kind == "Namespace")
            .map(|r| &*r.object.id.name)
            .collect();
        let in_fresh = |r: &&Rendered| {
            r.object
                .id
                .namespace
                .as_deref()
                .is_some_and(|ns| fresh.contains(ns))
        };
        let (inside, outside): (Vec<&Rendered>, Vec<&Rendered>) =
            change.upserts.iter().copied().partition(in_fresh);
        let mut later = self.dry_run_all(&outside, name, &creates).await?;
        for r in inside {
            self.api(&r.object.id, name).await?;
            later.push(r);
        }
        let missing: BTreeSet<&str> = later
            .iter()
            .filter_map(|r| r.object.id.namespace.as_deref())
            .collect();
        let namespaces = change
            .upserts
            .iter()
            .copied()
            .filter(|r| &*r.object.id.kind == "Namespace" && missing.contains(&*r.object.id.name))
            .collect();
        Ok((later, namespaces))
    }

    /// One environment's change: check, dry-run, widen, apply in order,
    /// delete in reverse order, narrow.
    ///
    /// All or nothing as far as the API server can tell: every object to
    /// be written is dry-run before any is, so a refused one leaves the
    /// environment as it was. Objects in a Namespace that does not exist
    /// yet cannot be dry-run (the API server answers that the Namespace is
    /// not found): they are dry-run right after that Namespace is created,
    /// before anything else is written, and a refusal then deletes the
    /// Namespace again.
    pub(super) async fn apply_one(
        &self,
        change: &EnvironmentChange<'_>,
        known: Option<Arc<LiveEnvironment>>,
    ) -> Result<Option<LiveEnvironment>, crate::target::Error> {
        let name = change.name;
        let recorded = known.is_some();
        let mut live = match known {
            Some(live) => Arc::unwrap_or_clone(live),
            None => match change.record {
                Some(record) => LiveEnvironment {
                    record: record.clone(),
                    objects: BTreeMap::new(),
                },
                None => return Ok(None), // nothing of ours is there
            },
        };
        // Objects not in the inventory: make sure nobody else owns them.
        let new: Vec<&Rendered> = change
            .upserts
            .iter()
            .copied()
            .filter(|r| !live.objects.contains_key(&r.object.id))
            .collect();
        let fresh = self.check_new(&new, name).await?;
        let (later, namespaces) = self.dry_run_outside(change, &fresh).await?;
        let before = live.clone();
        // Widen: every object about to be written is listed before it exists.
        self.fence(name)?;
        if !new.is_empty() {
            for r in &new {
                live.objects.insert(r.object.id.clone(), Digest::PENDING);
            }
            if let Some(record) = change.record {
                live.record = record.clone();
            }
            self.write_inventory(name, &live).await?;
        }
        let mut result = Ok(());
        // The Namespaces the rest waits for, then the rest's dry run.
        if !namespaces.is_empty() {
            self.fence(name)?;
            result = self.apply_rank(namespaces.clone(), name, &mut live).await;
            if result.is_ok()
                && let Err(refusal) = self.dry_run_all(&later, name, &BTreeSet::new()).await
            {
                return self
                    .roll_back(name, &namespaces, before, recorded, refusal)
                    .await;
            }
        }
        // Apply in kind order; objects of one rank in parallel.
        if result.is_ok() {
            let rest: Vec<&Rendered> = change
                .upserts
                .iter()
                .copied()
                .filter(|r| !namespaces.iter().any(|n| n.object.id == r.object.id))
                .collect();
            for group in by_rank(&rest, |r| &r.object.id) {
                self.fence(name)?;
                result = self
                    .apply_rank(group.into_iter().copied().collect(), name, &mut live)
                    .await;
                if result.is_err() {
                    break; // later ranks depend on this one
                }
            }
        }
        // Delete in reverse order; a failed delete stays listed.
        if result.is_ok() {
            result = self.delete_all(&change.deletes, name, &mut live).await;
        }
        // Narrow: the inventory says what is there now.
        if let Some(record) = change.record {
            live.record = record.clone();
        }
        self.fence(name)?;
        let gone = change.record.is_none() && live.objects.is_empty();
        let narrowed = if gone {
            self.delete_inventory(name).await
        } else {
            live.compact();
            self.write_inventory(name, &live).await
        };
        result?;
        narrowed?;
        Ok((!gone).then_some(live))
    }
}
