//! The inventory `ConfigMap`s: one per environment in the inventory
//! Namespace, read in one LIST, written and deleted only when they are this
//! installation's, and a legacy-named one adopted and retired.

use super::error::Failure;
use super::error::{classify, is_not_found, request_error};
use super::{INVENTORY_LABEL, Key, Kubernetes, watched_key};
use crate::object::{ObjectRef, kind, shared};
use crate::render::{Digest, ENVIRONMENT_LABEL, MANAGED_BY};
use crate::target::{EnvironmentRecord, Inventory, LiveEnvironment};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};

/// The key of an inventory `ConfigMap` holding the inventory.
pub(super) const INVENTORY_KEY: &str = "inventory.json";
pub(super) const FORMAT_VERSION: u32 = 1;

/// What [`Kubernetes::claim_inventory`] found.
pub(super) enum Claimed {
    /// Created now, with the content.
    Created,
    /// This installation's, at this resourceVersion (if known).
    Ours(Option<String>),
}

/// An environment's inventory `ConfigMap`s known to be this installation's.
#[derive(Debug, Default, Clone)]
pub(super) struct Held {
    /// The uid of the current one.
    pub(super) current: Option<String>,
    /// Its resourceVersion as converge last read or wrote it: a write
    /// carries it, so one that finds it changed (or gone) looks again.
    pub(super) version: Option<String>,
    /// A legacy-named one still to retire.
    pub(super) legacy: Option<LegacyInventory>,
}

#[derive(Debug, Clone)]
pub(super) struct LegacyInventory {
    pub(super) uid: String,
    /// As read: changed since by anyone, it is left alone.
    pub(super) resource_version: String,
    /// Only converge's field manager ever wrote it: it may be deleted.
    pub(super) sole: bool,
}

/// The inventory `ConfigMap`'s content.
#[derive(Serialize, Deserialize)]
pub(super) struct InventoryDoc {
    pub(super) format: u32,
    pub(super) environment: String,
    pub(super) record: EnvironmentRecord,
    pub(super) objects: Vec<Entry>,
}

impl InventoryDoc {
    pub(super) fn of(
        environment: &str,
        live: &LiveEnvironment,
        fingerprints: &HashMap<Key, String>,
    ) -> InventoryDoc {
        InventoryDoc {
            format: FORMAT_VERSION,
            environment: environment.to_owned(),
            record: live.record.clone(),
            objects: live
                .objects
                .iter()
                .map(|(id, digest)| Entry {
                    id: id.clone(),
                    digest: *digest,
                    fields: watched_key(id, environment)
                        .and_then(|k| fingerprints.get(&k).cloned()),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct Entry {
    #[serde(flatten)]
    pub(super) id: ObjectRef,
    pub(super) digest: Digest,
    /// The fingerprint of the fields converge owned right after it last
    /// applied the object ([`super::drift::fingerprint`]): a one-shot run compares it
    /// with what a metadata LIST says to find edits. Absent in inventories
    /// written before it was kept (no edits found until the next apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fields: Option<String>,
}

/// The inventory `ConfigMap` of an environment: a dotted name, which no
/// environment's (a DNS label) and nothing the Helm chart makes
/// (`<release>-config`, `-policies`, ...) can be.
pub(super) fn inventory_name(environment: &str) -> String {
    format!("converge.inventory.{environment}")
}

/// The inventory's name before 0.x: `converge-<environment>`, which an
/// environment named `config` shared with the chart's own `ConfigMap`.
/// Read (adopted) when it carries the inventory labels, and retired on the
/// environment's next write.
pub(super) fn legacy_inventory_name(environment: &str) -> String {
    format!("converge-{environment}")
}

/// The annotation saying which installation an inventory belongs to (its
/// field manager): an inventory without it, or another's, is never written
/// over or deleted.
pub const INSTALLATION_ANNOTATION: &str = "converge.dev/installation";

/// Whether `meta` is an inventory of environment `environment` written by
/// converge: its labels (and, unless `legacy`, the installation annotation).
pub(super) fn is_inventory_of(
    meta: &kube::api::ObjectMeta,
    environment: &str,
    installation: &str,
    legacy: bool,
) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(INSTALLATION_ANNOTATION))
        .map(String::as_str);
    label(MANAGED_BY) == Some("converge")
        && label(INVENTORY_LABEL) == Some("true")
        && label(ENVIRONMENT_LABEL) == Some(environment)
        && (legacy || annotation == Some(installation))
}

/// The environment an inventory `ConfigMap` holds, and the fingerprints
/// of its objects' fields.
pub(super) type Parsed = (String, LiveEnvironment, Vec<(Key, String)>);

/// An inventory `ConfigMap` as an environment; `None` when it is not one.
pub(super) fn parse_inventory(
    cm: &k8s_openapi::api::core::v1::ConfigMap,
) -> Result<Option<Parsed>, crate::target::Error> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let corrupt = |detail: String, source: Option<serde_json::Error>| {
        crate::target::Error::CorruptInventory(Box::new(Failure::CorruptInventory {
            name: name.clone(),
            detail,
            source,
        }))
    };
    let Some(body) = cm.data.as_ref().and_then(|d| d.get(INVENTORY_KEY)) else {
        return Err(corrupt(format!("it has no {INVENTORY_KEY}"), None));
    };
    let doc: InventoryDoc =
        serde_json::from_str(body).map_err(|e| corrupt(e.to_string(), Some(e)))?;
    if doc.format != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format {}", doc.format), None));
    }
    let namespace: Arc<str> = Arc::from(doc.environment.as_str());
    let mut fingerprints = Vec::new();
    let objects = doc
        .objects
        .into_iter()
        .map(|e| {
            if let (Some(f), Some(k)) = (&e.fields, watched_key(&e.id, &doc.environment)) {
                fingerprints.push((k, f.clone()));
            }
            let id = ObjectRef {
                api_version: shared(&e.id.api_version),
                kind: kind(&e.id.kind),
                ..e.id
            }
            .interned(&namespace);
            (id, e.digest)
        })
        .collect();
    Ok(Some((
        doc.environment,
        LiveEnvironment {
            record: doc.record,
            objects,
        },
        fingerprints,
    )))
}

impl Kubernetes {
    pub(super) fn cached(&self) -> std::sync::MutexGuard<'_, Option<Arc<Inventory>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn inventories(&self) -> Api<k8s_openapi::api::core::v1::ConfigMap> {
        Api::namespaced(self.client.clone(), &self.options.inventory_namespace)
    }

    /// This installation's identity on its inventories (the field manager).
    pub(super) fn installation(&self) -> &str {
        &self.options.field_manager
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every environment's inventory `ConfigMap` (one paginated LIST):
    /// only those of this installation (labels, annotation, name); an
    /// inventory under its legacy name is adopted when no current one exists.
    pub(super) async fn read_all(&self) -> Result<Inventory, crate::target::Error> {
        let api = self.inventories();
        let mut current = BTreeMap::new();
        let mut legacy = BTreeMap::new();
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut known: HashMap<Key, String> = HashMap::new();
        let mut params = ListParams::default()
            .labels(&format!("{INVENTORY_LABEL}=true"))
            .limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| classify(request_error("list", "configmaps", "", e)))?;
            for cm in page.items {
                let meta = &cm.metadata;
                let name = meta.name.as_deref().unwrap_or_default();
                let Some(env) = meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ENVIRONMENT_LABEL))
                    .cloned()
                else {
                    continue;
                };
                let is_current = name == inventory_name(&env)
                    && is_inventory_of(meta, &env, self.installation(), false);
                let is_legacy = !is_current
                    && name == legacy_inventory_name(&env)
                    && is_inventory_of(meta, &env, self.installation(), true);
                if !is_current && !is_legacy {
                    tracing::debug!(
                        configmap = name,
                        "not an inventory of this installation; ignored"
                    );
                    continue;
                }
                let Some((doc_env, live, fingerprints)) = parse_inventory(&cm)? else {
                    continue;
                };
                if doc_env != env {
                    return Err(crate::target::Error::CorruptInventory(Box::new(
                        Failure::CorruptInventory {
                            name: name.to_owned(),
                            detail: format!("it lists environment {doc_env}, its label says {env}"),
                            source: None,
                        },
                    )));
                }
                if is_current || !current.contains_key(&env) {
                    known.extend(fingerprints);
                }
                let entry = held.entry(env.clone()).or_default();
                if is_current {
                    entry.current.clone_from(&meta.uid);
                    entry.version.clone_from(&meta.resource_version);
                    current.insert(env, Arc::new(live));
                } else {
                    entry.legacy = Some(LegacyInventory {
                        uid: meta.uid.clone().unwrap_or_default(),
                        resource_version: meta.resource_version.clone().unwrap_or_default(),
                        sole: meta.managed_fields.iter().flatten().all(|f| {
                            f.manager.as_deref() == Some(self.options.field_manager.as_str())
                        }),
                    });
                    legacy.insert(env, Arc::new(live));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        // A current inventory wins over a legacy one left by a migration
        // that stopped half-way.
        for (env, live) in legacy {
            current.entry(env).or_insert(live);
        }
        *self.held() = held;
        *self.fingerprints() = known;
        Ok(Inventory {
            environments: current,
        })
    }

    /// ` <namespace>/<name>` of an inventory `ConfigMap`, for messages.
    pub(super) fn shown_inventory(&self, name: &str) -> String {
        format!(" {}/{name}", self.options.inventory_namespace)
    }

    /// Whether the inventory `ConfigMap` of `environment` may be written:
    /// it is known to be this installation's (`Ours`, with the
    /// resourceVersion a write must find), or it does not exist (then it is
    /// created: `Created`, never written over), or it is this
    /// installation's when looked up. Anything else there is refused
    /// (`ForeignObject`).
    pub(super) async fn claim_inventory(
        &self,
        environment: &str,
        cm: &k8s_openapi::api::core::v1::ConfigMap,
    ) -> Result<Claimed, crate::target::Error> {
        if let Some(h) = self.held().get(environment)
            && h.current.is_some()
        {
            return Ok(Claimed::Ours(h.version.clone()));
        }
        let name = inventory_name(environment);
        let object = self.shown_inventory(&name);
        let found = self
            .inventories()
            .get_metadata_opt(&name)
            .await
            .map_err(|e| classify(request_error("get", "configmaps", &object, e)))?;
        if let Some(found) = found {
            if is_inventory_of(&found.metadata, environment, self.installation(), false) {
                self.hold(environment, &found.metadata);
                return Ok(Claimed::Ours(found.metadata.resource_version));
            }
            return Err(self.foreign_inventory(environment, &name));
        }
        let params = kube::api::PostParams {
            field_manager: Some(self.options.field_manager.clone()),
            ..Default::default()
        };
        match self.inventories().create(&params, cm).await {
            Ok(created) => {
                self.hold(environment, &created.metadata);
                Ok(Claimed::Created)
            }
            // Someone made it between the look and the create.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Err(self.foreign_inventory(environment, &name))
            }
            Err(e) => Err(classify(request_error("create", "configmaps", &object, e))),
        }
    }

    /// Records the inventory of `environment` as this installation's, as
    /// `meta` says it is now.
    pub(super) fn hold(&self, environment: &str, meta: &kube::api::ObjectMeta) {
        let mut held = self.held();
        let h = held.entry(environment.to_owned()).or_default();
        h.current.clone_from(&meta.uid);
        h.version.clone_from(&meta.resource_version);
    }

    pub(super) fn foreign_inventory(&self, environment: &str, name: &str) -> crate::target::Error {
        crate::target::Error::Foreign {
            environment: environment.to_owned(),
            object: format!("ConfigMap{} (its inventory)", self.shown_inventory(name)),
            detail: format!(
                "it is not an inventory of this installation: it lacks the labels {MANAGED_BY}=converge, {INVENTORY_LABEL}=true, {ENVIRONMENT_LABEL}={environment} or the annotation {INSTALLATION_ANNOTATION}={}",
                self.installation()
            ),
        }
    }

    /// Writes an environment's inventory `ConfigMap` (only over one of this
    /// installation's), then retires its legacy-named one.
    pub(super) async fn write_inventory(
        &self,
        name: &str,
        live: &LiveEnvironment,
    ) -> Result<(), crate::target::Error> {
        let body = {
            let fingerprints = self.fingerprints();
            serde_json::to_string(&InventoryDoc::of(name, live, &fingerprints))
                .expect("an inventory serializes")
        };
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": inventory_name(name),
                "namespace": self.options.inventory_namespace,
                "labels": {
                    MANAGED_BY: "converge",
                    ENVIRONMENT_LABEL: name,
                    INVENTORY_LABEL: "true",
                },
                "annotations": { INSTALLATION_ANNOTATION: self.installation() },
            },
            "data": { INVENTORY_KEY: body },
        });
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(doc.clone()).expect("a ConfigMap");
        let mut claimed = self.claim_inventory(name, &cm).await?;
        let mut looked_again = false;
        while let Claimed::Ours(version) = claimed {
            let mut doc = doc.clone();
            if let Some(v) = &version {
                doc["metadata"]["resourceVersion"] = serde_json::Value::String(v.clone());
            }
            let params = PatchParams::apply(&self.options.field_manager).force();
            match self
                .inventories()
                .patch(&inventory_name(name), &params, &Patch::Apply(&doc))
                .await
            {
                Ok(written) => {
                    self.hold(name, &written.metadata);
                    break;
                }
                // Changed or gone since converge last read or wrote it
                // (by hand, or replaced): look again, once.
                Err(kube::Error::Api(s))
                    if !looked_again && version.is_some() && matches!(s.code, 404 | 409 | 422) =>
                {
                    looked_again = true;
                    if let Some(h) = self.held().get_mut(name) {
                        h.current = None;
                        h.version = None;
                    }
                    claimed = self.claim_inventory(name, &cm).await?;
                }
                Err(e) => {
                    return Err(classify(request_error(
                        "patch",
                        "configmaps",
                        &self.shown_inventory(&inventory_name(name)),
                        e,
                    )));
                }
            }
        }
        self.retire_legacy(name).await
    }

    /// Deletes an environment's inventory: only one known to be this
    /// installation's (with its uid as a precondition), and its legacy one.
    pub(super) async fn delete_inventory(&self, name: &str) -> Result<(), crate::target::Error> {
        let uid = self.held().get(name).and_then(|h| h.current.clone());
        if let Some(uid) = uid {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match self
                .inventories()
                .delete(&inventory_name(name), &params)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                // Replaced by someone else's since it was read: not ours.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::warn!(
                        environment = name,
                        "the inventory ConfigMap was replaced by someone else's; left as it is"
                    );
                }
                Err(e) => {
                    return Err(classify(request_error(
                        "delete",
                        "configmaps",
                        &self.shown_inventory(&inventory_name(name)),
                        e,
                    )));
                }
            }
        }
        self.retire_legacy(name).await?;
        self.held().remove(name);
        Ok(())
    }

    /// Retires an environment's legacy-named inventory once its current one
    /// is written (or the environment is gone): deleted when converge alone
    /// ever wrote it, else (it was someone else's `ConfigMap`, taken over by
    /// an earlier version: the chart's `converge-config` for an environment
    /// named `config`) only converge's labels and key are removed from it.
    /// Both with a precondition: the object as read, unchanged.
    pub(super) async fn retire_legacy(&self, name: &str) -> Result<(), crate::target::Error> {
        let Some(legacy) = self.held().get(name).and_then(|h| h.legacy.clone()) else {
            return Ok(());
        };
        let old = legacy_inventory_name(name);
        let object = self.shown_inventory(&old);
        let result = if legacy.sole {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(legacy.uid.clone()),
                    resource_version: Some(legacy.resource_version.clone()),
                }),
                ..DeleteParams::background()
            };
            self.inventories()
                .delete(&old, &params)
                .await
                .map(drop)
                .map_err(|e| ("delete", e))
        } else {
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": legacy.resource_version,
                    "labels": { MANAGED_BY: null, ENVIRONMENT_LABEL: null, INVENTORY_LABEL: null },
                },
                "data": { INVENTORY_KEY: null },
            });
            self.inventories()
                .patch(&old, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(|e| ("patch", e))
        };
        match result {
            Ok(()) => {}
            Err((_, e)) if is_not_found(&e) => {}
            Err((_, kube::Error::Api(s))) if s.code == 409 => {
                tracing::warn!(
                    environment = name,
                    configmap = old,
                    "the legacy inventory changed hands; left as it is"
                );
            }
            Err((verb, e)) => {
                return Err(classify(request_error(verb, "configmaps", &object, e)));
            }
        }
        if let Some(h) = self.held().get_mut(name) {
            h.legacy = None;
        }
        Ok(())
    }

    /// Makes sure the inventory Namespace exists (once per process).
    pub(super) async fn ensure_inventory_namespace(&self) -> Result<(), crate::target::Error> {
        crate::coordination::ensure_namespace_as(
            &self.client,
            &self.options.inventory_namespace,
            &self.options.field_manager,
        )
        .await
        .map_err(|(verb, e)| {
            classify(request_error(
                verb,
                "namespaces",
                &format!(" {}", self.options.inventory_namespace),
                e,
            ))
        })
    }
}
