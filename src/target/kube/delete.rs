//! Deleting: prune of objects converge applied, in reverse rank, with the
//! uid read as a precondition and a wait until each is gone.

use super::apply::by_rank;
use super::client::plural;
use super::error::{classify, is_not_found, request_error};
use super::{Kubernetes, shown};
use crate::object::ObjectRef;
use crate::render::{ENVIRONMENT_LABEL, MANAGED_BY};
use crate::target::LiveEnvironment;
use futures::{StreamExt, stream};
use kube::api::{Api, DeleteParams, DynamicObject, Preconditions};
use kube::discovery::Scope;
use std::time::Duration;

impl Kubernetes {
    /// Waits (at most 30 s) until a deleted object is gone.
    pub(super) async fn wait_gone(&self, api: &Api<DynamicObject>, name: &str) {
        for _ in 0..60 {
            match api.get_metadata_opt(name).await {
                Ok(None) => return,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Deletes one object if it still carries converge's labels for this
    /// environment (with its uid as a precondition). Gone already is done.
    pub(super) async fn delete_object(
        &self,
        id: &ObjectRef,
        environment: &str,
    ) -> Result<(), crate::target::Error> {
        // A cluster-scoped kind recorded with a namespace was never written
        // (`api` refuses that), and must not name the cluster-wide object
        // of the same name a listed template may have applied since.
        if id.namespace.is_some() && matches!(self.resource(id).await?.1, Scope::Cluster) {
            return Ok(());
        }
        let (api, resource, ns) = self.api(id, environment).await?;
        let object = shown(ns.as_deref(), &id.name);
        let found = api
            .get_metadata_opt(&id.name)
            .await
            .map_err(|e| classify(request_error("get", &plural(&resource), &object, e)))?;
        let Some(found) = found else {
            return Ok(());
        };
        let labels = found.metadata.labels.unwrap_or_default();
        if labels.get(MANAGED_BY).map(String::as_str) != Some("converge")
            || labels.get(ENVIRONMENT_LABEL).map(String::as_str) != Some(environment)
        {
            // No longer ours (relabelled by hand, or replaced): never deleted.
            return Ok(());
        }
        self.rebase(id, environment, None);
        let params = DeleteParams {
            preconditions: found.metadata.uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify(request_error(
                "delete",
                &plural(&resource),
                &object,
                e,
            ))),
        }
    }

    /// Deletes objects in reverse apply order; stops after a rank with a
    /// failure. Deleted objects leave `live`; failed ones stay listed.
    pub(super) async fn delete_all(
        &self,
        deletes: &[ObjectRef],
        name: &str,
        live: &mut LiveEnvironment,
    ) -> Result<(), crate::target::Error> {
        let mut result = Ok(());
        let mut groups = by_rank(deletes, |id| id);
        groups.reverse();
        for group in groups {
            self.fence(name)?;
            let deletes: Vec<_> = group
                .into_iter()
                .map(|id| async move { (id, self.delete_object(id, name).await) })
                .collect();
            let done: Vec<(&ObjectRef, Result<(), crate::target::Error>)> = stream::iter(deletes)
                .buffer_unordered(self.per_environment())
                .collect()
                .await;
            for (id, outcome) in done {
                match outcome {
                    Ok(()) => {
                        live.objects.remove(id);
                    }
                    Err(e) if result.is_ok() => result = Err(e),
                    Err(_) => {}
                }
            }
            if result.is_err() {
                break;
            }
        }
        result
    }
}
